// An in-memory network for replication tests: stream pairs that satisfy the mesh's
// DuplexByteStream, and nodes that register protocol handlers and dial each other by peer id.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { type PrivateKey, type PublicKey, UnsupportedProtocolError } from '@libp2p/interface'
import type { PointSignature } from '../../../src/chunkstore/index.js'
import { type DuplexByteStream, signEnvelope } from '../../../src/mesh/index.js'
import type { ReplicationMesh } from '../../../src/replication/index.js'

class MemoryStream implements DuplexByteStream {
  peer!: MemoryStream
  private queue: Uint8Array[] = []
  private ended = false
  private error: Error | null = null
  private wake: (() => void) | null = null
  private closedLocal = false
  /** Fault injection: called with every piece this side sends. */
  onSend?: (data: Uint8Array) => void

  send(data: Uint8Array): boolean {
    if (this.error) throw this.error
    if (this.closedLocal) throw new Error('stream closed for writing')
    this.onSend?.(data)
    this.peer.deliver(data)
    return true
  }
  async onDrain(): Promise<void> {}
  async close(): Promise<void> {
    if (this.closedLocal) return
    this.closedLocal = true
    this.peer.end()
  }
  abort(err: Error): void {
    if (this.error) return
    this.error = err
    this.peer.fail(new Error(`remote aborted: ${err.message}`))
    this.notify()
  }
  private deliver(data: Uint8Array): void {
    this.queue.push(data)
    this.notify()
  }
  private end(): void {
    this.ended = true
    this.notify()
  }
  private fail(err: Error): void {
    if (this.error) return
    this.error = err
    this.notify()
  }
  private notify(): void {
    const w = this.wake
    this.wake = null
    w?.()
  }
  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      if (this.queue.length > 0) {
        yield this.queue.shift() as Uint8Array
        continue
      }
      if (this.error) throw this.error
      if (this.ended) return
      await new Promise<void>((resolve) => {
        this.wake = resolve
      })
    }
  }
}

export function streamPair(): [MemoryStream, MemoryStream] {
  const a = new MemoryStream()
  const b = new MemoryStream()
  a.peer = b
  b.peer = a
  return [a, b]
}

type Handler = (stream: DuplexByteStream, ctx: { peerId: string }) => Promise<void>

export class MemoryNetwork {
  readonly nodes = new Map<string, MemoryNode>()
  /** `key`: the node's private key (default: a new one); tests that need real peer ids pass it. */
  node(peerId: string, site: string, key?: PrivateKey): MemoryNode {
    const n = new MemoryNode(this, peerId, site, key)
    this.nodes.set(peerId, n)
    return n
  }
}

export class MemoryNode implements ReplicationMesh {
  readonly handlers = new Map<string, Handler>()
  replicasPublished: Array<{ vm: string; lastPoint: { seq: number; time: number } | null }> = []
  /** Peers that refuse to be dialled (a killed node). */
  down = false
  /** Bytes sent by streams this node dialled. */
  dialledBytes = 0
  freeBytes = 1e12
  /** This node's key (peer ids here are names, so the network hands out the member keys). */
  readonly key: Promise<PrivateKey>
  /** Fault injection: sign with this key instead (an impostor). */
  signWith: PrivateKey | null = null
  /** Not a member any more (revoked): other nodes know no key for it. */
  revoked = false

  constructor(
    private readonly net: MemoryNetwork,
    readonly peerId: string,
    readonly site: string,
    key?: PrivateKey,
  ) {
    this.key = key ? Promise.resolve(key) : generateKeyPair('Ed25519')
  }

  handle(protocol: string, handler: Handler): void {
    this.handlers.set(protocol, handler)
  }
  async unhandle(protocol: string): Promise<void> {
    this.handlers.delete(protocol)
  }
  async dialProtocol(peerId: string, protocol: string): Promise<DuplexByteStream> {
    const remote = this.net.nodes.get(peerId)
    const handler = remote?.handlers.get(protocol)
    if (!remote || remote.down) throw new Error(`cannot reach ${peerId} for ${protocol}`)
    // As libp2p's multistream-select: the peer is there but does not speak the protocol.
    if (!handler)
      throw new UnsupportedProtocolError(`Protocol selection failed - could not negotiate ${protocol}`)
    const [mine, theirs] = streamPair()
    mine.onSend = (d) => {
      this.dialledBytes += d.length
    }
    handler(theirs, { peerId: this.peerId }).catch((err) => theirs.abort(err as Error))
    return mine
  }
  peers() {
    return [...this.net.nodes.values()]
      .filter((n) => n !== this)
      .map((n) => ({
        peerId: n.peerId,
        site: n.site,
        state: (n.down ? 'down' : 'alive') as 'alive' | 'down',
        nodeState: { capacity: { diskFreeBytes: n.freeBytes }, replicas: n.replicasPublished },
      }))
  }
  setReplicas(
    replicas: Array<{ vm: string; lastPoint: { seq: number; time: number } | null; epoch: number }>,
  ): void {
    this.replicasPublished = replicas
  }
  async sign(kind: string, value: unknown): Promise<PointSignature> {
    return signEnvelope(kind, value, this.signWith ?? (await this.key))
  }
  async memberKey(peerId: string): Promise<PublicKey | null> {
    const n = this.net.nodes.get(peerId)
    return !n || n.revoked ? null : (await n.key).publicKey
  }
}

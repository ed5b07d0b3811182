// An in-memory network for replication tests: stream pairs that satisfy the mesh's
// DuplexByteStream, and nodes that register protocol handlers and dial each other by peer id.
import type { DuplexByteStream } from '../../../src/mesh/index.js'
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
  node(peerId: string, site: string): MemoryNode {
    const n = new MemoryNode(this, peerId, site)
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

  constructor(
    private readonly net: MemoryNetwork,
    readonly peerId: string,
    readonly site: string,
  ) {}

  handle(protocol: string, handler: Handler): void {
    this.handlers.set(protocol, handler)
  }
  async unhandle(protocol: string): Promise<void> {
    this.handlers.delete(protocol)
  }
  async dialProtocol(peerId: string, protocol: string): Promise<DuplexByteStream> {
    const remote = this.net.nodes.get(peerId)
    const handler = remote?.handlers.get(protocol)
    if (!remote || remote.down || !handler) throw new Error(`cannot reach ${peerId} for ${protocol}`)
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
        nodeState: { capacity: { diskFreeBytes: n.freeBytes } },
      }))
  }
  setReplicas(
    replicas: Array<{ vm: string; lastPoint: { seq: number; time: number } | null; epoch: number }>,
  ): void {
    this.replicasPublished = replicas
  }
}

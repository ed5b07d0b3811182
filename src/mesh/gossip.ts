// Node-state gossip: a flood protocol of our own over /replimesh/gossip/1.0.0, not gossipsub,
// so every frame passes the membership guard like any replimesh protocol (gossipsub answers on
// its own protocol ids before membership is proven) and the whole path stays small and bounded.
// Each node sends its signed state to every proven peer every gossipIntervalMs (and at once when
// it changes or a peer is newly proven); a state newer than the one held is stored and forwarded
// to the other proven peers, so it reaches members this node is not connected to as well.
import type { Libp2p, PublicKey, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { SignedEnvelope } from './certificate.js'
import { verifyRevocationList } from './certificate.js'
import { DIAL_TIMEOUT_MS, GOSSIP_PROTOCOL, MAX_GOSSIP_FRAME_BYTES } from './constants.js'
import { FrameError } from './errors.js'
import { ByteReader, writeJsonFrame } from './frames.js'
import type { MeshLogger } from './logger.js'
import type { Membership } from './membership.js'
import { openEnvelope, publicKeyOfPeer } from './signed.js'
import {
  type GossipMessage,
  gossipMessageSchema,
  NODE_STATE_KIND,
  type NodeState,
  type NodeStateTable,
  nodeStateSchema,
} from './state.js'

/** Frames one gossip stream may carry before the receiver stops reading it. */
const MAX_FRAMES_PER_STREAM = 512

export interface GossipInit {
  selfId: string
  meshKey: PublicKey
  membership: Membership
  table: NodeStateTable
  logger: MeshLogger
  /** A verified state newer than the one held arrived (not our own). */
  onState: (state: NodeState, fromPeer: string) => void
  /** Any frame arrived from this directly connected peer. */
  onContact: (peerId: string) => void
  /** A verified revocation list with a higher seq arrived. */
  onRevocation: (envelope: SignedEnvelope, seq: number, revoked: string[]) => void
}

export class Gossip {
  private libp2p: Libp2p | null = null
  private revocation: { envelope: SignedEnvelope; seq: number } | null = null
  private readonly certificates = new Map<string, SignedEnvelope>()
  private readonly stateEnvelopes = new Map<string, SignedEnvelope>()

  constructor(private readonly init: GossipInit) {}

  attach(libp2p: Libp2p): void {
    this.libp2p = libp2p
  }

  get revocationSeq(): number {
    return this.revocation?.seq ?? -1
  }

  setRevocation(envelope: SignedEnvelope, seq: number): void {
    this.revocation = { envelope, seq }
  }

  /** Our own freshly signed state, stored like any other so newly proven peers get it too. */
  publishOwn(state: NodeState, envelope: SignedEnvelope, certificate: SignedEnvelope): void {
    this.init.table.offer(state, Date.now())
    this.stateEnvelopes.set(state.peerId, envelope)
    this.certificates.set(state.peerId, certificate)
    this.broadcast([{ type: 'state', state: envelope, certificate }], new Set())
  }

  /** Everything we hold, for a peer that just proved membership. */
  sendAllTo(peerId: string): void {
    const messages: GossipMessage[] = []
    for (const state of this.init.table.fresh(Date.now())) {
      const env = this.stateEnvelopes.get(state.peerId)
      const cert = this.certificates.get(state.peerId)
      if (env && cert && state.peerId !== peerId)
        messages.push({ type: 'state', state: env, certificate: cert })
    }
    if (this.revocation) messages.push({ type: 'revocation', list: this.revocation.envelope })
    this.sendTo(peerId, messages)
  }

  private broadcast(messages: GossipMessage[], except: Set<string>): void {
    for (const peer of this.init.membership.provenPeers()) if (!except.has(peer)) this.sendTo(peer, messages)
  }

  private sendTo(peerId: string, messages: GossipMessage[]): void {
    if (!this.libp2p || messages.length === 0) return
    const connection = this.libp2p.getConnections(peerIdFromString(peerId)).find((c) => c.status === 'open')
    if (!connection) return
    const signal = AbortSignal.timeout(DIAL_TIMEOUT_MS)
    ;(async () => {
      const stream = await connection.newStream(GOSSIP_PROTOCOL, { signal })
      for (const message of messages)
        await writeJsonFrame(stream, message, { signal, maxBytes: MAX_GOSSIP_FRAME_BYTES })
      await stream.close({ signal })
    })().catch((err) =>
      this.init.logger.debug({ peer: peerId, reason: (err as Error).message }, 'gossip send failed'),
    )
  }

  /** Handler of GOSSIP_PROTOCOL, behind the membership guard. */
  async handle(stream: Stream, fromPeer: string): Promise<void> {
    const reader = new ByteReader(stream)
    for (let i = 0; i < MAX_FRAMES_PER_STREAM; i++) {
      const message = await reader.readJson(gossipMessageSchema, MAX_GOSSIP_FRAME_BYTES)
      // The sender is done: close our side too, or every gossip stream stays half-open until the
      // peer's inbound stream limit refuses new ones and states stop arriving (seen in labs).
      if (message === null) return void (await stream.close().catch(() => {}))
      this.init.onContact(fromPeer)
      if (message.type === 'state') await this.receiveState(message.state, message.certificate, fromPeer)
      else await this.receiveRevocation(message.list, fromPeer)
    }
    throw new FrameError(`more than ${MAX_FRAMES_PER_STREAM} frames on one gossip stream`, GOSSIP_PROTOCOL)
  }

  private async receiveState(
    envelope: SignedEnvelope,
    certificate: SignedEnvelope,
    fromPeer: string,
  ): Promise<void> {
    let claimed: string
    try {
      claimed = String(JSON.parse(envelope.payload).peerId)
    } catch {
      throw new FrameError('node state payload is not JSON', GOSSIP_PROTOCOL)
    }
    if (claimed === this.init.selfId) return
    if (this.init.membership.revokedPeers.has(claimed)) return
    let state: NodeState
    try {
      state = await openEnvelope(NODE_STATE_KIND, envelope, publicKeyOfPeer(claimed), nodeStateSchema)
    } catch (err) {
      throw new FrameError(`node state of ${claimed}: ${(err as Error).message}`, GOSSIP_PROTOCOL)
    }
    if (state.peerId !== claimed) throw new FrameError('node state names two peers', GOSSIP_PROTOCOL)
    if (state.seq <= this.init.table.seqOf(claimed)) return
    const member = await this.init.membership.learn(claimed, certificate).catch((err: Error) => {
      throw new FrameError(`node state of a non-member: ${err.message}`, GOSSIP_PROTOCOL)
    })
    if (member.site !== state.site)
      throw new FrameError(`node state site ${state.site} ≠ certificate site`, GOSSIP_PROTOCOL)
    if (!this.init.table.offer(state, Date.now())) return
    this.stateEnvelopes.set(claimed, envelope)
    this.certificates.set(claimed, certificate)
    this.init.onState(state, fromPeer)
    this.broadcast([{ type: 'state', state: envelope, certificate }], this.hearsDirectly(claimed, fromPeer))
  }

  /**
   * Peers that need no relayed copy of origin's state: the sender, the origin, and every peer
   * whose own latest view says origin is alive (alive means it hears origin directly). In a full
   * mesh this turns flooding into direct sends; a peer cut off from origin still gets relays.
   */
  private hearsDirectly(origin: string, fromPeer: string): Set<string> {
    const skip = new Set([fromPeer, origin])
    const now = Date.now()
    for (const peer of this.init.membership.provenPeers()) {
      const view = this.init.table.get(peer, now)?.views.find((v) => v.peerId === origin)
      if (view?.state === 'alive') skip.add(peer)
    }
    return skip
  }

  private async receiveRevocation(envelope: SignedEnvelope, fromPeer: string): Promise<void> {
    let list: Awaited<ReturnType<typeof verifyRevocationList>>
    try {
      list = await verifyRevocationList(envelope, this.init.meshKey)
    } catch (err) {
      throw new FrameError(`revocation list: ${(err as Error).message}`, GOSSIP_PROTOCOL)
    }
    if (list.seq <= this.revocationSeq) return
    this.revocation = { envelope, seq: list.seq }
    for (const peer of list.revoked) {
      this.init.table.delete(peer)
      this.stateEnvelopes.delete(peer)
      this.certificates.delete(peer)
    }
    this.init.onRevocation(envelope, list.seq, list.revoked)
    this.broadcast([{ type: 'revocation', list: envelope }], new Set([fromPeer]))
  }

  /** Spreads a revocation list this node signed or loaded. */
  publishRevocation(envelope: SignedEnvelope, seq: number): void {
    this.revocation = { envelope, seq }
    this.broadcast([{ type: 'revocation', list: envelope }], new Set())
  }
}

// Private membership (DESIGN.md §4). Right after a connection is upgraded (Noise, Yamux), the
// dialling side opens /replimesh/membership/1.0.0 and sends its certificate; the listener checks
// it, answers with its own, and the dialler checks that. A peer is "proven" once its certificate
// verified on a live connection. Every replimesh protocol handler goes through guard(), which
// waits a bounded time for proof and otherwise refuses. A listener that sees no proof within
// membershipTimeoutMs, or a bad certificate, hangs up and the connection gater refuses the peer
// for REFUSED_PEER_TTL_MS. Members learnt through gossip (certificate checked) are "known".
import type { Connection, ConnectionGater, Libp2p, PeerId, PublicKey, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type MembershipCertificate, type SignedEnvelope, verifyCertificate } from './certificate.js'
import { MAX_CONTROL_FRAME_BYTES, MEMBERSHIP_PROTOCOL, REFUSED_PEER_TTL_MS } from './constants.js'
import { NotMemberError } from './errors.js'
import { ByteReader, writeJsonFrame } from './frames.js'
import type { MeshLogger } from './logger.js'
import { membershipHelloSchema, membershipReplySchema } from './state.js'

export interface MembershipInit {
  meshKey: PublicKey
  meshId: string
  certificate: SignedEnvelope
  logger: MeshLogger
  timeoutMs: number
  onProven: (peerId: string, cert: MembershipCertificate) => void
}

export interface KnownMember {
  peerId: string
  site: string
  certificate: SignedEnvelope
}

export class Membership {
  readonly members = new Map<string, KnownMember>()
  private readonly proven = new Set<string>()
  private readonly refused = new Map<string, number>()
  /** Peers that redeemed a join token on this node: not refused when they leave unproven. */
  private readonly redeemers = new Set<string>()
  private revoked = new Set<string>()
  private waiters = new Map<string, Array<(ok: boolean) => void>>()
  private libp2p: Libp2p | null = null
  private readonly timers = new Set<NodeJS.Timeout>()

  constructor(private readonly init: MembershipInit) {}

  attach(libp2p: Libp2p): void {
    this.libp2p = libp2p
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    for (const list of this.waiters.values()) for (const w of list) w(false)
    this.waiters.clear()
  }

  readonly gater: ConnectionGater = {
    denyDialPeer: (peer: PeerId) => this.isRefused(peer.toString()),
    denyInboundEncryptedConnection: (peer: PeerId) => this.isRefused(peer.toString()),
    denyOutboundEncryptedConnection: (peer: PeerId) => this.isRefused(peer.toString()),
  }

  isRefused(peerId: string): boolean {
    // A revoked certificate is refused for good, connected at revocation time or not: a gater
    // that only remembered peers it hung up on let this node redial a revoked peer it was not
    // connected to, and that peer, not yet aware of the list, took the hello as proof of us.
    if (this.revoked.has(peerId)) return true
    const until = this.refused.get(peerId)
    if (until === undefined) return false
    if (until > Date.now()) return true
    this.refused.delete(peerId)
    return false
  }

  isProven(peerId: string): boolean {
    return this.proven.has(peerId)
  }

  provenPeers(): string[] {
    return [...this.proven]
  }

  noteRedeemer(peerId: string): void {
    this.redeemers.add(peerId)
  }

  get revokedPeers(): ReadonlySet<string> {
    return this.revoked
  }

  /** Applies a verified revocation list: forgets and refuses every revoked peer. */
  setRevoked(peers: string[]): void {
    this.revoked = new Set(peers)
    for (const peer of peers) {
      this.members.delete(peer)
      if (
        this.proven.has(peer) ||
        this.libp2p?.getConnections().some((c) => c.remotePeer.toString() === peer)
      )
        this.refuse(peer, 'its certificate has been revoked')
      else for (const w of this.waiters.get(peer) ?? []) w(false)
    }
  }

  /** Records a member learnt through gossip after checking its certificate. */
  async learn(peerId: string, certificate: SignedEnvelope): Promise<KnownMember> {
    const known = this.members.get(peerId)
    if (known && known.certificate.signature === certificate.signature) return known
    const cert = await verifyCertificate(certificate, this.init.meshKey, peerId, this.revoked)
    const member = { peerId, site: cert.site, certificate }
    this.members.set(peerId, member)
    return member
  }

  /** Waits up to timeoutMs for peerId to prove membership. */
  waitProven(peerId: string, timeoutMs = this.init.timeoutMs): Promise<boolean> {
    if (this.proven.has(peerId)) return Promise.resolve(true)
    if (this.isRefused(peerId)) return Promise.resolve(false)
    return new Promise((resolve) => {
      const list = this.waiters.get(peerId) ?? []
      const timer = setTimeout(() => done(false), timeoutMs)
      this.timers.add(timer)
      const done = (ok: boolean) => {
        clearTimeout(timer)
        this.timers.delete(timer)
        const rest = (this.waiters.get(peerId) ?? []).filter((w) => w !== done)
        if (rest.length) this.waiters.set(peerId, rest)
        else this.waiters.delete(peerId)
        resolve(ok)
      }
      list.push(done)
      this.waiters.set(peerId, list)
    })
  }

  /** The one shared guard: true when the connection's peer is a proven member. */
  async guard(connection: Connection): Promise<boolean> {
    return this.waitProven(connection.remotePeer.toString())
  }

  private markProven(peerId: string, cert: MembershipCertificate, certificate: SignedEnvelope): void {
    this.members.set(peerId, { peerId, site: cert.site, certificate })
    const first = !this.proven.has(peerId)
    this.proven.add(peerId)
    for (const w of this.waiters.get(peerId) ?? []) w(true)
    if (first) {
      this.init.logger.info({ peer: peerId, site: cert.site }, 'peer proved membership')
      this.init.onProven(peerId, cert)
    }
  }

  /**
   * Hangs up on a peer. A peer that showed it is not a member (a certificate that does not verify,
   * another mesh) is also refused by the gater for a while; one that was only slow or garbled is
   * just disconnected, so a loaded member is never locked out.
   */
  refuse(peerId: string, reason: string, options: { remember?: boolean } = {}): void {
    const remember = options.remember ?? true
    if (!this.isRefused(peerId))
      this.init.logger.warn(
        { peer: peerId, reason, remembered: remember },
        remember ? 'refused peer: not a member of this mesh' : 'refused peer: no membership proof',
      )
    if (remember) this.refused.set(peerId, Date.now() + REFUSED_PEER_TTL_MS)
    this.proven.delete(peerId)
    for (const w of this.waiters.get(peerId) ?? []) w(false)
    this.libp2p?.hangUp(peerIdFromString(peerId)).catch(() => {})
  }

  /** Called for every new connection: the dialler proves itself, the listener starts a deadline. */
  onConnectionOpen(connection: Connection): void {
    const peerId = connection.remotePeer.toString()
    if (this.isRefused(peerId)) {
      connection.abort(new NotMemberError(peerId, 'refused earlier'))
      return
    }
    if (connection.direction === 'outbound') {
      this.handshake(connection).catch((err) =>
        this.refuse(peerId, (err as Error).message, { remember: err instanceof NotMemberError }),
      )
      return
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      if (connection.status !== 'open' || this.proven.has(peerId)) return
      if (this.redeemers.has(peerId)) {
        connection.close().catch(() => {})
        return
      }
      this.refuse(peerId, `no membership proof within ${this.init.timeoutMs} ms`, { remember: false })
    }, this.init.timeoutMs)
    this.timers.add(timer)
  }

  onConnectionClose(connection: Connection): void {
    const peer = connection.remotePeer
    if (!this.libp2p) return
    if (this.libp2p.getConnections(peer).length === 0) this.proven.delete(peer.toString())
  }

  private async handshake(connection: Connection): Promise<void> {
    const peerId = connection.remotePeer.toString()
    const signal = AbortSignal.timeout(this.init.timeoutMs)
    const stream = await connection.newStream(MEMBERSHIP_PROTOCOL, { signal })
    try {
      const reader = new ByteReader(stream)
      await writeJsonFrame(
        stream,
        { meshId: this.init.meshId, certificate: this.init.certificate },
        { signal },
      )
      const reply = await withSignal(
        reader.expectJson(membershipReplySchema, MAX_CONTROL_FRAME_BYTES),
        signal,
      )
      if (!reply.ok) throw new NotMemberError(peerId, `it refused us (${reply.error})`)
      if (reply.meshId !== this.init.meshId)
        throw new NotMemberError(peerId, `it belongs to mesh ${reply.meshId}`)
      const cert = await verifyCertificate(reply.certificate, this.init.meshKey, peerId, this.revoked)
      this.markProven(peerId, cert, reply.certificate)
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  /** Handler of MEMBERSHIP_PROTOCOL (the listener's side of the handshake). */
  async handleHello(stream: Stream, connection: Connection): Promise<void> {
    const peerId = connection.remotePeer.toString()
    const signal = AbortSignal.timeout(this.init.timeoutMs)
    const reader = new ByteReader(stream)
    let cert: MembershipCertificate
    try {
      const hello = await withSignal(
        reader.expectJson(membershipHelloSchema, MAX_CONTROL_FRAME_BYTES),
        signal,
      )
      if (hello.meshId !== this.init.meshId)
        throw new NotMemberError(peerId, `it belongs to mesh ${hello.meshId}`)
      cert = await verifyCertificate(hello.certificate, this.init.meshKey, peerId, this.revoked)
      this.markProven(peerId, cert, hello.certificate)
    } catch (err) {
      await writeJsonFrame(stream, { ok: false, error: 'not a member of this mesh' }).catch(() => {})
      stream.abort(err as Error)
      // A proven member that sends a bad frame loses that stream only; anyone else is refused.
      if (!this.proven.has(peerId))
        this.refuse(peerId, (err as Error).message, { remember: err instanceof NotMemberError })
      else
        this.init.logger.warn(
          { protocol: MEMBERSHIP_PROTOCOL, peer: peerId, reason: (err as Error).message },
          'closed stream: malformed frame',
        )
      return
    }
    await writeJsonFrame(
      stream,
      { ok: true, meshId: this.init.meshId, certificate: this.init.certificate },
      { signal },
    )
    await stream.close({ signal }).catch(() => {})
  }
}

/** Rejects with the signal's reason if it aborts first. */
export function withSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (e) => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
}

// MeshNode: the composition of one replimesh peer (DESIGN.md §4). It owns the libp2p node, the
// membership handshake and guard, node-state gossip, liveness and reconnection, and the
// protocol registry later layers use. Flow: start() → libp2p up → every new connection runs the
// membership handshake → proven peers exchange gossip → a timer pings proven peers, redials
// known members that are not connected (with backoff) and re-evaluates every verdict, emitting
// `peer:state` when one changes.
import { EventEmitter } from 'node:events'
import type { Connection, PrivateKey, PublicKey, Stream, StreamHandlerOptions } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { type SignedEnvelope, verifyCertificate, verifyRevocationList } from './certificate.js'
import {
  DIAL_TIMEOUT_MS,
  GOSSIP_PROTOCOL,
  MEMBERSHIP_PROTOCOL,
  PROTOCOL_PREFIX,
  RECONNECT_MAX_MS,
  RECONNECT_MIN_MS,
  REDEEM_PROTOCOL,
} from './constants.js'
import { FrameError, MeshConfigError, NotMemberError } from './errors.js'
import { Gossip } from './gossip.js'
import { backoffMs, confirmedVerdict, localVerdict, type PeerLiveness, type PeerView } from './liveness.js'
import { type MeshLogger, silentLogger } from './logger.js'
import { Membership } from './membership.js'
import { handleRedeem, type Issuer } from './redeem.js'
import { meshIdOf, signEnvelope } from './signed.js'
import {
  type Capacity,
  type HeldReplica,
  NODE_STATE_KIND,
  type NodeState,
  NodeStateTable,
  type OwnedVm,
} from './state.js'
import { createTransportNode, type TransportNode } from './transport.js'

export interface MeshTiming {
  /** How often proven peers are pinged and verdicts re-evaluated. Default 2000. */
  pingIntervalMs: number
  /** A ping that takes longer counts as missed. Default 2000. */
  pingTimeoutMs: number
  /** Silence (no ping answer, no gossip) before a peer is suspect. Default 6000. */
  suspectAfterMs: number
  /** Silence before a peer is down (locally; see liveness.ts for confirmation). Default 15000. */
  downAfterMs: number
  /** How often this node publishes its state. Default 5000. */
  gossipIntervalMs: number
  /** A peer's state not refreshed for this long expires. Default 60000. */
  stateTtlMs: number
  /** A connection whose peer has not proven membership by then is closed. Default 5000. */
  membershipTimeoutMs: number
}

export const DEFAULT_TIMING: MeshTiming = {
  pingIntervalMs: 2000,
  pingTimeoutMs: 2000,
  suspectAfterMs: 6000,
  downAfterMs: 15_000,
  gossipIntervalMs: 5000,
  stateTtlMs: 60_000,
  membershipTimeoutMs: 5000,
}

export interface MeshNodeInit {
  privateKey: PrivateKey
  site: string
  meshKey: PublicKey
  /** This node's membership certificate (signed by the mesh key). */
  certificate: SignedEnvelope
  listen: string[]
  announce?: string[]
  bootstrap?: string[]
  /** mDNS on the LAN. Default true. */
  mdns?: boolean
  timing?: Partial<MeshTiming>
  /** Present on the node holding the mesh key: it redeems join tokens. */
  issuer?: Issuer
  /** The newest revocation list known (persisted by the caller). */
  revocation?: SignedEnvelope | null
  /** Called when a newer verified revocation list arrives, so the caller can persist it. */
  onRevocation?: (envelope: SignedEnvelope) => void
  capacity: () => Promise<Capacity>
  logger?: MeshLogger
}

export interface PeerStatus {
  peerId: string
  site: string
  state: PeerLiveness
  /** Sites with a node whose own view says this peer is down (failover builds quorum on it). */
  downSites: string[]
  connected: boolean
  lastSeenMs: number
  nodeState: NodeState | null
}

export interface PeerStateEvent {
  peerId: string
  site: string
  state: PeerLiveness
  previous: PeerLiveness
  downSites: string[]
}

export interface ProtocolContext {
  peerId: string
  site: string
  connection: Connection
  logger: MeshLogger
}

export type ProtocolHandler = (stream: Stream, ctx: ProtocolContext) => Promise<void>

interface Track {
  lastSeenMs: number
  state: PeerLiveness
  downSites: string[]
  dialAttempt: number
  nextDialAtMs: number
  /** This node's own verdict at the last evaluation (what its gossiped view says). */
  local?: PeerLiveness
  /** A ping to it is under way. */
  pinging?: boolean
}

export class MeshNode extends EventEmitter<{
  'peer:state': [PeerStateEvent]
  'node:state': [NodeState]
}> {
  readonly peerId: string
  readonly site: string
  readonly meshId: string
  readonly timing: MeshTiming
  private readonly log: MeshLogger
  private readonly membership: Membership
  private readonly table: NodeStateTable
  private readonly gossip: Gossip
  private readonly handlers = new Map<string, { handler: ProtocolHandler; options?: StreamHandlerOptions }>()
  private readonly tracks = new Map<string, Track>()
  private libp2p: TransportNode | null = null
  private timers: NodeJS.Timeout[] = []
  private vms: OwnedVm[] = []
  private replicas: HeldReplica[] = []
  private stateSeq = 0
  private publishQueued = false
  private bootstrapAttempt = 0
  private nextBootstrapAtMs = 0

  constructor(private readonly init: MeshNodeInit) {
    super()
    this.peerId = peerIdFromPrivateKey(init.privateKey).toString()
    this.site = init.site
    this.meshId = meshIdOf(init.meshKey)
    this.timing = { ...DEFAULT_TIMING, ...init.timing }
    this.log = (init.logger ?? silentLogger).child({ module: 'mesh' })
    this.table = new NodeStateTable(this.timing.stateTtlMs)
    this.membership = new Membership({
      meshKey: init.meshKey,
      meshId: this.meshId,
      certificate: init.certificate,
      logger: this.log,
      timeoutMs: this.timing.membershipTimeoutMs,
      onProven: (peer) => this.onProven(peer),
    })
    this.gossip = new Gossip({
      selfId: this.peerId,
      meshKey: init.meshKey,
      membership: this.membership,
      table: this.table,
      logger: this.log,
      onState: (state) => {
        const track = this.track(state.peerId)
        // Fresh gossip says the peer is up: if we are not connected, do not let an earlier run
        // of failed dials (it was still starting) keep us waiting for the long end of the backoff.
        if (!this.membership.isProven(state.peerId)) {
          track.dialAttempt = Math.min(track.dialAttempt, 3)
          track.nextDialAtMs = Math.min(
            track.nextDialAtMs,
            Date.now() + backoffMs(3, RECONNECT_MIN_MS, RECONNECT_MAX_MS),
          )
        }
        this.emit('node:state', state)
      },
      onContact: (peer) => this.seen(peer),
      onRevocation: (envelope, _seq, revoked) => {
        this.membership.setRevoked(revoked)
        for (const peer of revoked) this.tracks.delete(peer)
        this.init.onRevocation?.(envelope)
      },
    })
    this.handle(GOSSIP_PROTOCOL, (stream, ctx) => this.gossip.handle(stream, ctx.peerId))
  }

  async start(): Promise<void> {
    await verifyCertificate(this.init.certificate, this.init.meshKey, this.peerId).catch((err: Error) => {
      throw new MeshConfigError(`this node's own certificate is not valid: ${err.message}`)
    })
    if (this.init.revocation) {
      const list = await verifyRevocationList(this.init.revocation, this.init.meshKey)
      this.membership.setRevoked(list.revoked)
      this.gossip.setRevocation(this.init.revocation, list.seq)
    }
    const libp2p = await createTransportNode({
      privateKey: this.init.privateKey,
      listen: this.init.listen,
      announce: this.init.announce,
      mdns: this.init.mdns ?? true,
      mdnsServiceTag: `replimesh-${this.meshId.slice(-12).toLowerCase()}`,
      connectionGater: this.membership.gater,
    })
    this.libp2p = libp2p
    this.membership.attach(libp2p)
    this.gossip.attach(libp2p)
    libp2p.addEventListener('connection:open', (evt) => this.membership.onConnectionOpen(evt.detail))
    libp2p.addEventListener('connection:close', (evt) => this.membership.onConnectionClose(evt.detail))
    libp2p.addEventListener('peer:discovery', (evt) => {
      const id = evt.detail.id.toString()
      if (id === this.peerId || this.membership.isRefused(id) || libp2p.getConnections(evt.detail.id).length)
        return
      libp2p.dial(evt.detail.id, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) }).catch(() => {})
    })
    await libp2p.handle(MEMBERSHIP_PROTOCOL, (stream, connection) =>
      this.membership.handleHello(stream, connection).catch((err: Error) => {
        this.log.warn(
          { protocol: MEMBERSHIP_PROTOCOL, peer: connection.remotePeer.toString(), reason: err.message },
          'closed stream',
        )
        stream.abort(err)
      }),
    )
    const issuer = this.init.issuer
    if (issuer) {
      await libp2p.handle(REDEEM_PROTOCOL, (stream, connection) =>
        handleRedeem(stream, connection, {
          issuer,
          meshId: this.meshId,
          logger: this.log,
          onRedeemed: (peer) => this.membership.noteRedeemer(peer),
        }).catch((err: Error) => {
          this.log.warn(
            { protocol: REDEEM_PROTOCOL, peer: connection.remotePeer.toString(), reason: err.message },
            'closed stream',
          )
          stream.abort(err)
          if (!this.membership.isProven(connection.remotePeer.toString()))
            this.membership.refuse(connection.remotePeer.toString(), `bad redeem request: ${err.message}`)
        }),
      )
    }
    for (const [protocol, entry] of this.handlers) await this.register(protocol, entry.handler, entry.options)
    this.timers.push(setInterval(() => this.tick(), this.timing.pingIntervalMs))
    this.timers.push(setInterval(() => this.publish(), this.timing.gossipIntervalMs))
    this.log.info({ peerId: this.peerId, site: this.site, addrs: this.addrs() }, 'mesh node started')
    this.publish()
    this.tick()
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    this.membership.stop()
    await this.libp2p?.stop()
    this.libp2p = null
  }

  private get node(): TransportNode {
    if (!this.libp2p) throw new MeshConfigError('the mesh node is not started')
    return this.libp2p
  }

  /**
   * Signs `value` as `kind` with this node's private key (recovery points it produces); the
   * key never leaves the mesh. Verifiers take the public key from the peer id.
   */
  sign(kind: string, value: unknown): Promise<SignedEnvelope> {
    return signEnvelope(kind, value, this.init.privateKey)
  }

  addrs(): string[] {
    return this.libp2p?.getMultiaddrs().map((ma) => ma.toString()) ?? []
  }

  /**
   * Registers a replimesh protocol. The handler runs only for proven members; whatever it
   * throws (a FrameError for a malformed frame, most often) closes that stream and is logged.
   */
  handle(protocol: string, handler: ProtocolHandler, options?: StreamHandlerOptions): void {
    if (!protocol.startsWith(PROTOCOL_PREFIX))
      throw new MeshConfigError(`protocol ${protocol} is not /replimesh/…`)
    this.handlers.set(protocol, { handler, options })
    if (this.libp2p) this.register(protocol, handler, options).catch(() => {})
  }

  async unhandle(protocol: string): Promise<void> {
    this.handlers.delete(protocol)
    await this.libp2p?.unhandle(protocol)
  }

  /** Every replimesh protocol this node answers. */
  protocols(): string[] {
    const list = [MEMBERSHIP_PROTOCOL, ...this.handlers.keys()]
    if (this.init.issuer) list.push(REDEEM_PROTOCOL)
    return list.sort()
  }

  private async register(
    protocol: string,
    handler: ProtocolHandler,
    options?: StreamHandlerOptions,
  ): Promise<void> {
    await this.node.handle(
      protocol,
      async (stream, connection) => {
        const peerId = connection.remotePeer.toString()
        if (!(await this.membership.guard(connection))) {
          this.log.warn({ protocol, peer: peerId }, 'closed stream: peer has not proven membership')
          stream.abort(new NotMemberError(peerId, 'no membership proof'))
          return
        }
        const site = this.membership.members.get(peerId)?.site ?? '?'
        try {
          await handler(stream, {
            peerId,
            site,
            connection,
            logger: this.log.child({ protocol, peer: peerId }),
          })
        } catch (err) {
          const reason = (err as Error).message
          this.log.warn(
            { protocol, peer: peerId, reason },
            err instanceof FrameError ? 'closed stream: malformed frame' : 'closed stream: handler failed',
          )
          stream.abort(err as Error)
        }
      },
      options,
    )
  }

  /** Opens a stream to a proven member (waits a bounded time for the proof). */
  async dialProtocol(
    peerId: string,
    protocol: string,
    options: { signal?: AbortSignal } = {},
  ): Promise<Stream> {
    const signal = options.signal ?? AbortSignal.timeout(DIAL_TIMEOUT_MS)
    const id = peerIdFromString(peerId)
    if (this.node.getConnections(id).length === 0) await this.node.dial(id, { signal })
    if (!(await this.membership.waitProven(peerId)))
      throw new NotMemberError(peerId, 'it did not prove membership')
    return this.node.dialProtocol(id, protocol, { signal })
  }

  /** Dials an address by hand; resolves once the peer proved membership. */
  async connect(
    address: string,
    options: { signal?: AbortSignal } = {},
  ): Promise<{ peerId: string; site: string }> {
    const signal = options.signal ?? AbortSignal.timeout(DIAL_TIMEOUT_MS)
    const connection = await this.node.dial(multiaddr(address), { signal })
    const peerId = connection.remotePeer.toString()
    if (!(await this.membership.waitProven(peerId)))
      throw new NotMemberError(peerId, 'it did not prove membership of this mesh; refused')
    return { peerId, site: this.membership.members.get(peerId)?.site ?? '?' }
  }

  /** The VMs this node owns, as published in its state (the replication layer calls this). */
  setVms(vms: OwnedVm[]): void {
    if (JSON.stringify(vms) === JSON.stringify(this.vms)) return
    this.vms = vms
    this.queuePublish()
  }

  /** The replicas this node holds with their last committed point. */
  setReplicas(replicas: HeldReplica[]): void {
    if (JSON.stringify(replicas) === JSON.stringify(this.replicas)) return
    this.replicas = replicas
    this.queuePublish()
  }

  /** Spreads a revocation list signed by the mesh key (the `revoke` command). */
  async revoke(envelope: SignedEnvelope): Promise<void> {
    const list = await verifyRevocationList(envelope, this.init.meshKey)
    if (list.seq <= this.gossip.revocationSeq) return
    this.membership.setRevoked(list.revoked)
    for (const peer of list.revoked) this.tracks.delete(peer)
    this.gossip.publishRevocation(envelope, list.seq)
    this.init.onRevocation?.(envelope)
  }

  get revocationSeq(): number {
    return this.gossip.revocationSeq
  }

  /** Every known member but this node, with its verdict and latest state. */
  peers(): PeerStatus[] {
    const now = Date.now()
    const out: PeerStatus[] = []
    for (const [peerId, track] of this.tracks) {
      const member = this.membership.members.get(peerId)
      if (!member) continue
      out.push({
        peerId,
        site: member.site,
        state: track.state,
        downSites: track.downSites,
        connected: this.membership.isProven(peerId),
        lastSeenMs: track.lastSeenMs,
        nodeState: this.table.get(peerId, now) ?? null,
      })
    }
    return out.sort((a, b) => a.site.localeCompare(b.site) || a.peerId.localeCompare(b.peerId))
  }

  /** Fresh states of every member, this node's own included. */
  nodeStates(): NodeState[] {
    return this.table.fresh(Date.now())
  }

  private track(peerId: string): Track {
    let track = this.tracks.get(peerId)
    if (!track) {
      track = { lastSeenMs: Date.now(), state: 'alive', downSites: [], dialAttempt: 0, nextDialAtMs: 0 }
      this.tracks.set(peerId, track)
    }
    return track
  }

  private seen(peerId: string): void {
    if (peerId === this.peerId) return
    this.track(peerId).lastSeenMs = Date.now()
  }

  private onProven(peerId: string): void {
    const track = this.track(peerId)
    track.lastSeenMs = Date.now()
    track.dialAttempt = 0
    this.bootstrapAttempt = 0
    this.gossip.sendAllTo(peerId)
    this.evaluate()
  }

  private queuePublish(): void {
    if (this.publishQueued) return
    this.publishQueued = true
    setTimeout(() => {
      this.publishQueued = false
      this.publish()
    }, 50).unref()
  }

  private publish(): void {
    if (!this.libp2p) return
    this.buildState()
      .then(async (state) => {
        const envelope = await signEnvelope(NODE_STATE_KIND, state, this.init.privateKey)
        this.gossip.publishOwn(state, envelope, this.init.certificate)
      })
      .catch((err: Error) => this.log.warn({ reason: err.message }, 'could not publish node state'))
  }

  private async buildState(): Promise<NodeState> {
    const now = Date.now()
    this.stateSeq = Math.max(now, this.stateSeq + 1)
    return {
      v: 1,
      peerId: this.peerId,
      site: this.site,
      seq: this.stateSeq,
      time: now,
      addrs: this.addrs().slice(0, 32),
      capacity: await this.init.capacity(),
      vms: this.vms,
      replicas: this.replicas,
      views: [...this.tracks].map(([peerId, t]) => ({
        peerId,
        state: localVerdict(t.lastSeenMs, now, this.timing),
      })),
    }
  }

  /** One liveness round: ping proven peers, redial missing members, re-evaluate verdicts. */
  private tick(): void {
    const libp2p = this.libp2p
    if (!libp2p) return
    const now = Date.now()
    for (const [peerId, track] of this.tracks) {
      if (this.membership.isProven(peerId)) {
        const id = peerIdFromString(peerId)
        if (now - track.lastSeenMs >= this.timing.downAfterMs) {
          // Silent that long over a connection that looks open: a cut link sends no reset. Hang
          // up so the redial path (with backoff) takes over; libp2p's connection monitor, which
          // did this after one failed ping, is off (transport.ts).
          const reason = `no ping answer or gossip for ${now - track.lastSeenMs} ms`
          this.log.info({ peer: peerId, reason }, 'hanging up on a silent peer')
          for (const connection of libp2p.getConnections(id)) connection.abort(new Error(reason))
          continue
        }
        // One ping in flight per peer: libp2p's ping allows one outbound stream per connection,
        // so a second ping (pingTimeoutMs > pingIntervalMs) was refused and counted as silence.
        // On timeout @libp2p/ping aborts its stream before the promise settles, so the next ping
        // never meets a stale one.
        if (track.pinging) continue
        track.pinging = true
        libp2p.services.ping
          .ping(id, { signal: AbortSignal.timeout(this.timing.pingTimeoutMs) })
          .then(() => this.seen(peerId))
          .catch((err: Error) => this.log.debug({ peer: peerId, reason: err.message }, 'ping failed'))
          .finally(() => {
            track.pinging = false
          })
      } else if (now >= track.nextDialAtMs) {
        track.nextDialAtMs = now + backoffMs(track.dialAttempt++, RECONNECT_MIN_MS, RECONNECT_MAX_MS)
        this.redial(peerId)
      }
    }
    const bootstrap = this.init.bootstrap ?? []
    if (bootstrap.length && this.membership.provenPeers().length === 0 && now >= this.nextBootstrapAtMs) {
      this.nextBootstrapAtMs = now + backoffMs(this.bootstrapAttempt++, RECONNECT_MIN_MS, RECONNECT_MAX_MS)
      for (const address of bootstrap) {
        if (address.includes(this.peerId)) continue
        libp2p
          .dial(multiaddr(address), { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
          .catch((err: Error) => this.log.debug({ address, reason: err.message }, 'bootstrap dial failed'))
      }
    }
    this.table.prune(now)
    this.evaluate()
  }

  private redial(peerId: string): void {
    const libp2p = this.libp2p
    if (!libp2p || this.membership.isRefused(peerId)) return
    const addrs = this.table.get(peerId, Date.now())?.addrs ?? []
    const id = peerIdFromString(peerId)
    const target = addrs.length ? addrs.map((a) => multiaddr(a)) : id
    libp2p
      .dial(target, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
      .catch((err: Error) => this.log.debug({ peer: peerId, reason: err.message }, 'reconnect failed'))
  }

  private evaluate(): void {
    const now = Date.now()
    const local = new Map<string, PeerLiveness>()
    let viewChanged = false
    for (const [peerId, t] of this.tracks) {
      const verdict = localVerdict(t.lastSeenMs, now, this.timing)
      local.set(peerId, verdict)
      if (t.local !== undefined && t.local !== verdict) viewChanged = true
      t.local = verdict
    }
    // Other sites confirm a failure from this node's view: send a changed view now, not at the
    // next gossip interval (it cut up to gossipIntervalMs from detection; bench/failover.bench.ts).
    if (viewChanged) this.queuePublish()
    for (const [peerId, track] of this.tracks) {
      const member = this.membership.members.get(peerId)
      if (!member) continue
      const views: PeerView[] = []
      for (const state of this.table.fresh(now)) {
        if (state.peerId === this.peerId || state.peerId === peerId) continue
        const view = state.views.find((v) => v.peerId === peerId)
        if (!view) continue
        views.push({
          reporter: state.peerId,
          reporterSite: state.site,
          reporterAlive: local.get(state.peerId) === 'alive',
          state: view.state,
        })
      }
      const verdict = confirmedVerdict({
        local: local.get(peerId)!,
        mySite: this.site,
        targetId: peerId,
        views,
      })
      track.downSites = verdict.downSites
      if (verdict.state !== track.state) {
        const previous = track.state
        track.state = verdict.state
        this.log.info(
          { peer: peerId, site: member.site, state: verdict.state, previous, downSites: verdict.downSites },
          'peer state changed',
        )
        this.emit('peer:state', {
          peerId,
          site: member.site,
          state: verdict.state,
          previous,
          downSites: verdict.downSites,
        })
      }
    }
  }
}

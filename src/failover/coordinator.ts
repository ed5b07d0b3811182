// EpochCoordinator: this node's side of the epoch protocol (see epoch.ts for the rules). As a
// voter it answers promise/announce/query requests from its ledger, saving the ledger before it
// replies (a promise forgotten in a crash could be given twice). As a promoter, claim() asks every
// live member at once for a promise, counts the answers by site, and on quorum records and
// announces the new owner. Announcements that reach a node running the VM lead to fencing,
// through the onClaim callback the failover service supplies.
import type { ControlPeer, ControlReply, ControlRequest, ControlTransport } from './control.js'
import { type EpochClaim, EpochLedger, tallyPromises } from './epoch.js'
import { EpochQuorumError } from './errors.js'
import type { Member, QuorumOutcome } from './quorum.js'

export interface CoordinatorComponents {
  self: Member
  transport: ControlTransport
  /** Every member but this node (dead ones too: they count in their site's majority). */
  members: () => Member[]
  /** Members this node can talk to now. */
  alive: () => string[]
  /** Saves the ledger durably (the daemon writes a file atomically). */
  persist: (state: ReturnType<EpochLedger['toJSON']>) => Promise<void>
  ledger?: EpochLedger
  witness?: { peerId: string } | null
  /** Answers requests the coordinator does not own (`failover`), set by the failover service. */
  delegate?: (from: ControlPeer, req: ControlRequest) => Promise<ControlReply>
  /** Called after a newer claim was learned (fencing, replication re-pointing). */
  onClaim?: (claim: EpochClaim, from: string) => void | Promise<void>
}

export interface ClaimResult {
  claim: EpochClaim
  quorum: QuorumOutcome
  granted: string[]
  refused: Array<{ peerId: string; current: EpochClaim }>
  unreachable: Array<{ peerId: string; reason: string }>
}

export class EpochCoordinator {
  readonly ledger: EpochLedger
  /** Serialises ledger changes so every reply is given after its save. */
  private queue: Promise<unknown> = Promise.resolve()

  constructor(private readonly c: CoordinatorComponents) {
    this.ledger = c.ledger ?? new EpochLedger()
  }

  start(): void {
    this.c.transport.serve((from, req) => this.answer(from, req))
  }

  async stop(): Promise<void> {
    await this.c.transport.close()
    await this.queue.catch(() => {})
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return run
  }

  /** Routes requests the coordinator does not own (the failover service sets it). */
  setDelegate(fn: (from: ControlPeer, req: ControlRequest) => Promise<ControlReply>): void {
    this.c.delegate = fn
  }

  /** Sends one request to another member (used by the failover service to hand work over). */
  request(
    peerId: string,
    req: ControlRequest,
    options: { signal?: AbortSignal } = {},
  ): Promise<ControlReply> {
    return this.c.transport.request(peerId, req, options)
  }

  /** Answers one request from another member. */
  answer(from: ControlPeer, req: ControlRequest): Promise<ControlReply> {
    if (req.type === 'failover' || req.type === 'view') {
      if (!this.c.delegate)
        return Promise.resolve({ type: 'error', message: 'failover is not running on this node' })
      return this.c.delegate(from, req)
    }
    if (req.type === 'query') {
      const current = this.ledger.current(req.vm) ?? null
      return Promise.resolve({ type: 'known', highest: this.ledger.highest(req.vm), current })
    }
    return this.locked(async () => {
      if (req.type === 'promise') {
        const reply = this.ledger.vote(req.claim)
        if (reply.granted) await this.c.persist(this.ledger.toJSON())
        return reply.granted
          ? { type: 'granted', claim: reply.claim }
          : { type: 'refused', current: reply.current }
      }
      const result = this.ledger.learn(req.claim, req.previous)
      if (result === 'newer') {
        await this.c.persist(this.ledger.toJSON())
        await this.c.onClaim?.(req.claim, from.peerId)
      }
      return { type: 'learned', result }
    })
  }

  /**
   * Makes `owner` (this node by default) the owner of `vm` at a new epoch, above `minEpoch` and
   * all this node knows. Throws EpochQuorumError, naming who refused and who was unreachable,
   * when the promises do not form a quorum of sites.
   */
  async claim(
    vm: string,
    options: { owner?: string; minEpoch?: number; previous?: string; signal?: AbortSignal } = {},
  ): Promise<ClaimResult> {
    const owner = options.owner ?? this.c.self.peerId
    const epoch = Math.max(this.ledger.highest(vm), options.minEpoch ?? 0) + 1
    const claim: EpochClaim = { vm, epoch, owner }
    const local = await this.answer(this.c.self, { type: 'promise', claim })
    const result: ClaimResult = {
      claim,
      quorum: null as unknown as QuorumOutcome,
      granted: [],
      refused: [],
      unreachable: [],
    }
    if (local.type === 'granted') result.granted.push(this.c.self.peerId)
    else if (local.type === 'refused')
      result.refused.push({ peerId: this.c.self.peerId, current: local.current })
    const alive = new Set(this.c.alive())
    const voters = this.c.members().filter((m) => alive.has(m.peerId))
    for (const m of this.c.members())
      if (!alive.has(m.peerId))
        result.unreachable.push({ peerId: m.peerId, reason: 'not reachable from this node' })
    const witness = this.c.witness && alive.has(this.c.witness.peerId) ? this.c.witness.peerId : null
    const ask = [
      ...voters.map((m) => m.peerId),
      ...(witness && !voters.some((v) => v.peerId === witness) ? [witness] : []),
    ]
    const replies = await Promise.all(
      ask.map(async (peerId) => {
        try {
          return {
            peerId,
            reply: await this.c.transport.request(
              peerId,
              { type: 'promise', claim },
              { signal: options.signal },
            ),
          }
        } catch (err) {
          return { peerId, error: (err as Error).message }
        }
      }),
    )
    let witnessGranted = false
    for (const r of replies) {
      if ('error' in r) result.unreachable.push({ peerId: r.peerId, reason: r.error ?? 'no reply' })
      else if (r.reply.type === 'granted') {
        if (r.peerId === witness) witnessGranted = true
        result.granted.push(r.peerId)
      } else if (r.reply.type === 'refused')
        result.refused.push({ peerId: r.peerId, current: r.reply.current })
      else result.unreachable.push({ peerId: r.peerId, reason: `unexpected reply ${r.reply.type}` })
    }
    result.quorum = tallyPromises({
      members: [this.c.self, ...this.c.members()],
      granted: result.granted,
      witnessConfigured: !!this.c.witness,
      witnessGranted,
    })
    if (!result.quorum.reached)
      throw new EpochQuorumError(claim, result.quorum, result.refused, result.unreachable)
    await this.announce(claim, [...voters.map((m) => m.peerId)], {
      previous: options.previous,
      signal: options.signal,
    })
    return result
  }

  /** Records `claim` here and tells `peers` (best effort: gossip carries it to the rest). */
  async announce(
    claim: EpochClaim,
    peers: string[],
    options: { previous?: string; signal?: AbortSignal } = {},
  ): Promise<void> {
    const req: ControlRequest = {
      type: 'announce',
      claim,
      ...(options.previous ? { previous: options.previous } : {}),
    }
    await this.answer(this.c.self, req)
    await Promise.allSettled(peers.map((p) => this.c.transport.request(p, req, { signal: options.signal })))
  }
}

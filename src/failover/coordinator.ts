// EpochCoordinator: this node's side of the epoch protocol (see epoch.ts for the rules). As a
// voter it answers promise/announce/query requests from its ledger, saving the ledger before it
// replies (a promise forgotten in a crash could be given twice). As a promoter, claim() asks every
// live member at once for a promise, counts the answers by site, and on quorum records and
// announces the new owner. Announcements that reach a node running the VM lead to fencing,
// through the onClaim callback the failover service supplies.
// A claim names the exact epoch it raises from (compare-and-set): a member grants epoch e+1 only
// while the owner it knows is at epoch e and it promised e+1 to nobody else. Two nodes that place
// a failed host's VM on themselves from lagging gossip both ask for e+1; members promise it to
// whichever asked first, so at most one gathers a quorum, and the other's refusals name the
// winner (EpochLostError) instead of a later claim at e+2 overtaking it. A promoter that missed
// an announcement learns it from the refusals and, when that owner is the one it replaces, asks
// once more from the right epoch.
import type { ControlPeer, ControlReply, ControlRequest, ControlTransport } from './control.js'
import { type EpochClaim, EpochLedger, tallyPromises } from './epoch.js'
import { EpochLostError, EpochQuorumError } from './errors.js'
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
  /** The epoch the claim raised from (the owner it replaced held it). */
  from: number
  quorum: QuorumOutcome
  granted: string[]
  refused: Array<{ peerId: string; current: EpochClaim }>
  unreachable: Array<{ peerId: string; reason: string }>
}

export class EpochCoordinator {
  readonly ledger: EpochLedger
  /**
   * Serialises ledger changes per VM, so every reply is given after the save that holds it. VMs
   * are independent: a host failover claims ten at once, and saves are shared (see save()).
   */
  private readonly queues = new Map<string, Promise<unknown>>()
  /** The save running now, and the one that follows it (shared by every change made meanwhile). */
  private saving: Promise<void> | null = null
  private nextSave: Promise<void> | null = null

  constructor(private readonly c: CoordinatorComponents) {
    this.ledger = c.ledger ?? new EpochLedger()
  }

  start(): void {
    this.c.transport.serve((from, req) => this.answer(from, req))
  }

  async stop(): Promise<void> {
    await this.c.transport.close()
    await Promise.all(this.queues.values())
  }

  private locked<T>(vm: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.queues.get(vm) ?? Promise.resolve()).then(fn, fn)
    const tail = run.then(
      () => {},
      () => {},
    )
    this.queues.set(vm, tail)
    void tail.then(() => {
      if (this.queues.get(vm) === tail) this.queues.delete(vm)
    })
    return run
  }

  /**
   * Saves the ledger as it is now or later (group commit): a change waits for a save that began
   * after it, and all changes made while one save runs share the next. Saves never overlap.
   */
  private save(): Promise<void> {
    if (this.nextSave) return this.nextSave
    if (!this.saving) return this.startSave()
    const next = this.saving
      .catch(() => {})
      .then(() => {
        this.nextSave = null
        return this.startSave()
      })
    this.nextSave = next
    return next
  }

  private startSave(): Promise<void> {
    const run: Promise<void> = this.c.persist(this.ledger.toJSON()).finally(() => {
      if (this.saving === run) this.saving = null
    })
    this.saving = run
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
    return this.locked(req.claim.vm, async () => {
      if (req.type === 'promise') return this.vote(from, req)
      const result = this.ledger.learn(req.claim, req.previous)
      if (result === 'newer') {
        await this.save()
        await this.c.onClaim?.(req.claim, from.peerId)
      }
      return { type: 'learned', result }
    })
  }

  /** One promise, under the lock. With `from`, the compare-and-set rule (see the top). */
  private async vote(
    from: ControlPeer,
    req: Extract<ControlRequest, { type: 'promise' }>,
  ): Promise<ControlReply> {
    const { claim } = req
    if (req.from !== undefined) {
      // An announced owner this member missed: learn it first (as an announcement would teach it).
      const base = req.base
      if (base && base.vm === claim.vm && base.epoch === req.from && this.ledger.learn(base) === 'newer') {
        await this.save()
        await this.c.onClaim?.(base, from.peerId)
      }
      const known = this.ledger.current(claim.vm)?.epoch ?? 0
      if (claim.epoch !== req.from + 1 || known !== req.from || this.ledger.highest(claim.vm) > claim.epoch)
        return this.refusal(claim.vm)
    }
    const reply = this.ledger.vote(claim)
    if (!reply.granted) return this.refusal(claim.vm)
    await this.save()
    return { type: 'granted', claim: reply.claim }
  }

  private refusal(vm: string): ControlReply {
    const committed = this.ledger.current(vm)
    const promised = this.ledger.promise(vm)
    // The highest claim known: a promise above the announced owner, else that owner.
    const current =
      promised && promised.epoch > (committed?.epoch ?? 0)
        ? promised
        : (committed ?? promised ?? { vm, epoch: this.ledger.highest(vm), owner: 'unknown' })
    return { type: 'refused', current, ...(committed ? { committed } : {}) }
  }

  /**
   * Makes `owner` (this node by default) the owner of `vm` at the epoch after the one this node
   * knows (or `minEpoch`, when replication knows a later one). Throws EpochLostError when another
   * node was promised that epoch or owns a newer one, EpochQuorumError (naming who refused and
   * who was unreachable) when the promises do not form a quorum of sites. When the refusals show
   * an announcement this node missed and its owner is `previous` (the owner being replaced), the
   * claim is made once more from that epoch.
   */
  async claim(
    vm: string,
    options: { owner?: string; minEpoch?: number; previous?: string; signal?: AbortSignal } = {},
  ): Promise<ClaimResult> {
    try {
      return await this.claimOnce(vm, options)
    } catch (err) {
      if (!(err instanceof EpochQuorumError) || err instanceof EpochLostError) throw err
      const cur = this.ledger.current(vm)
      // Behind: the refusals taught an announcement of the owner being replaced; ask from it.
      if (!cur || cur.epoch < err.claim.epoch || cur.owner !== options.previous) throw err
      return this.claimOnce(vm, options)
    }
  }

  private async claimOnce(
    vm: string,
    options: { owner?: string; minEpoch?: number; previous?: string; signal?: AbortSignal },
  ): Promise<ClaimResult> {
    const owner = options.owner ?? this.c.self.peerId
    const current = this.ledger.current(vm)
    const from = Math.max(current?.epoch ?? 0, options.minEpoch ?? 0)
    const claim: EpochClaim = { vm, epoch: from + 1, owner }
    const req: ControlRequest = {
      type: 'promise',
      claim,
      from,
      ...(current && current.epoch === from ? { base: current } : {}),
    }
    const local = await this.answer(this.c.self, req)
    const result: ClaimResult = {
      claim,
      from,
      quorum: null as unknown as QuorumOutcome,
      granted: [],
      refused: [],
      unreachable: [],
    }
    const committedSeen: EpochClaim[] = []
    const refusedBy = (peerId: string, reply: Extract<ControlReply, { type: 'refused' }>) => {
      result.refused.push({ peerId, current: reply.current })
      if (reply.committed) committedSeen.push(reply.committed)
    }
    if (local.type === 'granted') result.granted.push(this.c.self.peerId)
    else if (local.type === 'refused') refusedBy(this.c.self.peerId, local)
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
          return { peerId, reply: await this.c.transport.request(peerId, req, { signal: options.signal }) }
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
      } else if (r.reply.type === 'refused') refusedBy(r.peerId, r.reply)
      else result.unreachable.push({ peerId: r.peerId, reason: `unexpected reply ${r.reply.type}` })
    }
    result.quorum = tallyPromises({
      members: [this.c.self, ...this.c.members()],
      granted: result.granted,
      witnessConfigured: !!this.c.witness,
      witnessGranted,
    })
    if (!result.quorum.reached) {
      await this.learnFromRefusals(committedSeen)
      const winner = lostTo(claim, result.refused, this.ledger.current(vm), options.previous)
      if (winner) throw new EpochLostError(claim, result.quorum, result.refused, result.unreachable, winner)
      throw new EpochQuorumError(claim, result.quorum, result.refused, result.unreachable)
    }
    await this.announce(claim, [...voters.map((m) => m.peerId)], {
      previous: options.previous,
      signal: options.signal,
    })
    return result
  }

  /** Announced owners the refusals showed: adopted here like any announcement. */
  private async learnFromRefusals(committed: EpochClaim[]): Promise<void> {
    const newest = new Map<string, EpochClaim>()
    for (const c of committed) if ((newest.get(c.vm)?.epoch ?? 0) < c.epoch) newest.set(c.vm, c)
    for (const c of newest.values())
      await this.answer(this.c.self, { type: 'announce', claim: c }).catch(() => undefined)
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

/**
 * Who beat `claim`: an announced owner at or above its epoch other than the one being replaced,
 * or a member's promise of that epoch (or a higher one) to another node. Null when no winner is
 * known: a quorum was out of reach, or this node was behind the owner it replaces.
 */
function lostTo(
  claim: EpochClaim,
  refused: Array<{ peerId: string; current: EpochClaim }>,
  committed: EpochClaim | undefined,
  replacing: string | undefined,
): { epoch: number; owner: string; announced: boolean } | null {
  if (committed && committed.epoch >= claim.epoch && committed.owner !== claim.owner) {
    if (committed.owner !== replacing)
      return { epoch: committed.epoch, owner: committed.owner, announced: true }
  }
  const rival = refused
    .map((r) => r.current)
    .filter(
      (c) =>
        c.epoch >= claim.epoch &&
        c.owner !== claim.owner &&
        c.owner !== 'unknown' &&
        !(committed && c.epoch === committed.epoch && c.owner === committed.owner),
    )
    .sort((a, b) => b.epoch - a.epoch)[0]
  return rival ? { epoch: rival.epoch, owner: rival.owner, announced: false } : null
}

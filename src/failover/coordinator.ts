// EpochCoordinator: this node's side of the epoch protocol (epoch.ts has the rules). Who owns
// epoch e+1 of a VM is one single-decree Paxos instance, the ledger being each member's acceptor.
// As a voter it answers prepare/accept/announce/query requests from its ledger, saving the ledger
// before it replies (a vote forgotten in a crash could be given twice); saves of many VMs are
// shared (group commit). As a proposer, claim():
// 1. takes a ballot (a round above all it saw in the instance, and its peer id), recorded with its
//    own prepare (saved before any accept carries it: a ballot never carries two owners), and
//    asks every live member at once;
// 2. on a quorum of sites of promises, proposes the owner accepted at the highest ballot among
//    them, else its own; on a quorum of accepts, announces that owner to the members. When it had
//    to propose another node's owner, it completes that node's win and throws EpochLostError
//    naming it;
// 3. refused by a higher ballot with no decided owner visible (racing proposers), it retries with
//    a higher round after a short randomized backoff, a few times, so duelling proposers converge
//    and a split vote never leaves an epoch undecidable.
// A claim names the exact epoch it raises from (compare-and-set): members vote in instance e+1
// only while the owner they know is at epoch e, so a node placing a failed host's VM from lagging
// gossip cannot overtake the owner that replaced it; refusals carry the announced owner, and a
// loser learns it (EpochLostError naming it). A promoter that missed an announcement learns it from
// the refusals and, when that owner is the one it replaces, asks once more from the right epoch.
// Announcements that reach a node running the VM lead to fencing, through the onClaim callback
// the failover service supplies.
import type { ControlPeer, ControlReply, ControlRequest, ControlTransport } from './control.js'
import {
  type AcceptedOwner,
  type Ballot,
  compareBallots,
  type EpochClaim,
  EpochLedger,
  type PhaseReply,
  tallyPromises,
} from './epoch.js'
import { EpochLostError, EpochQuorumError } from './errors.js'
import type { Member, QuorumOutcome } from './quorum.js'

/** Ballots one claim tries before it gives up (racing proposers: see the top). */
export const CLAIM_ATTEMPTS = 6
/** Backoff before retry n: random in [0, CLAIM_BACKOFF_MS * 2^n], at most CLAIM_BACKOFF_MAX_MS. */
export const CLAIM_BACKOFF_MS = 8
const CLAIM_BACKOFF_MAX_MS = 300

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
  /** Ballots per claim and the base of the randomized backoff (tests). */
  retry?: { attempts?: number; backoffMs?: number }
}

export interface ClaimResult {
  claim: EpochClaim
  /** The epoch the claim raised from (the owner it replaced held it). */
  from: number
  quorum: QuorumOutcome
  /** The members whose accepts made the quorum (phase 2). */
  granted: string[]
  refused: Array<{ peerId: string; current: EpochClaim }>
  unreachable: Array<{ peerId: string; reason: string }>
  /** Ballots this claim tried (1 when nobody raced it). */
  attempts?: number
}

type Refused = Extract<ControlReply, { type: 'refused' }>

/** The answers to one phase of one ballot. */
interface PhaseOutcome {
  granted: string[]
  quorum: QuorumOutcome
  /** Phase 1: the owners the granting members accepted earlier in the instance. */
  accepted: AcceptedOwner[]
  refused: Array<{ peerId: string; reply: Refused }>
  unreachable: Array<{ peerId: string; reason: string }>
}

/** Whom a claim asks: live members and the witness; the rest are reported unreachable. */
interface Electorate {
  ask: string[]
  witness: string | null
  down: Array<{ peerId: string; reason: string }>
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
    if (req.type === 'prepare' || req.type === 'accept') {
      const vm = req.type === 'prepare' ? req.vm : req.claim.vm
      return this.locked(vm, () => this.vote(from, req))
    }
    if (req.type !== 'announce')
      return Promise.resolve({ type: 'error', message: `unknown request ${(req as { type: string }).type}` })
    return this.locked(req.claim.vm, async () => {
      const result = this.ledger.learn(req.claim, req.previous)
      if (result === 'newer') {
        await this.save()
        await this.c.onClaim?.(req.claim, from.peerId)
      }
      return { type: 'learned', result }
    })
  }

  /** One acceptor's answer to a prepare or an accept, under the VM's lock, saved before it is given. */
  private async vote(
    from: ControlPeer,
    req: Extract<ControlRequest, { type: 'prepare' | 'accept' }>,
  ): Promise<ControlReply> {
    const vm = req.type === 'prepare' ? req.vm : req.claim.vm
    // An announced owner this member missed: learn it first (as an announcement would teach it).
    const base = req.base
    if (base && base.vm === vm && base.epoch === req.from && this.ledger.learn(base) === 'newer') {
      await this.save()
      await this.c.onClaim?.(base, from.peerId)
    }
    const r: PhaseReply =
      req.type === 'prepare'
        ? this.ledger.prepare(vm, req.epoch, req.from, req.ballot)
        : this.ledger.accept(req.claim, req.from, req.ballot)
    if (!r.ok) {
      const { ok: _, ...refusal } = r
      return { type: 'refused', ...refusal }
    }
    await this.save()
    return req.type === 'prepare'
      ? { type: 'promised', ballot: req.ballot, accepted: r.accepted }
      : { type: 'accepted', ballot: req.ballot, claim: req.claim }
  }

  /**
   * Makes `owner` (this node by default) the owner of `vm` at the epoch after the one this node
   * knows (or `minEpoch`, when replication knows a later one). Throws EpochLostError when another
   * node owns that epoch (this claim may have completed its win) or a newer one, EpochQuorumError
   * (naming who refused and who was unreachable) when no quorum of sites voted. When the refusals
   * show an announcement this node missed and its owner is `previous` (the owner being replaced),
   * the claim is made once more from that epoch.
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
    const self = this.c.self.peerId
    const owner = options.owner ?? self
    const current = this.ledger.current(vm)
    const from = Math.max(current?.epoch ?? 0, options.minEpoch ?? 0)
    const epoch = from + 1
    const claim: EpochClaim = { vm, epoch, owner }
    const base = current && current.epoch === from ? { base: { ...current } } : {}
    const electorate = this.electorate()
    const attempts = Math.max(1, this.c.retry?.attempts ?? CLAIM_ATTEMPTS)
    let atLeast = 0
    let last: PhaseOutcome
    for (let attempt = 1; ; attempt++) {
      const ballot: Ballot = { round: this.ledger.nextRound(vm, epoch, atLeast), by: self }
      const prepared = await this.phase(
        { type: 'prepare', vm, epoch, from, ballot, ...base },
        electorate,
        options,
      )
      last = prepared
      const known = await this.settled(claim, from, prepared, attempt, options, electorate.ask)
      if (known) return known
      if (prepared.quorum.reached) {
        const value = adopt(prepared.accepted) ?? owner
        const decided: EpochClaim = { vm, epoch, owner: value }
        const accepted = await this.phase(
          { type: 'accept', claim: decided, from, ballot, ...base },
          electorate,
          options,
        )
        last = accepted
        if (accepted.quorum.reached) {
          await this.announce(decided, electorate.ask, { previous: options.previous, signal: options.signal })
          const refused = refusedList(accepted)
          // Members voted for the owner this ballot had to carry, none for the claim's own.
          const none = {
            ...accepted.quorum,
            reached: false,
            votes: 0,
            agreeingSites: [],
            witnessCounted: false,
          }
          if (value !== owner)
            throw new EpochLostError(claim, none, refused, accepted.unreachable, {
              epoch,
              owner: value,
              announced: true,
            })
          return {
            claim,
            from,
            quorum: accepted.quorum,
            granted: accepted.granted,
            refused,
            unreachable: accepted.unreachable,
            attempts: attempt,
          }
        }
        const settled = await this.settled(claim, from, accepted, attempt, options, electorate.ask)
        if (settled) return settled
      }
      // Not decided at this ballot. Retry only when a higher ballot was in the way (a racing
      // proposer) and its voters, granting, could make a quorum: unreachable members won't.
      const higher = last.refused.filter((r) => r.reply.why === 'ballot' && r.reply.promised)
      const top = higher
        .map((r) => r.reply.promised as Ballot)
        .sort(compareBallots)
        .at(-1)
      const reachable = this.tally([...last.granted, ...higher.map((r) => r.peerId)], electorate.witness)
      // Aborted (the caller's deadline): give up with what this ballot learned, like running out.
      if (!top || attempt >= attempts || !reachable.reached || options.signal?.aborted) break
      atLeast = Math.max(top.round, ballot.round)
      const backoff = Math.min(
        CLAIM_BACKOFF_MAX_MS,
        (this.c.retry?.backoffMs ?? CLAIM_BACKOFF_MS) * 2 ** attempt,
      )
      if (!(await pause(Math.random() * backoff, options.signal))) break
    }
    const refused = refusedList(last)
    const rival = rivalOf(claim, refused, this.ledger.current(vm))
    if (rival) throw new EpochLostError(claim, last.quorum, refused, last.unreachable, rival)
    throw new EpochQuorumError(claim, last.quorum, refused, last.unreachable)
  }

  /**
   * After a phase: adopts the announced owners the refusals showed; when one is at the claimed
   * epoch or above, the instance is decided: the claim's own owner won (returned as won), or
   * another node did (EpochLostError), or this node was behind the owner it replaces
   * (EpochQuorumError, which claim() answers by asking from that owner's epoch). Null: undecided.
   */
  private async settled(
    claim: EpochClaim,
    from: number,
    outcome: PhaseOutcome,
    attempt: number,
    options: { previous?: string; signal?: AbortSignal },
    ask: string[],
  ): Promise<ClaimResult | null> {
    await this.learnFromRefusals(
      outcome.refused.flatMap((r) => (r.reply.committed ? [r.reply.committed] : [])),
    )
    const cur = this.ledger.current(claim.vm)
    if (!cur || cur.epoch < claim.epoch) return null
    const refused = refusedList(outcome)
    const decided = cur.epoch === claim.epoch && cur.owner === claim.owner
    if (decided || (cur.owner !== claim.owner && cur.owner !== options.previous)) {
      // This node missed that announcement, so others may have too (it was lost, or they were
      // down): it tells every member it asked that did not show it. Gossip would, later.
      const knew = new Set(
        outcome.refused
          .filter((r) => r.reply.committed?.vm === claim.vm && r.reply.committed.epoch >= cur.epoch)
          .map((r) => r.peerId),
      )
      await this.announce(
        cur,
        ask.filter((p) => !knew.has(p)),
        { signal: options.signal },
      )
    }
    if (decided)
      return {
        claim,
        from,
        quorum: outcome.quorum,
        granted: outcome.granted,
        refused,
        unreachable: outcome.unreachable,
        attempts: attempt,
      }
    if (cur.owner !== claim.owner && cur.owner !== options.previous)
      throw new EpochLostError(claim, outcome.quorum, refused, outcome.unreachable, {
        epoch: cur.epoch,
        owner: cur.owner,
        announced: true,
      })
    throw new EpochQuorumError(claim, outcome.quorum, refused, outcome.unreachable)
  }

  /** Live members and the witness, asked in every phase; the others, unreachable. */
  private electorate(): Electorate {
    const self = this.c.self.peerId
    const alive = new Set(this.c.alive())
    const members = this.c.members().filter((m) => m.peerId !== self)
    const voters = members.filter((m) => alive.has(m.peerId)).map((m) => m.peerId)
    const down = members
      .filter((m) => !alive.has(m.peerId))
      .map((m) => ({ peerId: m.peerId, reason: 'not reachable from this node' }))
    const witness = this.c.witness && alive.has(this.c.witness.peerId) ? this.c.witness.peerId : null
    return { ask: [...voters, ...(witness && !voters.includes(witness) ? [witness] : [])], witness, down }
  }

  private tally(granted: string[], witness: string | null): QuorumOutcome {
    return tallyPromises({
      members: [this.c.self, ...this.c.members().filter((m) => m.peerId !== this.c.self.peerId)],
      granted,
      witnessConfigured: !!this.c.witness,
      witnessGranted: witness !== null && granted.includes(witness),
    })
  }

  /**
   * Sends one phase's request to this node and every member it can reach at once, and counts the
   * answers. Every answer, this node's too, is in before the next phase: so this node's save of a
   * ballot's round (nextRound, with its own prepare) is durable before any accept carries the
   * ballot, and a restart never sends two owners at one ballot.
   */
  private async phase(
    req: Extract<ControlRequest, { type: 'prepare' | 'accept' }>,
    electorate: Electorate,
    options: { signal?: AbortSignal },
  ): Promise<PhaseOutcome> {
    const self = this.c.self.peerId
    const out: PhaseOutcome = {
      granted: [],
      quorum: null as unknown as QuorumOutcome,
      accepted: [],
      refused: [],
      unreachable: [...electorate.down],
    }
    const take = (peerId: string, reply: ControlReply) => {
      if (reply.type === 'promised' || reply.type === 'accepted') {
        out.granted.push(peerId)
        if (reply.type === 'promised' && reply.accepted) out.accepted.push(reply.accepted)
      } else if (reply.type === 'refused') out.refused.push({ peerId, reply })
      else out.unreachable.push({ peerId, reason: `unexpected reply ${reply.type}` })
    }
    const local = async () => {
      const reply = await this.answer(this.c.self, req)
      // A refused prepare saved nothing: save the round it used (nextRound) all the same.
      if (req.type === 'prepare' && reply.type !== 'promised') await this.save()
      return reply
    }
    const [localReply, replies] = await Promise.all([
      local(),
      Promise.all(
        electorate.ask.map(async (peerId) => {
          try {
            return { peerId, reply: await this.c.transport.request(peerId, req, { signal: options.signal }) }
          } catch (err) {
            return { peerId, error: (err as Error).message }
          }
        }),
      ),
    ])
    take(self, localReply)
    for (const r of replies) {
      if ('error' in r) out.unreachable.push({ peerId: r.peerId, reason: r.error ?? 'no reply' })
      else take(r.peerId, r.reply)
    }
    out.quorum = this.tally(out.granted, electorate.witness)
    return out
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
    await Promise.all([
      this.answer(this.c.self, req),
      Promise.allSettled(peers.map((p) => this.c.transport.request(p, req, { signal: options.signal }))),
    ])
  }
}

/**
 * The owner phase 2 must propose: the one accepted at the highest ballot among the promises.
 * Equal ballots name one owner, except LOWEST_BALLOT (promises of older ledgers): the owner most
 * of them name, then the lowest id.
 */
function adopt(accepted: AcceptedOwner[]): string | null {
  if (accepted.length === 0) return null
  const top = accepted.reduce((a, b) => (compareBallots(a.ballot, b.ballot) >= 0 ? a : b)).ballot
  const count = new Map<string, number>()
  for (const a of accepted)
    if (compareBallots(a.ballot, top) === 0) count.set(a.owner, (count.get(a.owner) ?? 0) + 1)
  return [...count].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0][0]
}

function refusedList(outcome: PhaseOutcome): Array<{ peerId: string; current: EpochClaim }> {
  return outcome.refused.map((r) => ({ peerId: r.peerId, current: r.reply.current }))
}

/**
 * When a claim gives up undecided: another owner members accepted for its epoch (or promised a
 * higher one to), not announced yet. Null when none is known: a quorum was out of reach.
 */
function rivalOf(
  claim: EpochClaim,
  refused: Array<{ peerId: string; current: EpochClaim }>,
  committed: EpochClaim | undefined,
): { epoch: number; owner: string; announced: boolean } | null {
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

/** Waits `ms`: true, or false as soon as `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false)
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer)
      resolve(false)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve(true)
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

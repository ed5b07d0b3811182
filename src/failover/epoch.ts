// Epochs and fencing (DESIGN.md §3, §6). Per VM, an epoch only rises and names one owner. Who owns
// epoch e+1 is decided by one single-decree Paxos instance among the members (coordinator.ts runs
// the proposer's side; this ledger is every member's acceptor):
// - A ballot is (round, proposer peer id), ordered by round, then id. A proposer that finds its
//   ballot beaten retries with a higher round, so a split vote is recovered, never final.
// - Phase 1 (prepare b): a member promises b when b is above every ballot it promised in that
//   instance, and replies with the (ballot, owner) it accepted there, if any. Phase 2 (accept b, v):
//   it accepts v unless it promised a higher ballot. Each answer is saved before it is given.
// - Votes count as a quorum of sites (tallyPromises): a site counts when a strict majority of its
//   members voted. Two such quorums always share a member, so once a quorum accepted (b, v), every
//   later ballot's phase 1 sees v at the highest ballot and proposes v again: one owner per epoch.
// - Compare-and-set: a request names the epoch it raises from; a member votes in instance e+1 only
//   while the owner it knows is at epoch e (a `base` claim teaches a member that missed e). Learning
//   an announced owner at e+1 or above closes the instance.
// The decided owner is then *announced*; every node that learns a higher claim for a VM it runs
// stops it and becomes a replica (fencing).
import { z } from 'zod'
import { EpochLedgerError } from './errors.js'
import type { Member, QuorumOutcome } from './quorum.js'
import { siteQuorum } from './quorum.js'

export interface EpochClaim {
  vm: string
  epoch: number
  owner: string
}

/** A Paxos ballot: ordered by round, then by the proposer's peer id (unique per proposer). */
export interface Ballot {
  round: number
  by: string
}

/** Below every real ballot: what a promise of the one-phase protocol (older ledgers) counts as. */
export const LOWEST_BALLOT: Ballot = Object.freeze({ round: 0, by: '' })

export function compareBallots(a: Ballot, b: Ballot): number {
  if (a.round !== b.round) return a.round < b.round ? -1 : 1
  return a.by < b.by ? -1 : a.by > b.by ? 1 : 0
}

/** An owner a member accepted in phase 2, at a ballot. */
export interface AcceptedOwner {
  ballot: Ballot
  owner: string
}

/** One member's state of the open instance of a VM (the epoch after the one it knows). */
export interface EpochInstance {
  vm: string
  epoch: number
  /** The highest ballot promised or accepted in this instance. */
  promised: Ballot | null
  accepted: AcceptedOwner | null
}

/** Why a member refused a prepare or accept, with what it knows. */
export interface PhaseRefusal {
  ok: false
  /**
   * `decided`: it knows an announced owner at the epoch asked or above; `behind`: it does not
   * know the epoch the request raises from; `ballot`: it promised a higher ballot.
   */
  why: 'decided' | 'behind' | 'ballot'
  /** The highest claim it knows: its announced owner, or the owner accepted in its instance. */
  current: EpochClaim
  committed?: EpochClaim
  promised?: Ballot
  accepted?: AcceptedOwner
}

export type PhaseReply = { ok: true; accepted: AcceptedOwner | null } | PhaseRefusal

export type VoteReply = { granted: true; claim: EpochClaim } | { granted: false; current: EpochClaim }

const MAX_ID = 256
const claimJson = z.object({
  vm: z.string().min(1).max(MAX_ID),
  epoch: z.number().int().positive(),
  owner: z.string().min(1).max(MAX_ID),
})
const ballotJson = z.object({ round: z.number().int().nonnegative(), by: z.string().max(MAX_ID) })
const ledgerJson = z.object({
  committed: z.array(claimJson).optional(),
  previous: z.array(z.tuple([z.string(), z.string()])).optional(),
  /** The one-phase protocol's promises (ledgers written before instances existed). */
  promised: z.array(claimJson).optional(),
  instances: z
    .array(
      z.object({
        vm: z.string().min(1).max(MAX_ID),
        epoch: z.number().int().positive(),
        promised: ballotJson.nullable(),
        accepted: z.object({ ballot: ballotJson, owner: z.string().min(1).max(MAX_ID) }).nullable(),
      }),
    )
    .optional(),
  rounds: z
    .array(z.tuple([z.string(), z.number().int().positive(), z.number().int().nonnegative()]))
    .optional(),
})

export interface EpochLedgerState {
  committed: EpochClaim[]
  previous: Array<[string, string]>
  instances: EpochInstance[]
  /** Per VM: the instance (epoch) and the highest round this node proposed in it. */
  rounds: Array<[string, number, number]>
}

/**
 * What one node remembers about every VM's epoch: the announced owners, and the acceptor's state
 * of each open instance. The daemon persists `toJSON()` before replying. Loads the ledgers of the
 * one-phase protocol too (`promised`): an old promise counts as accepted at LOWEST_BALLOT.
 */
export class EpochLedger {
  private readonly committed = new Map<string, EpochClaim>()
  private readonly open = new Map<string, EpochInstance>()
  /** Rounds this node proposed, per VM (never reused, even after a restart: see nextRound). */
  private readonly rounds = new Map<string, { epoch: number; round: number }>()
  /** The owner before the current one, per VM: where `failback` goes by default. */
  private readonly previous = new Map<string, string>()

  constructor(state?: unknown) {
    if (state === undefined || state === null) return
    const parsed = ledgerJson.safeParse(state)
    if (!parsed.success)
      throw new EpochLedgerError(
        parsed.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`),
      )
    const s = parsed.data
    for (const c of s.committed ?? []) this.committed.set(c.vm, { vm: c.vm, epoch: c.epoch, owner: c.owner })
    for (const [vm, owner] of s.previous ?? []) this.previous.set(vm, owner)
    for (const i of s.instances ?? [])
      if (i.epoch > this.known(i.vm))
        this.open.set(i.vm, { vm: i.vm, epoch: i.epoch, promised: i.promised, accepted: i.accepted })
    for (const p of s.promised ?? [])
      if (!this.open.has(p.vm) && p.epoch > this.known(p.vm))
        this.open.set(p.vm, {
          vm: p.vm,
          epoch: p.epoch,
          promised: { ...LOWEST_BALLOT },
          accepted: { ballot: { ...LOWEST_BALLOT }, owner: p.owner },
        })
    for (const [vm, epoch, round] of s.rounds ?? [])
      if (epoch > this.known(vm)) this.rounds.set(vm, { epoch, round })
  }

  private known(vm: string): number {
    return this.committed.get(vm)?.epoch ?? 0
  }

  /** The owner before the current one, if this node saw the change. */
  previousOwner(vm: string): string | undefined {
    return this.previous.get(vm)
  }

  /** Every announced owner this node knows. */
  claims(): EpochClaim[] {
    return [...this.committed.values()]
  }

  /** The newest announced owner of `vm`. */
  current(vm: string): EpochClaim | undefined {
    return this.committed.get(vm)
  }

  /** This member's state of the open instance of `vm`, if it voted in one. */
  instance(vm: string): EpochInstance | undefined {
    const i = this.open.get(vm)
    return i && { ...i, promised: i.promised && { ...i.promised }, accepted: i.accepted && { ...i.accepted } }
  }

  /** The owner this member accepted in the open instance of `vm`, as a claim (not announced). */
  promise(vm: string): EpochClaim | undefined {
    const i = this.open.get(vm)
    return i?.accepted ? { vm, epoch: i.epoch, owner: i.accepted.owner } : undefined
  }

  /** Highest epoch this node has voted in or learned for `vm` (0 if none). */
  highest(vm: string): number {
    return Math.max(this.open.get(vm)?.epoch ?? 0, this.known(vm))
  }

  /**
   * A round for this node's next ballot in instance `epoch` of `vm`: above every ballot it saw
   * there, every round it proposed there, and `atLeast`. Recorded here (so saved with the next
   * save): a ballot is never used twice, which Paxos needs (one value per ballot).
   */
  nextRound(vm: string, epoch: number, atLeast = 0): number {
    const i = this.open.get(vm)
    const mine = this.rounds.get(vm)
    const round =
      Math.max(
        atLeast,
        i?.epoch === epoch ? (i.promised?.round ?? 0) : 0,
        mine?.epoch === epoch ? mine.round : 0,
      ) + 1
    this.rounds.set(vm, { epoch, round })
    return round
  }

  /** Phase 1: promise `ballot` in instance `epoch` (raised from `from`), or refuse. */
  prepare(vm: string, epoch: number, from: number, ballot: Ballot): PhaseReply {
    const refused = this.check(vm, epoch, from)
    if (refused) return refused
    const i = this.openAt(vm, epoch)
    if (i.promised && compareBallots(ballot, i.promised) <= 0) return this.refusal(vm, epoch, 'ballot')
    i.promised = { round: ballot.round, by: ballot.by }
    return { ok: true, accepted: i.accepted && { ...i.accepted } }
  }

  /** Phase 2: accept `claim.owner` at `ballot` in instance `claim.epoch`, or refuse. */
  accept(claim: EpochClaim, from: number, ballot: Ballot): PhaseReply {
    const refused = this.check(claim.vm, claim.epoch, from)
    if (refused) return refused
    const i = this.openAt(claim.vm, claim.epoch)
    if (i.promised && compareBallots(ballot, i.promised) < 0)
      return this.refusal(claim.vm, claim.epoch, 'ballot')
    i.promised = { round: ballot.round, by: ballot.by }
    i.accepted = { ballot: { ...i.promised }, owner: claim.owner }
    return { ok: true, accepted: { ...i.accepted } }
  }

  /** The compare-and-set rule: a vote in instance from+1 only while the known owner is at `from`. */
  private check(vm: string, epoch: number, from: number): PhaseRefusal | null {
    const known = this.known(vm)
    if (known >= epoch) return this.refusal(vm, epoch, 'decided')
    if (epoch !== from + 1 || known !== from) return this.refusal(vm, epoch, 'behind')
    // An instance above the one asked (a one-phase promise of an older ledger): not this one.
    if ((this.open.get(vm)?.epoch ?? 0) > epoch) return this.refusal(vm, epoch, 'decided')
    return null
  }

  private openAt(vm: string, epoch: number): EpochInstance {
    let i = this.open.get(vm)
    if (!i || i.epoch !== epoch) {
      i = { vm, epoch, promised: null, accepted: null }
      this.open.set(vm, i)
    }
    return i
  }

  private refusal(vm: string, epoch: number, why: PhaseRefusal['why']): PhaseRefusal {
    const committed = this.committed.get(vm)
    const i = this.open.get(vm)
    const accepted = i?.accepted ? { vm, epoch: i.epoch, owner: i.accepted.owner } : undefined
    const current =
      committed && committed.epoch >= epoch
        ? committed
        : (accepted ?? committed ?? { vm, epoch: this.highest(vm), owner: 'unknown' })
    return {
      ok: false,
      why,
      current: { ...current },
      ...(committed ? { committed: { ...committed } } : {}),
      ...(i?.promised ? { promised: { ...i.promised } } : {}),
      ...(i?.accepted ? { accepted: { ballot: { ...i.accepted.ballot }, owner: i.accepted.owner } } : {}),
    }
  }

  /**
   * The one-phase vote (kept for callers that only record a promise, e.g. tests): grants an epoch
   * above all this node knows, as an owner accepted at LOWEST_BALLOT, or the same claim again.
   */
  vote(p: EpochClaim): VoteReply {
    const top = this.promise(p.vm) ?? this.committed.get(p.vm)
    if (p.epoch > this.highest(p.vm)) {
      this.open.set(p.vm, {
        vm: p.vm,
        epoch: p.epoch,
        promised: { ...LOWEST_BALLOT },
        accepted: { ballot: { ...LOWEST_BALLOT }, owner: p.owner },
      })
      return { granted: true, claim: { ...p } }
    }
    if (top && p.epoch === top.epoch && p.owner === top.owner) return { granted: true, claim: { ...top } }
    return {
      granted: false,
      current: { ...(top ?? { vm: p.vm, epoch: this.highest(p.vm), owner: 'unknown' }) },
    }
  }

  /**
   * Learns an announced claim (after its quorum). Returns `newer` when it replaced what we knew,
   * `same`, `stale` when we know a higher epoch, or `conflict` for another owner in our epoch
   * (impossible under the protocol; reported, never adopted). A newer claim closes the instances
   * at or below its epoch.
   */
  learn(c: EpochClaim, previousOwner?: string): 'newer' | 'same' | 'stale' | 'conflict' {
    const cur = this.committed.get(c.vm)
    if (cur && c.epoch < cur.epoch) return 'stale'
    if (cur && c.epoch === cur.epoch) return cur.owner === c.owner ? 'same' : 'conflict'
    const before = cur?.owner ?? previousOwner
    if (before && before !== c.owner) this.previous.set(c.vm, before)
    this.committed.set(c.vm, { vm: c.vm, epoch: c.epoch, owner: c.owner })
    if ((this.open.get(c.vm)?.epoch ?? 0) <= c.epoch) this.open.delete(c.vm)
    if ((this.rounds.get(c.vm)?.epoch ?? 0) <= c.epoch) this.rounds.delete(c.vm)
    return 'newer'
  }

  toJSON(): EpochLedgerState {
    return {
      committed: [...this.committed.values()].map((c) => ({ ...c })),
      previous: [...this.previous],
      instances: [...this.open.values()].map((i) => ({
        vm: i.vm,
        epoch: i.epoch,
        promised: i.promised && { ...i.promised },
        accepted: i.accepted && { ballot: { ...i.accepted.ballot }, owner: i.accepted.owner },
      })),
      rounds: [...this.rounds].map(([vm, r]) => [vm, r.epoch, r.round]),
    }
  }
}

/**
 * Did the members that granted `claim` form a quorum? A site counts when a strict majority of
 * its members (the failed ones included) granted; the witness, when configured, is one more vote.
 */
export function tallyPromises(input: {
  members: Member[]
  granted: Iterable<string>
  witnessConfigured?: boolean
  witnessGranted?: boolean
}): QuorumOutcome {
  const granted = new Set(input.granted)
  const perSite = new Map<string, { total: number; yes: number }>()
  for (const m of input.members) {
    const s = perSite.get(m.site) ?? { total: 0, yes: 0 }
    s.total++
    if (granted.has(m.peerId)) s.yes++
    perSite.set(m.site, s)
  }
  const agreeing = [...perSite].filter(([, s]) => s.yes * 2 > s.total).map(([site]) => site)
  return siteQuorum(
    { sites: [...perSite.keys()], witness: input.witnessConfigured ?? false },
    agreeing,
    input.witnessGranted ?? false,
  )
}

export interface LocalVmEpoch {
  /** This node's peer id. */
  self: string
  vm: string
  /** The epoch and owner this node acts on. */
  epoch: number
  owner: string
  /** The VM runs on this node now. */
  running: boolean
}

export type FenceAction =
  | { action: 'none' }
  /** We ran it, someone owns a newer epoch: stop our copy, keep its disks, become a replica. */
  | { action: 'stop-and-become-replica'; claim: EpochClaim; reason: string }
  /** Our copy is not running: record the new owner and replicate from it. */
  | { action: 'follow'; claim: EpochClaim; reason: string }
  /** Another owner in our own epoch: cannot happen with quorum; stop producing and alert. */
  | { action: 'conflict'; claim: EpochClaim; reason: string }

/** What this node must do on seeing `seen` (from gossip, an announcement, or a point's header). */
export function fenceDecision(local: LocalVmEpoch, seen: EpochClaim): FenceAction {
  if (seen.vm !== local.vm || seen.epoch < local.epoch) return { action: 'none' }
  if (seen.epoch === local.epoch) {
    if (seen.owner === local.owner) return { action: 'none' }
    return {
      action: 'conflict',
      claim: seen,
      reason: `${seen.owner} claims ${local.vm} at epoch ${seen.epoch}, which ${local.owner} owns here`,
    }
  }
  if (seen.owner === local.self) return { action: 'none' } // our own promotion, announced back to us
  const reason = `${seen.owner} owns ${local.vm} at epoch ${seen.epoch}; this node had epoch ${local.epoch}`
  return local.running
    ? { action: 'stop-and-become-replica', claim: seen, reason }
    : { action: 'follow', claim: seen, reason }
}

/**
 * May this node produce recovery points for `vm`? Only its owner may, and only while it is on
 * the quorum side: an isolated owner stops, so the side that may fail it over owns its future.
 */
export function mayProducePoints(input: {
  self: string
  claim: EpochClaim | undefined
  quorum: QuorumOutcome
}): { allowed: boolean; reason: string } {
  if (!input.claim || input.claim.owner !== input.self)
    return { allowed: false, reason: `this node does not own ${input.claim?.vm ?? 'the VM'}` }
  if (!input.quorum.reached)
    return {
      allowed: false,
      reason: `no quorum: reaches sites ${input.quorum.agreeingSites.join(', ') || 'none'} (${input.quorum.votes} of ${input.quorum.needed} votes)`,
    }
  return { allowed: true, reason: `owner at epoch ${input.claim.epoch} with quorum` }
}

// Epochs and fencing (DESIGN.md §3, §6). Per VM, an epoch only rises and names one owner. A new
// owner is made in two steps, like a Paxos round: the promoter asks every member to *promise* the
// new epoch to it (each member promises an epoch to at most one owner and never goes back), and
// proceeds only when the members that promised form a quorum of sites, each site counted when a
// strict majority of its members promised. Two such quorums always share a member, so no two
// nodes can both win one epoch. The winner then *announces* the claim; every node that learns a
// higher claim for a VM it runs stops it and becomes a replica (fencing).
import type { Member, QuorumOutcome } from './quorum.js'
import { siteQuorum } from './quorum.js'

export interface EpochClaim {
  vm: string
  epoch: number
  owner: string
}

export type VoteReply = { granted: true; claim: EpochClaim } | { granted: false; current: EpochClaim }

/** What one node remembers about every VM's epoch. The daemon persists `toJSON()` before replying. */
export class EpochLedger {
  private readonly promised = new Map<string, EpochClaim>()
  private readonly committed = new Map<string, EpochClaim>()
  /** The owner before the current one, per VM: where `failback` goes by default. */
  private readonly previous = new Map<string, string>()

  constructor(state?: {
    promised: EpochClaim[]
    committed: EpochClaim[]
    previous?: Array<[string, string]>
  }) {
    for (const c of state?.promised ?? []) this.promised.set(c.vm, c)
    for (const c of state?.committed ?? []) this.committed.set(c.vm, c)
    for (const [vm, owner] of state?.previous ?? []) this.previous.set(vm, owner)
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

  /** The newest promise this node gave for `vm`. */
  promise(vm: string): EpochClaim | undefined {
    return this.promised.get(vm)
  }

  /** Highest epoch this node has promised or learned for `vm` (0 if none). */
  highest(vm: string): number {
    return Math.max(this.promised.get(vm)?.epoch ?? 0, this.committed.get(vm)?.epoch ?? 0)
  }

  /** Answers a promotion request: grant an epoch above all we know, or the same claim again. */
  vote(p: EpochClaim): VoteReply {
    const promised = this.promised.get(p.vm)
    const committed = this.committed.get(p.vm)
    const top = [promised, committed].filter((c): c is EpochClaim => !!c).sort((a, b) => b.epoch - a.epoch)[0]
    if (!top || p.epoch > top.epoch) {
      this.promised.set(p.vm, { ...p })
      return { granted: true, claim: { ...p } }
    }
    if (p.epoch === top.epoch && p.owner === top.owner) return { granted: true, claim: { ...top } }
    return { granted: false, current: { ...top } }
  }

  /**
   * Learns an announced claim (after its quorum). Returns `newer` when it replaced what we knew,
   * `same`, `stale` when we know a higher epoch, or `conflict` for another owner in our epoch
   * (impossible under the protocol; reported, never adopted).
   */
  learn(c: EpochClaim, previousOwner?: string): 'newer' | 'same' | 'stale' | 'conflict' {
    const cur = this.committed.get(c.vm)
    if (cur && c.epoch < cur.epoch) return 'stale'
    if (cur && c.epoch === cur.epoch) return cur.owner === c.owner ? 'same' : 'conflict'
    const before = cur?.owner ?? previousOwner
    if (before && before !== c.owner) this.previous.set(c.vm, before)
    this.committed.set(c.vm, { ...c })
    return 'newer'
  }

  toJSON(): { promised: EpochClaim[]; committed: EpochClaim[]; previous: Array<[string, string]> } {
    return {
      promised: [...this.promised.values()],
      committed: [...this.committed.values()],
      previous: [...this.previous],
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

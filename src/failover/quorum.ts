// Quorum of sites (DESIGN.md §6). Every safety decision of the failover layer is a vote of sites,
// never of single links: a host is confirmed down only when a quorum of sites says so, an epoch
// rises only with a quorum of sites, and a node that cannot reach a quorum stops producing points.
//
// The rule, for the sites that have members:
// - three or more sites: a strict majority of them;
// - one or two sites: all of them, or, when a witness is configured, a strict majority of the
//   sites plus the witness (two sites + witness: one site and the witness).
// With two sites and no witness a whole-site loss cannot be told from a cut link, so it is never
// decided automatically: that is what the witness is for.
import type { PeerLiveness, PeerView } from '../mesh/index.js'

export interface QuorumRule {
  /** Every site with at least one member (the failed one included). */
  sites: string[]
  /** A witness is configured (an odd vote for meshes of fewer than three sites). */
  witness: boolean
}

export interface QuorumOutcome {
  reached: boolean
  /** Votes for (sites, plus 1 for the witness when it counts). */
  votes: number
  /** Votes needed. */
  needed: number
  /** Sites whose vote counted, sorted. */
  agreeingSites: string[]
  witnessCounted: boolean
}

/** Whether `agreeing` sites (and the witness, if it agrees) form a quorum under `rule`. */
export function siteQuorum(
  rule: QuorumRule,
  agreeing: Iterable<string>,
  witnessAgrees = false,
): QuorumOutcome {
  const all = new Set(rule.sites)
  const agreeingSites = [...new Set(agreeing)].filter((s) => all.has(s)).sort()
  const n = all.size
  if (n >= 3 || !rule.witness) {
    const needed = n >= 3 ? Math.floor(n / 2) + 1 : n
    return {
      reached: n > 0 && agreeingSites.length >= needed,
      votes: agreeingSites.length,
      needed,
      agreeingSites,
      witnessCounted: false,
    }
  }
  // One or two sites with a witness: unanimity still suffices; otherwise the witness is the odd vote.
  const witnessCounted = witnessAgrees && agreeingSites.length < n
  const votes = agreeingSites.length + (witnessCounted ? 1 : 0)
  const needed = agreeingSites.length === n ? n : Math.floor((n + 1) / 2) + 1
  return { reached: n > 0 && votes >= needed, votes, needed, agreeingSites, witnessCounted }
}

export interface Member {
  peerId: string
  site: string
}

/** The witness's answer about one target, if a witness is configured and answered. */
export interface WitnessView {
  reachable: boolean
  /** Its own view of the target; null when it has none. */
  state: PeerLiveness | null
}

export interface DownDecision {
  /** alive: nobody with a fresh view doubts it; suspect: some do, no quorum; down: confirmed. */
  state: PeerLiveness
  quorum: QuorumOutcome
  /** Sites where a live observer still sees the target alive or suspect (they block the vote). */
  dissentingSites: string[]
  /** One line for logs and notifications. */
  reason: string
}

/**
 * Is `target` confirmed down? `views` are the latest views of live members (this node's own
 * included, as a PeerView with reporterAlive true). A site votes "down" when it has at least one
 * live observer other than the target and every such observer sees the target down, so one broken
 * link inside a site never makes that site vote.
 */
export function confirmDown(input: {
  target: string
  members: Member[]
  views: PeerView[]
  witness?: WitnessView | null
  witnessConfigured?: boolean
}): DownDecision {
  const rule: QuorumRule = {
    sites: input.members.map((m) => m.site),
    witness: input.witnessConfigured ?? false,
  }
  const bySite = new Map<string, PeerLiveness[]>()
  for (const v of input.views) {
    if (!v.reporterAlive || v.reporter === input.target) continue
    const list = bySite.get(v.reporterSite) ?? []
    list.push(v.state)
    bySite.set(v.reporterSite, list)
  }
  const agreeing: string[] = []
  const dissenting: string[] = []
  for (const [site, states] of bySite) {
    if (states.every((s) => s === 'down')) agreeing.push(site)
    else dissenting.push(site)
  }
  const witnessAgrees = !!input.witness?.reachable && input.witness.state === 'down'
  const quorum = siteQuorum(rule, agreeing, witnessAgrees)
  const anyDoubt = [...bySite.values()].some((states) => states.some((s) => s !== 'alive'))
  const state: PeerLiveness = quorum.reached ? 'down' : anyDoubt ? 'suspect' : 'alive'
  const w = quorum.witnessCounted ? ' + witness' : ''
  const reason = quorum.reached
    ? `confirmed down by sites ${quorum.agreeingSites.join(', ')}${w} (${quorum.votes} of ${quorum.needed} votes needed)`
    : `not confirmed: ${quorum.votes} of ${quorum.needed} votes` +
      (dissenting.length ? `; sites ${dissenting.sort().join(', ')} still see it` : '') +
      (rule.sites.length < 3 && !rule.witness ? '; fewer than three sites and no witness' : '')
  return { state, quorum, dissentingSites: dissenting.sort(), reason }
}

/**
 * Does this node belong to the quorum side? It does when the sites it can reach (its own always;
 * another when at least one member there is alive to it) form a quorum.
 */
export function hasQuorum(input: {
  mySite: string
  members: Member[]
  alivePeers: Iterable<string>
  witnessConfigured?: boolean
  witnessReachable?: boolean
}): QuorumOutcome {
  const alive = new Set(input.alivePeers)
  const reachable = new Set([input.mySite])
  for (const m of input.members) if (alive.has(m.peerId)) reachable.add(m.site)
  const rule = {
    sites: [input.mySite, ...input.members.map((m) => m.site)],
    witness: input.witnessConfigured ?? false,
  }
  return siteQuorum(rule, reachable, input.witnessReachable ?? false)
}

// Liveness verdicts, as pure functions (STYLE.md §1). A peer is alive while it answers pings or
// sends gossip; suspect after `suspectAfterMs` of silence; down locally after `downAfterMs`.
// A local "down" is reported as down only when a node at another site agrees, if another site
// has a live member (DESIGN.md §6: one broken link must not look like a dead host). Each node
// gossips its *local* verdicts (its view), so confirmations never wait on each other.
export type PeerLiveness = 'alive' | 'suspect' | 'down'

export interface LivenessTiming {
  suspectAfterMs: number
  downAfterMs: number
}

export function localVerdict(lastSeenMs: number, nowMs: number, timing: LivenessTiming): PeerLiveness {
  const silentMs = nowMs - lastSeenMs
  if (silentMs >= timing.downAfterMs) return 'down'
  if (silentMs >= timing.suspectAfterMs) return 'suspect'
  return 'alive'
}

/** One other member's opinion of the target, from its latest gossiped view. */
export interface PeerView {
  reporter: string
  reporterSite: string
  /** Whether this node currently considers the reporter alive (a dead reporter's view is old). */
  reporterAlive: boolean
  state: PeerLiveness
}

export interface Verdict {
  state: PeerLiveness
  /** Sites with a node (this one included) whose own view says the target is down. */
  downSites: string[]
}

export function confirmedVerdict(input: {
  local: PeerLiveness
  mySite: string
  targetId: string
  views: PeerView[]
}): Verdict {
  const agreeing = input.views.filter(
    (v) => v.reporterAlive && v.reporter !== input.targetId && v.state === 'down',
  )
  const downSites = new Set(agreeing.map((v) => v.reporterSite))
  if (input.local === 'down') downSites.add(input.mySite)
  const sites = [...downSites].sort()
  if (input.local !== 'down') return { state: input.local, downSites: sites }
  const otherLiveSites = new Set(
    input.views
      .filter((v) => v.reporterAlive && v.reporter !== input.targetId && v.reporterSite !== input.mySite)
      .map((v) => v.reporterSite),
  )
  if (otherLiveSites.size === 0) return { state: 'down', downSites: sites }
  const confirmed = agreeing.some((v) => v.reporterSite !== input.mySite)
  return { state: confirmed ? 'down' : 'suspect', downSites: sites }
}

/** Exponential reconnect backoff with a cap: 0 → min, doubling, at most max. */
export function backoffMs(attempt: number, minMs: number, maxMs: number): number {
  return Math.min(maxMs, minMs * 2 ** Math.min(attempt, 20))
}

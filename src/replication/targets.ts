// Choosing where a VM's replicas go (DESIGN.md §1.4): by name, by site, or by policy ("N copies,
// at least one at another site, where there is room"). Pure: the engine passes the nodes it
// knows from gossip.
import { TargetSelectionError } from './errors.js'

export interface CandidateNode {
  peerId: string
  site: string
  state: 'alive' | 'suspect' | 'down'
  /** Free bytes for replicas, from the node's gossiped state; null when unknown. */
  freeBytes: number | null
}

export interface TargetRequest {
  self: { peerId: string; site: string }
  /** `--to PEER|SITE,...`, or null. A site stands for its best peer. */
  to: string[] | null
  /** `--copies N`, or null (then one copy, or one per `--to` entry). */
  copies: number | null
  /** Bytes a replica needs (the VM's virtual disk sizes); nodes with less free space are skipped. */
  requiredBytes: number
}

/** Peer ids of the chosen targets, in the order they should be served (the chain order). */
export function selectTargets(nodes: CandidateNode[], req: TargetRequest): string[] {
  // A suspect peer may only be slow to answer pings: usable, but ranked after alive ones.
  const candidates = nodes.filter((n) => n.peerId !== req.self.peerId && n.state !== 'down')
  const fits = (n: CandidateNode) => n.freeBytes === null || n.freeBytes >= req.requiredBytes
  const chosen: CandidateNode[] = []
  const isChosen = (n: CandidateNode) => chosen.some((c) => c.peerId === n.peerId)

  for (const name of req.to ?? []) {
    if (name === req.self.peerId)
      throw new TargetSelectionError(`'${name}' is this node; a VM cannot be its own replica target`)
    const byPeer = nodes.find((n) => n.peerId === name)
    if (byPeer) {
      if (byPeer.state === 'down') throw new TargetSelectionError(`peer ${name} is down`)
      if (!fits(byPeer))
        throw new TargetSelectionError(
          `peer ${name} has ${byPeer.freeBytes} bytes free; the replica needs ${req.requiredBytes}`,
        )
      if (!isChosen(byPeer)) chosen.push(byPeer)
      continue
    }
    const inSite = candidates.filter((n) => n.site === name)
    if (inSite.length === 0) {
      const known = nodes.some((n) => n.site === name)
      throw new TargetSelectionError(
        known ? `no alive peer in site '${name}'` : `no peer or site named '${name}'`,
      )
    }
    const best = rank(
      inSite.filter((n) => !isChosen(n) && fits(n)),
      chosen,
      req.self.site,
    )[0]
    if (!best)
      throw new TargetSelectionError(`no peer in site '${name}' has room for ${req.requiredBytes} bytes`)
    chosen.push(best)
  }

  const wanted = req.copies ?? Math.max(1, chosen.length)
  if (wanted < 1) throw new TargetSelectionError('--copies must be at least 1')
  if (chosen.length > wanted)
    throw new TargetSelectionError(`--to names ${chosen.length} targets but --copies asks for ${wanted}`)
  while (chosen.length < wanted) {
    const next = rank(
      candidates.filter((n) => !isChosen(n) && fits(n)),
      chosen,
      req.self.site,
    )[0]
    if (!next) {
      throw new TargetSelectionError(
        `only ${chosen.length} of ${wanted} copies can be placed: no other alive peer has room for ${req.requiredBytes} bytes`,
      )
    }
    chosen.push(next)
  }
  if (req.copies !== null && !chosen.some((c) => c.site !== req.self.site)) {
    throw new TargetSelectionError(
      `policy needs a copy at another site than '${req.self.site}', and no peer there is alive with room`,
    )
  }
  return chosen.map((c) => c.peerId)
}

/**
 * Best first: another site than the source while no chosen copy is off-site, then a site not
 * used yet, then known free space (most first), then peer id for a stable order.
 */
function rank(nodes: CandidateNode[], chosen: CandidateNode[], selfSite: string): CandidateNode[] {
  const haveOffsite = chosen.some((c) => c.site !== selfSite)
  const usedSites = new Set([selfSite, ...chosen.map((c) => c.site)])
  const score = (n: CandidateNode): number[] => [
    n.state === 'alive' ? 0 : 1,
    !haveOffsite && n.site !== selfSite ? 0 : 1,
    usedSites.has(n.site) ? 1 : 0,
    n.freeBytes === null ? 1 : 0,
    -(n.freeBytes ?? 0),
  ]
  return [...nodes].sort((a, b) => {
    const sa = score(a)
    const sb = score(b)
    for (let i = 0; i < sa.length; i++) if (sa[i] !== sb[i]) return sa[i] - sb[i]
    return a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0
  })
}

/** One send of a point: to a peer, which forwards it on along `forward` after committing. */
export interface RouteHop {
  to: string
  forward: string[]
}

/** Chain: the source sends to the first target only, each hop forwards. Fan-out: one send each. */
export function planRoutes(targets: string[], chain: boolean): RouteHop[] {
  if (targets.length === 0) return []
  if (chain) return [{ to: targets[0], forward: targets.slice(1) }]
  return targets.map((to) => ({ to, forward: [] }))
}

/** What a hop that just committed a point does next: forward it to the next peer, or stop. */
export function nextHop(forward: string[]): RouteHop | null {
  return forward.length === 0 ? null : { to: forward[0], forward: forward.slice(1) }
}

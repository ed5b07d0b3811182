// Capacity planning (`replimesh plan`, DESIGN.md §1.1 and §6): what would happen if each host, and
// each site, failed now. Pure: it takes the gossiped states a node sees, its failover settings and
// the clock, and runs the same placement the failover service runs (placeVms) once per scenario.
//
// Each scenario is placed twice. The first pass is the real decision (each VM's over-capacity
// policy, hubs within their ratio). The second forces every VM to "warn", so a VM the first pass
// refused still shows where it would have to go and by how much that host would be exceeded. Per
// target host the report gives what it runs, what arrives, what it may take (its free memory; a
// hub: its total times its ratio, less what it runs) and the excess. Beside the scenarios: the
// headroom of every site, VMs at risk before anything fails (no committed copy, none at another
// site, or a single copy) with their tier's RPO and RTO, and the disk each replica holder needs.
import type { FailoverConfig } from './config.js'
import {
  candidateFromState,
  type GossipedNode,
  initialRoom,
  type Placement,
  type PlacementCandidate,
  type PlacementResult,
  type PlacementVm,
  placeVms,
} from './placement.js'
import { vmTier } from './tiers.js'

/** A gossiped node state with the fields planning reads (a mesh NodeState fits). */
export interface PlanNode extends GossipedNode {
  capacity: GossipedNode['capacity'] & { diskTotalBytes?: number }
  vms: Array<GossipedNode['vms'][number] & { diskBytes?: number; epoch?: number }>
  replicas: Array<{ vm: string; lastPoint: { seq: number; time?: number } | null }>
}

export interface PlanInput {
  nodes: PlanNode[]
  /** Peers this node sees down now: never candidates, in any scenario. */
  downPeers?: string[]
  config: Pick<FailoverConfig, 'hubs' | 'vms' | 'tiers' | 'overCapacity' | 'maxVcpusPerCpu'>
  nowMs: number
  /**
   * The RPO and RTO the operator set for a VM (`protect --rpo/--rto`), by VM name: they win over
   * its tier's, which only fill in what a VM's protection does not say.
   */
  objectives?: Record<string, VmObjectives>
}

export interface VmObjectives {
  rpoMs?: number
  rtoMs?: number
}

export type PlannedStatus = 'fits' | 'hub' | 'over-capacity' | 'unplaced'

export interface PlannedVm {
  vm: string
  from: string
  fromSite: string
  memoryBytes: number
  cpus: number | null
  tier: string
  rpoMs: number
  rtoMs: number
  /** fits, hub (over-subscribed within its ratio), over-capacity (started by policy), unplaced. */
  status: PlannedStatus
  /** Where it runs next (null when unplaced). */
  to: { peerId: string; site: string; pointSeq: number } | null
  /** Data lost if it failed over now: age of the point it would start from. Null when unknown. */
  dataLossMs: number | null
  rpoBreached: boolean
  /** For an unplaced VM: where it would have to go if forced (none when nobody holds it). */
  forcedTo: { peerId: string; site: string } | null
  warning: string | null
  reason: string | null
}

export interface TargetLoad {
  peerId: string
  site: string
  hub: boolean
  memoryTotalBytes: number
  /** Memory of the VMs it runs before the failure. */
  memoryCommittedBytes: number
  /** Memory of the failed VMs placed there (forced pass: refused VMs included). */
  memoryIncomingBytes: number
  /** What it may take: its free memory, or for a hub total × ratio less what it runs. */
  memoryAllowanceBytes: number
  /** Incoming beyond its free memory but within a hub's ratio. */
  overSubscribedBytes: number
  /** Incoming beyond what it may take: the shortfall to buy or to refuse. */
  excessBytes: number
  vms: string[]
}

export interface Scenario {
  kind: 'host' | 'site'
  /** The failed peer id or site name. */
  failed: string
  hosts: string[]
  /** True when every affected VM is placed within capacity (hubs within their ratio count). */
  fits: boolean
  vms: PlannedVm[]
  targets: TargetLoad[]
}

export interface SiteHeadroom {
  site: string
  hosts: number
  hub: { maxOversubscription: number } | null
  cpus: number
  vcpusCommitted: number
  memoryTotalBytes: number
  memoryCommittedBytes: number
  /** Memory the site may still promise: free memory, or for a hub total × ratio less committed. */
  memoryHeadroomBytes: number
  diskFreeBytes: number
  diskTotalBytes: number
}

export interface VmAtRisk {
  vm: string
  owner: string
  site: string
  tier: string
  rpoMs: number
  rtoMs: number
  copies: number
  offSiteCopies: number
  /** Age of its newest committed point anywhere (null: none). */
  newestPointAgeMs: number | null
  reason: 'no committed copy' | 'no copy at another site' | 'single copy'
}

export interface ReplicaDisk {
  peerId: string
  site: string
  vms: Array<{ vm: string; diskBytes: number | null }>
  /** Sum of the virtual sizes of the VMs it holds: what full copies take at most. */
  diskNeededBytes: number
  diskFreeBytes: number
  diskTotalBytes: number | null
}

export interface CapacityPlan {
  generatedAt: number
  nodes: number
  vms: number
  sites: SiteHeadroom[]
  scenarios: Scenario[]
  atRisk: VmAtRisk[]
  replicaDisk: ReplicaDisk[]
}

interface OwnedVmRow {
  name: string
  host: string
  site: string
  state: string
  memoryBytes: number
  cpus: number | null
  diskBytes: number | null
}

/** The failover plan of the whole mesh seen through `input.nodes`. */
export function planCapacity(input: PlanInput): CapacityPlan {
  const nodes = [...input.nodes].sort(
    (a, b) => a.site.localeCompare(b.site) || a.peerId.localeCompare(b.peerId),
  )
  const owned = ownedVms(nodes)
  const times = pointTimes(nodes)
  const sites = [...new Set(nodes.map((n) => n.site))].sort()
  const scenarios: Scenario[] = [
    ...nodes.map((n) => scenario(input, nodes, times, owned, 'host', n.peerId, [n.peerId])),
    ...sites.map((s) =>
      scenario(
        input,
        nodes,
        times,
        owned,
        'site',
        s,
        nodes.filter((n) => n.site === s).map((n) => n.peerId),
      ),
    ),
  ]
  return {
    generatedAt: input.nowMs,
    nodes: nodes.length,
    vms: owned.length,
    sites: sites.map((s) =>
      siteHeadroom(
        input,
        s,
        nodes.filter((n) => n.site === s),
      ),
    ),
    scenarios,
    atRisk: atRisk(input, nodes, owned),
    replicaDisk: replicaDisk(nodes, owned),
  }
}

/**
 * Every VM once, at its owner: a failed-over VM may still be listed by its old owner (a state not
 * yet expired, or a fenced copy that has not caught up): the highest epoch wins, then the peer id.
 */
function ownedVms(nodes: PlanNode[]): OwnedVmRow[] {
  const best = new Map<string, { row: OwnedVmRow; epoch: number }>()
  for (const n of nodes)
    for (const v of n.vms) {
      const epoch = v.epoch ?? 0
      const held = best.get(v.name)
      if (held && (held.epoch > epoch || (held.epoch === epoch && held.row.host < n.peerId))) continue
      best.set(v.name, {
        epoch,
        row: {
          name: v.name,
          host: n.peerId,
          site: n.site,
          state: v.state,
          memoryBytes: v.memoryBytes ?? 0,
          cpus: v.cpus ?? null,
          diskBytes: v.diskBytes ?? null,
        },
      })
    }
  const order = new Map(nodes.map((n, i) => [n.peerId, i]))
  return [...best.values()]
    .map((b) => b.row)
    .sort((a, b) => order.get(a.host)! - order.get(b.host)! || a.name.localeCompare(b.name))
}

/** A VM's tier as failover reads it (tiers.ts), its own RPO/RTO winning over the tier's. */
function tierOf(input: Pick<PlanInput, 'config' | 'objectives'>, vm: string) {
  const { tier, priority } = vmTier(input.config, vm)
  const own = input.objectives?.[vm]
  return {
    tier: tier.name,
    rpoMs: own?.rpoMs ?? tier.rpoMs,
    rtoMs: own?.rtoMs ?? tier.rtoMs,
    priority,
  }
}

/** Placements and refusals by VM name, and the newest point time each node holds by VM. */
interface PlanIndex {
  real: Map<string, Placement>
  forced: Map<string, Placement>
  unplaced: Map<string, string>
  pointTime: Map<string, Map<string, number | undefined>>
}

const byVm = (placements: Placement[]) => new Map(placements.map((p) => [p.vm, p]))

/** Per node, the time of the newest point it holds of each VM (its first row; built once per plan). */
function pointTimes(nodes: PlanNode[]): Map<string, Map<string, number | undefined>> {
  const out = new Map<string, Map<string, number | undefined>>()
  for (const n of nodes) {
    const times = new Map<string, number | undefined>()
    for (const r of n.replicas) if (!times.has(r.vm)) times.set(r.vm, r.lastPoint?.time)
    out.set(n.peerId, times)
  }
  return out
}

function scenario(
  input: PlanInput,
  nodes: PlanNode[],
  times: Map<string, Map<string, number | undefined>>,
  owned: OwnedVmRow[],
  kind: Scenario['kind'],
  failed: string,
  hosts: string[],
): Scenario {
  const failedSet = new Set(hosts)
  const down = new Set(input.downPeers ?? [])
  const affected = owned.filter((v) => failedSet.has(v.host))
  const candidates: PlacementCandidate[] = nodes
    .filter((n) => !failedSet.has(n.peerId))
    .map((n) => ({ ...candidateFromState(n), alive: !down.has(n.peerId) }))
  const vms: PlacementVm[] = affected.map((v) => {
    const policy = input.config.vms[v.name]
    return {
      name: v.name,
      memoryBytes: v.memoryBytes,
      diskBytes: 0, // only holders of its newest point are candidates: they hold its disks
      ...(v.cpus ? { cpus: v.cpus } : {}),
      priority: tierOf(input, v.name).priority,
      ...(policy?.preferPeers ? { preferPeers: policy.preferPeers } : {}),
      ...(policy?.preferSites ? { preferSites: policy.preferSites } : {}),
      ...(policy?.avoidSites ? { avoidSites: policy.avoidSites } : {}),
      ...(policy?.overCapacity ? { overCapacity: policy.overCapacity } : {}),
    }
  })
  const common = {
    candidates,
    hubs: input.config.hubs,
    exclude: hosts,
    overCapacity: input.config.overCapacity,
    maxVcpusPerCpu: input.config.maxVcpusPerCpu,
  }
  const real = placeVms({ ...common, vms })
  const forced = placeVms({ ...common, vms: vms.map((v) => ({ ...v, overCapacity: 'warn' as const })) })
  const index: PlanIndex = {
    real: byVm(real.placements),
    forced: byVm(forced.placements),
    unplaced: new Map(real.unplaced.map((u) => [u.vm, u.reason])),
    pointTime: times,
  }
  const planned = affected.map((v) => plannedVm(input, index, v))
  return {
    kind,
    failed,
    hosts,
    fits: planned.every((p) => p.status === 'fits' || p.status === 'hub'),
    vms: planned,
    targets: targetLoads(input, candidates, affected, forced),
  }
}

function plannedVm(input: PlanInput, index: PlanIndex, v: OwnedVmRow): PlannedVm {
  const { tier, rpoMs, rtoMs } = tierOf(input, v.name)
  const p = index.real.get(v.name)
  const f = index.forced.get(v.name)
  const pointTime = p ? index.pointTime.get(p.peerId)?.get(v.name) : undefined
  const dataLossMs = pointTime === undefined ? null : Math.max(0, input.nowMs - pointTime)
  const status: PlannedStatus = !p
    ? 'unplaced'
    : p.overSubscribed
      ? 'hub'
      : p.overCapacity
        ? 'over-capacity'
        : 'fits'
  return {
    vm: v.name,
    from: v.host,
    fromSite: v.site,
    memoryBytes: v.memoryBytes,
    cpus: v.cpus,
    tier,
    rpoMs,
    rtoMs,
    status,
    to: p ? { peerId: p.peerId, site: p.site, pointSeq: p.pointSeq } : null,
    dataLossMs,
    rpoBreached: dataLossMs !== null && dataLossMs > rpoMs,
    forcedTo: !p && f ? { peerId: f.peerId, site: f.site } : null,
    warning: p?.warning ?? null,
    reason: index.unplaced.get(v.name) ?? null,
  }
}

/** Room as placement counts it (initialRoom), free memory never below zero in a report. */
function memoryRoom(c: PlacementCandidate): { committed: number; free: number } {
  const room = initialRoom(c)
  return { committed: room.promised, free: Math.max(0, room.memory) }
}

function targetLoads(
  input: PlanInput,
  candidates: PlacementCandidate[],
  affected: OwnedVmRow[],
  forced: PlacementResult,
): TargetLoad[] {
  const memory = new Map(affected.map((v) => [v.name, v.memoryBytes]))
  const arriving = new Map<string, string[]>()
  for (const p of forced.placements) arriving.set(p.peerId, [...(arriving.get(p.peerId) ?? []), p.vm])
  const out: TargetLoad[] = []
  for (const c of candidates) {
    const here = arriving.get(c.peerId) ?? []
    if (here.length === 0) continue
    const incoming = here.reduce((sum, vm) => sum + (memory.get(vm) ?? 0), 0)
    const { committed, free } = memoryRoom(c)
    const hub = input.config.hubs[c.site]
    const allowance = hub ? Math.max(0, c.memoryTotalBytes * hub.maxOversubscription - committed) : free
    out.push({
      peerId: c.peerId,
      site: c.site,
      hub: hub !== undefined,
      memoryTotalBytes: c.memoryTotalBytes,
      memoryCommittedBytes: committed,
      memoryIncomingBytes: incoming,
      memoryAllowanceBytes: allowance,
      overSubscribedBytes: hub ? Math.max(0, Math.min(incoming, allowance) - free) : 0,
      excessBytes: Math.max(0, incoming - allowance),
      vms: here,
    })
  }
  return out
}

function siteHeadroom(input: PlanInput, site: string, nodes: PlanNode[]): SiteHeadroom {
  const hub = input.config.hubs[site]
  const candidates = nodes.map(candidateFromState)
  const sum = (f: (c: PlacementCandidate) => number) => candidates.reduce((s, c) => s + f(c), 0)
  const total = sum((c) => c.memoryTotalBytes)
  const committed = sum((c) => memoryRoom(c).committed)
  return {
    site,
    hosts: nodes.length,
    hub: hub ? { maxOversubscription: hub.maxOversubscription } : null,
    cpus: sum((c) => c.cpus ?? 0),
    vcpusCommitted: sum((c) => c.vcpusCommitted ?? 0),
    memoryTotalBytes: total,
    memoryCommittedBytes: committed,
    memoryHeadroomBytes: hub
      ? Math.max(0, total * hub.maxOversubscription - committed)
      : sum((c) => memoryRoom(c).free),
    diskFreeBytes: nodes.reduce((s, n) => s + n.capacity.diskFreeBytes, 0),
    diskTotalBytes: nodes.reduce((s, n) => s + (n.capacity.diskTotalBytes ?? 0), 0),
  }
}

/** Per VM, the nodes holding a committed point of it and that point's time (when known). */
function holdersByVm(nodes: PlanNode[]): Map<string, Array<{ node: PlanNode; time: number | undefined }>> {
  const out = new Map<string, Array<{ node: PlanNode; time: number | undefined }>>()
  for (const node of nodes)
    for (const r of node.replicas) {
      if (!r.lastPoint) continue
      const list = out.get(r.vm) ?? []
      out.set(r.vm, list)
      list.push({ node, time: r.lastPoint.time })
    }
  return out
}

function atRisk(input: PlanInput, nodes: PlanNode[], owned: OwnedVmRow[]): VmAtRisk[] {
  const out: VmAtRisk[] = []
  const held = holdersByVm(nodes)
  for (const v of owned) {
    const copies = (held.get(v.name) ?? []).filter((h) => h.node.peerId !== v.host)
    const holders = [...new Set(copies.map((h) => h.node))]
    const offSite = holders.filter((n) => n.site !== v.site).length
    const reason =
      holders.length === 0
        ? 'no committed copy'
        : offSite === 0
          ? 'no copy at another site'
          : holders.length === 1
            ? 'single copy'
            : null
    if (!reason) continue
    const times = copies.flatMap((h) => (h.time === undefined ? [] : [h.time]))
    const { tier, rpoMs, rtoMs } = tierOf(input, v.name)
    out.push({
      vm: v.name,
      owner: v.host,
      site: v.site,
      tier,
      rpoMs,
      rtoMs,
      copies: holders.length,
      offSiteCopies: offSite,
      newestPointAgeMs: times.length ? Math.max(0, input.nowMs - Math.max(...times)) : null,
      reason,
    })
  }
  return out
}

function replicaDisk(nodes: PlanNode[], owned: OwnedVmRow[]): ReplicaDisk[] {
  const size = new Map(owned.map((v) => [v.name, v.diskBytes]))
  return nodes
    .filter((n) => n.replicas.length > 0)
    .map((n) => {
      const vms = n.replicas.map((r) => ({
        vm: r.vm,
        diskBytes: size.get(r.vm) ?? null,
      }))
      return {
        peerId: n.peerId,
        site: n.site,
        vms,
        diskNeededBytes: vms.reduce((s, v) => s + (v.diskBytes ?? 0), 0),
        diskFreeBytes: n.capacity.diskFreeBytes,
        diskTotalBytes: n.capacity.diskTotalBytes ?? null,
      }
    })
}

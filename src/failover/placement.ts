// Placement (DESIGN.md §6): where each VM of a failed host runs next. Only live peers holding the
// VM's newest committed point are candidates (an older point would lose more data than needed;
// the operator is told who holds what when none fits). Among them: the VM's policy (preferred
// peers, then preferred sites; avoided sites never), then room, then the most free memory left.
//
// Room comes from gossip: each node's capacity (free disk and memory, CPUs) and the size of every
// VM it runs (CPUs, memory). A host's free memory is the smaller of what its OS reports free and
// its total less the memory of the VMs it runs (a lab guest or a VM with dynamic memory may not
// have taken it yet; it will). vCPUs may be shared up to `maxVcpusPerCpu` per logical CPU; a VM
// with more vCPUs than a host has CPUs can never start there.
//
// Capacity is never exceeded silently. A site listed as a hub may promise memory up to its ratio
// of its total (remote offices failing over to a central site, deliberately), with a warning
// naming the VMs and the shortfall. Beyond that, a VM whose policy is `overCapacity: 'warn'` is
// still placed (on the holder with the most room), with an "over capacity" warning; with the
// default policy `refuse` it stays unplaced and the reason says what it needs and what is free.
// Several VMs are placed together, most important first, each taking the room it uses.

export type OverCapacityPolicy = 'refuse' | 'warn'

export interface PlacementVm {
  name: string
  memoryBytes: number
  /** Bytes the replica's disks need on the target beyond what it already holds (0 if held). */
  diskBytes: number
  /** Virtual CPUs; 0 or absent when unknown (an older node did not gossip it). */
  cpus?: number
  /** Boot priority: lower starts first and is placed first. */
  priority: number
  preferPeers?: string[]
  preferSites?: string[]
  avoidSites?: string[]
  /** What to do when no holder has room: this VM's own policy, else the input's default. */
  overCapacity?: OverCapacityPolicy
}

export interface PlacementCandidate {
  peerId: string
  site: string
  alive: boolean
  memoryFreeBytes: number
  memoryTotalBytes: number
  diskFreeBytes: number
  /** Memory of the VMs already running there (from gossip), when known. */
  memoryCommittedBytes?: number
  /** Logical CPUs of the host, when known. */
  cpus?: number
  /** vCPUs of the VMs already running there, when known. */
  vcpusCommitted?: number
  /** Newest committed point seq this peer holds, per VM name. */
  holds: Record<string, number | undefined>
}

export interface HubPolicy {
  /** Memory a hub may promise, as a multiple of its total (1.5 = 150 %). */
  maxOversubscription: number
}

export interface Placement {
  vm: string
  peerId: string
  site: string
  pointSeq: number
  /** True when it goes to a hub beyond its free memory (within the hub's ratio). */
  overSubscribed: boolean
  /** True when it goes beyond what the host can hold, because its policy says start anyway. */
  overCapacity?: boolean
  /** What the operator must know about this placement (hub or over capacity), in words. */
  warning?: string
}

export interface Unplaced {
  vm: string
  reason: string
}

export interface OverSubscription {
  peerId: string
  site: string
  vms: string[]
  memoryNeededBytes: number
  memoryFreeBytes: number
  /** `hub`: a hub within its allowed ratio; `over-capacity`: beyond what the host has. */
  kind: 'hub' | 'over-capacity'
}

export interface PlacementResult {
  placements: Placement[]
  unplaced: Unplaced[]
  /** One entry per peer and kind that was over-subscribed (notify: over-subscribed). */
  warnings: OverSubscription[]
}

/** vCPUs per logical CPU a host may carry unless the config says otherwise. */
export const DEFAULT_MAX_VCPUS_PER_CPU = 8

const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`

/** A candidate's room before anything is placed on it (placeVms's working copy starts here). */
export interface Room {
  memory: number
  disk: number
  vcpus: number
  /** Memory promised to VMs: what the hub ratio limits. */
  promised: number
}

/** Places `vms` (any order; placed by priority) on `candidates`, excluding `exclude` peers. */
export function placeVms(input: {
  vms: PlacementVm[]
  candidates: PlacementCandidate[]
  hubs?: Record<string, HubPolicy>
  exclude?: string[]
  excludeSites?: string[]
  /** Default policy for VMs that do not fit anywhere. Default `refuse`. */
  overCapacity?: OverCapacityPolicy
  /** vCPUs per logical CPU. Default DEFAULT_MAX_VCPUS_PER_CPU. */
  maxVcpusPerCpu?: number
}): PlacementResult {
  const hubs = input.hubs ?? {}
  const excluded = new Set(input.exclude ?? [])
  const excludedSites = new Set(input.excludeSites ?? [])
  const vcpuRatio = input.maxVcpusPerCpu ?? DEFAULT_MAX_VCPUS_PER_CPU
  // Working copies: free room shrinks as VMs are placed.
  const room = new Map(input.candidates.map((c) => [c.peerId, initialRoom(c)]))
  const result: PlacementResult = { placements: [], unplaced: [], warnings: [] }
  const ordered = [...input.vms].sort((a, b) => a.priority - b.priority || a.name.localeCompare(b.name))

  for (const vm of ordered) {
    const live = input.candidates.filter(
      (c) =>
        c.alive &&
        !excluded.has(c.peerId) &&
        !excludedSites.has(c.site) &&
        !(vm.avoidSites ?? []).includes(c.site) &&
        c.holds[vm.name] !== undefined,
    )
    const newest = Math.max(-1, ...live.map((c) => c.holds[vm.name]!))
    if (newest < 0) {
      result.unplaced.push({ vm: vm.name, reason: 'no live peer holds a committed point of it' })
      continue
    }
    const holders = live.filter((c) => c.holds[vm.name] === newest)
    const ranked = holders.sort(
      (a, b) =>
        rank(vm, a) - rank(vm, b) ||
        room.get(b.peerId)!.memory - room.get(a.peerId)!.memory ||
        a.peerId.localeCompare(b.peerId),
    )
    const startable = ranked.filter((c) => !c.cpus || !vm.cpus || vm.cpus <= c.cpus)
    const fits = startable.find((c) => shortfall(vm, c, room.get(c.peerId)!, vcpuRatio).length === 0)
    const hub = fits
      ? undefined
      : startable.find((c) => hubTakes(vm, c, room.get(c.peerId)!, hubs, vcpuRatio))
    const policy = vm.overCapacity ?? input.overCapacity ?? 'refuse'
    const squeezed = fits || hub || policy !== 'warn' ? undefined : startable[0]
    const chosen = fits ?? hub ?? squeezed
    if (!chosen) {
      result.unplaced.push({
        vm: vm.name,
        reason: refusal(vm, newest, ranked, startable, live, room, vcpuRatio),
      })
      continue
    }
    const r = room.get(chosen.peerId)!
    const short = shortfall(vm, chosen, r, vcpuRatio)
    const kind = hub ? 'hub' : squeezed ? 'over-capacity' : null
    if (kind) addWarning(result, chosen, vm, r, kind)
    r.memory -= vm.memoryBytes
    r.disk -= vm.diskBytes
    r.vcpus += vm.cpus ?? 0
    r.promised += vm.memoryBytes
    result.placements.push({
      vm: vm.name,
      peerId: chosen.peerId,
      site: chosen.site,
      pointSeq: newest,
      overSubscribed: kind === 'hub',
      ...(kind === 'over-capacity' ? { overCapacity: true } : {}),
      ...(kind === 'hub'
        ? { warning: `hub site ${chosen.site} over-subscribed: ${short.join(', ')}` }
        : kind === 'over-capacity'
          ? { warning: `over capacity on ${chosen.peerId}: ${short.join(', ')}; started anyway by policy` }
          : {}),
    })
  }
  return result
}

/**
 * Room on `c` as placement counts it: free memory is the smaller of what its OS reports free and
 * its total less the memory of the VMs it runs (may be negative: they were promised more than it
 * has); `promised` is the memory of those VMs (total less free when gossip does not say).
 */
export function initialRoom(c: PlacementCandidate): Room {
  const committed = c.memoryCommittedBytes
  const memory =
    committed === undefined ? c.memoryFreeBytes : Math.min(c.memoryFreeBytes, c.memoryTotalBytes - committed)
  return {
    memory,
    disk: c.diskFreeBytes,
    vcpus: c.vcpusCommitted ?? 0,
    promised: committed ?? c.memoryTotalBytes - c.memoryFreeBytes,
  }
}

/** What `vm` lacks on `c` given its room now; empty when it fits. */
function shortfall(vm: PlacementVm, c: PlacementCandidate, r: Room, vcpuRatio: number): string[] {
  const out: string[] = []
  if (r.memory < vm.memoryBytes)
    out.push(`needs ${gib(vm.memoryBytes)} memory, ${gib(Math.max(0, r.memory))} free`)
  if (r.disk < vm.diskBytes) out.push(`needs ${gib(vm.diskBytes)} disk, ${gib(Math.max(0, r.disk))} free`)
  if (c.cpus && vm.cpus && r.vcpus + vm.cpus > c.cpus * vcpuRatio)
    out.push(`${r.vcpus + vm.cpus} vCPUs on ${c.cpus} CPUs exceeds ${vcpuRatio} per CPU`)
  return out
}

/** A hub may take it beyond its free memory, up to its ratio; disk and vCPUs must still fit. */
function hubTakes(
  vm: PlacementVm,
  c: PlacementCandidate,
  r: Room,
  hubs: Record<string, HubPolicy>,
  vcpuRatio: number,
): boolean {
  const policy = hubs[c.site]
  if (!policy) return false
  const others = shortfall(vm, c, { ...r, memory: Number.POSITIVE_INFINITY }, vcpuRatio)
  return others.length === 0 && r.promised + vm.memoryBytes <= c.memoryTotalBytes * policy.maxOversubscription
}

function addWarning(
  result: PlacementResult,
  c: PlacementCandidate,
  vm: PlacementVm,
  r: Room,
  kind: OverSubscription['kind'],
): void {
  let w = result.warnings.find((x) => x.peerId === c.peerId && x.kind === kind)
  if (!w) {
    w = {
      peerId: c.peerId,
      site: c.site,
      vms: [],
      memoryNeededBytes: 0,
      memoryFreeBytes: Math.max(0, r.memory),
      kind,
    }
    result.warnings.push(w)
  }
  w.vms.push(vm.name)
  w.memoryNeededBytes += vm.memoryBytes
}

function refusal(
  vm: PlacementVm,
  newest: number,
  ranked: PlacementCandidate[],
  startable: PlacementCandidate[],
  live: PlacementCandidate[],
  room: Map<string, Room>,
  vcpuRatio: number,
): string {
  const older = live
    .filter((c) => c.holds[vm.name]! < newest)
    .map((c) => `${c.peerId} (point ${c.holds[vm.name]})`)
  const olderText = older.length ? `; older points on ${older.join(', ')}` : ''
  if (startable.length === 0) {
    const best = ranked[0]
    return `no holder of point ${newest} can start it: ${vm.name} has ${vm.cpus} vCPUs, ${best.peerId} has ${best.cpus} CPUs${olderText}`
  }
  const best = startable[0]
  const r = room.get(best.peerId)!
  return (
    `no holder of point ${newest} has room: ${vm.name} needs ${gib(vm.memoryBytes)} memory and ${gib(vm.diskBytes)} disk, ` +
    `best is ${best.peerId} with ${gib(Math.max(0, r.memory))} and ${gib(Math.max(0, r.disk))} free` +
    ` (${shortfall(vm, best, r, vcpuRatio).join('; ')}); refused: its over-capacity policy is refuse` +
    olderText
  )
}

/** 0: a preferred peer, 1: at a preferred site, 2: anywhere else. */
function rank(vm: PlacementVm, c: PlacementCandidate): number {
  if (vm.preferPeers?.includes(c.peerId)) return 0
  if (vm.preferSites?.includes(c.site)) return 1
  return 2
}

/** The gossiped facts placement uses (a NodeState's fields; kept structural to stay pure). */
export interface GossipedNode {
  peerId: string
  site: string
  capacity: { diskFreeBytes: number; cpus: number; memoryTotalBytes: number; memoryFreeBytes: number }
  vms: Array<{ name: string; state: string; cpus?: number; memoryBytes?: number }>
  replicas: Array<{ vm: string; lastPoint: { seq: number } | null }>
}

/** A live node's gossiped state as a placement candidate: its room less the VMs it runs. */
export function candidateFromState(s: GossipedNode): PlacementCandidate {
  const running = s.vms.filter((v) => v.state === 'running')
  return {
    peerId: s.peerId,
    site: s.site,
    alive: true,
    memoryFreeBytes: s.capacity.memoryFreeBytes,
    memoryTotalBytes: s.capacity.memoryTotalBytes,
    diskFreeBytes: s.capacity.diskFreeBytes,
    memoryCommittedBytes: running.reduce((sum, v) => sum + (v.memoryBytes ?? 0), 0),
    cpus: s.capacity.cpus,
    vcpusCommitted: running.reduce((sum, v) => sum + (v.cpus ?? 0), 0),
    holds: Object.fromEntries(s.replicas.filter((r) => r.lastPoint).map((r) => [r.vm, r.lastPoint!.seq])),
  }
}

/**
 * A failed host's VM as gossiped: its memory and CPUs. Disk counts 0: only holders of its newest
 * point are candidates, and they hold its disks already.
 */
export function vmSizeFromState(v: { memoryBytes?: number; cpus?: number }): {
  memoryBytes: number
  diskBytes: number
  cpus?: number
} {
  return { memoryBytes: v.memoryBytes ?? 0, diskBytes: 0, ...(v.cpus ? { cpus: v.cpus } : {}) }
}

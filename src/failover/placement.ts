// Placement (DESIGN.md §6): where each VM of a failed host runs next. Only live peers holding the
// VM's newest committed point are candidates (an older point would lose more data than needed;
// the operator is told who holds what when none fits). Among them: the VM's policy (preferred
// peers, then preferred sites; avoided sites never), then room, then the most free memory left.
// Memory and disk are never over-committed, except on a hub site that allows it up to a stated
// ratio of its total memory, and then with a warning naming the VMs and the shortfall.
// Several VMs are placed together, most important first, each taking the room it uses.

export interface PlacementVm {
  name: string
  memoryBytes: number
  /** Bytes the replica's disks need on the target beyond what it already holds (0 if held). */
  diskBytes: number
  /** Boot priority: lower starts first and is placed first. */
  priority: number
  preferPeers?: string[]
  preferSites?: string[]
  avoidSites?: string[]
}

export interface PlacementCandidate {
  peerId: string
  site: string
  alive: boolean
  memoryFreeBytes: number
  memoryTotalBytes: number
  diskFreeBytes: number
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
  /** True when it goes to a hub beyond its free memory. */
  overSubscribed: boolean
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
}

export interface PlacementResult {
  placements: Placement[]
  unplaced: Unplaced[]
  /** One entry per hub peer that was over-subscribed (notify: over-subscribed). */
  warnings: OverSubscription[]
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`

/** Places `vms` (any order; placed by priority) on `candidates`, excluding `exclude` peers. */
export function placeVms(input: {
  vms: PlacementVm[]
  candidates: PlacementCandidate[]
  hubs?: Record<string, HubPolicy>
  exclude?: string[]
  excludeSites?: string[]
}): PlacementResult {
  const hubs = input.hubs ?? {}
  const excluded = new Set(input.exclude ?? [])
  const excludedSites = new Set(input.excludeSites ?? [])
  // Working copies: free room shrinks as VMs are placed.
  const room = new Map(
    input.candidates.map((c) => [c.peerId, { memory: c.memoryFreeBytes, disk: c.diskFreeBytes }]),
  )
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
        freeAfter(room, b) - freeAfter(room, a) ||
        a.peerId.localeCompare(b.peerId),
    )
    const fits = ranked.find(
      (c) => room.get(c.peerId)!.memory >= vm.memoryBytes && room.get(c.peerId)!.disk >= vm.diskBytes,
    )
    const hub = fits
      ? undefined
      : ranked.find((c) => {
          const policy = hubs[c.site]
          if (!policy) return false
          const r = room.get(c.peerId)!
          const promisedAfter = c.memoryTotalBytes - r.memory + vm.memoryBytes
          return r.disk >= vm.diskBytes && promisedAfter <= c.memoryTotalBytes * policy.maxOversubscription
        })
    const chosen = fits ?? hub
    if (!chosen) {
      const best = ranked[0]
      const r = room.get(best.peerId)!
      const older = live
        .filter((c) => c.holds[vm.name]! < newest)
        .map((c) => `${c.peerId} (point ${c.holds[vm.name]})`)
      result.unplaced.push({
        vm: vm.name,
        reason:
          `no holder of point ${newest} has room: ${vm.name} needs ${gib(vm.memoryBytes)} memory and ${gib(vm.diskBytes)} disk, ` +
          `best is ${best.peerId} with ${gib(r.memory)} and ${gib(r.disk)} free` +
          (older.length ? `; older points on ${older.join(', ')}` : ''),
      })
      continue
    }
    const r = room.get(chosen.peerId)!
    const overSubscribed = r.memory < vm.memoryBytes
    if (overSubscribed) {
      let w = result.warnings.find((x) => x.peerId === chosen.peerId)
      if (!w) {
        w = {
          peerId: chosen.peerId,
          site: chosen.site,
          vms: [],
          memoryNeededBytes: 0,
          memoryFreeBytes: Math.max(0, r.memory),
        }
        result.warnings.push(w)
      }
      w.vms.push(vm.name)
      w.memoryNeededBytes += vm.memoryBytes
    }
    r.memory -= vm.memoryBytes
    r.disk -= vm.diskBytes
    result.placements.push({
      vm: vm.name,
      peerId: chosen.peerId,
      site: chosen.site,
      pointSeq: newest,
      overSubscribed,
    })
  }
  return result
}

/** 0: a preferred peer, 1: at a preferred site, 2: anywhere else. */
function rank(vm: PlacementVm, c: PlacementCandidate): number {
  if (vm.preferPeers?.includes(c.peerId)) return 0
  if (vm.preferSites?.includes(c.site)) return 1
  return 2
}

function freeAfter(room: Map<string, { memory: number }>, c: PlacementCandidate): number {
  return room.get(c.peerId)!.memory
}

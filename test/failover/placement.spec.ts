// Placement among holders of the newest point: policy, room, site; hubs over-subscribed only
// deliberately and with a warning; never silently over-committed.
import { describe, expect, it } from 'vitest'
import {
  candidateFromState,
  messages,
  type PlacementCandidate,
  type PlacementVm,
  parseFailoverConfig,
  placeVms,
  vmSizeFromState,
} from '../../src/failover/index.js'

const G = 2 ** 30
const peer = (
  peerId: string,
  site: string,
  memoryFreeGiB: number,
  holds: Record<string, number>,
  extra: Partial<PlacementCandidate> = {},
): PlacementCandidate => ({
  peerId,
  site,
  alive: true,
  memoryFreeBytes: memoryFreeGiB * G,
  memoryTotalBytes: 64 * G,
  diskFreeBytes: 1000 * G,
  holds,
  ...extra,
})
const vm = (name: string, memoryGiB: number, extra: Partial<PlacementVm> = {}): PlacementVm => ({
  name,
  memoryBytes: memoryGiB * G,
  diskBytes: 0,
  priority: 100,
  ...extra,
})

describe('placeVms', () => {
  it.each([
    [
      'only holders of the newest point are candidates',
      [vm('w', 4)],
      [peer('a1', 'A', 60, { w: 7 }), peer('c1', 'C', 8, { w: 9 })],
      { w: 'c1' },
    ],
    [
      'a preferred peer wins over more room',
      [vm('w', 4, { preferPeers: ['c2'] })],
      [peer('c1', 'C', 60, { w: 9 }), peer('c2', 'C', 8, { w: 9 })],
      { w: 'c2' },
    ],
    [
      'a preferred site wins over more room',
      [vm('w', 4, { preferSites: ['D'] })],
      [peer('c1', 'C', 60, { w: 9 }), peer('d1', 'D', 8, { w: 9 })],
      { w: 'd1' },
    ],
    [
      'avoided sites are never used',
      [vm('w', 4, { avoidSites: ['C'] })],
      [peer('c1', 'C', 60, { w: 9 }), peer('d1', 'D', 8, { w: 8 })],
      { w: 'd1' },
    ],
    [
      'most free memory among equals',
      [vm('w', 4)],
      [peer('c1', 'C', 10, { w: 9 }), peer('d1', 'D', 30, { w: 9 })],
      { w: 'd1' },
    ],
    [
      'a preferred peer without room is passed over',
      [vm('w', 16, { preferPeers: ['c1'] })],
      [peer('c1', 'C', 8, { w: 9 }), peer('d1', 'D', 30, { w: 9 })],
      { w: 'd1' },
    ],
    [
      'dead peers and the failed site are excluded',
      [vm('w', 4)],
      [
        peer('b2', 'B', 60, { w: 9 }),
        peer('c1', 'C', 60, { w: 9 }, { alive: false }),
        peer('d1', 'D', 6, { w: 9 }),
      ],
      { w: 'd1' },
    ],
  ] as const)('%s', (_, vms, candidates, expected) => {
    const r = placeVms({ vms: [...vms], candidates: [...candidates], excludeSites: ['B'] })
    expect(Object.fromEntries(r.placements.map((p) => [p.vm, p.peerId]))).toEqual(expected)
    expect(r.unplaced).toEqual([])
    expect(r.warnings).toEqual([])
  })

  it('places several VMs by priority, each taking the room it uses', () => {
    const r = placeVms({
      vms: [vm('app', 8, { priority: 20 }), vm('db', 8, { priority: 10 }), vm('web', 8, { priority: 30 })],
      candidates: [peer('c1', 'C', 12, { app: 1, db: 1, web: 1 }), peer('d1', 'D', 10, { app: 1, db: 1 })],
    })
    expect(r.placements.map((p) => [p.vm, p.peerId])).toEqual([
      ['db', 'c1'],
      ['app', 'd1'],
    ])
    expect(r.unplaced).toEqual([
      {
        vm: 'web',
        reason: expect.stringMatching(/^no holder of point 1 has room: web needs 8\.0 GiB memory/),
      },
    ])
  })

  it('never over-commits a host that is not a hub, and says who holds older points', () => {
    const r = placeVms({
      vms: [vm('w', 16)],
      candidates: [peer('c1', 'C', 8, { w: 9 }), peer('d1', 'D', 60, { w: 8 })],
    })
    expect(r.placements).toEqual([])
    expect(r.unplaced[0].reason).toContain('best is c1 with 8.0 GiB')
    expect(r.unplaced[0].reason).toContain('older points on d1 (point 8)')
  })

  it('over-subscribes a hub deliberately, up to its ratio, with one warning per hub', () => {
    const hubs = { HQ: { maxOversubscription: 1.25 } }
    const candidates = [peer('hq1', 'HQ', 4, { r1: 3, r2: 5, r3: 2 })] // 60 of 64 GiB promised
    const r = placeVms({ vms: [vm('r1', 8), vm('r2', 8), vm('r3', 8)], candidates, hubs })
    // 64 * 1.25 = 80 GiB may be promised: 60 + 8 + 8 = 76 fits, a third VM (84) does not.
    expect(r.placements.map((p) => [p.vm, p.overSubscribed])).toEqual([
      ['r1', true],
      ['r2', true],
    ])
    expect(r.warnings).toEqual([
      {
        peerId: 'hq1',
        site: 'HQ',
        vms: ['r1', 'r2'],
        memoryNeededBytes: 16 * G,
        memoryFreeBytes: 4 * G,
        kind: 'hub',
      },
    ])
    expect(r.placements[0].warning).toBe('hub site HQ over-subscribed: needs 8.0 GiB memory, 4.0 GiB free')
    expect(r.unplaced.map((u) => u.vm)).toEqual(['r3'])
  })

  it('prefers a host with room over over-subscribing a hub', () => {
    const r = placeVms({
      vms: [vm('r1', 8)],
      candidates: [peer('hq1', 'HQ', 4, { r1: 3 }), peer('d1', 'D', 20, { r1: 3 })],
      hubs: { HQ: { maxOversubscription: 2 } },
    })
    expect(r.placements).toEqual([{ vm: 'r1', peerId: 'd1', site: 'D', pointSeq: 3, overSubscribed: false }])
  })

  it('reports VMs no live peer holds', () => {
    const r = placeVms({ vms: [vm('lost', 1)], candidates: [peer('c1', 'C', 60, {})] })
    expect(r.unplaced).toEqual([{ vm: 'lost', reason: 'no live peer holds a committed point of it' }])
  })

  it('checks disk room too', () => {
    const r = placeVms({
      vms: [vm('w', 1, { diskBytes: 500 * G })],
      candidates: [peer('c1', 'C', 60, { w: 1 }, { diskFreeBytes: 100 * G }), peer('d1', 'D', 2, { w: 1 })],
    })
    expect(r.placements.map((p) => p.peerId)).toEqual(['d1'])
  })

  it('counts the memory of VMs already running on a host, not only what its OS reports free', () => {
    // c1's OS reports 40 GiB free (its guests have not touched their memory yet), but 60 of its
    // 64 GiB are promised to running VMs: 4 GiB of room.
    const r = placeVms({
      vms: [vm('w', 8)],
      candidates: [
        peer('c1', 'C', 40, { w: 2 }, { memoryCommittedBytes: 60 * G }),
        peer('d1', 'D', 10, { w: 2 }, { memoryCommittedBytes: 0 }),
      ],
    })
    expect(r.placements.map((p) => p.peerId)).toEqual(['d1'])
  })

  it('never places two VMs where only one fits, and says why the second stays down', () => {
    const r = placeVms({
      vms: [vm('a', 6, { priority: 1 }), vm('b', 6, { priority: 2 })],
      candidates: [peer('c1', 'C', 10, { a: 4, b: 4 })],
    })
    expect(r.placements.map((p) => p.vm)).toEqual(['a'])
    expect(r.warnings).toEqual([])
    expect(r.unplaced).toEqual([
      {
        vm: 'b',
        reason:
          'no holder of point 4 has room: b needs 6.0 GiB memory and 0.0 GiB disk, best is c1 with 4.0 GiB and ' +
          '1000.0 GiB free (needs 6.0 GiB memory, 4.0 GiB free); refused: its over-capacity policy is refuse',
      },
    ])
  })

  it('starts a VM over capacity when its policy says so, with an over-capacity warning', () => {
    const candidates = [peer('c1', 'C', 10, { a: 4, b: 4 }), peer('d1', 'D', 3, { b: 4 })]
    const vms = [vm('a', 6, { priority: 1 }), vm('b', 6, { priority: 2 })]
    const r = placeVms({ vms, candidates, overCapacity: 'warn' })
    // b goes to the holder with the most room left: c1 has 4 GiB after a, d1 has 3.
    expect(r.placements).toEqual([
      { vm: 'a', peerId: 'c1', site: 'C', pointSeq: 4, overSubscribed: false },
      {
        vm: 'b',
        peerId: 'c1',
        site: 'C',
        pointSeq: 4,
        overSubscribed: false,
        overCapacity: true,
        warning: 'over capacity on c1: needs 6.0 GiB memory, 4.0 GiB free; started anyway by policy',
      },
    ])
    expect(r.warnings).toEqual([
      {
        peerId: 'c1',
        site: 'C',
        vms: ['b'],
        memoryNeededBytes: 6 * G,
        memoryFreeBytes: 4 * G,
        kind: 'over-capacity',
      },
    ])
    expect(r.unplaced).toEqual([])
  })

  it("a VM's own policy overrides the mesh default", () => {
    const candidates = [peer('c1', 'C', 2, { a: 1, b: 1 })]
    const r = placeVms({
      vms: [vm('a', 4, { overCapacity: 'refuse' }), vm('b', 4, { overCapacity: 'warn' })],
      candidates,
      overCapacity: 'warn',
    })
    expect(r.placements.map((p) => [p.vm, p.overCapacity])).toEqual([['b', true]])
    expect(r.unplaced.map((u) => u.vm)).toEqual(['a'])
  })

  it('a hub allowing 3x memory takes remote offices up to three times its total, then refuses', () => {
    const hubs = { HQ: { maxOversubscription: 3 } }
    // 16 GiB total, 8 GiB already promised to its own VMs: 48 - 8 = 40 GiB may still be promised.
    const hq = peer('hq1', 'HQ', 8, {}, { memoryTotalBytes: 16 * G, memoryCommittedBytes: 8 * G })
    hq.holds = Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`r${i}`, 1]))
    const vms = Array.from({ length: 6 }, (_, i) => vm(`r${i}`, 8, { priority: i }))
    const r = placeVms({ vms, candidates: [hq], hubs })
    // r0 fits in the 8 GiB free; r1..r5 are promised on top: 16 + 32 = 48 GiB = 3 x 16.
    expect(r.placements.map((p) => [p.vm, p.overSubscribed])).toEqual([
      ['r0', false],
      ['r1', true],
      ['r2', true],
      ['r3', true],
      ['r4', true],
    ])
    expect(r.unplaced.map((u) => u.vm)).toEqual(['r5'])
    expect(r.warnings).toMatchObject([{ peerId: 'hq1', kind: 'hub', vms: ['r1', 'r2', 'r3', 'r4'] }])
  })

  it('never starts a VM on a host with fewer CPUs than its vCPUs, whatever the policy', () => {
    const r = placeVms({
      vms: [vm('big', 1, { cpus: 16, overCapacity: 'warn' })],
      candidates: [
        peer('c1', 'C', 60, { big: 1 }, { cpus: 8 }),
        peer('d1', 'D', 2, { big: 1 }, { cpus: 32 }),
      ],
    })
    expect(r.placements.map((p) => p.peerId)).toEqual(['d1'])
    const none = placeVms({
      vms: [vm('big', 1, { cpus: 16, overCapacity: 'warn' })],
      candidates: [peer('c1', 'C', 60, { big: 1 }, { cpus: 8 })],
    })
    expect(none.unplaced[0].reason).toBe('no holder of point 1 can start it: big has 16 vCPUs, c1 has 8 CPUs')
  })

  it('shares CPUs up to maxVcpusPerCpu', () => {
    const c1 = peer('c1', 'C', 60, { a: 1, b: 1 }, { cpus: 2, vcpusCommitted: 2 })
    const r = placeVms({
      vms: [vm('a', 1, { cpus: 2 }), vm('b', 1, { cpus: 2 })],
      candidates: [c1],
      maxVcpusPerCpu: 3,
    })
    // 2 + 2 = 4 of 6 fits; + 2 = 6 fits; a third would not.
    expect(r.placements.map((p) => p.vm)).toEqual(['a', 'b'])
    const tight = placeVms({
      vms: [vm('a', 1, { cpus: 2 }), vm('b', 1, { cpus: 2 })],
      candidates: [c1],
      maxVcpusPerCpu: 2,
    })
    expect(tight.placements.map((p) => p.vm)).toEqual(['a'])
    expect(tight.unplaced[0].reason).toContain('6 vCPUs on 2 CPUs exceeds 2 per CPU')
  })

  it('reads candidates and VM sizes from gossiped node states', () => {
    const c = candidateFromState({
      peerId: 'c1',
      site: 'C',
      capacity: { diskFreeBytes: 100 * G, cpus: 4, memoryTotalBytes: 32 * G, memoryFreeBytes: 30 * G },
      vms: [
        { name: 'run', state: 'running', cpus: 2, memoryBytes: 8 * G },
        { name: 'off', state: 'stopped', cpus: 8, memoryBytes: 16 * G },
        { name: 'old', state: 'running' },
      ],
      replicas: [
        { vm: 'w', lastPoint: { seq: 7 } },
        { vm: 'seeding', lastPoint: null },
      ],
    })
    expect(c).toEqual({
      peerId: 'c1',
      site: 'C',
      alive: true,
      memoryFreeBytes: 30 * G,
      memoryTotalBytes: 32 * G,
      diskFreeBytes: 100 * G,
      memoryCommittedBytes: 8 * G,
      cpus: 4,
      vcpusCommitted: 2,
      holds: { w: 7 },
    })
    expect(vmSizeFromState({ cpus: 2, memoryBytes: 4 * G })).toEqual({
      memoryBytes: 4 * G,
      diskBytes: 0,
      cpus: 2,
    })
    expect(vmSizeFromState({})).toEqual({ memoryBytes: 0, diskBytes: 0 })
  })

  it('config: over-capacity policy defaults to refuse, per VM overrides, hubs up to 4x', () => {
    const c = parseFailoverConfig({
      hubs: { HQ: { maxOversubscription: 3 } },
      vms: { db: { overCapacity: 'warn' } },
    })
    expect(c.overCapacity).toBe('refuse')
    expect(c.maxVcpusPerCpu).toBe(8)
    expect(c.vms.db.overCapacity).toBe('warn')
    expect(c.hubs.HQ.maxOversubscription).toBe(3)
    expect(() => parseFailoverConfig({ overCapacity: 'maybe' })).toThrow(/overCapacity/)
    expect(() => parseFailoverConfig({ hubs: { HQ: { maxOversubscription: 5 } } })).toThrow(
      /maxOversubscription/,
    )
  })

  it('the over-capacity notification says the host is over capacity and why it was done', () => {
    const n = messages.overSubscribed(
      { node: 'a1', time: 1 },
      {
        peer: 'c1',
        site: 'C',
        vms: ['b'],
        memoryNeededBytes: 6 * G,
        memoryFreeBytes: 4 * G,
        kind: 'over-capacity',
      },
    )
    expect(n).toMatchObject({ kind: 'over-subscribed', severity: 'error', title: 'Host c1 is over capacity' })
    expect(n.done).toContain('over-capacity policy is warn')
    const hub = messages.overSubscribed(
      { node: 'a1', time: 1 },
      { peer: 'hq1', site: 'HQ', vms: ['r1'], memoryNeededBytes: 8 * G, memoryFreeBytes: 4 * G },
    )
    expect(hub).toMatchObject({ severity: 'warning', title: 'Hub hq1 runs more than it has room for' })
  })
})

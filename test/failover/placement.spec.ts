// Placement among holders of the newest point: policy, room, site; hubs over-subscribed only
// deliberately and with a warning; never silently over-committed.
import { describe, expect, it } from 'vitest'
import { type PlacementCandidate, type PlacementVm, placeVms } from '../../src/failover/index.js'

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
      { peerId: 'hq1', site: 'HQ', vms: ['r1', 'r2'], memoryNeededBytes: 16 * G, memoryFreeBytes: 4 * G },
    ])
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
})

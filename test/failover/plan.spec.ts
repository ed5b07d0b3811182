// Capacity planning over a handcrafted mesh: a hub (HQ, 16 GiB, may promise 1.5×) protecting three
// branch offices. Each scenario runs the real placement; the expected outcomes are worked out by
// hand below from the sizes, not from the code.
import { describe, expect, it } from 'vitest'
import { type PlanNode, parseFailoverConfig, planCapacity, type Scenario } from '../../src/failover/index.js'

const G = 2 ** 30
const NOW = 1_800_000_000_000

interface VmSpec {
  name: string
  memGiB: number
  diskGiB?: number
}

function node(
  peerId: string,
  site: string,
  totalGiB: number,
  freeGiB: number,
  vms: VmSpec[],
  holds: Array<[vm: string, seq: number, ageMs: number]>,
): PlanNode {
  return {
    peerId,
    site,
    capacity: {
      cpus: 16,
      memoryTotalBytes: totalGiB * G,
      memoryFreeBytes: freeGiB * G,
      diskFreeBytes: 500 * G,
      diskTotalBytes: 1000 * G,
    },
    vms: vms.map((v) => ({
      name: v.name,
      state: 'running',
      cpus: 2,
      memoryBytes: v.memGiB * G,
      diskBytes: (v.diskGiB ?? 10) * G,
    })),
    replicas: holds.map(([vm, seq, ageMs]) => ({ vm, lastPoint: { seq, time: NOW - ageMs } })),
  }
}

// HQ runs 2 GiB of its own and holds every branch VM. Room: min(14 free, 16 − 2) = 14 GiB; as a
// hub it may promise 1.5 × 16 = 24 GiB, 2 of which it runs: 22 GiB allowance.
const nodes: PlanNode[] = [
  node(
    'hq1',
    'HQ',
    16,
    14,
    [{ name: 'hq-app', memGiB: 2 }],
    [
      ['b1-web', 7, 3000],
      ['b1-db', 7, 3000],
      ['b2-app', 4, 2000],
      ['b2-big', 4, 2000],
      ['b3-a', 9, 1000],
      ['b3-b', 9, 1000],
    ],
  ),
  node(
    'b1',
    'B1',
    32,
    20,
    [
      { name: 'b1-web', memGiB: 8, diskGiB: 40 },
      { name: 'b1-db', memGiB: 4, diskGiB: 20 },
    ],
    [['hq-app', 3, 10_000]],
  ),
  node(
    'b2',
    'B2',
    32,
    14,
    [
      { name: 'b2-app', memGiB: 6 },
      { name: 'b2-big', memGiB: 12 },
    ],
    [],
  ),
  node(
    'b3',
    'B3',
    32,
    6,
    [
      { name: 'b3-a', memGiB: 10 },
      { name: 'b3-b', memGiB: 16 },
      { name: 'b3-scratch', memGiB: 1 },
    ],
    [],
  ),
]

const config = parseFailoverConfig({
  hubs: { HQ: { maxOversubscription: 1.5 } },
  vms: { 'hq-app': { tier: 'gold' } },
})
const plan = planCapacity({ nodes, config, nowMs: NOW })
const site = (name: string): Scenario => plan.scenarios.find((s) => s.kind === 'site' && s.failed === name)!
const placedOn = (s: Scenario) => Object.fromEntries(s.vms.map((v) => [v.vm, v.to?.peerId ?? null]))

describe('planCapacity', () => {
  it('has one scenario per host and per site, with the hosts each takes down', () => {
    expect(plan.scenarios.map((s) => `${s.kind}:${s.failed}`)).toEqual([
      'host:b1',
      'host:b2',
      'host:b3',
      'host:hq1',
      'site:B1',
      'site:B2',
      'site:B3',
      'site:HQ',
    ])
    expect(site('B2').hosts).toEqual(['b2'])
    expect(plan.nodes).toBe(4)
    expect(plan.vms).toBe(8)
  })

  it('a branch failure that fits in the hub’s free memory: 8 + 4 GiB into 14 GiB', () => {
    const s = site('B1')
    expect(s.fits).toBe(true)
    expect(placedOn(s)).toEqual({ 'b1-web': 'hq1', 'b1-db': 'hq1' })
    expect(s.vms.map((v) => v.status)).toEqual(['fits', 'fits'])
    expect(s.vms.every((v) => v.to?.pointSeq === 7 && v.dataLossMs === 3000 && !v.rpoBreached)).toBe(true)
    expect(s.targets).toEqual([
      expect.objectContaining({ peerId: 'hq1', hub: true, memoryIncomingBytes: 12 * G, excessBytes: 0 }),
    ])
    expect(s.targets[0].overSubscribedBytes).toBe(0)
  })

  it('the hub over-subscribed within its ratio: 6 + 12 GiB, 4 GiB beyond its free 14, within 22', () => {
    const s = site('B2')
    expect(s.fits).toBe(true)
    expect(placedOn(s)).toEqual({ 'b2-app': 'hq1', 'b2-big': 'hq1' })
    const big = s.vms.find((v) => v.vm === 'b2-big')!
    expect(big.status).toBe('hub')
    expect(big.warning).toMatch(/hub site HQ over-subscribed/)
    expect(s.vms.find((v) => v.vm === 'b2-app')!.status).toBe('fits')
    expect(s.targets[0]).toMatchObject({
      memoryCommittedBytes: 2 * G,
      memoryIncomingBytes: 18 * G,
      memoryAllowanceBytes: 22 * G,
      overSubscribedBytes: 4 * G,
      excessBytes: 0,
    })
  })

  it('beyond the hub’s ratio: the VM that does not fit is named, with where it would go and the excess', () => {
    const s = site('B3')
    expect(s.fits).toBe(false)
    const byName = Object.fromEntries(s.vms.map((v) => [v.vm, v]))
    expect(byName['b3-a'].status).toBe('fits')
    expect(byName['b3-b']).toMatchObject({
      status: 'unplaced',
      to: null,
      forcedTo: { peerId: 'hq1', site: 'HQ' },
    })
    expect(byName['b3-b'].reason).toMatch(/no holder of point 9 has room/)
    // Nobody holds b3-scratch: unplaced, and forcing cannot place it either.
    expect(byName['b3-scratch']).toMatchObject({ status: 'unplaced', forcedTo: null })
    expect(byName['b3-scratch'].reason).toMatch(/no live peer holds a committed point/)
    // 10 + 16 = 26 GiB would arrive where 22 may: 4 GiB short.
    expect(s.targets[0]).toMatchObject({ peerId: 'hq1', memoryIncomingBytes: 26 * G, excessBytes: 4 * G })
  })

  it('the hub’s own failure goes to the branch holding its VM, with the loss past the gold RPO', () => {
    const s = site('HQ')
    expect(placedOn(s)).toEqual({ 'hq-app': 'b1' })
    expect(s.vms[0]).toMatchObject({ tier: 'gold', rpoMs: 5000, dataLossMs: 10_000, rpoBreached: true })
    expect(s.fits).toBe(true)
  })

  it('a VM listed by its old owner too counts once, at the owner of the highest epoch', () => {
    const moved = nodes.map((n) =>
      n.peerId === 'hq1'
        ? {
            ...n,
            vms: [...n.vms, { name: 'b1-web', state: 'running', cpus: 2, memoryBytes: 8 * G, epoch: 2 }],
          }
        : n,
    )
    const p = planCapacity({ nodes: moved, config, nowMs: NOW })
    expect(p.vms).toBe(8)
    expect(p.scenarios.find((s) => s.kind === 'site' && s.failed === 'B1')!.vms.map((v) => v.vm)).toEqual([
      'b1-db',
    ])
    expect(p.scenarios.find((s) => s.kind === 'site' && s.failed === 'HQ')!.vms.map((v) => v.vm)).toEqual([
      'b1-web',
      'hq-app',
    ])
  })

  it('a peer seen down is no candidate in any scenario', () => {
    const withHqDown = planCapacity({ nodes, config, nowMs: NOW, downPeers: ['hq1'] })
    const s = withHqDown.scenarios.find((x) => x.kind === 'site' && x.failed === 'B1')!
    expect(s.vms.map((v) => v.status)).toEqual(['unplaced', 'unplaced'])
  })

  it('headroom per site counts the hub’s ratio', () => {
    const hq = plan.sites.find((x) => x.site === 'HQ')!
    expect(hq).toMatchObject({ hub: { maxOversubscription: 1.5 }, memoryCommittedBytes: 2 * G })
    expect(hq.memoryHeadroomBytes).toBe(22 * G)
    const b3 = plan.sites.find((x) => x.site === 'B3')!
    expect(b3).toMatchObject({ hub: null, memoryCommittedBytes: 27 * G, memoryHeadroomBytes: 5 * G })
  })

  it('names VMs at risk: single copies and the unprotected one', () => {
    const risk = Object.fromEntries(plan.atRisk.map((r) => [r.vm, r.reason]))
    expect(risk['b3-scratch']).toBe('no committed copy')
    expect(risk['b1-web']).toBe('single copy')
    expect(risk['hq-app']).toBe('single copy')
    expect(plan.atRisk.find((r) => r.vm === 'hq-app')).toMatchObject({
      rpoMs: 5000,
      newestPointAgeMs: 10_000,
    })
  })

  it('disk each replica holder needs: the virtual sizes of what it holds', () => {
    const hq = plan.replicaDisk.find((d) => d.peerId === 'hq1')!
    expect(hq.diskNeededBytes).toBe((40 + 20 + 10 * 4) * G)
    expect(plan.replicaDisk.find((d) => d.peerId === 'b1')!.diskNeededBytes).toBe(10 * G)
  })
})

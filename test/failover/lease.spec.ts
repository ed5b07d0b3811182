// The owner lease: its length from the mesh timing (and the inequality refused at load), the pure
// verdict over last contacts, and the lease's actions with a recording hypervisor: an isolated
// owner turns off the VMs another site could promote, and on quorum's return either stays a
// replica of a newer owner or restarts the VM after winning a new epoch.
import { describe, expect, it, vi } from 'vitest'
import {
  EpochLedger,
  EpochQuorumError,
  FailoverConfigError,
  type Notification,
  parseFailoverConfig,
} from '../../src/failover/index.js'
import {
  LEASE_STOP_BUDGET_MS,
  leaseVerdict,
  OwnerLease,
  promotionDelayMs,
  resolveLeaseMs,
} from '../../src/failover/lease.js'
import type { NodeState } from '../../src/mesh/index.js'
import { FakeHypervisor, vmInfo } from './helpers.js'

const FAST = { downAfterMs: 3000, pingIntervalMs: 500 }
const DEFAULT = { downAfterMs: 15_000, pingIntervalMs: 2000 }

describe('lease length', () => {
  it('is by default downAfterMs; failovers then wait for it to run out and the stop to end', () => {
    expect(resolveLeaseMs(null, FAST, 250)).toBe(3000)
    expect(resolveLeaseMs(null, DEFAULT, 250)).toBe(15_000)
    expect(promotionDelayMs(3000, FAST, 250)).toBe(500 + 250 + LEASE_STOP_BUDGET_MS)
    // A lease that ends before the majority could confirm the owner down needs no wait.
    expect(promotionDelayMs(1250, FAST, 250)).toBe(0)
    expect(resolveLeaseMs(1000, FAST, 250)).toBe(1000)
    expect(resolveLeaseMs(null, { downAfterMs: 2000, pingIntervalMs: 500 }, 250)).toBe(2000)
  })

  it.each([
    [6001, FAST, /too long.*at most 2 x downAfterMs = 6000 ms/],
    [900, FAST, /too short.*1000 ms/],
    [null, { downAfterMs: 900, pingIntervalMs: 500 }, /too short/],
  ])('refuses %s ms with %j', (leaseMs, timing, message) => {
    expect(() => resolveLeaseMs(leaseMs, timing, 250)).toThrow(FailoverConfigError)
    expect(() => resolveLeaseMs(leaseMs, timing, 250)).toThrow(message)
  })

  it('without mesh timing uses only a configured lease', () => {
    expect(resolveLeaseMs(null, undefined, 250)).toBeNull()
    expect(resolveLeaseMs(700, undefined, 250)).toBe(700)
  })

  it('config: stop is the default isolation response, the lease is derived unless set', () => {
    expect(parseFailoverConfig({})).toMatchObject({ isolationResponse: 'stop', leaseMs: null })
    expect(() => parseFailoverConfig({ leaseMs: -1 })).toThrow(/leaseMs/)
  })
})

const NOW = 1_000_000
const self = { peerId: 'a1', site: 'A' }
const peer = (peerId: string, site: string, silentMs: number | null, alive = true) => ({
  peerId,
  site,
  ...(silentMs === null ? {} : { lastSeenMs: NOW - silentMs }),
  alive,
})

describe('lease verdict', () => {
  it.each([
    [
      'all three sites heard',
      [peer('b1', 'B', 100), peer('c1', 'C', 300)],
      undefined,
      true,
      NOW + 900,
      false,
    ],
    [
      'one other site heard',
      [peer('b1', 'B', 100), peer('c1', 'C', 5000)],
      undefined,
      true,
      NOW + 900,
      false,
    ],
    [
      'cut from both others',
      [peer('b1', 'B', 1200), peer('c1', 'C', 1500)],
      undefined,
      false,
      NOW - 200,
      true,
    ],
    ['just at the edge', [peer('b1', 'B', 1000), peer('c1', 'C', 1500)], undefined, true, NOW, false],
    ['two sites, no witness', [peer('b1', 'B', 5000)], undefined, false, NOW - 4000, false],
    ['two sites, witness heard', [peer('b1', 'B', 5000), peer('w', 'W', 10)], 'w', true, NOW + 990, true],
    [
      'two sites, witness silent',
      [peer('b1', 'B', 5000), peer('w', 'W', 5000)],
      'w',
      false,
      NOW - 4000,
      true,
    ],
    [
      'liveness without lastSeenMs',
      [peer('b1', 'B', null, true), peer('c1', 'C', null, false)],
      undefined,
      true,
      NOW + 1000,
      false,
    ],
    [
      'one of two members heard',
      [peer('b1', 'B', 9000), peer('b2', 'B', 200), peer('c1', 'C', 9000)],
      undefined,
      true,
      NOW + 800,
      false,
    ],
  ] as const)('%s', (_name, peers, witnessId, held, expiresAtMs, othersCouldClaim) => {
    const v = leaseVerdict({ now: NOW, self, peers: [...peers], leaseMs: 1000, witnessId })
    expect(v).toMatchObject({ held, expiresAtMs, othersCouldClaim })
  })

  it('a single site never needs anyone', () => {
    expect(leaseVerdict({ now: NOW, self, peers: [], leaseMs: 1000 })).toMatchObject({
      held: true,
      expiresAtMs: NOW + 1000,
      othersCouldClaim: false,
    })
  })
})

/** A mesh whose last contacts the test sets; B and C hold replicas of web1 (not of solo). */
function harness(
  options: {
    isolationResponse?: 'stop' | 'keep-running'
    sites?: string[]
    timing?: { downAfterMs: number; pingIntervalMs: number }
    leaseMs?: number
  } = {},
) {
  const sites = options.sites ?? ['B', 'C']
  const lastSeen = new Map(sites.map((s) => [`${s.toLowerCase()}1`, Date.now()]))
  const hv = new FakeHypervisor()
  for (const name of ['web1', 'solo']) hv.vms.set(name, { ...vmInfo(name, '10.1.0.5/24'), state: 'running' })
  const ledger = new EpochLedger()
  const producing: Array<[boolean, string]> = []
  const owned: string[] = []
  const notes: Notification[] = []
  let reconciled = 0
  const claims: string[] = []
  const world = {
    /** What reconcile learns when quorum returns. */
    learnOnReconcile: null as { vm: string; epoch: number; owner: string } | null,
    claimFails: false,
    knownEpoch: 0,
  }
  const state = (peerId: string, site: string): NodeState => ({
    v: 1,
    peerId,
    site,
    seq: 1,
    time: Date.now(),
    addrs: [],
    capacity: { diskFreeBytes: 1, diskTotalBytes: 1, cpus: 1, memoryTotalBytes: 1, memoryFreeBytes: 1 },
    vms: [],
    replicas: [{ vm: 'web1', lastPoint: { seq: 3, time: Date.now() }, epoch: 0 }],
    views: [],
  })
  const lease = new OwnerLease({
    mesh: {
      peerId: 'a1',
      site: 'A',
      timing: options.timing ?? FAST,
      peers: () =>
        sites.map((s) => ({
          peerId: `${s.toLowerCase()}1`,
          site: s,
          state: 'alive' as const,
          connected: true,
          nodeState: null,
          lastSeenMs: lastSeen.get(`${s.toLowerCase()}1`),
        })),
      nodeStates: () => sites.map((s) => state(`${s.toLowerCase()}1`, s)),
    },
    coordinator: {
      ledger,
      claim: async (vm) => {
        claims.push(vm)
        const claim = { vm, epoch: ledger.highest(vm) + 1, owner: 'a1' }
        if (world.claimFails)
          throw new EpochQuorumError(claim, { votes: 1, needed: 2, agreeingSites: ['A'] }, [], [])
        ledger.learn(claim)
        return {
          claim,
          from: claim.epoch - 1,
          quorum: { reached: true, votes: 3, needed: 2, agreeingSites: [], witnessCounted: false },
          granted: [],
          refused: [],
          unreachable: [],
        }
      },
    },
    hypervisor: hv,
    replicas: {
      setProducing: (allowed, reason) => void producing.push([allowed, reason]),
      owned: async (vm, epoch) => void owned.push(`${vm}@${epoch}`),
      knownEpoch: async () => world.knownEpoch,
    },
    notifier: {
      notify: async (n) => {
        notes.push(n)
        return []
      },
    },
    config: {
      isolationResponse: options.isolationResponse ?? 'stop',
      witness: null,
      leaseMs: options.leaseMs,
    },
    reconcile: async () => {
      reconciled++
      if (world.learnOnReconcile) ledger.learn(world.learnOnReconcile)
    },
    hasQuorum: () => true,
  })
  const silence = (ms: number) => {
    for (const k of lastSeen.keys()) lastSeen.set(k, Date.now() - ms)
  }
  return {
    lease,
    hv,
    ledger,
    producing,
    owned,
    notes,
    claims,
    world,
    silence,
    lastSeen,
    reconciled: () => reconciled,
  }
}

describe('owner lease', () => {
  it('does nothing before a quorum was first heard (the mesh is forming)', async () => {
    const h = harness()
    h.silence(60_000)
    await h.lease.check()
    expect(h.lease.status().state).toBe('unarmed')
    expect(h.hv.log).toEqual([])
  })

  it('a node alone in its mesh holds no lease: sites that join later cannot cut it off', async () => {
    const h = harness({ sites: [] })
    await h.lease.check()
    expect(h.lease.status()).toMatchObject({ state: 'unarmed', heardSites: ['A'] })
  })

  it('an isolated owner turns off what another site could promote, and tells the operator', async () => {
    const h = harness()
    await h.lease.check()
    expect(h.lease.status()).toMatchObject({ state: 'held', leaseMs: 3000 })
    h.silence(2900)
    await h.lease.check()
    expect(h.hv.log).toEqual([])
    h.silence(3100)
    await h.lease.check()
    expect(h.hv.log).toEqual(['stop web1']) // solo has no replica anywhere: no one can run it
    expect(h.hv.vms.get('solo')!.state).toBe('running')
    expect(h.producing).toEqual([
      [false, expect.stringMatching(/lease of 3000 ms expired: only sites A heard/)],
    ])
    expect(h.lease.status()).toMatchObject({
      state: 'expired',
      fenced: ['web1'],
      lastExpiry: { stopped: ['web1'] },
    })
    const n = h.notes[0]
    expect(n).toMatchObject({ kind: 'fenced', severity: 'critical' })
    expect(n.done).toMatch(/turned off web1/)
    expect(n.decide).toMatch(/restore the links/)
    await h.lease.check() // still cut: nothing more
    expect(h.hv.log).toEqual(['stop web1'])
  })

  it('on return, a VM another node now owns at a higher epoch stays off as its replica', async () => {
    const h = harness()
    await h.lease.check()
    h.silence(4000)
    await h.lease.check()
    h.world.learnOnReconcile = { vm: 'web1', epoch: 1, owner: 'b1' }
    h.silence(0)
    await h.lease.check()
    expect(h.reconciled()).toBe(1)
    expect(h.claims).toEqual([])
    expect(h.hv.vms.get('web1')!.state).toBe('stopped')
    expect(h.lease.status()).toMatchObject({
      state: 'held',
      fenced: [],
      lastRegain: { restarted: [], replicas: ['web1@1:b1'], waiting: [] },
    })
    expect(h.producing.at(-1)?.[0]).toBe(true)
    expect(h.notes.at(-1)?.done).toMatch(/kept off as replicas: web1@1:b1/)
  })

  it('on return, a VM nobody took over restarts here after winning a new epoch', async () => {
    const h = harness()
    await h.lease.check()
    h.silence(4000)
    await h.lease.check()
    h.silence(0)
    await h.lease.check()
    expect(h.claims).toEqual(['web1'])
    expect(h.hv.log).toEqual(['stop web1', 'start web1'])
    expect(h.owned).toEqual(['web1@1'])
    expect(h.lease.status().lastRegain).toMatchObject({ restarted: ['web1'] })
  })

  it('on return, a lost epoch claim leaves the VM off and asks the operator', async () => {
    const h = harness()
    await h.lease.check()
    h.silence(4000)
    await h.lease.check()
    h.world.claimFails = true
    h.silence(0)
    await h.lease.check()
    expect(h.hv.log).toEqual(['stop web1'])
    expect(h.lease.status().lastRegain).toMatchObject({ restarted: [], waiting: ['web1'] })
    expect(h.notes.at(-1)).toMatchObject({ severity: 'error' })
    expect(h.notes.at(-1)?.decide).toMatch(/web1 stayed off/)
  })

  it.each([
    [
      'an epoch promised to another node',
      (h: ReturnType<typeof harness>) => void h.ledger.vote({ vm: 'web1', epoch: 1, owner: 'b1' }),
    ],
    [
      'points of a newer epoch received',
      (h: ReturnType<typeof harness>) => {
        h.world.knownEpoch = 2
      },
    ],
  ])('on return, %s: no claim, the VM stays off', async (_name, arrange) => {
    const h = harness()
    await h.lease.check()
    h.silence(4000)
    await h.lease.check()
    arrange(h)
    h.silence(0)
    await h.lease.check()
    expect(h.claims).toEqual([])
    expect(h.hv.log).toEqual(['stop web1'])
    expect(h.lease.status().lastRegain).toMatchObject({ restarted: [], waiting: ['web1'] })
  })

  it('keep-running only stops points', async () => {
    const h = harness({ isolationResponse: 'keep-running' })
    await h.lease.check()
    h.silence(4000)
    await h.lease.check()
    expect(h.hv.log).toEqual([])
    expect(h.producing[0][0]).toBe(false)
    expect(h.notes[0].done).toMatch(/still running \(isolationResponse keep-running\): web1/)
  })

  it('with two sites and no witness nobody can promote: nothing is stopped', async () => {
    const h = harness({ sites: ['B'] })
    await h.lease.check()
    h.silence(10_000)
    await h.lease.check()
    expect(h.lease.status().state).toBe('held')
    expect(h.hv.log).toEqual([])
  })

  it('concurrent checks share one run', async () => {
    const h = harness()
    await h.lease.check()
    h.silence(4000)
    await Promise.all([h.lease.check(), h.lease.check(), h.lease.check()])
    expect(h.hv.log).toEqual(['stop web1'])
  })

  it('a stalled process judges the lease on the next check, not on contacts still queued', async () => {
    const h = harness()
    const t = Date.now()
    await h.lease.check(t)
    h.silence(4000)
    await h.lease.check(t + 1000)
    expect(h.lease.status().state).toBe('held')
    await h.lease.check(t + 1100)
    expect(h.hv.log).toEqual(['stop web1'])
  })

  it('a process that stays slow is deferred once, then fences itself', async () => {
    const h = harness()
    const t = Date.now()
    await h.lease.check(t)
    h.silence(4000)
    await h.lease.check(t + 1000)
    expect(h.hv.log).toEqual([])
    await h.lease.check(t + 2000)
    expect(h.hv.log).toEqual(['stop web1'])
  })

  it('a lease the timing cannot hold is refused at load', () => {
    expect(() => harness({ timing: { downAfterMs: 900, pingIntervalMs: 500 } })).toThrow(FailoverConfigError)
    expect(() => harness({ leaseMs: 7000 })).toThrow(/too long/)
  })

  it('a failover waits until the failed host surely turned its VMs off', async () => {
    const h = harness()
    expect(h.lease.status().promotionDelayMs).toBe(1750)
    // Last heard 4700 ms ago: 3000 + 500 + 250 + 1000 = 4750 ms after that contact, ~50 ms from now.
    h.silence(4700)
    const t = Date.now()
    await h.lease.waitOut('b1')
    expect(Date.now() - t).toBeGreaterThanOrEqual(30)
    h.silence(10_000)
    // Long run out: it returns at once, with no timer (before an immediate fires), whatever the load.
    const first = await Promise.race([
      h.lease.waitOut('b1').then(() => 'returned'),
      new Promise((r) => setImmediate(() => r('a timer ran first'))),
    ])
    expect(first).toBe('returned')
    h.silence(0)
    await expect(h.lease.waitOut('b1', { signal: AbortSignal.timeout(20) })).rejects.toThrow()
  })

  it('a timer that fires early starts nothing before the lease has run out by the wall clock', async () => {
    const h = harness()
    h.silence(4700)
    const until = (h.lastSeen.get('b1') ?? 0) + 4750
    // libuv may fire a timer up to a millisecond before Date.now() reaches its end; here, 20 ms.
    const real = globalThis.setTimeout
    const early = vi
      .spyOn(globalThis, 'setTimeout')
      .mockImplementation(((fn: () => void, ms?: number) =>
        real(fn, Math.max(0, (ms ?? 0) - 20))) as unknown as typeof setTimeout)
    try {
      await h.lease.waitOut('b1')
      expect(Date.now()).toBeGreaterThanOrEqual(until)
      expect(early).toHaveBeenCalled()
    } finally {
      early.mockRestore()
    }
  })
})

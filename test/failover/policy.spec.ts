// Tier decisions and the boot-order plan for whole-host and whole-site failures.
import { describe, expect, it } from 'vitest'
import {
  type BootStep,
  bootWaves,
  decideVm,
  type ProtectedVm,
  runInBootOrder,
  type Tier,
} from '../../src/failover/index.js'

const gold: Tier = { name: 'gold', rpoMs: 5000, rtoMs: 120_000, mode: 'automatic' }
const bronze: Tier = { name: 'bronze', rpoMs: 900_000, rtoMs: 14_400_000, mode: 'alert' }
const now = 1_000_000
const v = (tier: Tier, pointAgeMs: number | null, wasRunning = true): ProtectedVm => ({
  vm: 'w',
  tier,
  priority: 1,
  wasRunning,
  newestPoint: pointAgeMs === null ? null : { seq: 3, time: now - pointAgeMs },
})

describe('decideVm', () => {
  it.each([
    ['automatic tier on host-down', v(gold, 2000), 'host-down', 'failover', false],
    ['automatic tier on site-down', v(gold, 2000), 'site-down', 'failover', false],
    ['alert tier waits', v(bronze, 2000), 'host-down', 'await-operator', false],
    ['an operator command always acts', v(bronze, 2000), 'manual', 'failover', false],
    ['planned', v(bronze, 2000), 'planned', 'failover', false],
    ['no point, nothing to start', v(gold, null), 'manual', 'skip', false],
    ['an old point is flagged as an RPO breach', v(gold, 9000), 'host-down', 'failover', true],
  ] as const)('%s', (_, vm, trigger, action, breached) => {
    const d = decideVm(vm, trigger, now)
    expect(d.action).toBe(action)
    expect(d.rpoBreached).toBe(breached)
    expect(d.reason.length).toBeGreaterThan(10)
  })

  it('keeps a VM that was stopped stopped, and reports the expected loss', () => {
    expect(decideVm(v(gold, 1500, false), 'host-down', now)).toMatchObject({
      start: false,
      expectedLossMs: 1500,
    })
  })
})

describe('bootWaves', () => {
  const step = (vm: string, peerId: string, priority: number): BootStep => ({ vm, peerId, priority })
  it('orders by priority and limits starts per host', () => {
    const waves = bootWaves(
      [
        step('web2', 'c1', 30),
        step('db', 'c1', 10),
        step('web1', 'c1', 30),
        step('web3', 'c1', 30),
        step('app', 'd1', 20),
        step('web4', 'd1', 30),
      ],
      2,
    )
    expect(waves.map((w) => [w.priority, w.steps.map((s) => s.vm)])).toEqual([
      [10, ['db']],
      [20, ['app']],
      [30, ['web1', 'web2', 'web4']],
      [30, ['web3']],
    ])
  })

  it('puts a whole host of equal priority in parallel', () => {
    const steps = Array.from({ length: 10 }, (_, i) => step(`vm${i}`, `p${i % 3}`, 100))
    expect(bootWaves(steps, 4).map((w) => w.steps.length)).toEqual([10])
    expect(bootWaves([], 4)).toEqual([])
  })
})

describe('runInBootOrder', () => {
  it('runs a wave in parallel, waits for it, and goes on when one VM fails', async () => {
    const log: string[] = []
    const waves = bootWaves(
      [
        { vm: 'db', peerId: 'c1', priority: 1 },
        { vm: 'a', peerId: 'c1', priority: 2 },
        { vm: 'b', peerId: 'd1', priority: 2 },
      ],
      4,
    )
    const out = await runInBootOrder(waves, async (s) => {
      log.push(`start ${s.vm}`)
      await new Promise((r) => setTimeout(r, 60))
      if (s.vm === 'db') {
        log.push('fail db')
        throw new Error('disk missing')
      }
      log.push(`end ${s.vm}`)
    })
    // Sequential across waves (a starts once db failed), parallel inside one (b starts before a
    // ends): the order says it, whatever the machine's load does to the 60 ms.
    expect(log).toEqual(['start db', 'fail db', 'start a', 'start b', 'end a', 'end b'])
    expect(out.map((o) => [o.vm, o.ok, o.error])).toEqual([
      ['db', false, 'disk missing'],
      ['a', true, undefined],
      ['b', true, undefined],
    ])
  })

  it('inside one priority a host takes its next VM as soon as one of its starts ends', async () => {
    // c1 may start 2 at once: slow (300 ms) holds one slot while a, b, c go through the other.
    const waves = bootWaves(
      ['slow', 'a', 'b', 'c'].map((vm) => ({ vm: vm === 'slow' ? '0slow' : vm, peerId: 'c1', priority: 5 })),
      2,
    )
    expect(waves.map((w) => w.steps.map((s) => s.vm))).toEqual([
      ['0slow', 'a'],
      ['b', 'c'],
    ])
    // slow ends only once c has ended (or after 5 s): barrier waves would start b and c only
    // after slow, a pool starts them in the slot a frees. Ordered by events, not by sleeps.
    const ended: string[] = []
    let cEnded = () => {}
    const cDone = new Promise<void>((r) => {
      cEnded = r
    })
    const out = await runInBootOrder(waves, async (s) => {
      if (s.vm === '0slow') {
        let timer: NodeJS.Timeout | undefined
        await Promise.race([cDone, new Promise((r) => (timer = setTimeout(r, 5_000)))])
        clearTimeout(timer)
      } else await new Promise((r) => setTimeout(r, 10))
      ended.push(s.vm)
      if (s.vm === 'c') cEnded()
    })
    expect(out.map((o) => o.vm)).toEqual(['0slow', 'a', 'b', 'c'])
    expect(ended).toEqual(['a', 'b', 'c', '0slow'])
    expect(out.every((o) => o.ok)).toBe(true)
  })

  it('stops before the next wave when aborted', async () => {
    const ac = new AbortController()
    const started: string[] = []
    const waves = bootWaves(
      [
        { vm: 'x', peerId: 'c1', priority: 1 },
        { vm: 'y', peerId: 'c1', priority: 2 },
      ],
      1,
    )
    const run = runInBootOrder(
      waves,
      async (s) => {
        started.push(s.vm)
        ac.abort()
      },
      { signal: ac.signal },
    )
    await expect(run).rejects.toThrow()
    expect(started).toEqual(['x'])
  })
})

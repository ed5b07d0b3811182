import { describe, expect, it } from 'vitest'
import { LagTracker, lagSeconds, PointScheduler } from '../../src/replication/index.js'

describe('PointScheduler', () => {
  it.each([
    // rpoMs, cycles observed, last cycle, lag, expected delay
    ['fresh, 5 s RPO: aims at 0.5 s', 5000, [], 0, 0, 500],
    ['fast link: waits out the interval minus the cycle', 5000, [50], 50, 100, 400],
    ['slower link: shorter interval', 5000, [400], 400, 500, 0],
    ['interval never below the minimum', 5000, [700], 100, 500, 100],
    ['lag past the RPO: back to back', 5000, [100], 100, 6000, 0],
    ['long RPO is capped at the maximum interval', 3_600_000, [10], 10, 10, 59_990],
    ['tiny RPO: minimum interval', 500, [10], 10, 10, 190],
  ])('%s', (_n, rpoMs, cycles, last, lag, expected) => {
    const s = new PointScheduler({ rpoMs })
    for (const c of cycles) s.observeCycle(c)
    expect(s.delayMs(last, lag)).toBe(expected)
  })

  it('lengthens again when the link recovers', () => {
    const s = new PointScheduler({ rpoMs: 5000, smoothing: 1 })
    s.observeCycle(600)
    const slow = s.intervalMs()
    s.observeCycle(20)
    expect(s.intervalMs()).toBeGreaterThan(slow)
    expect(s.intervalMs()).toBe(480)
  })

  it('smooths cycles', () => {
    const s = new PointScheduler({ rpoMs: 5000, smoothing: 0.5 })
    s.observeCycle(100)
    s.observeCycle(300)
    expect(s.averageCycleMs).toBe(200)
  })
})

describe('lag accounting', () => {
  it.each([
    ['committed 2 s ago', 10_000, 8_000, 0, 2],
    ['never committed: lag since protection began', 10_000, null, 4_000, 6],
    ['a point from the future (clock skew) counts as 0', 10_000, 11_000, 0, 0],
  ])('%s', (_n, now, committed, since, expected) => {
    expect(lagSeconds(now, committed, since)).toBe(expected)
  })

  it('tracks per target, the worst lag per VM, and alarms once per transition', () => {
    const t = new LagTracker()
    t.track('web', 'B', 5, 0)
    t.track('web', 'C', 5, 0)
    t.committed('web', 'B', 1000)
    t.committed('web', 'C', 500)
    t.committed('web', 'C', 400) // older: ignored
    expect(t.lag('web', 'B', 3000)).toBe(2)
    expect(t.worstLag('web', 3000)).toBe(2.5)
    expect(t.check(3000)).toEqual([])
    expect(t.check(5800)).toEqual([{ vm: 'web', target: 'C', state: 'late', lagSeconds: 5.3, rpoSeconds: 5 }])
    expect(t.check(5900)).toEqual([])
    t.committed('web', 'C', 5800)
    const cleared = t.check(7000)
    expect(cleared.map((a) => [a.target, a.state])).toEqual([
      ['B', 'late'],
      ['C', 'ok'],
    ])
    t.untrack('web')
    expect(t.worstLag('web', 7000)).toBeNull()
  })
})

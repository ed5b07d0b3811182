import { describe, expect, it } from 'vitest'
import { selectRetained } from '../../src/chunkstore/retention.js'

const H = 3_600_000
// Off the hour, so no point sits on a window's edge.
const NOW = Date.UTC(2026, 0, 15, 12, 7, 0)

/** One point every 15 minutes for `hours` hours back from NOW, newest last. */
function series(vm: string, hours: number) {
  const out = []
  const n = hours * 4
  for (let i = 0; i < n; i++) out.push({ vm, seq: i + 1, time: NOW - (n - 1 - i) * (H / 4) })
  return out
}

describe('selectRetained', () => {
  const points = series('web', 24 * 20)
  const count = (policy: Parameters<typeof selectRetained>[1]) => selectRetained(points, policy, NOW).size

  it.each([
    ['no policy keeps all', {}, points.length],
    ['keepLast 3', { keepLast: 3 }, 3],
    ['everything for 4 h', { keepAllHours: 4 }, 16],
    ['hourly for 2 days (49 hour buckets)', { hourlyDays: 2 }, 49],
    ['daily for 2 weeks (15 day buckets)', { dailyWeeks: 2 }, 15],
    // 4 h of every point (16) + hourly (49, 5 already kept) + daily (15, 3 already kept by hourly).
    ['all three', { keepAllHours: 4, hourlyDays: 2, dailyWeeks: 2 }, 16 + 44 + 12],
  ] as const)('%s', (_name, policy, expected) => {
    expect(count(policy)).toBe(expected)
  })

  it('always keeps the newest point of each VM, however old', () => {
    const old = [
      { vm: 'a', seq: 1, time: NOW - 400 * 24 * H },
      { vm: 'a', seq: 2, time: NOW - 300 * 24 * H },
      { vm: 'b', seq: 7, time: NOW - 500 * 24 * H },
    ]
    expect([...selectRetained(old, { keepAllHours: 1 }, NOW)].sort()).toEqual(['a@2', 'b@7'])
  })
})

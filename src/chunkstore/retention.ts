// Retention: which points to keep. Pure: points and a clock in, names to keep out.
import { pointName } from './points.js'

export interface RetentionPolicy {
  /** Keep every point younger than this many hours. */
  keepAllHours?: number
  /** Keep the newest point of each UTC hour for this many days. */
  hourlyDays?: number
  /** Keep the newest point of each UTC day for this many weeks. */
  dailyWeeks?: number
  /** Keep the newest N points of each VM. */
  keepLast?: number
}

const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS

/**
 * The names of the points to keep. Windows are open at their old end (a 4-hour window keeps
 * points younger than 4 h); a 2-day hourly window touches 49 hour buckets, the first partly. The newest point of every VM is always kept; a point is kept
 * when any rule keeps it. An empty policy keeps everything.
 */
export function selectRetained(
  points: { vm: string; seq: number; time: number }[],
  policy: RetentionPolicy,
  nowMs: number,
): Set<string> {
  const keep = new Set<string>()
  const empty =
    policy.keepAllHours === undefined &&
    policy.hourlyDays === undefined &&
    policy.dailyWeeks === undefined &&
    policy.keepLast === undefined
  const byVm = new Map<string, typeof points>()
  for (const p of points) byVm.set(p.vm, [...(byVm.get(p.vm) ?? []), p])
  for (const list of byVm.values()) {
    const newestFirst = [...list].sort((a, b) => b.time - a.time || b.seq - a.seq)
    if (empty) {
      for (const p of list) keep.add(pointName(p))
      continue
    }
    keep.add(pointName(newestFirst[0]))
    for (const p of newestFirst.slice(0, policy.keepLast ?? 0)) keep.add(pointName(p))
    if (policy.keepAllHours !== undefined)
      for (const p of list) if (p.time > nowMs - policy.keepAllHours * HOUR_MS) keep.add(pointName(p))
    const bucketed = (windowMs: number, bucketMs: number) => {
      const seen = new Set<number>()
      for (const p of newestFirst) {
        if (p.time <= nowMs - windowMs) break
        const bucket = Math.floor(p.time / bucketMs)
        if (seen.has(bucket)) continue
        seen.add(bucket)
        keep.add(pointName(p))
      }
    }
    if (policy.hourlyDays !== undefined) bucketed(policy.hourlyDays * DAY_MS, HOUR_MS)
    if (policy.dailyWeeks !== undefined) bucketed(policy.dailyWeeks * 7 * DAY_MS, DAY_MS)
  }
  return keep
}

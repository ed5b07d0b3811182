// RPO accounting: per VM and target, the lag is now minus the freeze time of the newest point
// committed there. A target whose lag passes the RPO raises an alarm once, and clears it once.

export interface LagAlarm {
  vm: string
  target: string
  state: 'late' | 'ok'
  lagSeconds: number
  rpoSeconds: number
}

export function lagSeconds(
  nowMs: number,
  newestCommittedMs: number | null,
  protectedSinceMs: number,
): number {
  const since = newestCommittedMs ?? protectedSinceMs
  return Math.max(0, (nowMs - since) / 1000)
}

interface Entry {
  committedMs: number | null
  sinceMs: number
  rpoSeconds: number
  late: boolean
}

export class LagTracker {
  private readonly entries = new Map<string, Entry>()

  private key(vm: string, target: string): string {
    return `${vm}\u0000${target}`
  }

  /** Starts accounting for a VM on a target (lag counts from now until a first commit). */
  track(
    vm: string,
    target: string,
    rpoSeconds: number,
    nowMs: number,
    committedMs: number | null = null,
  ): void {
    const e = this.entries.get(this.key(vm, target))
    if (e) e.rpoSeconds = rpoSeconds
    else this.entries.set(this.key(vm, target), { committedMs, sinceMs: nowMs, rpoSeconds, late: false })
  }

  untrack(vm: string): void {
    for (const k of [...this.entries.keys()]) if (k.startsWith(`${vm}\u0000`)) this.entries.delete(k)
  }

  /** A point frozen at `pointTimeMs` is now committed on `target`. */
  committed(vm: string, target: string, pointTimeMs: number): void {
    const e = this.entries.get(this.key(vm, target))
    if (e && (e.committedMs === null || pointTimeMs > e.committedMs)) e.committedMs = pointTimeMs
  }

  lag(vm: string, target: string, nowMs: number): number | null {
    const e = this.entries.get(this.key(vm, target))
    return e ? lagSeconds(nowMs, e.committedMs, e.sinceMs) : null
  }

  /**
   * Every tracked VM and target with its lag now; `seeding` while no point was ever committed
   * there (the lag then counts from when accounting started). Read by failover's RPO watch.
   */
  targets(
    nowMs: number,
  ): Array<{ vm: string; target: string; lagSeconds: number; rpoSeconds: number; seeding: boolean }> {
    return [...this.entries].map(([k, e]) => {
      const [vm, target] = k.split('\u0000')
      return {
        vm,
        target,
        lagSeconds: lagSeconds(nowMs, e.committedMs, e.sinceMs),
        rpoSeconds: e.rpoSeconds,
        seeding: e.committedMs === null,
      }
    })
  }

  /** The worst lag of a VM over its targets, or null when it has none. */
  worstLag(vm: string, nowMs: number): number | null {
    let worst: number | null = null
    for (const [k, e] of this.entries) {
      if (!k.startsWith(`${vm}\u0000`)) continue
      const l = lagSeconds(nowMs, e.committedMs, e.sinceMs)
      worst = worst === null ? l : Math.max(worst, l)
    }
    return worst
  }

  /** Alarm transitions since the last call: each late target once, each recovery once. */
  check(nowMs: number): LagAlarm[] {
    const out: LagAlarm[] = []
    for (const [k, e] of this.entries) {
      const [vm, target] = k.split('\u0000')
      const l = lagSeconds(nowMs, e.committedMs, e.sinceMs)
      const late = l > e.rpoSeconds
      if (late !== e.late) {
        e.late = late
        out.push({ vm, target, state: late ? 'late' : 'ok', lagSeconds: l, rpoSeconds: e.rpoSeconds })
      }
    }
    return out
  }
}

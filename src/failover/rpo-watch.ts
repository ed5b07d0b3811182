// RPO alarm (issue 6 "alarmed when it passes the RPO", issue 7 "RPO breaches"): on the node that
// protects a VM, per VM and target, an rpo-breach notification and one count of
// replimesh_rpo_breaches_total when the lag (now minus the newest point committed there) passes
// the VM's RPO, and one rpo-restored notification when it is back within it. Edge-triggered: a
// breach that lasts a thousand ticks is one notification and one count.
import type { FailoverMetrics } from './metrics.js'
import type { Reporter } from './notify/messages.js'
import * as messages from './notify/messages.js'
import type { NotifyLogger } from './notify/notifier.js'
import type { Notification } from './notify/types.js'

/** One VM and target as replication accounts it (LagTracker.targets in the replication layer). */
export interface TargetLag {
  vm: string
  target: string
  lagSeconds: number
  rpoSeconds: number
  /** No point was ever committed on this target yet: the lag counts from when seeding began. */
  seeding: boolean
}

export interface RpoWatchComponents {
  reporter: () => Reporter
  /** Sends a notification; not awaited (a slow mail server must not hold the failover tick). */
  notify: (n: Notification) => Promise<unknown> | undefined
  metrics?: Pick<FailoverMetrics, 'rpoBreach'>
  logger?: NotifyLogger
}

interface Breach {
  vm: string
  target: string
  sinceMs: number
}

const key = (vm: string, target: string) => `${vm}\u0000${target}`

export class RpoWatch {
  private readonly breached = new Map<string, Breach>()

  constructor(private readonly c: RpoWatchComponents) {}

  /**
   * Compares each row with its RPO and sends what changed since the last call. A VM or target no
   * longer listed (unprotected, fenced, target removed) is forgotten without a notification.
   * Returns the notifications sent, for tests.
   */
  check(rows: readonly TargetLag[], nowMs: number): Notification[] {
    const out: Notification[] = []
    const seen = new Set<string>()
    for (const row of rows) {
      const k = key(row.vm, row.target)
      seen.add(k)
      const late = row.lagSeconds > row.rpoSeconds
      const was = this.breached.get(k)
      const facts = {
        vm: row.vm,
        target: row.target,
        lagMs: Math.round(row.lagSeconds * 1000),
        rpoMs: Math.round(row.rpoSeconds * 1000),
      }
      if (late && !was) {
        this.breached.set(k, { vm: row.vm, target: row.target, sinceMs: nowMs })
        this.c.metrics?.rpoBreach(row.vm)
        out.push(
          messages.rpoBreach({ ...this.c.reporter(), time: nowMs }, { ...facts, seeding: row.seeding }),
        )
      } else if (!late && was) {
        this.breached.delete(k)
        out.push(
          messages.rpoRestored(
            { ...this.c.reporter(), time: nowMs },
            { ...facts, breachedMs: nowMs - was.sinceMs },
          ),
        )
      }
    }
    for (const k of [...this.breached.keys()]) if (!seen.has(k)) this.breached.delete(k)
    for (const n of out) {
      const sent = this.c.notify(n)
      void sent?.catch((err: Error) =>
        this.c.logger?.warn({ vm: n.vm, kind: n.kind, err: err.message }, 'RPO notification failed'),
      )
    }
    return out
  }

  /** VMs and targets outside their RPO now, for status. */
  breaches(): Array<{ vm: string; target: string; sinceMs: number }> {
    return [...this.breached.values()].map(({ vm, target, sinceMs }) => ({ vm, target, sinceMs }))
  }
}

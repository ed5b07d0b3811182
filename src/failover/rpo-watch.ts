// RPO alarm (issue 6 "alarmed when it passes the RPO", issue 7 "RPO breaches"): on the node that
// protects a VM, per VM and target, an rpo-breach notification and one count of
// replimesh_rpo_breaches_total as soon as the lag (now minus the newest point committed there)
// passes the VM's RPO, and one rpo-restored notification once it is surely back within it.
// Edge-triggered: a breach that lasts a thousand ticks is one notification and one count.
//
// Dampened, so a target committing at intervals close to the RPO does not flap: its lag climbs
// past the RPO just before each commit and drops after it, which without dampening is a breach
// and a restore per point. A breach clears only once the lag has stayed at or below
// (1 - restoreMargin) × RPO (default 90 %) for restoreHoldRpos × RPO (default one whole RPO),
// as sampled by each check (the failover tick, every 250 ms). A lag that climbs above that line
// meanwhile starts the hold again. One RPO is enough: a target whose points come further apart
// than the RPO exceeds it once per interval, so its lag never stays under the RPO for a whole RPO;
// the margin keeps intervals just under the RPO, with jitter, from clearing and breaching in turn.
// They stay one breach until the target keeps up with room to spare.
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
  /** Fraction of the RPO the lag must stay under to clear a breach. Default RPO_RESTORE_MARGIN. */
  restoreMargin?: number
  /** How long, in RPOs, it must stay there. Default RPO_RESTORE_HOLD_RPOS. */
  restoreHoldRpos?: number
}

/** A breach clears once the lag stays at or below (1 − this) × RPO ... */
export const RPO_RESTORE_MARGIN = 0.1
/** ... for this many RPOs. */
export const RPO_RESTORE_HOLD_RPOS = 1

interface Breach {
  vm: string
  target: string
  sinceMs: number
  /** First check of the current run of checks with the lag under the restore line (null: none). */
  calmSinceMs: number | null
}

const key = (vm: string, target: string) => `${vm}\u0000${target}`

export class RpoWatch {
  private readonly breached = new Map<string, Breach>()
  private readonly margin: number
  private readonly holdRpos: number

  constructor(private readonly c: RpoWatchComponents) {
    this.margin = c.restoreMargin ?? RPO_RESTORE_MARGIN
    this.holdRpos = c.restoreHoldRpos ?? RPO_RESTORE_HOLD_RPOS
  }

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
        this.breached.set(k, { vm: row.vm, target: row.target, sinceMs: nowMs, calmSinceMs: null })
        this.c.metrics?.rpoBreach(row.vm)
        out.push(
          messages.rpoBreach({ ...this.c.reporter(), time: nowMs }, { ...facts, seeding: row.seeding }),
        )
      } else if (was) {
        const calm = row.lagSeconds <= row.rpoSeconds * (1 - this.margin)
        was.calmSinceMs = calm ? (was.calmSinceMs ?? nowMs) : null
        if (was.calmSinceMs === null || nowMs - was.calmSinceMs < row.rpoSeconds * 1000 * this.holdRpos)
          continue
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

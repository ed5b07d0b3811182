// When to take the next recovery point. The lag a target sees just before a point commits is about
// the interval plus the time a point takes to ship and commit (its cycle). So the scheduler aims
// the interval at a target lag well under the RPO, minus the measured cycle: a fast link gets
// longer intervals (fewer, larger points), a link falling behind gets shorter ones, and once the
// lag passes the RPO points go back to back, each carrying what piled up meanwhile.
import { MAX_POINT_INTERVAL_MS, MIN_POINT_INTERVAL_MS, POINT_TARGET_LAG_FRACTION } from './constants.js'

export interface PointSchedulerInit {
  rpoMs: number
  /** Default POINT_TARGET_LAG_FRACTION: the lag aimed at, as a fraction of the RPO. */
  targetLagFraction?: number
  /** Default MIN_POINT_INTERVAL_MS. */
  minIntervalMs?: number
  /** Default MAX_POINT_INTERVAL_MS. */
  maxIntervalMs?: number
  /** Weight of the newest cycle in the moving average (0..1]; default 0.5. */
  smoothing?: number
}

export class PointScheduler {
  private cycleMs: number | null = null
  private readonly targetLagMs: number
  private readonly minIntervalMs: number
  private readonly maxIntervalMs: number
  private readonly smoothing: number

  constructor(private readonly init: PointSchedulerInit) {
    this.targetLagMs = init.rpoMs * (init.targetLagFraction ?? POINT_TARGET_LAG_FRACTION)
    this.minIntervalMs = init.minIntervalMs ?? MIN_POINT_INTERVAL_MS
    this.maxIntervalMs = init.maxIntervalMs ?? MAX_POINT_INTERVAL_MS
    this.smoothing = init.smoothing ?? 0.5
  }

  /** Smoothed time from freezing a point to its commit on the slowest target, or null. */
  get averageCycleMs(): number | null {
    return this.cycleMs
  }

  /** Records how long the last point took from freeze to commit on every target. */
  observeCycle(cycleMs: number): void {
    this.cycleMs = this.cycleMs === null ? cycleMs : this.cycleMs + this.smoothing * (cycleMs - this.cycleMs)
  }

  /** The interval between point starts that the scheduler aims at now. */
  intervalMs(): number {
    const cycle = this.cycleMs ?? 0
    const lower = Math.min(this.minIntervalMs, this.maxIntervalMs)
    return Math.min(this.maxIntervalMs, Math.max(lower, this.targetLagMs - cycle))
  }

  /**
   * Milliseconds to wait before taking the next point, given how long the last one took and the
   * current lag (ms since the newest committed point was frozen, on the worst target).
   */
  delayMs(lastCycleMs: number, lagMs: number): number {
    if (lagMs >= this.init.rpoMs) return 0
    return Math.max(0, this.intervalMs() - lastCycleMs)
  }
}

// Per-VM decisions (DESIGN.md §6): when a host or site is confirmed down, each of its VMs is
// failed over automatically or held for an operator, by its tier. An operator's own command
// always acts. Then the chosen VMs start in boot order: by priority (lower first), a priority
// beginning when the previous one has finished starting (or failed: one VM never blocks the rest),
// the VMs of one priority in parallel with at most `maxStartsPerHost` starting at once on a host.

export type TierMode = 'automatic' | 'alert'

export interface Tier {
  name: string
  rpoMs: number
  rtoMs: number
  mode: TierMode
}

export interface ProtectedVm {
  vm: string
  tier: Tier
  /** Boot priority, lower first. */
  priority: number
  /** Whether it ran on the failed host (a stopped VM is registered but not started). */
  wasRunning: boolean
  /** Newest committed point anywhere reachable, or null when there is none. */
  newestPoint: { seq: number; time: number } | null
}

export type Trigger = 'host-down' | 'site-down' | 'manual' | 'planned'

export interface VmDecision {
  vm: string
  action: 'failover' | 'await-operator' | 'skip'
  start: boolean
  reason: string
  /** Data lost if failed over now, from the newest point's age. */
  expectedLossMs: number | null
  /** The newest point is older than the tier's RPO. */
  rpoBreached: boolean
}

export function decideVm(v: ProtectedVm, trigger: Trigger, nowMs: number): VmDecision {
  const loss = v.newestPoint ? Math.max(0, nowMs - v.newestPoint.time) : null
  const base = {
    vm: v.vm,
    start: v.wasRunning,
    expectedLossMs: loss,
    rpoBreached: loss !== null && loss > v.tier.rpoMs,
  }
  if (!v.newestPoint)
    return { ...base, action: 'skip', reason: 'no committed recovery point exists on a live peer' }
  if (trigger === 'manual' || trigger === 'planned')
    return { ...base, action: 'failover', reason: `${trigger} failover requested by an operator` }
  if (v.tier.mode === 'automatic')
    return { ...base, action: 'failover', reason: `tier ${v.tier.name} fails over automatically` }
  return { ...base, action: 'await-operator', reason: `tier ${v.tier.name} alerts and waits for an operator` }
}

export interface BootStep {
  vm: string
  peerId: string
  priority: number
}

export interface Wave {
  priority: number
  steps: BootStep[]
}

/** Splits steps into waves: by priority, then so no host starts more than `maxStartsPerHost` at once. */
export function bootWaves(steps: BootStep[], maxStartsPerHost: number): Wave[] {
  const limit = Math.max(1, maxStartsPerHost)
  const byPriority = new Map<number, BootStep[]>()
  for (const s of steps) byPriority.set(s.priority, [...(byPriority.get(s.priority) ?? []), s])
  const waves: Wave[] = []
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    const group = byPriority.get(priority)!.sort((a, b) => a.vm.localeCompare(b.vm))
    const perHost = new Map<string, BootStep[]>()
    for (const s of group) perHost.set(s.peerId, [...(perHost.get(s.peerId) ?? []), s])
    const rounds = Math.max(...[...perHost.values()].map((l) => Math.ceil(l.length / limit)))
    for (let i = 0; i < rounds; i++) {
      const steps = [...perHost.values()].flatMap((l) => l.slice(i * limit, (i + 1) * limit))
      waves.push({ priority, steps: steps.sort((a, b) => a.vm.localeCompare(b.vm)) })
    }
  }
  return waves
}

export interface StepOutcome {
  vm: string
  peerId: string
  ok: boolean
  error?: string
  startedAtMs: number
  endedAtMs: number
}

/**
 * Runs waves in boot order. Priorities are strict barriers: a priority starts when every VM of
 * the previous one has finished starting (or failed). Inside one priority the waves are not
 * barriers but a width: a host runs as many starts at once as it has steps in that priority's
 * widest wave (bootWaves makes that `maxStartsPerHost`), and takes its next VM as soon as one of
 * its starts ends, so one slow start does not hold the host's other slots idle (measured in
 * bench/failover.bench.ts: barrier waves left slots idle behind the slowest start of each wave).
 * Stops starting VMs once aborted, and rejects after the starts under way have ended.
 */
export async function runInBootOrder(
  waves: Wave[],
  start: (step: BootStep, options: { signal?: AbortSignal }) => Promise<void>,
  options: { signal?: AbortSignal; now?: () => number } = {},
): Promise<StepOutcome[]> {
  const now = options.now ?? Date.now
  const out: StepOutcome[] = []
  for (const group of byPriority(waves)) {
    options.signal?.throwIfAborted()
    out.push(...(await runPriority(group, start, options.signal, now)))
    options.signal?.throwIfAborted()
  }
  return out
}

/** Consecutive waves of one priority, in order. */
function byPriority(waves: Wave[]): Wave[][] {
  const groups: Wave[][] = []
  for (const wave of waves) {
    const last = groups.at(-1)
    if (last && last[0].priority === wave.priority) last.push(wave)
    else groups.push([wave])
  }
  return groups
}

async function runPriority(
  waves: Wave[],
  start: (step: BootStep, options: { signal?: AbortSignal }) => Promise<void>,
  signal: AbortSignal | undefined,
  now: () => number,
): Promise<StepOutcome[]> {
  const steps = waves.flatMap((w) => w.steps)
  const width = new Map<string, number>()
  for (const wave of waves) {
    const perHost = new Map<string, number>()
    for (const s of wave.steps) perHost.set(s.peerId, (perHost.get(s.peerId) ?? 0) + 1)
    for (const [host, n] of perHost) width.set(host, Math.max(width.get(host) ?? 0, n))
  }
  const outcomes = new Map<BootStep, StepOutcome>()
  const queues = new Map<string, BootStep[]>()
  for (const s of steps) queues.set(s.peerId, [...(queues.get(s.peerId) ?? []), s])
  const one = async (step: BootStep): Promise<void> => {
    const startedAtMs = now()
    try {
      await start(step, { signal })
      outcomes.set(step, { vm: step.vm, peerId: step.peerId, ok: true, startedAtMs, endedAtMs: now() })
    } catch (err) {
      outcomes.set(step, {
        vm: step.vm,
        peerId: step.peerId,
        ok: false,
        error: (err as Error).message,
        startedAtMs,
        endedAtMs: now(),
      })
    }
  }
  // One lane per slot of each host; a lane takes the host's next VM when its start ends.
  const lanes: Promise<void>[] = []
  for (const [host, queue] of queues)
    for (let i = 0; i < (width.get(host) ?? 1); i++)
      lanes.push(
        (async () => {
          for (let step = queue.shift(); step; step = queue.shift()) {
            if (signal?.aborted) return
            await one(step)
          }
        })(),
      )
  await Promise.all(lanes)
  return steps.filter((s) => outcomes.has(s)).map((s) => outcomes.get(s)!)
}

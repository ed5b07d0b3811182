// Per-VM decisions (DESIGN.md §6): when a host or site is confirmed down, each of its VMs is
// failed over automatically or held for an operator, by its tier. An operator's own command
// always acts. Then the chosen VMs start in boot order: waves by priority (lower first), every VM
// of a wave in parallel, at most `maxStartsPerHost` starting at once on one host, and a wave
// begins when the previous one has finished starting (or failed: one VM never blocks the rest).

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

/** Runs waves in order, each wave's steps in parallel. Stops before the next wave if aborted. */
export async function runInBootOrder(
  waves: Wave[],
  start: (step: BootStep, options: { signal?: AbortSignal }) => Promise<void>,
  options: { signal?: AbortSignal; now?: () => number } = {},
): Promise<StepOutcome[]> {
  const now = options.now ?? Date.now
  const out: StepOutcome[] = []
  for (const wave of waves) {
    options.signal?.throwIfAborted()
    const results = await Promise.all(
      wave.steps.map(async (step): Promise<StepOutcome> => {
        const startedAtMs = now()
        try {
          await start(step, { signal: options.signal })
          return { vm: step.vm, peerId: step.peerId, ok: true, startedAtMs, endedAtMs: now() }
        } catch (err) {
          return {
            vm: step.vm,
            peerId: step.peerId,
            ok: false,
            error: (err as Error).message,
            startedAtMs,
            endedAtMs: now(),
          }
        }
      }),
    )
    out.push(...results)
  }
  return out
}

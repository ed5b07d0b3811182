// A VM's tier and boot priority, read one way by the failover service and the capacity plan: its
// entry in failover.json's `vms`, else the schema's own defaults (VmFailoverConfig); the tier's
// RPO, RTO and mode from the mesh's `tiers`, else the built-in DEFAULT_TIERS (a mesh whose `tiers`
// leave out the default tier still gets the default tier's values, never a second copy of them).
import { DEFAULT_TIERS, type FailoverConfig, VmFailoverConfig } from './config.js'
import type { Tier } from './policy.js'

/** What a VM without an entry in `vms` gets: the schema's defaults, parsed once. */
export const VM_DEFAULTS: { tier: string; priority: number } = VmFailoverConfig.parse({})

const builtIn = (name: string) =>
  Object.hasOwn(DEFAULT_TIERS, name) ? DEFAULT_TIERS[name as keyof typeof DEFAULT_TIERS] : undefined

/** The tier (with its name) and boot priority of `vm` under `config`. */
export function vmTier(
  config: Pick<FailoverConfig, 'tiers' | 'vms'>,
  vm: string,
): { tier: Tier; priority: number } {
  const v = config.vms[vm]
  const name = v?.tier ?? VM_DEFAULTS.tier
  const t = config.tiers[name] ?? builtIn(name) ?? builtIn(VM_DEFAULTS.tier)!
  return {
    tier: { name, rpoMs: t.rpoMs, rtoMs: t.rtoMs, mode: t.mode },
    priority: v?.priority ?? VM_DEFAULTS.priority,
  }
}

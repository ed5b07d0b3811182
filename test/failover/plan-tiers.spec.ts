// Tier defaults have one source: the plan and the failover service read a VM's tier through
// tiers.ts, which takes the default tier name and priority from the config schema and the tier's
// values from DEFAULT_TIERS. These checks fail if any of them drifts apart.
import { describe, expect, it } from 'vitest'
import {
  DEFAULT_TIERS,
  type PlanNode,
  parseFailoverConfig,
  planCapacity,
  VmFailoverConfig,
} from '../../src/failover/index.js'
import { VM_DEFAULTS, vmTier } from '../../src/failover/tiers.js'

const G = 2 ** 30
const NOW = 1_800_000_000_000

function node(peerId: string, site: string, vms: string[], holds: string[]): PlanNode {
  return {
    peerId,
    site,
    capacity: { cpus: 8, memoryTotalBytes: 32 * G, memoryFreeBytes: 30 * G, diskFreeBytes: 100 * G },
    vms: vms.map((name) => ({ name, state: 'running', cpus: 1, memoryBytes: G })),
    replicas: holds.map((vm) => ({ vm, lastPoint: { seq: 1, time: NOW - 1000 } })),
  }
}

const nodes = [
  node('a1', 'A', ['plain', 'gold1', 'bronze1'], []),
  node('b1', 'B', [], ['plain', 'gold1', 'bronze1']),
]
const rowsOf = (plan: ReturnType<typeof planCapacity>) =>
  Object.fromEntries(
    plan.scenarios.find((s) => s.kind === 'host' && s.failed === 'a1')!.vms.map((v) => [v.vm, v]),
  )

describe('plan tiers', () => {
  it('the default tier and priority are the config schema’s, and the default tier is built in', () => {
    expect(VM_DEFAULTS).toEqual(VmFailoverConfig.parse({}))
    expect(Object.keys(DEFAULT_TIERS)).toContain(VM_DEFAULTS.tier)
    expect(parseFailoverConfig({}).tiers).toEqual(DEFAULT_TIERS)
  })

  it('each VM is planned with its tier’s DEFAULT_TIERS values; no tier entry means the default tier', () => {
    const config = parseFailoverConfig({ vms: { gold1: { tier: 'gold' }, bronze1: { tier: 'bronze' } } })
    const rows = rowsOf(planCapacity({ nodes, config, nowMs: NOW }))
    for (const [vm, name] of [
      ['plain', VM_DEFAULTS.tier],
      ['gold1', 'gold'],
      ['bronze1', 'bronze'],
    ] as const) {
      const t = DEFAULT_TIERS[name as keyof typeof DEFAULT_TIERS]
      expect(rows[vm]).toMatchObject({ tier: name, rpoMs: t.rpoMs, rtoMs: t.rtoMs })
      expect(vmTier(config, vm).tier).toEqual({ name, ...t })
    }
  })

  it('a mesh whose tiers leave out the default tier still plans its VMs with the built-in values', () => {
    const config = parseFailoverConfig({
      tiers: { lab: { rpoMs: 2000, rtoMs: 30_000, mode: 'automatic' } },
      vms: { gold1: { tier: 'lab', priority: 7 } },
    })
    expect(config.tiers[VM_DEFAULTS.tier]).toBeUndefined()
    const fallback = DEFAULT_TIERS[VM_DEFAULTS.tier as keyof typeof DEFAULT_TIERS]
    const rows = rowsOf(planCapacity({ nodes, config, nowMs: NOW }))
    expect(rows.plain).toMatchObject({ tier: VM_DEFAULTS.tier, rpoMs: fallback.rpoMs, rtoMs: fallback.rtoMs })
    expect(rows.gold1).toMatchObject({ tier: 'lab', rpoMs: 2000, rtoMs: 30_000 })
    expect(vmTier(config, 'plain')).toEqual({
      tier: { name: VM_DEFAULTS.tier, ...fallback },
      priority: VM_DEFAULTS.priority,
    })
    expect(vmTier(config, 'gold1').priority).toBe(7)
  })
})

// The plan reports a VM's own RPO/RTO (set with `protect --rpo/--rto`), not its tier's defaults.
import { describe, expect, it } from 'vitest'
import { type PlanNode, parseFailoverConfig, planCapacity } from '../../src/failover/index.js'
import type { NodeComponents, VmStatusRow } from '../../src/node/api/components.js'
import { vmObjectives } from '../../src/node/api/plan.js'

const G = 2 ** 30
const NOW = 1_800_000_000_000

function node(peerId: string, site: string, vms: string[], holds: Array<[string, number]>): PlanNode {
  return {
    peerId,
    site,
    capacity: {
      cpus: 16,
      memoryTotalBytes: 32 * G,
      memoryFreeBytes: 30 * G,
      diskFreeBytes: 500 * G,
      diskTotalBytes: 1000 * G,
    },
    vms: vms.map((name) => ({ name, state: 'running', cpus: 2, memoryBytes: 2 * G, diskBytes: 10 * G })),
    replicas: holds.map(([vm, ageMs]) => ({ vm, lastPoint: { seq: 4, time: NOW - ageMs } })),
  }
}

// web1 has no tier in failover.json (silver: RPO 60 s); its protection says 5 s.
const nodes = [node('b1', 'B', ['web1'], []), node('c1', 'C', [], [['web1', 8000]])]
const config = parseFailoverConfig({})

describe('plan objectives', () => {
  it('a VM protected with its own RPO/RTO is planned against them, not its tier’s', () => {
    const tierOnly = planCapacity({ nodes, config, nowMs: NOW })
    const row0 = tierOnly.scenarios.find((s) => s.kind === 'site' && s.failed === 'B')!.vms[0]
    expect(row0).toMatchObject({ tier: 'silver', rpoMs: 60_000, rtoMs: 900_000, rpoBreached: false })
    const own = planCapacity({
      nodes,
      config,
      nowMs: NOW,
      objectives: { web1: { rpoMs: 5000, rtoMs: 60_000 } },
    })
    const row = own.scenarios.find((s) => s.kind === 'site' && s.failed === 'B')!.vms[0]
    expect(row).toMatchObject({ vm: 'web1', rpoMs: 5000, rtoMs: 60_000, dataLossMs: 8000, rpoBreached: true })
    expect(own.atRisk.find((r) => r.vm === 'web1')).toMatchObject({ rpoMs: 5000 })
  })

  it('reads the objectives from status rows and the protection of VMs protected here', async () => {
    const rows: VmStatusRow[] = [
      {
        name: 'web1',
        id: '1',
        role: 'primary',
        state: 'running',
        owner: 'b1',
        epoch: 0,
        lastPoint: null,
        lagSeconds: 1,
        rpoSeconds: 5,
      },
      {
        name: 'db',
        id: '2',
        role: 'replica',
        state: 'stopped',
        owner: 'x',
        epoch: 0,
        lastPoint: null,
        lagSeconds: 1,
        rpoSeconds: 30,
      },
      {
        name: 'free',
        id: '3',
        role: 'primary',
        state: 'running',
        owner: 'b1',
        epoch: 0,
        lastPoint: null,
        lagSeconds: null,
        rpoSeconds: null,
      },
    ]
    const components = {
      vmStatus: async () => rows,
      replication: {
        protection: (vm: string) => {
          if (vm !== 'web1') throw new Error('not protected')
          return { protection: { rpoSeconds: 5, rtoSeconds: 60 } }
        },
      },
    } as unknown as NodeComponents
    expect(await vmObjectives(components)).toEqual({
      web1: { rpoMs: 5000, rtoMs: 60_000 },
      db: { rpoMs: 30_000 },
    })
  })
})

// The plan reports a VM's own RPO/RTO (set with `protect --rpo/--rto`), not its tier's defaults.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import { describe, expect, it } from 'vitest'
import { type PlanNode, parseFailoverConfig, planCapacity } from '../../src/failover/index.js'
import type { NodeComponents, VmStatusRow } from '../../src/node/api/components.js'
import { type PlanReply, planRoutes, vmObjectives } from '../../src/node/api/plan.js'

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

  it('when the status rows cannot be read, the plan says so and logs it instead of dropping the RPOs silently', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'replimesh-plan-'))
    const app = Fastify()
    try {
      const logged: Array<[unknown, string]> = []
      const components = {
        dir,
        vmStatus: async () => {
          throw new Error('hypervisor list failed')
        },
        logger: { warn: (obj: unknown, msg: string) => void logged.push([obj, msg]) },
        mesh: { peerId: 'b1', site: 'B', peers: () => [], nodeStates: () => nodes },
      } as unknown as NodeComponents
      await expect(vmObjectives(components)).rejects.toThrow('hypervisor list failed')
      await planRoutes(app, components)
      const res = await app.inject({ method: 'GET', url: '/plan' })
      expect(res.statusCode).toBe(200)
      const plan = res.json() as PlanReply
      expect(plan.warnings).toHaveLength(1)
      expect(plan.warnings[0]).toMatch(/own RPO and RTO .* not read \(hypervisor list failed\).*tiers/)
      // The plan still runs, on the tier's RPO (silver: 60 s).
      const row = plan.scenarios.find((x) => x.kind === 'site' && x.failed === 'B')!.vms[0]
      expect(row).toMatchObject({ vm: 'web1', rpoMs: 60_000 })
      expect(logged).toHaveLength(1)
      expect(logged[0][0]).toEqual({ err: 'hypervisor list failed' })

      // Read normally: no warning.
      const ok = Fastify()
      await planRoutes(ok, { ...components, vmStatus: async () => [] } as NodeComponents)
      expect(((await ok.inject({ method: 'GET', url: '/plan' })).json() as PlanReply).warnings).toEqual([])
      await ok.close()
    } finally {
      await app.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})

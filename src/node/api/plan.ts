// Capacity planning route of the daemon's API (the CLI's `plan`):
//   GET /plan    what each host's and each site's failure would do, from the live gossip this
//                node sees (failover's planCapacity; shape documented in the README, "Capacity plan")
// Settings (hubs and their ratios, tiers, per-VM policy) come from <dir>/failover.json, the file
// the failover service reads, so the plan places VMs the way a real failover would.
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import {
  type CapacityPlan,
  parseFailoverConfig,
  planCapacity,
  type VmObjectives,
} from '../../failover/index.js'
import type { NodeComponents } from './components.js'
import { readJson } from './json-file.js'

/** The plan as the API returns it: the planner's report and who made it. */
export interface PlanReply extends CapacityPlan {
  peerId: string
  site: string
  /** Peers this node sees down now (candidates in no scenario). */
  downPeers: string[]
  /** What the plan could not read and what it used instead (empty when everything was read). */
  warnings: string[]
}

/** What the plan reads of the replication service the daemon composed (when it runs). */
interface ProtectionReader {
  protection(vm: string): { protection: { rpoSeconds: number; rtoSeconds: number } }
}

/**
 * The RPO and RTO operators set with `protect` for the VMs this node knows of: `status` rows give
 * the RPO of VMs protected here and of replicas held here; a VM protected here also has its RTO.
 * Throws when the status rows cannot be read (the caller says that tier defaults apply).
 */
export async function vmObjectives(
  components: NodeComponents & { replication?: ProtectionReader },
): Promise<Record<string, VmObjectives>> {
  const out: Record<string, VmObjectives> = {}
  for (const row of await components.vmStatus()) {
    if (row.rpoSeconds === null) continue
    const o = out[row.name] ?? {}
    out[row.name] = o
    // The owner's own protection wins over a replica's copy of it.
    if (o.rpoMs === undefined || row.role === 'primary') o.rpoMs = row.rpoSeconds * 1000
    if (row.role !== 'primary') continue
    try {
      o.rtoMs = components.replication?.protection(row.name).protection.rtoSeconds
      if (o.rtoMs !== undefined) o.rtoMs *= 1000
    } catch {} // not protected from here (a fenced copy)
  }
  return out
}

export async function planRoutes(app: FastifyInstance, components: NodeComponents): Promise<void> {
  app.get('/plan', async (): Promise<PlanReply> => {
    const config = parseFailoverConfig(await readJson(join(components.dir, 'failover.json')))
    const { mesh } = components
    const warnings: string[] = []
    const objectives = await vmObjectives(components).catch((err: Error) => {
      components.logger.warn(
        { err: err.message },
        "plan: the VMs' own RPO/RTO were not read; their tiers' apply",
      )
      warnings.push(
        `the VMs' own RPO and RTO (protect --rpo/--rto) were not read (${err.message}): the plan uses their tiers' instead`,
      )
      return {}
    })
    const downPeers = mesh
      .peers()
      .filter((p) => p.state === 'down')
      .map((p) => p.peerId)
    const plan = planCapacity({
      nodes: mesh.nodeStates(),
      downPeers,
      config,
      nowMs: Date.now(),
      objectives,
    })
    return { peerId: mesh.peerId, site: mesh.site, downPeers, warnings, ...plan }
  })
}

// Capacity planning route of the daemon's API (the CLI's `plan`):
//   GET /plan    what each host's and each site's failure would do, from the live gossip this
//                node sees (failover's planCapacity; shape documented in the README, "Capacity plan")
// Settings (hubs and their ratios, tiers, per-VM policy) come from <dir>/failover.json, the file
// the failover service reads, so the plan places VMs the way a real failover would.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { type CapacityPlan, parseFailoverConfig, planCapacity } from '../../failover/index.js'
import type { NodeComponents } from './components.js'

/** The plan as the API returns it: the planner's report and who made it. */
export interface PlanReply extends CapacityPlan {
  peerId: string
  site: string
  /** Peers this node sees down now (candidates in no scenario). */
  downPeers: string[]
}

async function failoverSettings(dir: string): Promise<unknown> {
  const file = join(dir, 'failover.json')
  try {
    return JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new Error(`${file}: ${(err as Error).message}`)
  }
}

export async function planRoutes(app: FastifyInstance, components: NodeComponents): Promise<void> {
  app.get('/plan', async (): Promise<PlanReply> => {
    const config = parseFailoverConfig(await failoverSettings(components.dir))
    const { mesh } = components
    const downPeers = mesh
      .peers()
      .filter((p) => p.state === 'down')
      .map((p) => p.peerId)
    const plan = planCapacity({ nodes: mesh.nodeStates(), downPeers, config, nowMs: Date.now() })
    return { peerId: mesh.peerId, site: mesh.site, downPeers, ...plan }
  })
}

// What route modules receive from the daemon: one typed components object (STYLE.md §4).
import type { Logger } from 'pino'
import type { Hypervisor } from '../../hyperv/index.js'
import type { MeshNode, OwnedVm } from '../../mesh/index.js'
import type { NodeConfig } from '../config.js'

/** One row of `status --json`'s vms (DESIGN.md §7). */
export interface VmStatusRow {
  name: string
  id: string
  role: 'primary' | 'replica'
  state: 'running' | 'stopped'
  owner: string
  epoch: number
  lastPoint: { seq: number; time: number } | null
  lagSeconds: number | null
  rpoSeconds: number | null
}

export interface NodeComponents {
  dir: string
  config: NodeConfig
  logger: Logger
  mesh: MeshNode
  /** The host's hypervisor; null until one is available on this platform. */
  hypervisor: Hypervisor | null
  /**
   * The vms of `status`. Defaults to the hypervisor's VMs as primaries owned by this node;
   * the replication layer replaces it to add replicas, points and lag.
   */
  vmStatus: () => Promise<VmStatusRow[]>
  /**
   * What the daemon gossips as VMs owned here, from the hypervisor's list (epoch 0). Failover
   * sets it to give the ledger's epochs and leave out fenced copies another node owns.
   */
  ownedVms?: (vms: OwnedVm[]) => OwnedVm[]
}

/** A route module: registers its routes on the daemon's API. */
export type RouteModule = (
  app: import('fastify').FastifyInstance,
  components: NodeComponents,
) => void | Promise<void>

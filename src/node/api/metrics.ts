// GET /metrics: the node's Prometheus exposition (text format 0.0.4), for a scraper (with the
// API's bearer token) or the dashboard. Peers by state and per-VM lag are read from the mesh
// and `status` at each scrape; counters come from the FailoverMetrics the daemon feeds.
import type { FastifyInstance } from 'fastify'
import { FailoverMetrics, type MetricsSnapshot } from '../../failover/index.js'
import type { NodeComponents } from './components.js'

export interface MetricsRouteOptions {
  metrics: FailoverMetrics
}

export function registerMetricsRoutes(app: FastifyInstance, { metrics }: MetricsRouteOptions): void {
  app.get('/metrics', async (_request, reply) => {
    const body = await metrics.render()
    return reply.header('content-type', metrics.contentType).send(body)
  })
}

/** What the node knows now, as the metrics snapshot. */
export async function nodeSnapshot(
  components: Pick<NodeComponents, 'mesh' | 'vmStatus'>,
): Promise<MetricsSnapshot> {
  return {
    peers: components.mesh.peers().map((p) => ({ state: p.state })),
    vms: (await components.vmStatus()).map((vm) => ({
      name: vm.name,
      role: vm.role,
      lagSeconds: vm.lagSeconds,
      rpoSeconds: vm.rpoSeconds,
    })),
  }
}

/**
 * Route module for the daemon (loadOptionalRoutes('./metrics.js', 'metricsRoutes')): uses
 * components.metrics when the daemon made one (to feed its counters), else its own.
 */
export async function metricsRoutes(
  app: FastifyInstance,
  components: NodeComponents & { metrics?: FailoverMetrics },
): Promise<void> {
  const metrics = components.metrics ?? new FailoverMetrics({ snapshot: () => nodeSnapshot(components) })
  components.metrics = metrics
  registerMetricsRoutes(app, { metrics })
}

// GET /metrics: the node's Prometheus exposition (text format 0.0.4), for a scraper or the
// dashboard. The daemon decides whether this route sits behind its bearer token.
import type { FastifyInstance } from 'fastify'
import type { FailoverMetrics } from '../../failover/index.js'

export interface MetricsRouteOptions {
  metrics: FailoverMetrics
}

export function registerMetricsRoutes(app: FastifyInstance, { metrics }: MetricsRouteOptions): void {
  app.get('/metrics', async (_request, reply) => {
    const body = await metrics.render()
    return reply.header('content-type', metrics.contentType).send(body)
  })
}

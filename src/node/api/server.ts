// The daemon's local HTTP API (fastify on 127.0.0.1, port 0). Every route needs the bearer token
// kept in api.token (0600), except the dashboard's page and scripts (route config `public`: they
// hold no data and fetch everything with the token). Route modules are composed here from one
// components object; a module that is not present in this build (another layer not written yet)
// is skipped. No CORS: another origin's page can neither read an answer nor send the header.
import { timingSafeEqual } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import { dashboardRoutes } from '../dashboard/index.js'
import type { NodeComponents, RouteModule } from './components.js'
import { statusRoutes } from './status.js'

export interface ApiServerInit {
  components: NodeComponents
  token: string
  /** Extra route modules (later layers). */
  modules?: RouteModule[]
}

export async function buildApiServer(init: ApiServerInit): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 })
  const expected = Buffer.from(`Bearer ${init.token}`)
  app.addHook('onRequest', async (request, reply) => {
    if (request.routeOptions.config?.public === true) return
    const given = Buffer.from(request.headers.authorization ?? '')
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      return reply.code(401).send({ error: 'missing or wrong API token (see api.token in the node folder)' })
  })
  // The CLI makes one request per process: closing the connection lets it exit at once instead
  // of waiting for a keep-alive socket (measured: ~0.2 s of every `status`).
  app.addHook('onSend', async (_request, reply) => {
    reply.header('connection', 'close')
  })
  app.setErrorHandler((err, request, reply) => {
    const message = err instanceof Error ? err.message : String(err)
    init.components.logger.warn({ route: request.url, reason: message }, 'API request failed')
    const status = (err as { statusCode?: number }).statusCode ?? 500
    reply.code(status >= 400 ? status : 500).send({ error: message.split('\n')[0] })
  })
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({ error: `no route ${request.method} ${request.url}` }),
  )
  await statusRoutes(app, init.components)
  await dashboardRoutes(app)
  for (const module of init.modules ?? []) await module(app, init.components)
  return app
}

/** Loads an optional route module by path relative to this folder; null when absent. */
export async function loadOptionalRoutes(file: string, exportName: string): Promise<RouteModule | null> {
  let mod: Record<string, unknown>
  try {
    mod = await import(new URL(file, import.meta.url).href)
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND') return null
    throw err
  }
  const fn = mod[exportName]
  return typeof fn === 'function' ? (fn as RouteModule) : null
}

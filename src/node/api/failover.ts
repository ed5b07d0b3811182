// Failover routes of the daemon's API (the CLI's `failover` and `failback`, and the dashboard):
//   GET  /failover                 quorum, known owners, recent notifications
//   POST /failover                 {vm, to?, mode?: manual|test|planned} | {host} | {site}
//   POST /failover/test/end        {vm}: stop and remove a test-failover copy
//   POST /failback                 {vm, to?}
// The daemon puts its FailoverService in components.failover; without it every route answers
// 503 with one line saying so.
import type { FastifyInstance, FastifyReply } from 'fastify'
import { z } from 'zod'
import {
  EpochQuorumError,
  FailoverError,
  type FailoverService,
  NetworkMappingError,
} from '../../failover/index.js'
import type { NodeComponents } from './components.js'

/** The service methods the routes use (a FailoverService, or a stand-in in tests). */
export type FailoverApi = Pick<
  FailoverService,
  'failover' | 'failoverHosts' | 'hostsAt' | 'failback' | 'status' | 'endTest'
>

const name = z.string().min(1).max(256)
const failoverBody = z.union([
  z
    .object({
      vm: name,
      to: z.string().min(1).max(128).optional(),
      mode: z.enum(['manual', 'test', 'planned']).default('manual'),
    })
    .strict(),
  z.object({ host: z.string().min(1).max(128) }).strict(),
  z.object({ site: z.string().min(1).max(64) }).strict(),
])
const failbackBody = z.object({ vm: name, to: z.string().min(1).max(128).optional() }).strict()
const endTestBody = z.object({ vm: name }).strict()

function unavailable(reply: FastifyReply) {
  return reply
    .code(503)
    .send({ error: 'failover is not running on this node (the daemon did not start its failover service)' })
}

function badBody(reply: FastifyReply, issues: z.core.$ZodIssue[], expected: string) {
  const first = issues[0]
  const where = first?.path.length ? `${first.path.join('.')}: ` : ''
  return reply.code(400).send({ error: `${where}${first?.message ?? 'bad request'} (expected ${expected})` })
}

/** A failover that could not be done is a conflict with the mesh's state (409), not a crash. */
async function act<T>(reply: FastifyReply, fn: () => Promise<T>): Promise<T | FastifyReply> {
  try {
    return await fn()
  } catch (err) {
    if (err instanceof FailoverError || err instanceof EpochQuorumError || err instanceof NetworkMappingError)
      return reply.code(409).send({ error: err.message.split('\n')[0] })
    throw err
  }
}

export async function failoverRoutes(
  app: FastifyInstance,
  components: NodeComponents & { failover?: FailoverApi | null },
): Promise<void> {
  app.get('/failover', async (_request, reply) => {
    const svc = components.failover
    return svc ? svc.status() : unavailable(reply)
  })

  app.post('/failover', async (request, reply) => {
    const svc = components.failover
    if (!svc) return unavailable(reply)
    const body = failoverBody.safeParse(request.body ?? {})
    if (!body.success) return badBody(reply, body.error.issues, '{vm, to?, mode?} or {host} or {site}')
    const b = body.data
    if ('vm' in b) {
      if (b.mode === 'planned')
        return reply.code(501).send({
          error:
            'planned failover needs a final sync from the replication layer, which this build does not offer yet',
        })
      const mode = b.mode
      return act(reply, () => svc.failover(b.vm, { to: b.to, mode }))
    }
    const hosts = 'host' in b ? [b.host] : svc.hostsAt(b.site)
    if (hosts.length === 0)
      return reply.code(404).send({ error: `no host of site ${(b as { site: string }).site} is known here` })
    return act(reply, async () => ({ hosts, vms: await svc.failoverHosts(hosts) }))
  })

  app.post('/failover/test/end', async (request, reply) => {
    const svc = components.failover
    if (!svc) return unavailable(reply)
    const body = endTestBody.safeParse(request.body ?? {})
    if (!body.success) return badBody(reply, body.error.issues, '{vm}')
    await svc.endTest(body.data.vm)
    return { vm: body.data.vm, ended: true }
  })

  app.post('/failback', async (request, reply) => {
    const svc = components.failover
    if (!svc) return unavailable(reply)
    const body = failbackBody.safeParse(request.body ?? {})
    if (!body.success) return badBody(reply, body.error.issues, '{vm, to?}')
    return act(reply, () => svc.failback(body.data.vm, { to: body.data.to }))
  })
}

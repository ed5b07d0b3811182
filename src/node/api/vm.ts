// VM routes of the daemon's API (the CLI's `vm start|stop|write|ls` talk to these):
//   GET  /vms                 catalogue with live state
//   GET  /vms/:vm             one VM
//   POST /vms/:vm/start       {workload?}      (workload: lab hypervisor only)
//   POST /vms/:vm/stop        {force?}
//   POST /vms/:vm/write       {disk, offset, data: base64}   lab only: bytes into the running VM
//   GET  /vms/:vm/guest       lab only: the guest's live status (seq, journal, bytes written)
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import {
  GuestWriteError,
  type Hypervisor,
  LabHypervisor,
  PointError,
  VmConfigError,
  VmNotFoundError,
  VmStateError,
} from '../../hyperv/index.js'
import type { NodeComponents } from './components.js'

/** Largest `vm write` body: 64 MiB of data as base64, plus the JSON around it. */
const WRITE_BODY_LIMIT_BYTES = Math.ceil((64 * 1024 * 1024 * 4) / 3) + 4096

const workloadBody = z
  .object({
    rateBytesPerSec: z.number().int().nonnegative().optional(),
    blockBytes: z.number().int().positive().multipleOf(512).optional(),
    pattern: z.enum(['random', 'sequential']).optional(),
    hotSetFraction: z.number().gt(0).lte(1).optional(),
    enabled: z.boolean().optional(),
  })
  .strict()
const startBody = z.object({ workload: workloadBody.optional() }).strict()
const stopBody = z.object({ force: z.boolean().optional() }).strict()
const writeBody = z
  .object({
    disk: z.number().int().nonnegative().default(0),
    offset: z.number().int().nonnegative(),
    data: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'base64'),
  })
  .strict()

class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message)
  }
}

/** Maps the hypervisor's named errors to HTTP statuses (the server sends {error}). */
function toHttp(err: unknown): never {
  if (err instanceof VmNotFoundError) throw new HttpError(404, err.message)
  if (err instanceof VmStateError || err instanceof PointError) throw new HttpError(409, err.message)
  if (err instanceof GuestWriteError) throw new HttpError(400, err.message)
  if (err instanceof VmConfigError) throw new HttpError(422, err.message)
  throw err
}

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {})
  if (r.success) return r.data
  const issue = r.error.issues[0]
  throw new HttpError(400, `bad request body: ${issue.path.join('.') || '(top)'}: ${issue.message}`)
}

export async function vmRoutes(app: FastifyInstance, components: NodeComponents): Promise<void> {
  const hypervisor = (): Hypervisor => {
    if (!components.hypervisor) throw new HttpError(503, 'this node has no hypervisor')
    return components.hypervisor
  }
  const lab = (what: string): LabHypervisor => {
    const hv = hypervisor()
    if (!(hv instanceof LabHypervisor))
      throw new HttpError(400, `${what} needs the lab hypervisor (this node runs ${hv.kind})`)
    return hv
  }
  type VmParams = { Params: { vm: string } }

  app.get('/vms', async () => hypervisor().listVms().catch(toHttp))

  app.get<VmParams>('/vms/:vm', async (req) => hypervisor().getVm(req.params.vm).catch(toHttp))

  app.post<VmParams>('/vms/:vm/start', async (req) => {
    const body = parse(startBody, req.body)
    const hv = body.workload ? lab('a workload') : hypervisor()
    await (hv instanceof LabHypervisor ? hv.startVm(req.params.vm, body) : hv.startVm(req.params.vm)).catch(
      toHttp,
    )
    return hv.getVm(req.params.vm).catch(toHttp)
  })

  app.post<VmParams>('/vms/:vm/stop', async (req) => {
    const body = parse(stopBody, req.body)
    await hypervisor().stopVm(req.params.vm, body).catch(toHttp)
    return hypervisor().getVm(req.params.vm).catch(toHttp)
  })

  app.post<VmParams>('/vms/:vm/write', { bodyLimit: WRITE_BODY_LIMIT_BYTES }, async (req) => {
    const body = parse(writeBody, req.body)
    const data = Buffer.from(body.data, 'base64')
    await lab('vm write').writeVm(req.params.vm, body.disk, body.offset, data).catch(toHttp)
    return { vm: req.params.vm, disk: body.disk, offset: body.offset, bytes: data.length }
  })

  app.get<VmParams>('/vms/:vm/guest', async (req) =>
    lab('guest status').vmStatus(req.params.vm).catch(toHttp),
  )
}

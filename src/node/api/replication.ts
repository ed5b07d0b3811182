// Replication routes of the daemon's API, and the composition of the replication service: it is
// started when the API is built (it opens the node's chunk store) and stopped when the API closes.
//   POST   /replication/protect          {vm, rpoSeconds, rtoSeconds, to, chain, copies}
//   DELETE /replication/protect/:vm
//   GET    /replication/vms/:vm          protection, per-target progress (seq, bytes sent)
//   GET    /replication/points/:vm       recovery points held on this node
//   POST   /replication/restore          {vm, seq?, disk?, out, format}; a point or chunks this node
//                                        lacks come from the VM's holders, several at once
//   GET    /replication/seeds            seeds of replicas here: chunks pulled from each holder
//   GET    /replication/holders/:vm      peers that gossip a committed point of vm (newest first)
//   GET    /replication/receiver         chunks stored / rejected on this node (tests, bench)
//   GET    /replication/links            links used: limit now, measured rate, compression
//   POST   /replication/links/reload     re-read links.json now (`link set`/`rm` ask it): 422 if bad
// It also replaces components.vmStatus so `status` shows protected VMs' lag and replicas held here.
import { resolve } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { openChunkStore } from '../../chunkstore/index.js'
import { VmNotFoundError } from '../../hyperv/index.js'
import {
  NotProtectedError,
  PointNotFoundError,
  ReplicationService,
  TargetSelectionError,
  type VmReplicationStatus,
} from '../../replication/index.js'
import { nodePaths } from '../paths.js'
import type { NodeComponents, VmStatusRow } from './components.js'

const protectBody = z
  .object({
    vm: z.string().min(1).max(128),
    rpoSeconds: z.number().positive(),
    rtoSeconds: z.number().positive(),
    to: z.array(z.string().min(1).max(128)).max(16).nullable().default(null),
    chain: z.boolean().default(false),
    copies: z.number().int().positive().max(16).nullable().default(null),
  })
  .strict()

const restoreBody = z
  .object({
    vm: z.string().min(1).max(128),
    seq: z.number().int().nonnegative().optional(),
    disk: z.number().int().nonnegative().optional(),
    out: z.string().min(1),
    format: z.enum(['raw', 'vhdx']).default('raw'),
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

function toHttp(err: unknown): never {
  if (err instanceof TargetSelectionError) throw new HttpError(409, err.message)
  if (err instanceof NotProtectedError || err instanceof PointNotFoundError || err instanceof VmNotFoundError)
    throw new HttpError(404, err.message)
  throw err
}

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {})
  if (!r.success) {
    const i = r.error.issues[0]
    throw new HttpError(400, `${i?.path.join('.') || 'body'}: ${i?.message}`)
  }
  return r.data
}

export async function replicationRoutes(app: FastifyInstance, components: NodeComponents): Promise<void> {
  const store = await openChunkStore({ dir: nodePaths(components.dir).store })
  const { recoveredAtOpen } = store
  if (recoveredAtOpen.chunks > 0)
    components.logger.info(
      { module: 'chunkstore', chunks: recoveredAtOpen.chunks, bytes: recoveredAtOpen.bytes },
      'chunk store: indexed the chunks written after its last commit',
    )
  const corrupt = Number(process.env.REPLIMESH_FAULT_CORRUPT_CHUNKS ?? 0)
  const service = new ReplicationService({
    dir: components.dir,
    mesh: components.mesh,
    store,
    hypervisor: components.hypervisor,
    logger: components.logger.child({ module: 'replication' }),
    corruptChunks: Number.isSafeInteger(corrupt) && corrupt > 0 ? corrupt : 0,
  })
  await service.start()
  app.addHook('onClose', async () => {
    await service.stop()
    await store.close()
  })

  // Failover (composed after this module) hands VMs over through the service.
  ;(components as NodeComponents & { replication?: ReplicationService }).replication = service

  const base = components.vmStatus
  components.vmStatus = async () => mergeRows(await base(), await service.vmStatus())

  app.post('/replication/protect', async (request) => {
    const body = parse(protectBody, request.body)
    try {
      return await service.protect(body)
    } catch (err) {
      toHttp(err)
    }
  })

  app.delete<{ Params: { vm: string } }>('/replication/protect/:vm', async (request) => {
    try {
      await service.unprotect(request.params.vm)
      return { vm: request.params.vm, protected: false }
    } catch (err) {
      toHttp(err)
    }
  })

  app.get<{ Params: { vm: string } }>('/replication/vms/:vm', async (request) => {
    try {
      return service.protection(request.params.vm)
    } catch (err) {
      toHttp(err)
    }
  })

  app.get<{ Params: { vm: string } }>('/replication/points/:vm', async (request) =>
    service.points(request.params.vm),
  )

  app.post('/replication/restore', async (request) => {
    const body = parse(restoreBody, request.body)
    try {
      return await service.restore(body.vm, {
        seq: body.seq,
        disk: body.disk,
        out: resolve(body.out),
        format: body.format,
      })
    } catch (err) {
      toHttp(err)
    }
  })

  app.get('/replication/receiver', async () => service.receiverStats)

  app.get('/replication/seeds', async () => service.seedStats())

  app.get<{ Params: { vm: string } }>('/replication/holders/:vm', async (request) =>
    service.holdersOf(request.params.vm),
  )

  app.get('/replication/links', async () => service.linkStatus())
  app.post('/replication/links/reload', async () => {
    const { settings, error } = await service.reloadLinks()
    if (error) throw new HttpError(422, `links file ignored, previous settings kept: ${error}`)
    return { settings }
  })
}

/**
 * Protected VMs get their lag, last point and epoch; replicas held here are added as role
 * replica. A VM registered here that another node owns now (a fenced copy) shows as that replica.
 */
function mergeRows(rows: VmStatusRow[], replication: VmReplicationStatus[]): VmStatusRow[] {
  const replicaOf = (row: VmStatusRow) =>
    replication.find((x) => x.role === 'replica' && (x.id === row.id || x.name === row.name))
  const out = rows.map((row): VmStatusRow => {
    const r = replication.find((x) => x.role === 'primary' && (x.id === row.id || x.name === row.name))
    if (r)
      return {
        ...row,
        lastPoint: r.lastPoint,
        lagSeconds: r.lagSeconds,
        rpoSeconds: r.rpoSeconds,
        epoch: r.epoch,
      }
    const replica = replicaOf(row)
    return replica
      ? {
          ...row,
          role: 'replica',
          owner: replica.owner,
          epoch: replica.epoch,
          lastPoint: replica.lastPoint,
          lagSeconds: replica.lagSeconds,
          rpoSeconds: replica.rpoSeconds,
        }
      : row
  })
  for (const r of replication) {
    if (r.role !== 'replica' || out.some((row) => row.role === 'replica' && row.name === r.name)) continue
    out.push({
      name: r.name,
      id: r.id,
      role: 'replica',
      state: 'stopped',
      owner: r.owner,
      epoch: r.epoch,
      lastPoint: r.lastPoint,
      lagSeconds: r.lagSeconds,
      rpoSeconds: r.rpoSeconds,
    })
  }
  return out
}

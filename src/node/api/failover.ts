// Failover routes of the daemon's API (the CLI's `failover` and `failback`, and the dashboard):
//   GET  /failover                 quorum, known owners, recent notifications
//   POST /failover                 {vm, to?, mode?: manual|test|planned} | {host} | {site}
//   POST /failover/test/end        {vm}: stop and remove a test-failover copy
//   POST /failback                 {vm, to?}
// The failover service is composed here (like replication's): its epoch ledger in
// <dir>/failover/epochs.json, its settings in <dir>/failover.json (optional; defaults otherwise),
// the control protocol on the mesh. It needs the hypervisor; without one (or when composition
// fails) every route answers 503 with one line saying why.
import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { extname, join } from 'node:path'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { z } from 'zod'
import {
  createNotifier,
  EpochCoordinator,
  EpochLedger,
  EpochQuorumError,
  FailoverError,
  FailoverMetrics,
  FailoverService,
  meshControlTransport,
  NetworkMappingError,
  parseFailoverConfig,
  type ReplicaSource,
} from '../../failover/index.js'
import { openDisk, type VmInfo } from '../../hyperv/index.js'
import { type ReplicaRecord, replicaDiskPath } from '../../replication/index.js'
import type { NodeComponents } from './components.js'
import { nodeSnapshot } from './metrics.js'

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

function badBody(reply: FastifyReply, issues: z.core.$ZodIssue[], expected: string) {
  const first = issues[0]
  const where = first?.path.length ? `${first.path.join('.')}: ` : ''
  return reply.code(400).send({ error: `${where}${first?.message ?? 'bad request'} (expected ${expected})` })
}

/** What failover needs of the replication layer, when the daemon's components carry it. */
interface ReplicationHandOver {
  prepareReplica?: ReplicaSource['prepare']
  becomeOwner?: (vm: string, epoch: number) => Promise<void>
  becomeReplica?: (vm: string, owner: string, epoch: number) => Promise<void>
  setProducing?: (allowed: boolean, reason: string) => void
}

type FailoverNodeComponents = NodeComponents & {
  metrics?: FailoverMetrics
  replication?: ReplicationHandOver
}

/**
 * Stop-gap until the replication layer hands replicas over itself (prepareReplica): the replica
 * disks kept at <dir>/replicas/<vm>/ and their replica.json. Refuses a replica whose last apply was
 * interrupted (replication rolls it forward at start). The VM's replicated configuration lives in
 * the store, which replication holds open, so CPU, memory and NICs fall back to defaults here.
 */
async function prepareFromReplicaFiles(dir: string, vm: string, signal?: AbortSignal) {
  const replicasDir = join(dir, 'replicas')
  const deadline = Date.now() + REPLICA_SETTLE_MS
  let record: ReplicaRecord | null = null
  for (;;) {
    signal?.throwIfAborted()
    record = (await readJson(join(replicasDir, vm, 'replica.json'))) as ReplicaRecord | null
    if (!record || record.appliedSeq === null)
      throw new FailoverError(vm, 'no committed point of it is held on this node')
    // Points still being applied when the source died finish within moments: wait for them.
    if (record.applyingSeq === null && record.appliedSeq === record.lastSeq) break
    if (Date.now() > deadline)
      throw new FailoverError(
        vm,
        `its replica is still applying point ${record.applyingSeq ?? record.lastSeq}`,
      )
    await new Promise((r) => setTimeout(r, 100))
  }
  const disks: VmInfo['disks'] = []
  for (let i = 0; ; i++) {
    const path = replicaDiskPath(replicasDir, vm, i)
    const disk = await openDisk(path, { readOnly: true }).catch(() => null)
    if (!disk) break
    disks.push({ path, format: disk.format, virtualSize: disk.virtualSize, parents: [] })
    await disk.close()
  }
  if (disks.length === 0) throw new FailoverError(vm, 'its replica disks are missing on this node')
  const config: VmInfo = {
    id: record.vmId,
    name: vm,
    generation: 2,
    state: 'stopped',
    cpus: 1,
    memoryBytes: 512 * 2 ** 20,
    disks,
    nics: [],
    notes: 'registered by replimesh failover from its replica disks',
    tags: [],
    configPath: null,
  }
  return {
    config,
    diskPaths: disks.map((d) => d.path),
    point: { seq: record.appliedSeq as number, time: record.lastPointTime ?? Date.now() },
  }
}

const testCopyDir = (dir: string, vm: string) => join(dir, 'failover', 'tests', vm)

/**
 * A test failover's own copy of the replica disks, taken while no apply runs: copied, then the
 * replica record re-read; if a point was applied meanwhile the copy may mix two points, so it is
 * taken again.
 */
async function testCopyFromReplicaFiles(dir: string, vm: string, signal?: AbortSignal) {
  for (let attempt = 1; attempt <= 5; attempt++) {
    const prep = await prepareFromReplicaFiles(dir, vm, signal)
    const out = testCopyDir(dir, vm)
    await rm(out, { recursive: true, force: true })
    await mkdir(out, { recursive: true })
    const copies = prep.diskPaths.map((p, i) => join(out, `disk${i}${extname(p)}`))
    for (const [i, from] of prep.diskPaths.entries()) await copyFile(from, copies[i])
    const after = (await readJson(join(dir, 'replicas', vm, 'replica.json'))) as ReplicaRecord | null
    if (after && after.applyingSeq === null && after.appliedSeq === prep.point.seq)
      return {
        ...prep,
        config: { ...prep.config, disks: prep.config.disks.map((d, i) => ({ ...d, path: copies[i] })) },
        diskPaths: copies,
      }
  }
  throw new FailoverError(vm, 'its replica kept changing while a test copy was taken; try again')
}

function replicaSourceOf(components: FailoverNodeComponents): ReplicaSource {
  const r = () => components.replication
  return {
    prepare: async (vm, options) => {
      const handOver = r()
      if (handOver?.prepareReplica) return handOver.prepareReplica(vm, options)
      return options?.test
        ? testCopyFromReplicaFiles(components.dir, vm, options.signal)
        : prepareFromReplicaFiles(components.dir, vm, options?.signal)
    },
    releaseTest: async (vm) => {
      if (!r()?.prepareReplica) await rm(testCopyDir(components.dir, vm), { recursive: true, force: true })
    },
    owned: async (vm, epoch) => r()?.becomeOwner?.(vm, epoch),
    fenced: async (vm, owner, epoch) => r()?.becomeReplica?.(vm, owner, epoch),
    setProducing: (allowed, reason) => r()?.setProducing?.(allowed, reason),
  }
}

/** How long a promotion waits for points that were being applied when the source died. */
const REPLICA_SETTLE_MS = 10_000

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new Error(`${file}: ${(err as Error).message}`)
  }
}

/** Builds and starts the node's failover service; returns it with its stop function. */
export async function composeFailover(
  components: FailoverNodeComponents,
): Promise<{ service: FailoverService; stop: () => Promise<void> }> {
  const { mesh, hypervisor } = components
  if (!hypervisor) throw new Error('no hypervisor on this node')
  const config = parseFailoverConfig(await readJson(join(components.dir, 'failover.json')))
  const dir = join(components.dir, 'failover')
  await mkdir(dir, { recursive: true })
  const ledgerFile = join(dir, 'epochs.json')
  const ledger = new EpochLedger((await readJson(ledgerFile)) as ConstructorParameters<typeof EpochLedger>[0])
  const persist = async (state: unknown) => {
    await writeFile(`${ledgerFile}.tmp`, JSON.stringify(state), { flush: true })
    await rename(`${ledgerFile}.tmp`, ledgerFile)
  }
  const witnessId = config.witness?.peerId
  const logger = components.logger.child({ module: 'failover' })
  components.metrics ??= new FailoverMetrics({ snapshot: () => nodeSnapshot(components) })
  const metrics = components.metrics
  const notifier = createNotifier(config.notifications, { hypervisor, metrics, logger })
  let service: FailoverService | null = null
  const coordinator = new EpochCoordinator({
    self: { peerId: mesh.peerId, site: mesh.site },
    transport: meshControlTransport(mesh),
    members: () =>
      mesh
        .peers()
        .filter((p) => p.peerId !== witnessId)
        .map((p) => ({ peerId: p.peerId, site: p.site })),
    alive: () =>
      mesh
        .peers()
        .filter((p) => p.state !== 'down' && p.connected)
        .map((p) => p.peerId),
    persist,
    ledger,
    witness: config.witness,
    onClaim: (claim) => service?.onClaim(claim),
  })
  service = new FailoverService({
    mesh,
    coordinator,
    hypervisor,
    replicas: replicaSourceOf(components),
    notifier,
    metrics,
    config,
    logger,
  })
  coordinator.start()
  await service.start()
  const started = service
  return {
    service: started,
    stop: async () => {
      await started.stop()
      await coordinator.stop()
      await notifier.stop()
    },
  }
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
  let unavailableReason = 'the daemon did not start its failover service'
  const unavailable = (reply: FastifyReply) =>
    reply.code(503).send({ error: `failover is not running on this node (${unavailableReason})` })
  if (components.failover === undefined) {
    // Compose the service; a failure leaves the node running without failover, and says why.
    try {
      const composed = await composeFailover(components as FailoverNodeComponents)
      components.failover = composed.service
      app.addHook('onClose', composed.stop)
    } catch (err) {
      unavailableReason = (err as Error).message
      components.failover = null
      components.logger?.warn({ reason: unavailableReason }, 'failover service not started')
    }
  }
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

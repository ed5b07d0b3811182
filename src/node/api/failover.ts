// Failover routes of the daemon's API (the CLI's `failover` and `failback`, and the dashboard):
//   GET  /failover                 quorum, known owners, recent notifications
//   POST /failover                 {vm, to?, mode?: manual|test|planned} | {host} | {site}
//   POST /failover/test/end        {vm}: stop and remove a test-failover copy
//   POST /failback                 {vm, to?}
// The failover service is composed here (like replication's): its epoch ledger in
// <dir>/failover/epochs.json, its settings in <dir>/failover.json (optional; defaults otherwise),
// the control protocol on the mesh. It needs the hypervisor; without one (or when composition
// fails) every route answers 503 with one line saying why.
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
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
  type TargetLag,
} from '../../failover/index.js'
import type { NodeComponents } from './components.js'
import { readJson } from './json-file.js'
import { nodeSnapshot } from './metrics.js'
import { vmObjectives } from './plan.js'

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

/** What failover needs of the replication layer (the ReplicationService the daemon composed). */
interface ReplicationHandOver {
  prepareReplica: ReplicaSource['prepare']
  releaseTest(vm: string): Promise<void>
  releasePrepared(vm: string): Promise<void>
  knownEpoch(vm: string): Promise<number>
  learnEpoch(vm: string, epoch: number, owner: string): Promise<void>
  becomeOwner(vm: string, epoch: number): Promise<void>
  becomeReplica(vm: string, owner: string, epoch: number): Promise<void>
  setProducing(allowed: boolean, reason: string): void
  finalSync(
    vm: string,
    options: { to?: string; signal?: AbortSignal },
  ): Promise<{ seq: number; time: number }>
  resumeProtection(vm: string): Promise<void>
  /** RPO accounting per VM and target (the replication service's LagTracker). */
  readonly lag?: { targets(nowMs: number): TargetLag[] }
}

type FailoverNodeComponents = NodeComponents & {
  metrics?: FailoverMetrics
  replication?: ReplicationHandOver
}

/** The replica hand-over, from the replication service; without one, no VM can be promoted here. */
function replicaSourceOf(components: FailoverNodeComponents): ReplicaSource {
  const r = (): ReplicationHandOver => {
    if (!components.replication) throw new Error('replication is not running on this node')
    return components.replication
  }
  return {
    prepare: async (vm, options) => {
      if (!components.replication)
        throw new FailoverError(vm, 'replication is not running on this node: no replica to run')
      return r().prepareReplica(vm, options)
    },
    releaseTest: async (vm) => components.replication?.releaseTest(vm),
    released: async (vm) => components.replication?.releasePrepared(vm),
    knownEpoch: async (vm) => (await components.replication?.knownEpoch(vm)) ?? 0,
    learnEpoch: async (vm, epoch, owner) => components.replication?.learnEpoch(vm, epoch, owner),
    owned: async (vm, epoch) => components.replication?.becomeOwner(vm, epoch),
    fenced: async (vm, owner, epoch) => components.replication?.becomeReplica(vm, owner, epoch),
    setProducing: (allowed, reason) => components.replication?.setProducing(allowed, reason),
    finalSync: (vm, options) => r().finalSync(vm, options),
    resume: async (vm) => components.replication?.resumeProtection(vm),
    targetLags: (now) => components.replication?.lag?.targets(now) ?? [],
    objectives: async (vm) =>
      (await vmObjectives(components as Parameters<typeof vmObjectives>[0]))[vm] ?? null,
  }
}

/**
 * Gossip carries, per VM this node runs, the epoch it owns it at (0: never failed over) and leaves
 * out VMs registered here that another node owns now (a fenced copy is no claim): the daemon's
 * published list goes through this filter (components.ownedVms).
 */
function publishRealEpochs(components: NodeComponents, ledger: EpochLedger): void {
  const self = components.mesh.peerId
  components.ownedVms = (vms) =>
    vms.flatMap((vm) => {
      const claim = ledger.current(vm.name)
      if (!claim) return [vm]
      return claim.owner === self ? [{ ...vm, epoch: claim.epoch }] : []
    })
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
  publishRealEpochs(components, ledger)
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

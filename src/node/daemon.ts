// `replimesh start`: the node daemon in the foreground. Order: config → lock → logger → keys and
// certificate → mesh node → hypervisor → HTTP API on 127.0.0.1:0 (token file, then api.json).
// SIGTERM/SIGINT stop in reverse order and remove api.json and the lock.
import { randomBytes } from 'node:crypto'
import { open, readFile, rm, statfs } from 'node:fs/promises'
import { cpus, freemem, totalmem } from 'node:os'
import pino, { type Logger } from 'pino'
import type { Hypervisor } from '../hyperv/index.js'
import { type Capacity, decodePublicKey, MeshNode } from '../mesh/index.js'
import type { NodeComponents, RouteModule } from './api/components.js'
import { buildApiServer, loadOptionalRoutes } from './api/server.js'
import { defaultVmStatus } from './api/status.js'
import { loadNodeConfig } from './config.js'
import {
  fileTokenLedger,
  nodeFiles,
  readEnvelope,
  readOptionalEnvelope,
  readPrivateKey,
  writeEnvelope,
  writeFileAtomic,
} from './node-files.js'
import { simulatedCapacityOf } from './simulated-capacity.js'

export class DaemonLockedError extends Error {
  override name = 'DaemonLockedError'
}

/** Takes the folder's lock file; refuses while another live process holds it. */
export async function acquireLock(file: string, dir: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, 'wx', 0o644)
      await handle.writeFile(`${process.pid}\n`)
      await handle.close()
      return async () => {
        await rm(file, { force: true })
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim())
      if (pid > 0 && isAlive(pid))
        throw new DaemonLockedError(`a node is already running on ${dir} (pid ${pid}); stop it first`)
      await rm(file, { force: true }) // stale: its process is gone
    }
  }
  throw new DaemonLockedError(`could not take the lock ${file}`)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export function makeLogger(dir: string, level: string): Logger {
  const streams = pino.multistream([
    { stream: process.stdout, level: level as pino.Level },
    {
      stream: pino.destination({ dest: nodeFiles(dir).log, append: true, sync: true }),
      level: level as pino.Level,
    },
  ])
  return pino({ level, base: { pid: process.pid } }, streams)
}

export function capacityOf(dir: string): () => Promise<Capacity> {
  return async () => {
    const fs = await statfs(dir)
    return {
      diskFreeBytes: fs.bavail * fs.bsize,
      diskTotalBytes: fs.blocks * fs.bsize,
      cpus: cpus().length,
      memoryTotalBytes: totalmem(),
      memoryFreeBytes: freemem(),
    }
  }
}

/** The lab hypervisor when this build has it (it is composed lazily, like every layer). */
async function loadHypervisor(dir: string, logger: Logger): Promise<Hypervisor | null> {
  const specifier = '../hyperv/index.js'
  const mod = (await import(specifier)) as {
    createLabHypervisor?: (init: { vmsDir: string; logger: unknown }) => Hypervisor
  }
  if (typeof mod.createLabHypervisor !== 'function') return null
  const hv = mod.createLabHypervisor({
    vmsDir: nodeFiles(dir).vms,
    logger: logger.child({ module: 'hyperv' }),
  })
  await hv.start()
  return hv
}

export interface RunningDaemon {
  components: NodeComponents
  url: string
  stop(): Promise<void>
}

export async function startDaemon(dir: string): Promise<RunningDaemon> {
  const files = nodeFiles(dir)
  const config = await loadNodeConfig(dir)
  const releaseLock = await acquireLock(files.lock, dir)
  const cleanups: Array<() => Promise<void>> = [releaseLock]
  const cleanup = async () => {
    for (const fn of cleanups.splice(0).reverse()) await fn().catch(() => {})
  }
  try {
    const logger = makeLogger(dir, config.logLevel)
    const privateKey = await readPrivateKey(files.identity)
    const certificate = await readEnvelope(files.certificate)
    const meshKeyPrivate = await readPrivateKey(files.meshKey).catch(() => null)
    const mesh = new MeshNode({
      privateKey,
      site: config.site,
      meshKey: decodePublicKey(config.meshKey),
      certificate,
      listen: config.listen,
      announce: config.announce,
      bootstrap: config.bootstrap,
      mdns: config.mdns,
      timing: config.timing,
      issuer: meshKeyPrivate ? { meshKey: meshKeyPrivate, ledger: fileTokenLedger(dir) } : undefined,
      revocation: await readOptionalEnvelope(files.revocation),
      onRevocation: (envelope) => {
        writeEnvelope(files.revocation, envelope).catch((err: Error) =>
          logger.error({ reason: err.message }, 'could not save the revocation list'),
        )
      },
      capacity: simulatedCapacityOf(capacityOf(dir)),
      logger,
    })
    await mesh.start()
    cleanups.push(() => mesh.stop())

    const hypervisor = await loadHypervisor(dir, logger).catch((err: Error) => {
      logger.warn({ reason: err.message }, 'no hypervisor: VMs will not be listed')
      return null
    })
    if (hypervisor) cleanups.push(() => hypervisor.stop())
    const components: NodeComponents = {
      dir,
      config,
      logger,
      mesh,
      hypervisor,
      vmStatus: () => defaultVmStatus(components),
    }
    if (hypervisor) {
      const publishVms = async () => {
        const vms = (await hypervisor.listVms()).map((vm) => ({
          id: vm.id,
          name: vm.name,
          state: vm.state,
          epoch: 0,
          // Sizes travel in gossip so placement elsewhere can count what each VM needs.
          cpus: vm.cpus,
          memoryBytes: vm.memoryBytes,
          diskBytes: vm.disks.reduce((sum, d) => sum + d.virtualSize, 0),
        }))
        mesh.setVms(components.ownedVms?.(vms) ?? vms)
      }
      const publishOrWarn = () =>
        publishVms().catch((err: Error) =>
          logger.warn({ reason: err.message }, 'VM list not published: the hypervisor did not answer'),
        )
      const timer = setInterval(publishOrWarn, mesh.timing.gossipIntervalMs)
      cleanups.push(async () => clearInterval(timer))
      await publishOrWarn()
    }

    const modules: RouteModule[] = []
    const vmRoutes = await loadOptionalRoutes('./vm.js', 'vmRoutes')
    if (vmRoutes) modules.push(vmRoutes)
    const replicationRoutes = await loadOptionalRoutes('./replication.js', 'replicationRoutes')
    if (replicationRoutes) modules.push(replicationRoutes)
    // Failover after replication (it uses what replication put in components), then /metrics.
    for (const [file, name] of [
      ['./failover.js', 'failoverRoutes'],
      ['./metrics.js', 'metricsRoutes'],
      ['./plan.js', 'planRoutes'],
    ] as const) {
      const routes = await loadOptionalRoutes(file, name)
      if (routes) modules.push(routes)
    }
    const token = randomBytes(32).toString('base64url')
    const app = await buildApiServer({ components, token, modules })
    await app.listen({ host: '127.0.0.1', port: 0 })
    cleanups.push(() => app.close())
    const address = app.server.address()
    const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
    await writeFileAtomic(files.apiToken, token + '\n', 0o600)
    await writeFileAtomic(files.api, JSON.stringify({ url, pid: process.pid }) + '\n')
    cleanups.push(async () => {
      await rm(files.api, { force: true })
      await rm(files.apiToken, { force: true })
    })
    logger.info({ url, peerId: mesh.peerId, site: config.site, addrs: mesh.addrs() }, 'node started')
    return { components, url, stop: cleanup }
  } catch (err) {
    await cleanup()
    throw err
  }
}

/** Runs until SIGTERM or SIGINT; resolves after a clean stop. */
export async function runDaemon(dir: string): Promise<void> {
  const daemon = await startDaemon(dir)
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      daemon.components.logger.info({ signal }, 'stopping')
      process.off('SIGTERM', onSignal)
      process.off('SIGINT', onSignal)
      daemon.stop().then(() => {
        daemon.components.logger.info({}, 'stopped')
        resolve()
      }, resolve)
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  })
}

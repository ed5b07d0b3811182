// The replication service of one node: answers the chunks and points protocols (as a target and
// chain hop), runs a protection pipeline per protected VM (as a source), keeps the materialised
// replica disks, and reports points, lag and replicas. Composed by the node daemon.
import { join } from 'node:path'
import { type ChunkStore, materialise, type RecoveryPoint } from '../chunkstore/index.js'
import { createDisk, type Hypervisor } from '../hyperv/index.js'
import { NotProtectedError, PointNotFoundError, ReplicationError } from './errors.js'
import { Forwarder } from './forwarder.js'
import { LagTracker, lagSeconds } from './lag.js'
import { CHUNKS_PROTOCOL, POINTS_PROTOCOL, VM_NAME_PATTERN } from './messages.js'
import { type TargetProgress, VmProtector } from './protector.js'
import { PointReceiver, type ReceiverStats } from './receiver.js'
import { ReplicaDisks, replicaDiskPath } from './replica-disk.js'
import { findPoint } from './replica-store.js'
import type { ReplicationLogger, ReplicationNetwork } from './session.js'
import { type Protection, ProtectionFiles } from './settings.js'
import { type CandidateNode, selectTargets } from './targets.js'

/** What the service needs of the mesh beyond streams: who is out there, and gossip. */
export interface ReplicationMesh extends ReplicationNetwork {
  readonly site: string
  peers(): Array<{
    peerId: string
    site: string
    state: 'alive' | 'suspect' | 'down'
    nodeState: { capacity: { diskFreeBytes: number } } | null
  }>
  setReplicas(
    replicas: Array<{ vm: string; lastPoint: { seq: number; time: number } | null; epoch: number }>,
  ): void
}

export interface ReplicationServiceInit {
  /** The node's folder: protections in <dir>/replication, replicas in <dir>/replicas. */
  dir: string
  mesh: ReplicationMesh
  store: ChunkStore
  hypervisor: Hypervisor | null
  logger: ReplicationLogger
  /** Fault injection for tests: corrupt this many first chunks a source sends each target. */
  corruptChunks?: number
}

export interface ProtectRequest {
  vm: string
  rpoSeconds: number
  rtoSeconds: number
  to: string[] | null
  chain: boolean
  copies: number | null
}

export interface VmReplicationStatus {
  name: string
  id: string
  role: 'primary' | 'replica'
  lastPoint: { seq: number; time: number } | null
  lagSeconds: number | null
  rpoSeconds: number | null
  epoch: number
  owner: string
}

export interface PointSummary {
  vm: string
  seq: number
  epoch: number
  time: number
  consistency: string
  source: string
  disks: Array<{ disk: number; virtualSize: number; chunkSize: number; root: string }>
}

export class ReplicationService {
  readonly lag = new LagTracker()
  private readonly files: ProtectionFiles
  private readonly protectors = new Map<string, VmProtector>()
  private readonly receiver: PointReceiver
  private readonly forwarder: Forwarder
  readonly replicas: ReplicaDisks
  private alarmTimer: NodeJS.Timeout | null = null

  constructor(private readonly init: ReplicationServiceInit) {
    this.files = new ProtectionFiles(join(init.dir, 'replication'))
    this.replicas = new ReplicaDisks(join(init.dir, 'replicas'), init.store, init.logger)
    this.forwarder = new Forwarder({ network: init.mesh, store: init.store, logger: init.logger })
    this.receiver = new PointReceiver({
      store: init.store,
      logger: init.logger,
      onCommitted: (point, header, from) => {
        this.onReplicaCommitted(point, header.vmId, from, header.rpoSeconds, header.forward).catch((err) =>
          init.logger.warn({ vm: point.vm, reason: (err as Error).message }, 'after-commit work failed'),
        )
        this.forwarder.forward(point, header)
      },
    })
  }

  get receiverStats(): ReceiverStats {
    return this.receiver.stats
  }

  async start(): Promise<void> {
    const { mesh } = this.init
    mesh.handle(CHUNKS_PROTOCOL, (stream, ctx) => this.receiver.handleChunks(stream, ctx))
    mesh.handle(POINTS_PROTOCOL, (stream, ctx) => this.receiver.handlePoints(stream, ctx))
    await this.replicas.recover()
    await this.publishReplicas()
    if (this.init.hypervisor) for (const p of await this.files.list()) await this.startProtector(p)
    this.alarmTimer = setInterval(() => {
      for (const a of this.lag.check(Date.now())) {
        const log = a.state === 'late' ? this.init.logger.warn : this.init.logger.info
        log.call(
          this.init.logger,
          { ...a },
          a.state === 'late'
            ? `VM ${a.vm} on ${a.target} is behind its RPO`
            : `VM ${a.vm} on ${a.target} is within its RPO again`,
        )
      }
    }, 1000)
  }

  async stop(): Promise<void> {
    if (this.alarmTimer) clearInterval(this.alarmTimer)
    await Promise.all([...this.protectors.values()].map((p) => p.stop()))
    this.protectors.clear()
    await this.init.mesh.unhandle?.(CHUNKS_PROTOCOL)
    await this.init.mesh.unhandle?.(POINTS_PROTOCOL)
    await this.forwarder.idle()
    await this.replicas.idle()
  }

  /** Starts (or changes) protection of a VM of this host; targets are chosen now and persisted. */
  async protect(req: ProtectRequest): Promise<Protection> {
    const hv = this.init.hypervisor
    if (!hv) throw new ReplicationError('this node has no hypervisor: it cannot protect VMs')
    if (!VM_NAME_PATTERN.test(req.vm))
      throw new ReplicationError(
        `'${req.vm}' cannot be protected: VM names are letters, digits, '.', '_' and '-'`,
      )
    const info = await hv.getVm(req.vm)
    const required = info.disks.reduce((n, d) => n + d.virtualSize, 0)
    const nodes: CandidateNode[] = this.init.mesh.peers().map((p) => ({
      peerId: p.peerId,
      site: p.site,
      state: p.state,
      freeBytes: p.nodeState?.capacity.diskFreeBytes ?? null,
    }))
    const targets = selectTargets(nodes, {
      self: { peerId: this.init.mesh.peerId, site: this.init.mesh.site },
      to: req.to,
      copies: req.copies,
      requiredBytes: required,
    })
    const protection: Protection = {
      vm: info.name,
      vmId: info.id,
      rpoSeconds: req.rpoSeconds,
      rtoSeconds: req.rtoSeconds,
      to: req.to,
      chain: req.chain,
      copies: req.copies,
      targets,
      createdAt: Date.now(),
    }
    await this.files.writeProtection(protection)
    const running = this.protectors.get(info.name)
    if (running) {
      await running.stop()
      this.protectors.delete(info.name)
      this.lag.untrack(info.name)
    }
    await this.startProtector(protection)
    this.init.logger.info({ vm: info.name, targets, chain: req.chain }, `protecting ${info.name}`)
    return protection
  }

  async unprotect(vm: string): Promise<void> {
    const p = this.protectors.get(vm)
    if (!p) throw new NotProtectedError(vm)
    await p.stop()
    this.protectors.delete(vm)
    this.lag.untrack(vm)
    await this.files.remove(vm)
  }

  protection(vm: string): {
    protection: Protection
    lastSeq: number | null
    cycles: number
    targets: TargetProgress[]
  } {
    const p = this.protectors.get(vm)
    if (!p) throw new NotProtectedError(vm)
    return {
      protection: p.protection,
      lastSeq: p.lastSeq,
      cycles: p.cycles,
      targets: [...p.progress.values()],
    }
  }

  /** Recovery points of a VM held in this node's store, oldest first. */
  async points(vm: string): Promise<PointSummary[]> {
    const points = await this.init.store.listPoints(vm)
    return points.map(pointSummary)
  }

  /** Writes one disk of a point (default: the newest) to a new raw or VHDX file. */
  async restore(
    vm: string,
    options: { seq?: number; disk?: number; out: string; format: 'raw' | 'vhdx' },
  ): Promise<{ point: PointSummary; disk: number; bytesWritten: number }> {
    const point =
      options.seq === undefined
        ? await this.init.store.lastPoint(vm)
        : await findPoint(this.init.store, vm, options.seq)
    if (!point) throw new PointNotFoundError(vm, options.seq ?? null)
    const disk = options.disk ?? 0
    const d = point.disks[disk]
    if (!d)
      throw new ReplicationError(
        `point ${vm}@${point.seq} has no disk ${disk} (it has ${point.disks.length})`,
      )
    const target = await createDisk(options.out, { format: options.format, virtualSize: d.virtualSize })
    try {
      const r = await materialise(this.init.store, point, disk, target, { targetIsZero: true })
      return { point: pointSummary(point), disk, bytesWritten: r.bytesWritten }
    } finally {
      await target.close()
    }
  }

  /** `status` rows: protected VMs as primaries with their worst lag, replicas held here. */
  async vmStatus(): Promise<VmReplicationStatus[]> {
    const now = Date.now()
    const rows: VmReplicationStatus[] = []
    for (const p of this.protectors.values()) {
      const t = [...p.progress.values()].filter((x) => x.seq !== null)
      const newest = t.sort((a, b) => (b.seq ?? 0) - (a.seq ?? 0))[0]
      rows.push({
        name: p.protection.vm,
        id: p.protection.vmId,
        role: 'primary',
        lastPoint: newest ? { seq: newest.seq as number, time: newest.time as number } : null,
        lagSeconds: this.lag.worstLag(p.protection.vm, now),
        rpoSeconds: p.protection.rpoSeconds,
        epoch: 1,
        owner: this.init.mesh.peerId,
      })
    }
    for (const r of await this.replicas.list()) {
      rows.push({
        name: r.vm,
        id: r.vmId,
        role: 'replica',
        lastPoint:
          r.lastSeq === null || r.lastPointTime === null ? null : { seq: r.lastSeq, time: r.lastPointTime },
        lagSeconds: lagSeconds(now, r.lastPointTime, now),
        rpoSeconds: r.rpoSeconds,
        epoch: 1,
        owner: r.source,
      })
    }
    return rows
  }

  /** Path of a replica's materialised disk on this node. */
  replicaDiskPath(vm: string, disk: number): string {
    return replicaDiskPath(join(this.init.dir, 'replicas'), vm, disk)
  }

  /** Waits until queued replica-disk updates and forwards are done (tests). */
  async idle(): Promise<void> {
    await this.forwarder.idle()
    await this.replicas.idle()
  }

  private async startProtector(p: Protection): Promise<void> {
    const hv = this.init.hypervisor
    if (!hv) return
    const protector = new VmProtector(p, {
      network: this.init.mesh,
      hypervisor: hv,
      files: this.files,
      lag: this.lag,
      logger: this.init.logger,
      hashAlgorithm: this.init.store.hashAlgorithm,
      corruptChunks: this.init.corruptChunks,
    })
    this.protectors.set(p.vm, protector)
    await protector.start()
  }

  private async onReplicaCommitted(
    point: RecoveryPoint,
    vmId: string,
    source: string,
    rpoSeconds: number,
    forward: string[],
  ): Promise<void> {
    await this.replicas.update(point.vm, (prior) => ({
      vm: point.vm,
      vmId,
      source: point.source || source,
      rpoSeconds,
      forward,
      appliedSeq: prior?.appliedSeq ?? null,
      applyingSeq: prior?.applyingSeq ?? null,
      lastSeq: Math.max(point.seq, prior?.lastSeq ?? 0),
      lastPointTime: Math.max(point.time, prior?.lastPointTime ?? 0),
    }))
    await this.publishReplicas()
    await this.replicas.apply(point)
  }

  private async publishReplicas(): Promise<void> {
    const list = await this.replicas.list()
    this.init.mesh.setReplicas(
      list.map((r) => ({
        vm: r.vm,
        lastPoint:
          r.lastSeq === null || r.lastPointTime === null ? null : { seq: r.lastSeq, time: r.lastPointTime },
        epoch: 1,
      })),
    )
  }
}

/** What `points` shows of a recovery point: the same whether asked of a node or of a store. */
export function pointSummary(p: RecoveryPoint): PointSummary {
  return {
    vm: p.vm,
    seq: p.seq,
    epoch: p.epoch,
    time: p.time,
    consistency: p.consistency,
    source: p.source,
    disks: p.disks.map((d, disk) => ({
      disk,
      virtualSize: d.virtualSize,
      chunkSize: d.chunkSize,
      root: d.root,
    })),
  }
}

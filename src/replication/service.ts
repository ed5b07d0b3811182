// The replication service of one node: answers the chunks and points protocols (as a target and
// chain hop), runs a protection pipeline per protected VM (as a source), keeps the materialised
// replica disks, and reports points, lag and replicas. Composed by the node daemon.
// Hand-over (handover.ts): prepareReplica/becomeOwner on a promoted node, becomeReplica on a
// fenced one, finalSync for a planned failover, setProducing while the node lacks quorum.
import { join } from 'node:path'
import type { PublicKey } from '@libp2p/interface'
import type { ChunkStore, PointSignature, RecoveryPoint } from '../chunkstore/index.js'
import type { Hypervisor } from '../hyperv/index.js'
import { publicKeyOfPeer } from '../mesh/index.js'
import { NotProtectedError, ReplicationError } from './errors.js'
import { Forwarder } from './forwarder.js'
import {
  type HandOverParts,
  ingestBaseline,
  ownAfterPromotion,
  type PreparedReplica,
  prepareReplica,
  releaseHold,
  releaseTestCopy,
  replicaDiskDir,
} from './handover.js'
import { LagTracker, lagSeconds } from './lag.js'
import { LINKS_FILE, type LinkStatus, LinkTable } from './link.js'
import type { LinkEntry } from './link-settings.js'
import {
  CHUNKS_PROTOCOL,
  CHUNKS_PROTOCOL_1_0,
  POINTS_PROTOCOL,
  type PointHeader,
  VM_NAME_PATTERN,
} from './messages.js'
import { describePointSignature, type PointSignatureStatus } from './point-signature.js'
import { DEFAULT_CHUNK_BYTES, type TargetProgress, VmProtector } from './protector.js'
import { PointReceiver, type ReceiverStats } from './receiver.js'
import { ReplicaDisks, replicaDiskPath } from './replica-disk.js'
import { type PointHolder, type RestoreOptions, type RestoreResult, restoreDisk } from './restore-pull.js'
import { SeedPuller, type SeedStats } from './seed-pull.js'
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
    nodeState: {
      capacity: { diskFreeBytes: number }
      /** Replicas the peer holds with their last committed point (seeding and restore pull from them). */
      replicas?: Array<{ vm: string; lastPoint: { seq: number; time: number } | null }>
    } | null
  }>
  setReplicas(
    replicas: Array<{ vm: string; lastPoint: { seq: number; time: number } | null; epoch: number }>,
  ): void
  /** Signs with this node's private key (the points it produces); mesh/node.ts. */
  sign(kind: string, value: unknown): Promise<PointSignature>
  /**
   * The public key of a current member (null: not one). Default: a peer listed by peers() (or
   * this node), its key taken from its peer id.
   */
  memberKey?(peerId: string): Promise<PublicKey | null>
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
  /** Who signed the point and whether the signature verifies over it (null signer: unsigned). */
  signature?: PointSignatureStatus
}

/** Points tried in a planned failover's final sync before it gives up. */
const FINAL_SYNC_ATTEMPTS = 3

export class ReplicationService {
  readonly lag = new LagTracker()
  private readonly files: ProtectionFiles
  private readonly protectors = new Map<string, VmProtector>()
  private readonly receiver: PointReceiver
  /** Seeds of new replicas here pull from the VM's other holders first (seed-pull.ts). */
  private readonly seeds: SeedPuller
  private readonly forwarder: Forwarder
  readonly replicas: ReplicaDisks
  private alarmTimer: NodeJS.Timeout | null = null
  /** Points may be produced (false while the node lacks quorum). */
  private producing = true
  /** Epoch of each VM protected from here (what its points carry). */
  private readonly ownedEpochs = new Map<string, number>()
  /** VMs being handed over from here: no protector restarts, no points accepted for them. */
  private readonly handingOver = new Set<string>()
  /**
   * Until start() has started the protectors, no point is taken: a VM this node owned before a
   * restart is not yet known as protected here, and a newer owner's point taken meanwhile would
   * skip the fenced disks' baseline (its resync would copy everything).
   */
  private starting = true
  /** Hand-over work per VM runs one at a time. */
  private readonly vmQueue = new Map<string, Promise<unknown>>()
  /**
   * After-commit work (replica record, replica disk apply) still running, with its VM: stop()
   * waits for all of it, prepareReplica for its VM's.
   */
  private readonly afterCommit = new Map<Promise<void>, string>()
  private stopping = false

  /** Per-link limits and compression (<dir>/links.json), shared by every protected VM. */
  readonly links: LinkTable

  constructor(private readonly init: ReplicationServiceInit) {
    this.links = new LinkTable({
      file: join(init.dir, LINKS_FILE),
      siteOf: (peer) => init.mesh.peers().find((p) => p.peerId === peer)?.site ?? null,
      logger: init.logger,
    })
    this.files = new ProtectionFiles(join(init.dir, 'replication'))
    this.replicas = new ReplicaDisks(join(init.dir, 'replicas'), init.store, init.logger)
    this.forwarder = new Forwarder({
      network: init.mesh,
      store: init.store,
      logger: init.logger,
      links: this.links,
    })
    this.seeds = new SeedPuller({
      network: init.mesh,
      store: init.store,
      logger: init.logger,
      holders: (vm) => this.holdersOf(vm).map((h) => h.peer),
    })
    this.receiver = new PointReceiver({
      store: init.store,
      logger: init.logger,
      seedPull: this.seeds,
      onCommitted: (point, header, from) => {
        this.seeds.end(from, point.vm)
        // The point is in the store; once stopping, its replica disk is brought forward later
        // (promotion rolls forward to the newest point).
        if (!this.stopping) {
          const work = this.onReplicaCommitted(point, header, from)
            .catch((err) =>
              init.logger.warn({ vm: point.vm, reason: (err as Error).message }, 'after-commit work failed'),
            )
            .finally(() => this.afterCommit.delete(work))
          this.afterCommit.set(work, point.vm)
        }
        this.forwarder.forward(point, header)
      },
      refuses: (vm) =>
        this.starting
          ? 'this node is starting: it has not loaded the VMs it protects yet'
          : this.protectors.has(vm) || this.handingOver.has(vm)
            ? `this node protects ${vm} itself (it has not learned of a newer owner)`
            : this.replicas.isHeld(vm)
              ? `${vm} is being promoted on this node`
              : null,
      epochFloor: async (vm) =>
        Math.max(
          this.ownedEpochs.get(vm) ?? 0,
          (await this.replicas.read(vm))?.epoch ?? 0,
          (await this.replicas.learned(vm))?.epoch ?? 0,
        ),
      memberKey: (peerId) => this.memberKey(peerId),
    })
  }

  /** A current member's public key: the mesh's answer, else a listed peer's (or this node's) id. */
  private async memberKey(peerId: string): Promise<PublicKey | null> {
    const mesh = this.init.mesh
    if (mesh.memberKey) return mesh.memberKey(peerId)
    if (peerId !== mesh.peerId && !mesh.peers().some((p) => p.peerId === peerId)) return null
    try {
      return publicKeyOfPeer(peerId)
    } catch {
      return null
    }
  }

  get receiverStats(): ReceiverStats {
    return this.receiver.stats
  }

  async start(): Promise<void> {
    const { mesh } = this.init
    await this.links.start()
    for (const protocol of [CHUNKS_PROTOCOL, CHUNKS_PROTOCOL_1_0])
      mesh.handle(protocol, (stream, ctx) => this.receiver.handleChunks(stream, ctx))
    mesh.handle(POINTS_PROTOCOL, (stream, ctx) => this.receiver.handlePoints(stream, ctx))
    await this.replicas.recover()
    await this.publishReplicas()
    if (this.init.hypervisor) for (const p of await this.files.list()) await this.startProtector(p)
    this.starting = false
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
    this.links.stop()
    await Promise.all([...this.protectors.values()].map((p) => p.stop()))
    this.protectors.clear()
    await this.init.mesh.unhandle?.(CHUNKS_PROTOCOL)
    await this.init.mesh.unhandle?.(CHUNKS_PROTOCOL_1_0)
    await this.init.mesh.unhandle?.(POINTS_PROTOCOL)
    this.stopping = true
    await this.forwarder.idle()
    await this.afterCommitIdle()
    // The apply running now finishes; queued ones are dropped (the store holds their points).
    await this.replicas.close()
  }

  private async afterCommitIdle(vm?: string): Promise<void> {
    for (;;) {
      const running = [...this.afterCommit].filter(([, v]) => vm === undefined || v === vm)
      if (running.length === 0) return
      await Promise.allSettled(running.map(([work]) => work))
    }
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
    return summarisePoints(await this.init.store.listPoints(vm))
  }

  /**
   * Writes one disk of a point (default: the newest) to a new raw or VHDX file. A point or chunks
   * this node lacks are fetched from the peers that hold the VM, several at once (restore-pull.ts).
   */
  async restore(
    vm: string,
    options: RestoreOptions,
  ): Promise<Omit<RestoreResult, 'point'> & { point: PointSummary }> {
    const r = await restoreDisk(
      {
        network: this.init.mesh,
        store: this.init.store,
        logger: this.init.logger,
        holders: (v) => this.holdersOf(v),
        memberKey: (peerId) => this.memberKey(peerId),
      },
      vm,
      options,
    )
    return { ...r, point: pointSummary(r.point) }
  }

  /** Live peers that gossip a committed point of `vm`, newest point first. */
  holdersOf(vm: string): PointHolder[] {
    const out: PointHolder[] = []
    for (const p of this.init.mesh.peers()) {
      if (p.peerId === this.init.mesh.peerId || p.state !== 'alive') continue
      const r = p.nodeState?.replicas?.find((x) => x.vm === vm && x.lastPoint)
      if (r?.lastPoint) out.push({ peer: p.peerId, seq: r.lastPoint.seq, time: r.lastPoint.time })
    }
    return out.sort((a, b) => b.time - a.time || b.seq - a.seq)
  }

  /** Seeds of replicas on this node (in progress and recent): chunks pulled from each holder. */
  seedStats(): SeedStats[] {
    return this.seeds.list()
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
        epoch: this.ownedEpochs.get(p.protection.vm) ?? 0,
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
        epoch: r.epoch ?? 0,
        owner: r.source,
      })
    }
    return rows
  }

  /** Links this node has sent over, with their limit now, measured rate and compression. */
  linkStatus(): LinkStatus[] {
    return this.links.status()
  }

  /** Re-reads links.json now; the settings in effect, or why the file was ignored. */
  async reloadLinks(): Promise<{ settings: LinkEntry[]; error: string | null }> {
    const error = await this.links.reload(true)
    return { settings: this.links.entries, error }
  }

  /** Path of a replica's materialised disk on this node (in its default folder). */
  replicaDiskPath(vm: string, disk: number): string {
    return replicaDiskPath(join(this.init.dir, 'replicas'), vm, disk)
  }

  // ---- hand-over (DESIGN.md §6; see handover.ts) ---------------------------------------------

  private get parts(): HandOverParts {
    return {
      dir: this.init.dir,
      self: this.init.mesh.peerId,
      store: this.init.store,
      hypervisor: this.init.hypervisor,
      files: this.files,
      replicas: this.replicas,
      logger: this.init.logger,
    }
  }

  private serial<T>(vm: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.vmQueue.get(vm) ?? Promise.resolve()).catch(() => {}).then(fn)
    this.vmQueue.set(vm, run)
    return run
  }

  /**
   * The replica disks of `vm` equal its newest committed point (an interrupted or queued apply is
   * rolled forward) and no apply touches them again: a VM is about to run from them. With `test`,
   * a separate copy is returned and replication goes on (releaseTest deletes it).
   */
  prepareReplica(
    vm: string,
    options: { signal?: AbortSignal; test?: boolean } = {},
  ): Promise<PreparedReplica> {
    return this.serial(vm, async () => {
      // The hold takes effect inside the receiver's fence: a point of `vm` past its last check is
      // in the store before it (and refused after it: refuses() sees the hold). The commit's
      // after-commit work (its replica record; its apply is skipped, held) is registered before
      // the fence runs the next change (receiver.commit calls onCommitted as soon as its fenced
      // commit resolves, a microtask ahead of the next fenced function), and is awaited here, so
      // the record is complete before prepareReplica reads it and nothing rewrites it afterwards.
      await this.receiver.fence(vm, () => this.replicas.hold(vm))
      try {
        await this.afterCommitIdle(vm)
      } catch (err) {
        await releaseHold(this.parts, vm)
        throw err
      }
      return prepareReplica(this.parts, vm, options)
    })
  }

  releaseTest(vm: string): Promise<void> {
    return releaseTestCopy(this.parts, vm)
  }

  /** A promotion failed after prepareReplica: applies may reach the replica again. */
  releasePrepared(vm: string): Promise<void> {
    return this.serial(vm, () => releaseHold(this.parts, vm))
  }

  /** Highest epoch this node knows for `vm` (its points, its replica, its own protection). */
  async knownEpoch(vm: string): Promise<number> {
    const last = await this.init.store.lastPoint(vm)
    return Math.max(
      last?.epoch ?? 0,
      this.ownedEpochs.get(vm) ?? 0,
      (await this.replicas.read(vm))?.epoch ?? 0,
      (await this.replicas.learned(vm))?.epoch ?? 0,
    )
  }

  /**
   * This node now owns `vm` at `epoch` (it runs here): protect it to the rest of its replica set,
   * the old targets minus this node plus the previous owner, with the RPO/RTO learned as a replica.
   */
  becomeOwner(vm: string, epoch: number): Promise<void> {
    return this.serial(vm, async () => {
      // Owned here from now on, inside the receiver's fence: ownAfterPromotion forgets the replica
      // record and lifts the hold before the protector starts, and an old owner's point taking
      // that gap (its epoch no longer known here, nothing refusing it) would recreate the record
      // and apply to the disks the VM runs from. Points are refused from here on.
      await this.receiver.fence(vm, async () => {
        this.handingOver.add(vm)
        this.ownedEpochs.set(vm, Math.max(this.ownedEpochs.get(vm) ?? 0, epoch))
      })
      try {
        const protection = await ownAfterPromotion(this.parts, vm, epoch)
        await this.stopProtector(vm)
        if (protection) await this.startProtector(protection)
        else this.ownedEpochs.set(vm, epoch)
        await this.publishReplicas()
        this.init.logger.info(
          { vm, epoch, targets: protection?.targets ?? [] },
          `${vm} is owned here at epoch ${epoch}; protecting it to ${protection?.targets.join(', ') || 'nobody'}`,
        )
      } finally {
        this.handingOver.delete(vm)
      }
    })
  }

  /**
   * `vm` belongs to `owner` at `epoch`: stop protecting it here and take points from the owner.
   * The VM's own disks (fenced, stopped) become the baseline, so the resync sends only chunks
   * changed since the split.
   */
  becomeReplica(vm: string, owner: string, epoch: number): Promise<void> {
    return this.serial(vm, async () => {
      this.handingOver.add(vm) // keep refusing points until the baseline is in the store
      try {
        const running = this.protectors.get(vm)
        const protection = running?.protection ?? (await this.files.readProtection(vm))
        const state = await this.files.readSourceState(vm)
        await this.stopProtector(vm)
        this.ownedEpochs.delete(vm)
        const prior = await this.replicas.read(vm)
        if (!prior || prior.appliedSeq === null)
          await ingestBaseline(this.parts, vm, state.disks[0]?.chunkSize ?? DEFAULT_CHUNK_BYTES)
        const diskDir = prior ? prior.diskDir : await replicaDiskDir(this.parts, vm, epoch)
        const vmId =
          prior?.vmId ?? protection?.vmId ?? (await this.init.hypervisor?.getVm(vm).catch(() => null))?.id
        await this.replicas.update(vm, (r, learned) => ({
          vm,
          vmId: r?.vmId ?? vmId ?? vm,
          source: learned && learned.epoch > epoch ? learned.owner : owner,
          rpoSeconds: r?.rpoSeconds ?? protection?.rpoSeconds ?? 60,
          rtoSeconds: r?.rtoSeconds ?? protection?.rtoSeconds,
          replicaSet: r?.replicaSet ?? protection?.targets,
          forward: r?.forward ?? [],
          appliedSeq: r?.appliedSeq ?? null,
          applyingSeq: r?.applyingSeq ?? null,
          lastSeq: r?.lastSeq ?? null,
          lastPointTime: r?.lastPointTime ?? null,
          epoch: Math.max(r?.epoch ?? 0, learned?.epoch ?? 0, epoch),
          ...(diskDir ? { diskDir } : {}),
        }))
        await this.files.remove(vm)
        await this.publishReplicas()
        this.init.logger.info(
          { vm, owner, epoch },
          `${vm} is a replica here now; ${owner} owns it at epoch ${epoch}`,
        )
      } finally {
        this.handingOver.delete(vm)
      }
    })
  }

  /** A newer owner of `vm` was announced: replicas here take no points of older epochs. */
  async learnEpoch(vm: string, epoch: number, owner: string): Promise<void> {
    if (owner === this.init.mesh.peerId) return
    // Fenced against commits (receiver.fence): a point of an older epoch that passed its check
    // before this is committed before the epoch rises, or refused; none lands after it returns.
    // With no replica record yet (before the first commit), the epoch is kept beside it
    // (replicas.learnEpoch): no replica is listed, and the first commit's record takes it over.
    const changed = await this.receiver.fence(vm, () => this.replicas.learnEpoch(vm, epoch, owner))
    if (changed) await this.publishReplicas()
  }

  /** No new points while false (the node lacks quorum: the other side may own the future). */
  setProducing(allowed: boolean, reason: string): void {
    if (this.producing === allowed) return
    this.producing = allowed
    const log = allowed ? this.init.logger.info : this.init.logger.warn
    log.call(
      this.init.logger,
      { reason },
      allowed ? 'producing recovery points again' : 'not producing recovery points',
    )
  }

  /**
   * Planned failover: the caller stopped the VM; one last point is committed on `to` (or every
   * target). Protection from here stays stopped (the VM is being handed over) until
   * resumeProtection. Returns the final point.
   */
  finalSync(
    vm: string,
    options: { to?: string; signal?: AbortSignal } = {},
  ): Promise<{ seq: number; time: number }> {
    return this.serial(vm, async () => {
      const protection = this.protectors.get(vm)?.protection ?? (await this.files.readProtection(vm))
      if (!protection) throw new NotProtectedError(vm)
      this.handingOver.add(vm)
      await this.stopProtector(vm)
      const targets = options.to ? [options.to] : protection.targets
      const once = new VmProtector(
        { ...protection, targets, chain: false },
        this.protectorParts(() => true),
      )
      await once.load()
      let lastError = ''
      for (let attempt = 1; attempt <= FINAL_SYNC_ATTEMPTS; attempt++) {
        options.signal?.throwIfAborted()
        const ok = await once.cycle().catch((err: Error) => {
          lastError = err.message
          return false
        })
        const committed = targets.map((t) => once.progress.get(t))
        if (ok && committed.every((p) => p?.seq === once.lastSeq)) {
          this.lag.untrack(vm)
          const time = committed[0]?.time ?? Date.now()
          this.init.logger.info({ vm, seq: once.lastSeq, targets }, `final point of ${vm} committed`)
          return { seq: once.lastSeq as number, time }
        }
        lastError = committed.map((p) => p?.lastError).find(Boolean) ?? lastError
      }
      throw new ReplicationError(
        `the final point of ${vm} was not committed on ${targets.join(', ')}${lastError ? `: ${lastError}` : ''}`,
      )
    })
  }

  /** A hand-over did not happen: protect the VM from here again. */
  resumeProtection(vm: string): Promise<void> {
    return this.serial(vm, async () => {
      this.handingOver.delete(vm)
      const protection = await this.files.readProtection(vm)
      if (protection && !this.protectors.has(vm)) await this.startProtector(protection)
    })
  }

  private async stopProtector(vm: string): Promise<void> {
    const p = this.protectors.get(vm)
    if (!p) return
    await p.stop()
    this.protectors.delete(vm)
    this.lag.untrack(vm)
  }

  /** Waits until queued replica-disk updates and forwards are done (tests). */
  async idle(): Promise<void> {
    await this.forwarder.idle()
    await this.afterCommitIdle()
    await this.replicas.idle()
  }

  private async startProtector(p: Protection): Promise<void> {
    const hv = this.init.hypervisor
    if (!hv) return
    this.ownedEpochs.set(p.vm, (await this.files.readSourceState(p.vm)).epoch)
    const protector = new VmProtector(
      p,
      this.protectorParts(() => this.producing),
    )
    this.protectors.set(p.vm, protector)
    await protector.start()
  }

  private protectorParts(mayProduce: () => boolean): ConstructorParameters<typeof VmProtector>[1] {
    const hv = this.init.hypervisor
    if (!hv) throw new ReplicationError('this node has no hypervisor: it cannot protect VMs')
    return {
      network: this.init.mesh,
      hypervisor: hv,
      files: this.files,
      lag: this.lag,
      logger: this.init.logger,
      hashAlgorithm: this.init.store.hashAlgorithm,
      corruptChunks: this.init.corruptChunks,
      links: this.links,
      mayProduce,
      sign: (kind, value) => this.init.mesh.sign(kind, value),
      knownSeq: (vm) => this.knownSeq(vm),
    }
  }

  /** The highest seq of `vm` in this node's store or gossiped by any peer (alive or not). */
  private async knownSeq(vm: string): Promise<number> {
    let seq = (await this.init.store.lastPoint(vm))?.seq ?? 0
    for (const p of this.init.mesh.peers())
      for (const r of p.nodeState?.replicas ?? []) if (r.vm === vm) seq = Math.max(seq, r.lastPoint?.seq ?? 0)
    return seq
  }

  private async onReplicaCommitted(point: RecoveryPoint, header: PointHeader, from: string): Promise<void> {
    await this.replicas.update(point.vm, (prior, learned) => ({
      ...prior,
      vm: point.vm,
      vmId: header.vmId,
      // A point of an older epoch (committed while a newer owner was being learned, before or
      // after this record existed) names no owner.
      source:
        learned && learned.epoch > point.epoch
          ? learned.owner
          : point.epoch >= (prior?.epoch ?? 0)
            ? point.source || from
            : (prior?.source ?? point.source),
      rpoSeconds: header.rpoSeconds,
      rtoSeconds: header.rtoSeconds ?? prior?.rtoSeconds,
      replicaSet: header.replicaSet ?? prior?.replicaSet,
      epoch: Math.max(point.epoch, prior?.epoch ?? 0, learned?.epoch ?? 0),
      forward: header.forward,
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
        epoch: r.epoch ?? 0,
      })),
    )
  }
}

/** pointSummary of each point with its signature re-checked (who signed it, whether it verifies). */
export async function summarisePoints(points: RecoveryPoint[]): Promise<PointSummary[]> {
  return Promise.all(
    points.map(async (p) => ({ ...pointSummary(p), signature: await describePointSignature(p) })),
  )
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

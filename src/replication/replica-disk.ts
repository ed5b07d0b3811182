// The materialised replica: per VM, <dir>/replicas/<vm>/disk<i>.vhdx kept equal to the newest
// committed point, so failover never waits for a restore. Only chunks that differ from the point
// already applied are written. replica.json records `appliedSeq` and, while an apply runs,
// `applyingSeq`: an apply interrupted by a crash is rolled forward from the store at start.
import { access, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { type ChunkStore, materialise, type RecoveryPoint } from '../chunkstore/index.js'
import { createDisk, openDisk } from '../hyperv/index.js'
import { findPoint } from './replica-store.js'
import type { ReplicationLogger } from './session.js'

export interface ReplicaRecord {
  vm: string
  vmId: string
  source: string
  rpoSeconds: number
  forward: string[]
  appliedSeq: number | null
  applyingSeq: number | null
  /** Freeze time of the newest committed point (ms). */
  lastPointTime: number | null
  lastSeq: number | null
  /** Highest epoch known for the VM here (points received, claims learned). */
  epoch?: number
  /** The owner's RTO and replica set, learned from its points (a promotion protects with them). */
  rtoSeconds?: number
  replicaSet?: string[]
  /** Sub-folder of the replica's disks when the default one is in use by a registered VM. */
  diskDir?: string
}

/**
 * An epoch learned for a VM this node holds no replica record of yet (<vm>/epoch.json): kept so
 * an older owner's first point is refused, and listed nowhere (it is not a replica, holds no data).
 */
export interface LearnedEpoch {
  epoch: number
  owner: string
}

export function replicaDiskPath(replicasDir: string, vm: string, disk: number, diskDir?: string): string {
  return diskDir
    ? join(replicasDir, vm, diskDir, `disk${disk}.vhdx`)
    : join(replicasDir, vm, `disk${disk}.vhdx`)
}

export class ReplicaDisks {
  private readonly running = new Map<string, Promise<void>>()
  private readonly updating = new Map<string, Promise<unknown>>()
  private readonly wanted = new Map<string, RecoveryPoint>()
  /** VMs whose replica disks are handed to a VM that runs (or is about to run) here. */
  private readonly held = new Set<string>()
  /** Closed (the service stopped): no apply starts any more. */
  private closed = false

  constructor(
    private readonly replicasDir: string,
    private readonly store: ChunkStore,
    private readonly logger: ReplicationLogger,
  ) {}

  async read(vm: string): Promise<ReplicaRecord | null> {
    try {
      return JSON.parse(await readFile(join(this.replicasDir, vm, 'replica.json'), 'utf8')) as ReplicaRecord
    } catch {
      return null
    }
  }

  async write(record: ReplicaRecord): Promise<void> {
    const dir = join(this.replicasDir, record.vm)
    await mkdir(dir, { recursive: true })
    const tmp = join(dir, 'replica.json.tmp')
    await writeFile(tmp, JSON.stringify(record, null, 2), { flush: true })
    await rename(tmp, join(dir, 'replica.json'))
  }

  /**
   * Read-modify-write of a VM's record, serialised per VM (with learnEpoch). `learned` is an
   * epoch learned before the record existed: a record created now carries it.
   */
  update(
    vm: string,
    mutate: (r: ReplicaRecord | null, learned: LearnedEpoch | null) => ReplicaRecord | null,
  ): Promise<ReplicaRecord | null> {
    return this.serialUpdate(vm, async () => {
      const prior = await this.read(vm)
      const r = mutate(prior, prior ? null : await this.learned(vm))
      if (r) await this.write(r)
      return r
    })
  }

  /** The epoch learned for `vm` while this node held no record of it, or null. */
  async learned(vm: string): Promise<LearnedEpoch | null> {
    try {
      return JSON.parse(await readFile(join(this.replicasDir, vm, 'epoch.json'), 'utf8')) as LearnedEpoch
    } catch {
      return null
    }
  }

  /**
   * `owner` owns `vm` at `epoch`: raises the record's epoch, or, with no record yet, keeps the
   * epoch durably beside it (epoch.json, no replica). Serialised with update(); true when the
   * record changed (gossip it).
   */
  learnEpoch(vm: string, epoch: number, owner: string): Promise<boolean> {
    return this.serialUpdate(vm, async () => {
      const r = await this.read(vm)
      if (r) {
        if ((r.epoch ?? 0) >= epoch) return false
        await this.write({ ...r, epoch, source: owner })
        return true
      }
      if (((await this.learned(vm))?.epoch ?? -1) >= epoch) return false
      const dir = join(this.replicasDir, vm)
      await mkdir(dir, { recursive: true })
      const tmp = join(dir, 'epoch.json.tmp')
      await writeFile(tmp, JSON.stringify({ epoch, owner } satisfies LearnedEpoch), { flush: true })
      await rename(tmp, join(dir, 'epoch.json'))
      return false
    })
  }

  private serialUpdate<T>(vm: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.updating.get(vm) ?? Promise.resolve()).catch(() => {}).then(fn)
    this.updating.set(vm, next)
    return next
  }

  async list(): Promise<ReplicaRecord[]> {
    let names: string[]
    try {
      names = await readdir(this.replicasDir)
    } catch {
      return []
    }
    const out: ReplicaRecord[] = []
    for (const n of names) {
      const r = await this.read(n)
      if (r) out.push(r)
    }
    return out
  }

  /** Path of disk `disk` of a replica record. */
  diskPath(record: Pick<ReplicaRecord, 'vm' | 'diskDir'>, disk: number): string {
    return replicaDiskPath(this.replicasDir, record.vm, disk, record.diskDir)
  }

  /** Stops applying to a VM's disks (they are about to run); waits for an apply under way. */
  async hold(vm: string): Promise<void> {
    this.held.add(vm)
    this.wanted.delete(vm)
    await this.running.get(vm)?.catch(() => {})
    await this.updating.get(vm)?.catch(() => {})
  }

  /** Applies may touch the VM's disks again. */
  unhold(vm: string): void {
    this.held.delete(vm)
  }

  isHeld(vm: string): boolean {
    return this.held.has(vm)
  }

  /** Forgets the replica record (the disks stay: a VM may run from them). */
  async forget(vm: string): Promise<void> {
    await this.updating.get(vm)?.catch(() => {})
    await rm(join(this.replicasDir, vm, 'replica.json'), { force: true })
  }

  /**
   * Brings the replica disks to `point` now, even while held (a promotion rolling an interrupted
   * or queued apply forward before the VM starts).
   */
  async rollForward(point: RecoveryPoint): Promise<void> {
    await this.running.get(point.vm)?.catch(() => {})
    await this.applyNow(point)
  }

  /** Queues the VHDX update to `point`; several queued points collapse to the newest. */
  apply(point: RecoveryPoint): Promise<void> {
    if (this.held.has(point.vm) || this.closed) return Promise.resolve()
    this.wanted.set(point.vm, point)
    const running = this.running.get(point.vm)
    if (running) return running.then(() => this.apply(point))
    const run = this.drain(point.vm).finally(() => this.running.delete(point.vm))
    this.running.set(point.vm, run)
    return run
  }

  /** Rolls forward every apply a crash interrupted. */
  async recover(): Promise<void> {
    for (const r of await this.list()) {
      if (r.applyingSeq === null) continue
      const point = await findPoint(this.store, r.vm, r.applyingSeq)
      if (!point) continue
      this.logger.warn({ vm: r.vm, seq: r.applyingSeq }, 'rolling forward an interrupted replica apply')
      await this.apply(point)
    }
  }

  /** Waits for queued applies (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()])
  }

  /**
   * Shutdown: queued applies are dropped, the one running completes, and none starts afterwards.
   * A dropped point stays in the store: promotion (prepareReplica) rolls the disks forward to the
   * newest point, and an apply cut short by a crash instead is rolled forward by recover().
   */
  async close(): Promise<void> {
    this.closed = true
    this.wanted.clear()
    await this.idle()
  }

  private async drain(vm: string): Promise<void> {
    for (;;) {
      const point = this.wanted.get(vm)
      if (!point || this.held.has(vm) || this.closed) return
      this.wanted.delete(vm)
      try {
        await this.applyNow(point)
      } catch (err) {
        this.logger.warn(
          { vm, seq: point.seq, reason: (err as Error).message },
          'replica disk update failed; the store keeps the point',
        )
      }
    }
  }

  private async applyNow(point: RecoveryPoint): Promise<void> {
    const record = await this.read(point.vm)
    if (!record) return
    if (record.appliedSeq !== null && record.appliedSeq >= point.seq && record.applyingSeq === null) return
    const base =
      record.appliedSeq === null ? undefined : await findPoint(this.store, point.vm, record.appliedSeq)
    await this.update(point.vm, (r) => (r ? { ...r, applyingSeq: point.seq } : r))
    for (let i = 0; i < point.disks.length; i++) {
      const path = this.diskPath(record, i)
      const fresh =
        !base || !(await exists(path)) || base.disks[i]?.virtualSize !== point.disks[i].virtualSize
      if (fresh) {
        await rm(path, { force: true })
        await mkdir(dirname(path), { recursive: true })
      }
      const disk = fresh
        ? await createDisk(path, { format: 'vhdx', virtualSize: point.disks[i].virtualSize })
        : await openDisk(path, { readOnly: false })
      try {
        await materialise(this.store, point, i, disk, fresh ? { targetIsZero: true } : { base })
      } finally {
        await disk.close()
      }
    }
    await this.update(point.vm, (r) => (r ? { ...r, appliedSeq: point.seq, applyingSeq: null } : r))
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path)
    return true
  } catch {
    return false
  }
}

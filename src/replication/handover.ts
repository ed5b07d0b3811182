// Handing a VM over between nodes (DESIGN.md §6), the replication side of promotion and fencing:
//
//   promotion (new owner)   prepareReplica: hold the replica disks (no apply touches them any more),
//                           roll them forward to the newest committed point, return them with the
//                           VM's replicated configuration ─▶ failover registers and starts the VM ─▶
//                           ownAfterPromotion: the VM is protected from here to the old replica set
//                           minus this node plus the previous owner, with the RPO/RTO learned as a
//                           replica; the source state is seeded with the point the disks hold, so
//                           sequence numbers keep rising and replicas at that point get deltas.
//   fencing (old owner)     ingestBaseline: the fenced, stopped VM's own disks go into this node's
//                           store (a source never stores its own chunks), so when the new owner asks
//                           "which of these do you lack?" only chunks changed since the split travel.
//
// Pure file and store work over explicit parts; the service orchestrates protectors around it.
import { copyFile, mkdir, rm } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { ChunkStore, RecoveryPoint } from '../chunkstore/index.js'
import { type Hypervisor, openDisk, type VmInfo } from '../hyperv/index.js'
import { ReplicationError } from './errors.js'
import type { PackedManifest } from './packed-manifest.js'
import type { ReplicaDisks, ReplicaRecord } from './replica-disk.js'
import { findPoint, readPackedManifest } from './replica-store.js'
import type { ReplicationLogger } from './session.js'
import type { Protection, ProtectionFiles, SourceState } from './settings.js'

/** RPO and RTO of a VM promoted from a replica that never learned them (points of older nodes). */
export const DEFAULT_RPO_SECONDS = 60
export const DEFAULT_RTO_SECONDS = 600

export interface HandOverParts {
  dir: string
  self: string
  store: ChunkStore
  hypervisor: Hypervisor | null
  files: ProtectionFiles
  replicas: ReplicaDisks
  logger: ReplicationLogger
}

export interface PreparedReplica {
  config: VmInfo
  diskPaths: string[]
  point: { seq: number; time: number }
}

const testCopyDir = (parts: HandOverParts, vm: string) => join(parts.dir, 'replicas', vm, 'test-copy')

/**
 * Makes the replica disks equal the newest committed point and holds them (no further applies):
 * they are about to run. With `test`, a separate copy of them is returned and applies go on.
 */
export async function prepareReplica(
  parts: HandOverParts,
  vm: string,
  options: { signal?: AbortSignal; test?: boolean } = {},
): Promise<PreparedReplica> {
  const { replicas, store } = parts
  await replicas.hold(vm) // also waits for record updates of points just committed
  let handedOver = false
  try {
    if (!(await replicas.read(vm))) throw new ReplicationError(`no replica of ${vm} is held on this node`)
    options.signal?.throwIfAborted()
    const last = await store.lastPoint(vm)
    if (!last) throw new ReplicationError(`no committed point of ${vm} is held on this node`)
    let record = await replicas.read(vm)
    if (record && (record.appliedSeq !== last.seq || record.applyingSeq !== null)) {
      parts.logger.info(
        { vm, from: record.appliedSeq, to: last.seq },
        `rolling the replica of ${vm} forward to point ${last.seq} before it runs`,
      )
      await replicas.rollForward(last)
      record = await replicas.read(vm)
    }
    if (!record || record.appliedSeq !== last.seq)
      throw new ReplicationError(`the replica disks of ${vm} could not be brought to point ${last.seq}`)
    let diskPaths = last.disks.map((_, i) => resolve(replicas.diskPath(record, i)))
    if (options.test) {
      const out = testCopyDir(parts, vm)
      await rm(out, { recursive: true, force: true })
      await mkdir(out, { recursive: true })
      const copies = diskPaths.map((_, i) => join(out, `disk${i}.vhdx`))
      for (const [i, from] of diskPaths.entries()) await copyFile(from, copies[i])
      diskPaths = copies
    }
    handedOver = !options.test
    return {
      config: replicatedConfig(vm, last, record, diskPaths),
      diskPaths,
      point: { seq: last.seq, time: last.time },
    }
  } finally {
    if (!handedOver) await releaseHold(parts, vm)
  }
}

/** Lets applies reach a replica again (a test copy was taken, or a promotion failed). */
export async function releaseHold(parts: HandOverParts, vm: string): Promise<void> {
  parts.replicas.unhold(vm)
  const last = await parts.store.lastPoint(vm)
  if (last && (await parts.replicas.read(vm))) void parts.replicas.apply(last)
}

export async function releaseTestCopy(parts: HandOverParts, vm: string): Promise<void> {
  await rm(testCopyDir(parts, vm), { recursive: true, force: true })
}

/** The VM as it was replicated (its configuration travels in every point), on these disks. */
function replicatedConfig(
  vm: string,
  point: RecoveryPoint,
  record: ReplicaRecord,
  diskPaths: string[],
): VmInfo {
  const c = (point.config ?? {}) as Partial<VmInfo>
  return {
    id: typeof c.id === 'string' ? c.id : record.vmId,
    name: vm,
    generation: c.generation === 1 ? 1 : 2,
    state: 'stopped',
    cpus: typeof c.cpus === 'number' ? c.cpus : 1,
    memoryBytes: typeof c.memoryBytes === 'number' ? c.memoryBytes : 512 * 2 ** 20,
    disks: diskPaths.map((path, i) => ({
      path,
      format: 'vhdx',
      virtualSize: point.disks[i].virtualSize,
      parents: [],
    })),
    nics: Array.isArray(c.nics) ? c.nics : [],
    notes: typeof c.notes === 'string' ? c.notes : '',
    tags: Array.isArray(c.tags) ? c.tags : [],
    configPath: null,
    ...(c.settings ? { settings: c.settings } : {}),
  }
}

/**
 * After a promotion: the protection of `vm` from this node, written with a source state seeded
 * from the point its disks hold. Returns null when there is nobody to protect it to.
 */
export async function ownAfterPromotion(
  parts: HandOverParts,
  vm: string,
  epoch: number,
): Promise<Protection | null> {
  const { replicas, store, files } = parts
  const record = await replicas.read(vm)
  // The point the disks hold (prepareReplica applied it), not a later one that was never applied.
  const last =
    record?.appliedSeq != null ? await findPoint(store, vm, record.appliedSeq) : await store.lastPoint(vm)
  const vmId = record?.vmId ?? (await parts.hypervisor?.getVm(vm))?.id ?? vm
  const targets = [...new Set([...(record?.replicaSet ?? []), ...(record ? [record.source] : [])])].filter(
    (p) => p && p !== parts.self,
  )
  await replicas.forget(vm)
  replicas.unhold(vm)
  if (targets.length === 0) {
    parts.logger.warn({ vm }, `${vm} runs here but no other node is known to protect it to`)
    return null
  }
  const protection: Protection = {
    vm,
    vmId,
    rpoSeconds: record?.rpoSeconds ?? DEFAULT_RPO_SECONDS,
    rtoSeconds: record?.rtoSeconds ?? DEFAULT_RTO_SECONDS,
    to: null,
    chain: false,
    copies: null,
    targets,
    createdAt: Date.now(),
  }
  let manifests: PackedManifest[] | null = null
  const state: SourceState = {
    seq: null,
    epoch,
    reference: null,
    time: null,
    disks: [],
    changeLog: [],
    targets: {},
  }
  if (last) {
    manifests = []
    for (let i = 0; i < last.disks.length; i++) manifests.push(await readPackedManifest(store, last, i))
    Object.assign(state, {
      seq: last.seq,
      seqEpoch: last.epoch,
      time: last.time,
      disks: last.disks.map((d) => ({ virtualSize: d.virtualSize, chunkSize: d.chunkSize })),
    })
  }
  await files.writeProtection(protection)
  await files.writeState(vm, state, manifests)
  return protection
}

/**
 * The fenced VM's own disks (registered here, stopped) into the store, so the new owner's
 * "which do you lack?" finds every chunk unchanged since the split. Returns the bytes added.
 */
export async function ingestBaseline(parts: HandOverParts, vm: string, chunkSize: number): Promise<number> {
  const info = await parts.hypervisor?.getVm(vm).catch(() => null)
  if (!info || info.state === 'running') {
    parts.logger.warn(
      { vm, state: info?.state ?? 'not registered' },
      `fenced ${vm} is ${info ? info.state : 'not registered here'}: its disks are no baseline, its resync copies everything`,
    )
    return 0
  }
  const lease = parts.store.lease()
  let newBytes = 0
  let chunks = 0
  try {
    for (const d of info.disks) {
      const disk = await openDisk(d.path, { readOnly: true })
      try {
        const r = await parts.store.ingest(disk, { chunkSize, lease })
        newBytes += r.newBytes
        chunks += r.chunks
      } finally {
        await disk.close()
      }
    }
    await parts.store.flush()
  } catch (err) {
    parts.logger.warn(
      { vm, reason: (err as Error).message },
      `the disks of fenced ${vm} could not be read as a baseline: its resync copies more`,
    )
  } finally {
    lease.release()
  }
  parts.logger.info(
    { vm, chunks, newBytes },
    `fenced ${vm}: its own disks are the baseline of its resync (only changed chunks travel)`,
  )
  return newBytes
}

/**
 * Sub-folder for the replica disks of a VM registered here: the default one when the VM's own
 * disks are elsewhere, else a folder of the epoch (the fenced copy stays as it was).
 */
export async function replicaDiskDir(
  parts: HandOverParts,
  vm: string,
  epoch: number,
): Promise<string | undefined> {
  const info = await parts.hypervisor?.getVm(vm).catch(() => null)
  if (!info) return undefined
  const inUse = new Set(info.disks.map((d) => resolve(d.path)))
  const clash = info.disks.some((_, i) => inUse.has(resolve(parts.replicas.diskPath({ vm }, i))))
  return clash ? `e${epoch}` : undefined
}

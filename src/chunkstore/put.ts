// One-call snapshot of local disks into a new point: what `store put` runs. The replication
// layer composes ingestDisk and commitPoint itself (it has epochs, signatures and peers).
import { basename } from 'node:path'
import type { VirtualDisk } from '../hyperv/index.js'
import { type ByteRange, ingestDisk } from './ingest.js'
import { type Consistency, type PointDisk, pointName, type RecoveryPoint } from './points.js'
import type { ChunkStore } from './store.js'

export interface PutOptions {
  vm: string
  chunkSize?: number
  /** Per disk (same order): ranges written since the VM's last point in this store. */
  changedRanges?: (ByteRange[] | undefined)[]
  consistency?: Consistency
  epoch?: number
  source?: string
  config?: unknown
  signal?: AbortSignal
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

export interface PutResult {
  point: string
  root: string
  roots: string[]
  chunks: number
  newChunks: number
  newBytes: number
  readChunks: number
}

export async function putDisks(
  store: ChunkStore,
  disks: VirtualDisk[],
  options: PutOptions,
): Promise<PutResult> {
  const last = await store.lastPoint(options.vm)
  const lease = store.lease()
  try {
    const pointDisks: PointDisk[] = []
    const totals = { chunks: 0, newChunks: 0, newBytes: 0, readChunks: 0 }
    for (const [i, disk] of disks.entries()) {
      const ranges = options.changedRanges?.[i]
      const previous = ranges ? last?.disks[i] : undefined
      const r = await ingestDisk(store, disk, {
        chunkSize: options.chunkSize ?? previous?.chunkSize,
        previous,
        changedRanges: previous ? ranges : undefined,
        lease,
        signal: options.signal,
        onProgress: options.onProgress,
      })
      pointDisks.push({ disk: basename(disk.path), ...r.manifest })
      totals.chunks += r.chunks
      totals.newChunks += r.newChunks
      totals.newBytes += r.newBytes
      totals.readChunks += r.readChunks
    }
    const point: RecoveryPoint = {
      vm: options.vm,
      seq: (last?.seq ?? 0) + 1,
      epoch: options.epoch ?? last?.epoch ?? 0,
      time: Date.now(),
      consistency: options.consistency ?? 'crash',
      disks: pointDisks,
      config: options.config ?? null,
      source: options.source ?? 'local',
    }
    await store.commitPoint(point)
    return {
      point: pointName(point),
      root: pointDisks[0].root,
      roots: pointDisks.map((d) => d.root),
      ...totals,
    }
  } finally {
    lease.release()
  }
}

// Writes one disk of a recovery point into a VirtualDisk. Chunks are fetched (and verified)
// several at a time but written in disk order. With a base point whose content the target
// already holds, only chunks that differ from it are written.
import type { VirtualDisk } from '../hyperv/index.js'
import { MATERIALISE_CONCURRENCY } from './constants.js'
import { InvalidPointError } from './errors.js'
import { ZERO_HEX } from './hash.js'
import type { RecoveryPoint } from './points.js'
import type { ChunkStore } from './store.js'

export interface MaterialiseOptions {
  /** A point of the same disk whose content `target` already holds: only differences are written. */
  base?: RecoveryPoint
  /** The target reads as zeros where not written (a new disk): zero chunks are skipped. */
  targetIsZero?: boolean
  signal?: AbortSignal
  onProgress?: (doneChunks: number) => void
  /**
   * The chunks to write, by ascending index, instead of the point's manifest read from the store
   * (a restore of a point fetched from a peer, whose manifest this store does not hold). Chunks
   * left out are not written. At most MATERIALISE_CONCURRENCY chunks are read ahead of the one
   * being written: an entry's chunk must stay in the store until a few entries after it are out.
   */
  entries?: AsyncIterable<{ index: number; hex: string }>
}

export interface MaterialiseResult {
  chunksWritten: number
  bytesWritten: number
}

export async function materialise(
  store: ChunkStore,
  point: RecoveryPoint,
  diskIndex: number,
  target: VirtualDisk,
  options: MaterialiseOptions = {},
): Promise<MaterialiseResult> {
  const disk = point.disks[diskIndex]
  if (!disk) throw new InvalidPointError(`point ${point.vm}@${point.seq} has no disk ${diskIndex}`)
  if (target.virtualSize < disk.virtualSize)
    throw new InvalidPointError(
      `target ${target.path} is smaller than the point's disk (${disk.virtualSize} bytes)`,
    )
  const { chunkSize, virtualSize } = disk
  const baseDisk = options.base?.disks[diskIndex]
  if (options.base && !baseDisk) throw new InvalidPointError('the base point has no such disk')

  async function* work(): AsyncGenerator<{ index: number; hex: string }> {
    if (options.entries) {
      yield* options.entries
      return
    }
    if (baseDisk) {
      for await (const c of store.diffChanges(baseDisk, disk))
        yield { index: c.index, hex: c.after.toString('hex') }
      return
    }
    let index = 0
    for await (const hex of store.readManifest(disk)) yield { index: index++, hex }
  }

  const zeros = Buffer.alloc(chunkSize)
  const inFlight: { index: number; bytes: Promise<Buffer> }[] = []
  const result: MaterialiseResult = { chunksWritten: 0, bytesWritten: 0 }
  const writeOne = async (index: number, bytes: Buffer) => {
    const length = Math.min(chunkSize, virtualSize - index * chunkSize)
    await target.write(bytes.subarray(0, length), index * chunkSize)
    result.chunksWritten++
    result.bytesWritten += length
    options.onProgress?.(result.chunksWritten)
  }
  const drainOne = async () => {
    const next = inFlight.shift()!
    await writeOne(next.index, await next.bytes)
  }
  try {
    for await (const { index, hex } of work()) {
      options.signal?.throwIfAborted()
      if (hex === ZERO_HEX) {
        if (options.targetIsZero && !baseDisk) continue
        while (inFlight.length > 0) await drainOne()
        await writeOne(index, zeros)
        continue
      }
      const bytes = store.getChunk(hex)
      bytes.catch(() => {})
      inFlight.push({ index, bytes })
      if (inFlight.length >= MATERIALISE_CONCURRENCY) await drainOne()
    }
    while (inFlight.length > 0) await drainOne()
  } finally {
    await Promise.allSettled(inFlight.map((f) => f.bytes))
  }
  await target.flush()
  return result
}

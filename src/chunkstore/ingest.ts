// Ingest: a disk's virtual content -> chunks in the store -> a manifest (Merkle root).
//
// A pipeline of windows of consecutive chunks: windows are read ahead (bounded by a buffer pool
// of shared memory); the oldest read window is zero-checked and hashed on two threads (this one
// and the store's hash worker, see hash-pool.ts) while the window hashed before it is looked up,
// appended to the pack writer's queue and pushed into the Merkle builder. So reads, hashing and
// pack writes overlap, and a window's buffer returns to the pool once its pack write is done.
// Chunks lying wholly in `zero` extents of the disk map are never read.
// With `previous` + `changedRanges`, only chunks touching a changed range are read; the rest
// take their ids from the previous manifest, walked in lockstep.
import type { VirtualDisk } from '../hyperv/index.js'
import {
  DEFAULT_CHUNK_SIZE,
  INGEST_BUFFERS,
  INGEST_FLUSH_CHUNKS,
  INGEST_PARALLEL_HASH_BYTES,
  INGEST_READ_AHEAD,
  INGEST_WINDOW_BYTES,
  MAX_CHUNK_SIZE,
  MERKLE_FANOUT,
  MIN_CHUNK_SIZE,
} from './constants.js'
import { InvalidPointError } from './errors.js'
import { ID_BYTES, ZERO_HEX, ZERO_ID } from './hash.js'
import { type HashTicket, sharedBuffer } from './hash-pool.js'
import type { ChunkEntry } from './index-db.js'
import { TreeBuilder, treeShape } from './merkle.js'
import type { ManifestRef } from './points.js'
import type { ChunkLease, ChunkStore, NewChunk } from './store.js'

export interface ByteRange {
  start: number
  length: number
}

export interface IngestOptions {
  /** Power of two, 4 KiB-16 MiB (default 256 KiB). Must match `previous` when that is given. */
  chunkSize?: number
  /** This disk's manifest in an earlier point (same size and chunk size). */
  previous?: ManifestRef
  /** Ranges written since `previous` (change tracking): only these are read. Needs `previous`. */
  changedRanges?: ByteRange[]
  /** Holds every id the manifest names safe from GC; the caller releases it after commitPoint. */
  lease: ChunkLease
  signal?: AbortSignal
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

export interface IngestResult {
  manifest: ManifestRef
  /** Chunks in the manifest, zero ones included. */
  chunks: number
  zeroChunks: number
  /** Chunks read from the disk and hashed. */
  readChunks: number
  /** Chunks (data and Merkle nodes) the store did not have. */
  newChunks: number
  /** Bytes those new chunks take in packs. */
  newBytes: number
}

type Source = 'zero' | 'read' | 'prev'

interface Window {
  first: number
  sources: Source[]
  buffer: Buffer | null
  /** Ids of the window's 'read' chunks in order, 32 bytes each (ZERO_ID for all-zero bytes). */
  ids: Buffer | null
  /** Hex ids of the window's non-zero read chunks, and their lookup started once hashed. */
  hexes: string[]
  lookup: Promise<(ChunkEntry | undefined)[]> | null
  /** The window as handed to the hash worker once read (see ParallelHasher.begin). */
  ticket: HashTicket | null
}

/** Walks sorted, coalesced extents alongside ascending chunk ranges. */
class RangeCursor {
  private at = 0
  constructor(private readonly ranges: ByteRange[]) {}
  overlaps(start: number, end: number): boolean {
    while (this.at < this.ranges.length && this.ranges[this.at].start + this.ranges[this.at].length <= start)
      this.at++
    return this.at < this.ranges.length && this.ranges[this.at].start < end
  }
}

function sortedRanges(ranges: ByteRange[]): ByteRange[] {
  return ranges.filter((r) => r.length > 0).sort((a, b) => a.start - b.start)
}

/**
 * Window buffers left by finished ingests, reused by the next one: first touching fresh memory
 * costs a page fault per page, which is slow in a VM. Dropped after a minute without an ingest.
 */
const spare: Buffer[] = []
let spareTimer: NodeJS.Timeout | null = null
const SPARE_KEEP_MS = 60_000

/** At most `count` window buffers, made (or taken from the spares) only when needed. */
class BufferPool {
  private readonly free: Buffer[] = []
  private readonly waiters: ((b: Buffer) => void)[] = []
  private made = 0
  private closed = false
  constructor(
    private readonly count: number,
    private readonly size: number,
  ) {}
  acquire(): Promise<Buffer> {
    const b = this.free.pop()
    if (b) return Promise.resolve(b)
    if (this.made < this.count) {
      this.made++
      const i = spare.findIndex((x) => x.length === this.size)
      return Promise.resolve(i >= 0 ? spare.splice(i, 1)[0] : sharedBuffer(this.size))
    }
    return new Promise((resolve) => this.waiters.push(resolve))
  }
  release(b: Buffer): void {
    if (this.closed) {
      keepSpare(b)
      return
    }
    const w = this.waiters.shift()
    if (w) w(b)
    else this.free.push(b)
  }
  /** The ingest is over: free buffers, and those released later, become spares. */
  close(): void {
    this.closed = true
    for (const b of this.free.splice(0)) keepSpare(b)
  }
}

function keepSpare(b: Buffer): void {
  if (spare.length >= INGEST_BUFFERS) return
  spare.push(b)
  if (spareTimer) spareTimer.refresh()
  else {
    spareTimer = setTimeout(() => {
      spare.length = 0
      spareTimer = null
    }, SPARE_KEEP_MS)
    spareTimer.unref()
  }
}

export async function ingestDisk(
  store: ChunkStore,
  disk: VirtualDisk,
  options: IngestOptions,
): Promise<IngestResult> {
  const chunkSize = options.chunkSize ?? options.previous?.chunkSize ?? DEFAULT_CHUNK_SIZE
  if ((chunkSize & (chunkSize - 1)) !== 0 || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE)
    throw new InvalidPointError(`chunk size ${chunkSize} is not a power of two between 4 KiB and 16 MiB`)
  const size = disk.virtualSize
  const shape = treeShape(size, chunkSize, MERKLE_FANOUT)
  const { previous, lease, signal } = options
  if (options.changedRanges && !previous)
    throw new InvalidPointError('changed ranges need the previous manifest')
  if (previous && (previous.virtualSize !== size || previous.chunkSize !== chunkSize))
    throw new InvalidPointError('the previous manifest has another disk size or chunk size')
  const extents = await disk.map({ resolveParents: true, signal })
  const data = new RangeCursor(extents.filter((e) => e.state !== 'zero'))
  const changed = options.changedRanges ? new RangeCursor(sortedRanges(options.changedRanges)) : null
  const prevIds = changed && previous ? store.readManifest(previous) : null

  const result = { chunks: shape.chunkCount, zeroChunks: 0, readChunks: 0, newChunks: 0, newBytes: 0 }
  const builder = new TreeBuilder(shape, store.hash, async (id, bytes) => {
    const hex = id.toString('hex')
    const [found] = await store.lookupProtected([hex], lease)
    if (found) return
    const { storedBytes } = await store.appendChunks([{ id, bytes, kind: 'node' }])
    result.newChunks++
    result.newBytes += storedBytes
  })

  const perWindow = Math.max(1, Math.floor(INGEST_WINDOW_BYTES / chunkSize))
  const pool = new BufferPool(INGEST_BUFFERS, perWindow * chunkSize)
  const toRead = options.changedRanges
    ? options.changedRanges.reduce((n, r) => n + r.length, 0)
    : extents.reduce((n, e) => n + (e.state === 'zero' ? 0 : e.length), 0)
  if (toRead >= INGEST_PARALLEL_HASH_BYTES) store.hasher.start()
  const chunkLength = (i: number) => Math.min(chunkSize, size - i * chunkSize)

  // Plans (synchronously, in order, so the cursors advance monotonically) and reads a window.
  const load = (first: number): { plan: Source[]; loaded: Promise<Window> } => {
    const plan: Source[] = []
    const end = Math.min(shape.chunkCount, first + perWindow)
    for (let i = first; i < end; i++) {
      const s = i * chunkSize
      const e = s + chunkLength(i)
      if (changed && !changed.overlaps(s, e)) plan.push('prev')
      else plan.push(data.overlaps(s, e) ? 'read' : 'zero')
    }
    const loaded = (async (): Promise<Window> => {
      if (!plan.includes('read'))
        return { first, sources: plan, buffer: null, ids: null, hexes: [], lookup: null, ticket: null }
      const buffer = await pool.acquire()
      try {
        for (let i = 0; i < plan.length; ) {
          if (plan[i] !== 'read') {
            i++
            continue
          }
          let j = i
          while (j < plan.length && plan[j] === 'read') j++
          const offset = (first + i) * chunkSize
          const length = Math.min(size, (first + j) * chunkSize) - offset
          await disk.read(buffer, offset, length, i * chunkSize)
          i = j
        }
      } catch (err) {
        pool.release(buffer)
        throw err
      }
      // The worker starts on it now, ahead of this thread.
      const starts: number[] = []
      const lengths: number[] = []
      plan.forEach((s, k) => {
        if (s !== 'read') return
        starts.push(k * chunkSize)
        lengths.push(chunkLength(first + k))
      })
      const ticket = store.hasher.begin(buffer, starts, lengths)
      return { first, sources: plan, buffer, ids: null, hexes: [], lookup: null, ticket }
    })()
    loaded.catch(() => {})
    return { plan, loaded }
  }

  const queue: Promise<Window>[] = []
  let nextFirst = 0
  const fill = () => {
    while (queue.length <= INGEST_READ_AHEAD && nextFirst < shape.chunkCount) {
      queue.push(load(nextFirst).loaded)
      nextFirst += perWindow
    }
  }
  // Zero-checks and hashes a read window's chunks (two threads); windows are hashed in order.
  const hashNext = (): Promise<Window> => {
    const loaded = queue.shift()!
    fill()
    const hashed = loaded.then(async (w) => {
      if (!w.ticket) return w
      const ids = await store.hasher.finish(w.ticket)
      w.ids = ids
      // Looked up now, while the window before is still being processed.
      for (let k = 0; k < w.ticket.starts.length; k++) {
        const id = ids.subarray(k * ID_BYTES, (k + 1) * ID_BYTES)
        if (!id.equals(ZERO_ID)) w.hexes.push(id.toString('hex'))
      }
      if (w.hexes.length > 0) {
        w.lookup = store.lookupProtected(w.hexes, lease)
        w.lookup.catch(() => {})
      }
      return w
    })
    hashed.catch(() => {})
    return hashed
  }
  try {
    fill()
    let hashing = queue.length > 0 ? hashNext() : null
    while (hashing) {
      signal?.throwIfAborted()
      const w = await hashing
      // The next window hashes while this one is looked up, written and pushed into the tree.
      hashing = queue.length > 0 ? hashNext() : null
      await processWindow(w)
      options.onProgress?.(Math.min(size, (w.first + w.sources.length) * chunkSize), size)
    }
  } finally {
    pool.close()
  }
  const root = await builder.finish()
  return {
    manifest: { virtualSize: size, chunkSize, root: root.toString('hex'), hash: store.hashAlgorithm },
    ...result,
  }

  async function processWindow(w: Window): Promise<void> {
    const ids: Buffer[] = []
    const fresh: NewChunk[] = []
    let hashed = 0
    for (let k = 0; k < w.sources.length; k++) {
      const i = w.first + k
      const prevId = prevIds ? (await prevIds.next()).value : undefined
      const source = w.sources[k]
      if (source === 'prev') {
        if (prevId === undefined) throw new InvalidPointError('the previous manifest ended early')
        ids.push(Buffer.from(prevId, 'hex'))
        if (prevId === ZERO_HEX) result.zeroChunks++
        continue
      }
      if (source === 'zero') {
        ids.push(ZERO_ID)
        result.zeroChunks++
        continue
      }
      result.readChunks++
      const at = hashed++ * ID_BYTES
      const id = Buffer.from(w.ids!.subarray(at, at + ID_BYTES))
      if (id.equals(ZERO_ID)) {
        ids.push(ZERO_ID)
        result.zeroChunks++
        continue
      }
      const bytes = w.buffer!.subarray(k * chunkSize, k * chunkSize + chunkLength(i))
      ids.push(id)
      fresh.push({ id, bytes, kind: 'data' })
    }
    let written: Promise<void> = Promise.resolve()
    if (fresh.length > 0) {
      const hexes = w.hexes
      const found = await w.lookup!
      // Absent at the early lookup: appended since by an earlier window (pending, or committed
      // by a flush since), or by another ingest? Asked again, so nothing is stored twice.
      const recheck = hexes.filter((h, k) => !found[k] && !store.pending.has(h))
      const again = recheck.length > 0 ? new Set(await store.has(recheck)) : new Set<string>()
      const seen = new Set<string>()
      const add = fresh.filter((_, k) => {
        const hex = hexes[k]
        if (found[k] || !again.has(hex) || seen.has(hex)) return false
        seen.add(hex)
        return true
      })
      const appended = await store.appendChunks(add)
      result.newChunks += add.length
      result.newBytes += appended.storedBytes
      written = appended.written
    }
    if (w.buffer) {
      const buffer = w.buffer
      void written.finally(() => pool.release(buffer))
    }
    for (const id of ids) await builder.push(id)
    if (store.pending.size >= INGEST_FLUSH_CHUNKS) await store.flush()
  }
}

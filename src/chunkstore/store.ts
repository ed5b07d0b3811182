// The chunk store: chunk bytes in append-only packs, everything else in one LevelDB index.
//
// Write path: new chunks are appended to the active pack at once and held as *pending* entries
// in memory. A commit (flush, or commitPoint) waits for the pack writes, fdatasyncs the packs,
// then writes one LevelDB batch holding the pending entries, the packs' new committed lengths,
// reference-count changes and (for commitPoint) the point itself. A crash before the batch leaves
// only unindexed bytes past a pack's committed length: open() indexes the whole records among
// them that hash to their ids (a restarted receiver need not fetch them again) and cuts off the
// rest (repair.ts).
//
// Garbage collection never removes a chunk that a running ingest or an uncommitted putChunk may
// still need: those ids are *protected* by a lease until the caller commits or gives up.
import { join } from 'node:path'
import type { VirtualDisk } from '../hyperv/index.js'
import { compress } from './compress.js'
import {
  DEFAULT_PACK_SIZE_LIMIT,
  INGEST_FLUSH_CHUNKS,
  KNOWN_ABSENT_MAX_IDS,
  MERKLE_FANOUT,
  PUT_CHUNK_UNWRITTEN_BYTES,
} from './constants.js'
import {
  ChunkHashMismatchError,
  ChunkVerifyError,
  IncompletePointError,
  InvalidPointError,
  MissingChunkError,
  PointExistsError,
  PointNotFoundError,
  PointPinnedError,
  StoreOpenError,
} from './errors.js'
import { nodeStoreFs, type StoreFs } from './fs.js'
import { DEFAULT_HASH, type HashAlgorithm, type HashFn, hashFunction, ZERO_HEX } from './hash.js'
import { ParallelHasher } from './hash-pool.js'
import {
  type BatchOp,
  type ChunkEntry,
  type ChunkKind,
  chunkKey,
  decodeEntry,
  encodeEntry,
  type IndexDb,
  jsonValue,
  openIndexDb,
  PACK_RANGE,
  POINT_RANGE,
  packKey,
  parseJson,
  pointKey,
  vmPointRange,
} from './index-db.js'
import { type IngestOptions, type IngestResult, ingestDisk } from './ingest.js'
import { Mutex } from './lock.js'
import { type MaterialiseOptions, type MaterialiseResult, materialise } from './materialise.js'
import { type ChunkChange, decodeNode, diffTrees, leaves, treeShape } from './merkle.js'
import { FLAG_DEFLATE, PackReader, PackWriter, packFileName, recordBytes } from './packs.js'
import { type ManifestRef, parsePointName, pointName, type RecoveryPoint, validatePoint } from './points.js'
import { repairPacks } from './repair.js'

export type Compression = 'off' | 'deflate'

export interface ChunkStoreInit {
  /** The store's directory (created if missing). */
  dir: string
  /** File access for pack files (default: the real file system). */
  fs?: StoreFs
  /** Hash of a new store (default blake3); an existing store keeps the one it was made with. */
  hash?: HashAlgorithm
  /** Pack size at which a new pack is started (default 256 MiB). */
  packSizeLimit?: number
  /** Per-chunk compression of new chunks (default off: worth it on WAN links, not local disks). */
  compression?: Compression
  /**
   * How pack files are written (default 'direct'). 'direct' bypasses the page cache where the
   * platform allows (direct-file.ts): for a node's store, fed by receivers whose CPU is the
   * limit, and whose cached pack bytes would take memory from the VMs. 'buffered' leaves
   * writeback to the kernel: faster for one bulk ingest bound by the disk (`store put` of 2 GiB
   * here: 546-1075 MiB/s buffered, 346-459 direct; a seeding receiver: 0.4 of the raw stream
   * buffered, 0.6-0.7 direct).
   */
  packWrites?: 'direct' | 'buffered'
}

interface StoreMeta {
  version: 1
  hash: HashAlgorithm
  createdAt: number
}

/** Ids kept safe from GC until released (a running ingest, chunks received before their point). */
export interface ChunkLease {
  protect(hex: string): void
  /**
   * Keeps a committed point (and so every chunk it names) from deletion until release: a
   * restore reading a point it holds needs no protection per chunk (one per chunk cost ~200
   * bytes of heap each: 800 MiB for a full 1 TiB disk).
   */
  pinPoint(name: string): void
  release(): void
}

export interface NewChunk {
  id: Buffer
  bytes: Uint8Array
  kind: ChunkKind
}

type RefItem = { hex: string; level: number }

export class ChunkStore {
  /** Pending entries: appended to a pack, not yet in the index. */
  readonly pending = new Map<string, ChunkEntry>()
  private readonly protectedIds = new Map<string, number>()
  /** Pack writes still in progress, by chunk: a read of such a chunk waits for its write. */
  private readonly writing = new Map<string, Promise<void>>()
  readonly mutex = new Mutex()
  readonly hashAlgorithm: HashAlgorithm
  readonly hash: HashFn
  /** Hashes ingest windows on this thread and a worker (started by the first ingest). */
  readonly hasher: ParallelHasher
  readonly packsDir: string
  readonly reader: PackReader
  /** Packs whose committed length exceeds their file at open (verify reports their chunks). */
  readonly shortPacks: number[] = []
  /** Chunks written after the last commit before the store was last closed, indexed at open. */
  recoveredAtOpen = { chunks: 0, bytes: 0 }
  readonly writer: PackWriter

  private constructor(
    readonly dir: string,
    readonly db: IndexDb,
    readonly fs: StoreFs,
    meta: StoreMeta,
    private nextPack: number,
    resume: { pack: number; length: number } | null,
    readonly packSizeLimit: number,
    readonly compression: Compression,
    readonly packWrites: 'direct' | 'buffered',
  ) {
    this.hashAlgorithm = meta.hash
    this.hash = hashFunction(meta.hash)
    this.hasher = new ParallelHasher(meta.hash, this.hash)
    this.packsDir = join(dir, 'packs')
    this.reader = new PackReader(fs, this.packsDir)
    this.writer = this.newWriter(resume)
  }

  /** A pack writer drawing numbers from this store's sequence (GC uses its own). */
  newWriter(resume: { pack: number; length: number } | null = null): PackWriter {
    return new PackWriter(
      this.fs,
      this.packsDir,
      this.packSizeLimit,
      () => this.nextPack++,
      resume,
      this.packWrites === 'direct',
    )
  }

  static async open(init: ChunkStoreInit): Promise<ChunkStore> {
    const fs = init.fs ?? nodeStoreFs
    const packsDir = join(init.dir, 'packs')
    await fs.mkdir(packsDir)
    const db = openIndexDb(join(init.dir, 'index'))
    try {
      await db.open()
    } catch (err) {
      const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message
      throw new StoreOpenError(
        init.dir,
        /lock/i.test(cause) ? 'the store is in use by another process' : cause,
      )
    }
    try {
      let meta: StoreMeta
      const metaBytes = await db.get('meta')
      if (metaBytes) meta = parseJson<StoreMeta>(metaBytes)
      else {
        meta = { version: 1, hash: init.hash ?? DEFAULT_HASH, createdAt: Date.now() }
        await db.put('meta', jsonValue(meta), { sync: true })
      }
      const { resume, nextPack, short, recovered } = await repairPacks(
        fs,
        packsDir,
        db,
        hashFunction(meta.hash),
      )
      const limit = init.packSizeLimit ?? DEFAULT_PACK_SIZE_LIMIT
      const store = new ChunkStore(
        init.dir,
        db,
        fs,
        meta,
        nextPack,
        resume,
        limit,
        init.compression ?? 'off',
        init.packWrites ?? 'direct',
      )
      store.shortPacks.push(...short)
      store.recoveredAtOpen = recovered
      return store
    } catch (err) {
      await db.close()
      throw err
    }
  }

  async close(): Promise<void> {
    await this.hasher.close()
    await this.writer.close()
    await this.reader.close()
    await this.db.close()
  }

  // ---- leases -------------------------------------------------------------------------------

  lease(): ChunkLease {
    const held = new Set<string>()
    const pins = new Set<string>()
    const drop = (counts: Map<string, number>, key: string) => {
      const n = (counts.get(key) ?? 1) - 1
      if (n <= 0) counts.delete(key)
      else counts.set(key, n)
    }
    return {
      protect: (hex) => {
        if (held.has(hex) || hex === ZERO_HEX) return
        held.add(hex)
        this.protectedIds.set(hex, (this.protectedIds.get(hex) ?? 0) + 1)
      },
      pinPoint: (name) => {
        if (pins.has(name)) return
        pins.add(name)
        this.pinnedPoints.set(name, (this.pinnedPoints.get(name) ?? 0) + 1)
      },
      release: () => {
        for (const hex of held) drop(this.protectedIds, hex)
        for (const name of pins) drop(this.pinnedPoints, name)
        held.clear()
        pins.clear()
      },
    }
  }

  /** Points a lease keeps from deletion (by name), with how many leases pin each. */
  private readonly pinnedPoints = new Map<string, number>()

  /** True while a lease pins the point: deletePoint refuses it and retention passes it over. */
  isPointPinned(name: string): boolean {
    return this.pinnedPoints.has(name)
  }

  /** Bumped by GC after each batch of deletions; lookups that raced one are repeated. */
  deletionGeneration = 0
  deletionsInFlight = 0

  /**
   * Protects the ids, then looks them up. Protecting first means GC cannot delete them after
   * this lookup; a GC deletion batch that overlapped the lookup makes it run again.
   */
  async lookupProtected(hexes: string[], lease: ChunkLease): Promise<(ChunkEntry | undefined)[]> {
    for (const h of hexes) lease.protect(h)
    for (;;) {
      const generation = this.deletionGeneration
      const found = await this.entries(hexes)
      if (this.deletionsInFlight === 0 && generation === this.deletionGeneration) return found
      await this.mutex.run(async () => {})
    }
  }

  isProtected(hex: string): boolean {
    return this.protectedIds.has(hex) || this.pending.has(hex)
  }

  // ---- chunks -------------------------------------------------------------------------------

  /** The index entry of a chunk (pending ones included), or undefined. */
  async entry(hex: string): Promise<ChunkEntry | undefined> {
    const p = this.pending.get(hex)
    if (p) return p
    const v = await this.db.get(chunkKey(hex))
    return v ? decodeEntry(v) : undefined
  }

  async entries(hexes: string[]): Promise<(ChunkEntry | undefined)[]> {
    const out: (ChunkEntry | undefined)[] = hexes.map((h) => this.pending.get(h))
    const ask = hexes.map((_, i) => (out[i] ? -1 : i)).filter((i) => i >= 0)
    if (ask.length > 0) {
      const got = await this.db.getMany(ask.map((i) => chunkKey(hexes[i])))
      ask.forEach((i, k) => {
        const v = got[k]
        if (v) out[i] = decodeEntry(v)
      })
    }
    return out
  }

  /** Of the given ids (hex), those the store lacks. The zero id is always present. */
  async has(hexes: string[]): Promise<string[]> {
    const want = hexes.filter((h) => h !== ZERO_HEX)
    for (const h of want) this.watched.set(h, (this.watched.get(h) ?? 0) + 1)
    try {
      const found = await this.entries(want)
      const absent = want.filter((_, i) => !found[i])
      for (const h of absent) if (!this.appendedWhileWatched.has(h)) this.rememberAbsent(h)
      return absent
    } finally {
      for (const h of want) {
        const n = (this.watched.get(h) ?? 1) - 1
        if (n > 0) this.watched.set(h, n)
        else {
          this.watched.delete(h)
          this.appendedWhileWatched.delete(h)
        }
      }
    }
  }

  /**
   * Ids has() found absent (neither indexed nor pending) and not appended since: putChunks of
   * such an id needs no index lookup. An id only ever becomes present through appendChunks,
   * which removes it here; an append that raced the lookup that found it absent keeps it out.
   */
  private readonly knownAbsent = new Set<string>()
  /** Ids inside a has() lookup (counted), and those of them appended meanwhile. */
  private readonly watched = new Map<string, number>()
  private readonly appendedWhileWatched = new Set<string>()

  private rememberAbsent(hex: string): void {
    // Ids asked about and never sent (a sender that went away) must not pile up.
    if (this.knownAbsent.size >= KNOWN_ABSENT_MAX_IDS) this.knownAbsent.clear()
    this.knownAbsent.add(hex)
  }

  /** A chunk's bytes, verified against its id; throws ChunkVerifyError or MissingChunkError. */
  async getChunk(hex: string): Promise<Buffer> {
    if (hex === ZERO_HEX) throw new InvalidPointError('the zero chunk is a flag, it has no bytes')
    for (let attempt = 0; ; attempt++) {
      const e = await this.entry(hex)
      if (!e) throw new MissingChunkError(hex)
      try {
        return await this.readEntry(hex, e)
      } catch (err) {
        // GC may have moved the chunk to another pack between the lookup and the read.
        const again = attempt === 0 ? await this.entry(hex) : undefined
        if (again && (again.pack !== e.pack || again.offset !== e.offset)) continue
        throw err
      }
    }
  }

  /** Reads and verifies the record an entry points at. */
  async readEntry(hex: string, e: ChunkEntry): Promise<Buffer> {
    const inFlight = this.writing.get(hex)
    if (inFlight) await inFlight
    // A pending record whose pack write failed may be missing: the failure is the answer.
    const failure = this.pending.get(hex) === e ? this.writer.failure(e.pack) : null
    if (failure) throw failure
    const id = Buffer.from(hex, 'hex')
    const where = packFileName(e.pack)
    let rec: Awaited<ReturnType<PackReader['read']>>
    try {
      rec = await this.reader.read(id, e)
    } catch (err) {
      if (err instanceof ChunkVerifyError) throw err
      const code = (err as NodeJS.ErrnoException).code
      throw new ChunkVerifyError(
        hex,
        where,
        e.offset,
        code === 'ENOENT' ? 'pack file is missing' : String(err),
      )
    }
    const raw = await recordBytes({ ...rec, rawLength: e.rawLength }, id, this.hash)
    if (raw === 'undecodable')
      throw new ChunkVerifyError(hex, where, e.offset, 'compressed bytes cannot be decoded')
    if (raw === 'mismatch') throw new ChunkVerifyError(hex, where, e.offset)
    return raw
  }

  /**
   * Stores a chunk received from elsewhere after checking its bytes hash to `hex`. Returns false
   * when the store already had it. The chunk is durable and indexed at the next flush() or
   * commitPoint(); until then (and until a point references it) a lease keeps it from GC.
   */
  async putChunk(
    hex: string,
    bytes: Uint8Array,
    lease?: ChunkLease,
    options: { owned?: boolean } = {},
  ): Promise<boolean> {
    const [result] = await this.putChunks([{ hex, bytes }], lease, options)
    if (result instanceof ChunkHashMismatchError) throw result
    return result
  }

  /**
   * putChunk for several chunks with one index lookup (a receiver that fell behind stores the
   * frames it already holds together: a lookup per chunk cost as much main-thread time as the
   * decryption of its bytes). Per chunk: true when stored, false when the store already had
   * it, or the ChunkHashMismatchError of a chunk whose bytes do not hash to its id (not stored).
   */
  async putChunks(
    chunks: Array<{ hex: string; bytes: Uint8Array }>,
    lease?: ChunkLease,
    options: {
      owned?: boolean
      /**
       * Given: the store writes the chunks from the caller's `bytes` without copying them, and
       * hands this callback the promise that settles once they are written; the caller keeps the
       * bytes unchanged until then (a receiver's reused receive buffers). Absent: the bytes are
       * copied into the pack writer's staging buffers and may be reused at once.
       */
      retain?: (written: Promise<void>) => void
    } = {},
  ): Promise<Array<boolean | ChunkHashMismatchError>> {
    const results: Array<boolean | ChunkHashMismatchError> = chunks.map(({ hex, bytes }) => {
      const actual = this.hash(bytes).toString('hex')
      return actual === hex ? false : new ChunkHashMismatchError(hex, actual)
    })
    const verified = chunks.map((_, i) => i).filter((i) => results[i] === false)
    // Ids a query just found absent need no lookup (see knownAbsent); the rest one lookup.
    const ask = verified.filter((i) => !this.knownAbsent.has(chunks[i].hex))
    for (const i of verified) lease?.protect(chunks[i].hex)
    const looked =
      ask.length === 0
        ? []
        : await this.lookup(
            ask.map((i) => chunks[i].hex),
            lease,
          )
    const byIndex = new Map(ask.map((i, k) => [i, looked[k]]))
    const found = verified.map((i) => byIndex.get(i))
    const fresh: NewChunk[] = []
    const seen = new Set<string>()
    verified.forEach((i, k) => {
      const { hex, bytes } = chunks[i]
      if (found[k] || seen.has(hex)) return
      seen.add(hex)
      results[i] = true
      fresh.push({ id: Buffer.from(hex, 'hex'), bytes, kind: 'data' })
    })
    // Without `retain`, the pack writer copies the bytes into its reused staging buffers, so the
    // caller may reuse `bytes` at once; with it, the writer writes from `bytes` and the caller
    // holds them until `written`. Either way the caller need not wait for the write (a receiver's
    // next chunk overlaps it); only a backlog of unwritten bytes waits. (`owned` changes nothing.)
    if (fresh.length > 0) {
      const { written } = await this.appendChunks(fresh, { copy: !options.retain })
      options.retain?.(written)
    }
    await this.writer.waitForUnwrittenBelow(PUT_CHUNK_UNWRITTEN_BYTES)
    if (this.pending.size >= INGEST_FLUSH_CHUNKS) await this.flush()
    return results
  }

  private lookup(hexes: string[], lease?: ChunkLease): Promise<(ChunkEntry | undefined)[]> {
    return lease ? this.lookupProtected(hexes, lease) : this.entries(hexes)
  }

  /**
   * Appends new chunks (the caller checked they are absent) to the active pack as pending
   * entries. `written` settles when the callers' buffers may be reused.
   */
  async appendChunks(
    chunks: NewChunk[],
    options: { copy?: boolean } = {},
  ): Promise<{ storedBytes: number; written: Promise<void> }> {
    const fresh = chunks.filter((c) => !this.pending.has(c.id.toString('hex')))
    const records = await Promise.all(
      fresh.map(async (c) => {
        const packed = this.compression === 'deflate' ? await compress(c.bytes) : null
        return {
          id: c.id,
          stored: packed ?? c.bytes,
          rawLength: c.bytes.byteLength,
          flags: packed ? FLAG_DEFLATE : 0,
        }
      }),
    )
    if (records.length === 0) return { storedBytes: 0, written: Promise.resolve() }
    // copy: the pack writer copies the bytes into its staging buffers and keeps no reference.
    const { locations, written } = options.copy
      ? await this.writer.appendCopy(records)
      : await this.writer.append(records)
    let storedBytes = 0
    locations.forEach((loc, i) => {
      const r = records[i]
      const hex = r.id.toString('hex')
      this.writing.set(hex, written)
      void written.finally(() => {
        if (this.writing.get(hex) === written) this.writing.delete(hex)
      })
      storedBytes += r.stored.byteLength
      this.knownAbsent.delete(hex)
      if (this.watched.has(hex)) this.appendedWhileWatched.add(hex)
      this.pending.set(hex, {
        ...loc,
        rawLength: r.rawLength,
        flags: r.flags,
        refs: 0,
        kind: fresh[i].kind,
      })
    })
    return { storedBytes, written }
  }

  /** Makes every pending chunk durable and indexed (one batch). */
  async flush(): Promise<void> {
    await this.mutex.run(() => this.commitBatch([], new Map()))
  }

  /**
   * Pack data durable first, then one batch: the pending entries (with ref changes from
   * `overlay`), the packs' committed lengths, and `extra`. Call inside the mutex.
   */
  async commitBatch(extra: BatchOp[], overlay: Map<string, ChunkEntry>): Promise<void> {
    const snapshot = [...this.pending.entries()]
    const lengths = await this.writer.sync()
    const entries = new Map<string, ChunkEntry>(snapshot)
    for (const [hex, e] of overlay) entries.set(hex, e)
    if (entries.size === 0 && lengths.length === 0 && extra.length === 0) return
    const ops: BatchOp[] = []
    for (const [hex, e] of entries) ops.push({ type: 'put', key: chunkKey(hex), value: encodeEntry(e) })
    for (const { pack, length } of lengths)
      ops.push({ type: 'put', key: packKey(pack), value: jsonValue({ length }) })
    ops.push(...extra)
    await this.db.batch(ops, { sync: true })
    for (const [hex, e] of snapshot) if (this.pending.get(hex) === e) this.pending.delete(hex)
  }

  // ---- manifests ----------------------------------------------------------------------------

  private nodeReader = (id: Buffer) => this.getChunk(id.toString('hex'))

  private checkRef(ref: ManifestRef): void {
    if (ref.hash !== this.hashAlgorithm)
      throw new InvalidPointError(`manifest uses ${ref.hash}; this store uses ${this.hashAlgorithm}`)
  }

  /** Every chunk id of a manifest in disk order (ZERO_HEX for zero chunks), streaming. */
  async *readManifest(ref: ManifestRef): AsyncGenerator<string> {
    this.checkRef(ref)
    const shape = treeShape(ref.virtualSize, ref.chunkSize, MERKLE_FANOUT)
    for await (const id of leaves(shape, this.nodeReader, Buffer.from(ref.root, 'hex')))
      yield id.toString('hex')
  }

  /**
   * Every distinct id a manifest needs (Merkle nodes before the chunks below them, zero chunks
   * left out): what a replica must hold before it can commit a point naming this manifest.
   * `skipSubtree(hex)` returning true for a node (e.g. the receiver has it) skips its subtree.
   */
  async *manifestIds(
    ref: ManifestRef,
    skipSubtree?: (hex: string) => Promise<boolean>,
  ): AsyncGenerator<{ hex: string; kind: ChunkKind }> {
    this.checkRef(ref)
    const seen = new Set<string>()
    const visit = async function* (
      store: ChunkStore,
      hex: string,
      level: number,
    ): AsyncGenerator<{ hex: string; kind: ChunkKind }> {
      if (hex === ZERO_HEX || seen.has(hex)) return
      seen.add(hex)
      if (level < 0) {
        yield { hex, kind: 'data' }
        return
      }
      yield { hex, kind: 'node' }
      if (skipSubtree && (await skipSubtree(hex))) return
      for (const id of decodeNode(await store.getChunk(hex)).ids)
        yield* visit(store, id.toString('hex'), level - 1)
    }
    yield* visit(this, ref.root, treeShape(ref.virtualSize, ref.chunkSize, MERKLE_FANOUT).depth - 1)
  }

  /** The chunks that differ between two manifests of one disk geometry, by ascending index. */
  async *diffChanges(a: ManifestRef, b: ManifestRef): AsyncGenerator<ChunkChange> {
    this.checkRef(a)
    this.checkRef(b)
    if (a.virtualSize !== b.virtualSize || a.chunkSize !== b.chunkSize)
      throw new InvalidPointError('manifests of different disk sizes or chunk sizes cannot be diffed')
    const shape = treeShape(a.virtualSize, a.chunkSize, MERKLE_FANOUT)
    yield* diffTrees(shape, this.nodeReader, Buffer.from(a.root, 'hex'), Buffer.from(b.root, 'hex'))
  }

  /** Indexes of the chunks that differ between two manifests. */
  async diffManifests(a: ManifestRef, b: ManifestRef): Promise<number[]> {
    const out: number[] = []
    for await (const c of this.diffChanges(a, b)) out.push(c.index)
    return out
  }

  // ---- disks --------------------------------------------------------------------------------

  /** Reads a disk into chunks and returns its manifest (see ingestDisk); commit it with commitPoint. */
  ingest(disk: VirtualDisk, options: IngestOptions): Promise<IngestResult> {
    return ingestDisk(this, disk, options)
  }

  /** Writes disk `diskIndex` of a point into `target` (see materialise). */
  materialise(
    point: RecoveryPoint,
    diskIndex: number,
    target: VirtualDisk,
    options?: MaterialiseOptions,
  ): Promise<MaterialiseResult> {
    return materialise(this, point, diskIndex, target, options)
  }

  // ---- points -------------------------------------------------------------------------------

  /**
   * Commits a recovery point, only if every chunk and node it names is in the store (pending
   * chunks included); they become durable in the same batch as the point.
   */
  async commitPoint(input: RecoveryPoint): Promise<void> {
    const point = validatePoint(input)
    for (const d of point.disks) this.checkRef(d)
    const name = pointName(point)
    await this.mutex.run(async () => {
      if (await this.db.get(pointKey(point.vm, point.seq))) throw new PointExistsError(name)
      const overlay = new Map<string, ChunkEntry>()
      const missing: string[] = []
      const roots = point.disks.map((d) => ({
        hex: d.root,
        level: treeShape(d.virtualSize, d.chunkSize, MERKLE_FANOUT).depth - 1,
      }))
      await this.addRefs(roots, overlay, missing)
      if (missing.length > 0) throw new IncompletePointError(name, missing)
      await this.commitBatch(
        [{ type: 'put', key: pointKey(point.vm, point.seq), value: jsonValue(point) }],
        overlay,
      )
    })
  }

  /** Raises refs; a node whose count rises from zero raises its children (checked level by level). */
  private async addRefs(
    start: RefItem[],
    overlay: Map<string, ChunkEntry>,
    missing: string[],
  ): Promise<void> {
    const queue = start.filter((r) => r.hex !== ZERO_HEX)
    while (queue.length > 0) {
      const items = queue.splice(0, 1024)
      const fetched = await this.entries(items.map((r) => (overlay.has(r.hex) ? ZERO_HEX : r.hex)))
      for (let i = 0; i < items.length; i++) {
        const { hex, level } = items[i]
        const e = overlay.get(hex) ?? fetched[i]
        if (!e) {
          missing.push(hex)
          continue
        }
        overlay.set(hex, { ...e, refs: e.refs + 1, kind: level >= 0 ? 'node' : 'data' })
        if (e.refs > 0 || level < 0) continue
        const node = decodeNode(await this.readEntry(hex, e))
        if (node.level !== level) throw new InvalidPointError(`manifest node ${hex} is at the wrong level`)
        for (const id of node.ids) {
          const child = id.toString('hex')
          if (child !== ZERO_HEX) queue.push({ hex: child, level: level - 1 })
        }
      }
    }
  }

  /** Lowers refs; a node whose count falls to zero lowers its children. Returns unreadable nodes. */
  private async dropRefs(start: string[], overlay: Map<string, ChunkEntry>): Promise<string[]> {
    const queue = start.filter((h) => h !== ZERO_HEX)
    const unreadable: string[] = []
    while (queue.length > 0) {
      const hex = queue.shift()!
      const e = overlay.get(hex) ?? (await this.entry(hex))
      if (!e || e.refs === 0) continue
      overlay.set(hex, { ...e, refs: e.refs - 1 })
      if (e.refs !== 1 || e.kind !== 'node') continue
      try {
        for (const id of decodeNode(await this.readEntry(hex, e)).ids) {
          const child = id.toString('hex')
          if (child !== ZERO_HEX) queue.push(child)
        }
      } catch {
        unreadable.push(hex)
      }
    }
    return unreadable
  }

  async getPoint(name: string): Promise<RecoveryPoint> {
    const { vm, seq } = parsePointName(name)
    const v = await this.db.get(pointKey(vm, seq))
    if (!v) throw new PointNotFoundError(name)
    return parseJson<RecoveryPoint>(v)
  }

  /** Points of one VM (or all), oldest first per VM. */
  async listPoints(vm?: string): Promise<RecoveryPoint[]> {
    const out: RecoveryPoint[] = []
    for await (const v of this.db.values(vm ? vmPointRange(vm) : POINT_RANGE))
      out.push(parseJson<RecoveryPoint>(v))
    return out
  }

  async lastPoint(vm: string): Promise<RecoveryPoint | undefined> {
    for await (const v of this.db.values({ ...vmPointRange(vm), reverse: true, limit: 1 }))
      return parseJson<RecoveryPoint>(v)
    return undefined
  }

  /** Removes a point and lowers the refs of what it named; the chunks go at the next gc. */
  async deletePoint(name: string): Promise<{ unreadableNodes: string[] }> {
    const { vm, seq } = parsePointName(name)
    return this.mutex.run(async () => {
      if (this.isPointPinned(name)) throw new PointPinnedError(name)
      const v = await this.db.get(pointKey(vm, seq))
      if (!v) throw new PointNotFoundError(name)
      const point = parseJson<RecoveryPoint>(v)
      const overlay = new Map<string, ChunkEntry>()
      const unreadableNodes = await this.dropRefs(
        point.disks.map((d) => d.root),
        overlay,
      )
      const ops: BatchOp[] = [{ type: 'del', key: pointKey(vm, seq) }]
      for (const [hex, e] of overlay)
        if (!this.pending.has(hex)) ops.push({ type: 'put', key: chunkKey(hex), value: encodeEntry(e) })
      await this.db.batch(ops, { sync: true })
      return { unreadableNodes }
    })
  }

  /** Committed lengths of all packs. */
  async packLengths(): Promise<Map<number, number>> {
    const out = new Map<number, number>()
    for await (const [k, v] of this.db.iterator(PACK_RANGE))
      out.set(Number(k.slice(2)), parseJson<{ length: number }>(v).length)
    return out
  }
}

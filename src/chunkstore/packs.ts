// Append-only pack files. A record is a 48-byte header (magic, flags, raw and stored length, id)
// followed by the stored bytes; the index points at the header. Durability contract: the writer
// hands out positions at once and writes in the background; `sync()` waits for every write,
// fdatasyncs the touched packs and returns their durable lengths, which the caller commits to the
// index in the same LevelDB batch as the entries that point into them. Bytes past a pack's
// committed length are unreachable until the store next opens, which indexes the whole records
// among them that verify by their hash and cuts off the rest (repair.ts).
import { join } from 'node:path'
import { inflateRaw } from './compress.js'
import { BACKGROUND_SYNC_BYTES } from './constants.js'
import { ChunkVerifyError } from './errors.js'
import type { StoreFile, StoreFs } from './fs.js'
import { type HashFn, ID_BYTES } from './hash.js'

export const RECORD_HEADER_BYTES = 48
const RECORD_MAGIC = 0x31434d52 // 'RMC1' little-endian
export const FLAG_DEFLATE = 1

export interface PackRecord {
  id: Buffer
  /** Bytes as stored (compressed or not). */
  stored: Uint8Array
  rawLength: number
  flags: number
}

export interface RecordLocation {
  pack: number
  /** Offset of the record header. */
  offset: number
  storedLength: number
}

export function packFileName(pack: number): string {
  return `${String(pack).padStart(8, '0')}.pack`
}

export function parsePackFileName(name: string): number | null {
  const m = /^(\d{8})\.pack$/.exec(name)
  return m ? Number(m[1]) : null
}

function encodeHeader(record: PackRecord): Buffer {
  const h = Buffer.alloc(RECORD_HEADER_BYTES)
  writeHeader(record, h, 0)
  return h
}

function writeHeader(record: PackRecord, h: Buffer, at: number): void {
  h.fill(0, at, at + RECORD_HEADER_BYTES)
  h.writeUInt32LE(RECORD_MAGIC, at)
  h.writeUInt8(record.flags, at + 4)
  h.writeUInt32LE(record.rawLength, at + 8)
  h.writeUInt32LE(record.stored.byteLength, at + 12)
  record.id.copy(h, at + 16)
}

/**
 * A record header's fields, or null when `h` (RECORD_HEADER_BYTES long) is not one. `id` is a
 * view of `h`, not a copy.
 */
export function parseHeader(
  h: Uint8Array,
): { id: Buffer; flags: number; rawLength: number; storedLength: number } | null {
  const b = Buffer.from(h.buffer, h.byteOffset, h.byteLength)
  if (b.byteLength < RECORD_HEADER_BYTES || b.readUInt32LE(0) !== RECORD_MAGIC) return null
  return {
    id: b.subarray(16, 16 + ID_BYTES),
    flags: b.readUInt8(4),
    rawLength: b.readUInt32LE(8),
    storedLength: b.readUInt32LE(12),
  }
}

/**
 * A record's chunk bytes (inflated if stored compressed), once they are `rawLength` long and hash
 * to `id`; else what is wrong with them. The one check of a read, a compaction and open's repair.
 */
export async function recordBytes(
  record: { stored: Buffer; flags: number; rawLength: number },
  id: Buffer,
  hash: HashFn,
): Promise<Buffer | 'undecodable' | 'mismatch'> {
  let raw = record.stored
  if (record.flags & FLAG_DEFLATE) {
    try {
      raw = await inflateRaw(record.stored)
    } catch {
      return 'undecodable'
    }
  }
  return raw.length === record.rawLength && hash(raw).equals(id) ? raw : 'mismatch'
}

/**
 * A staging buffer of appendCopy: records are copied into it back to back and written from it;
 * it is reused once every write from it is done (`writes` counts those not done yet).
 */
interface Staging {
  buf: Buffer
  used: number
  writes: number
}

interface QueuedWrite {
  buffers: Uint8Array[]
  start: number
  end: number
  done: () => void
}

interface OpenPack {
  pack: number
  file: StoreFile
  end: number
  pending: Set<Promise<void>>
  /** Appends waiting for the write in flight; the next writev takes all of them at once. */
  queue: QueuedWrite[]
  writing: boolean
  failed: unknown
  /** Bytes appended since the last background fdatasync started. */
  unsynced: number
  background: Promise<void> | null
}

function openPack(pack: number, file: StoreFile, end: number): OpenPack {
  return {
    pack,
    file,
    end,
    pending: new Set(),
    queue: [],
    writing: false,
    failed: null,
    unsynced: 0,
    background: null,
  }
}

/** Buffers per writev: Linux takes at most IOV_MAX (1024) per call; fs.ts loops over the rest. */
const WRITEV_MAX_BUFFERS = 1024
/** Bytes per writev at most, so one call does not hold every queued window's buffers. */
const WRITEV_MAX_BYTES = 64 * 1024 * 1024
/**
 * appendCopy's staging buffers: their size, and how many exist at most (their total bounds the
 * copied bytes waiting for their write; an append past it waits for a write to finish).
 */
export const STAGING_BUFFER_BYTES = 8 * 1024 * 1024
const STAGING_BUFFERS = 4

/** Appends records to the active pack, rolling to a new pack at the size limit. */
export class PackWriter {
  private active: OpenPack | null = null
  private readonly dirty = new Map<number, OpenPack>()
  /** Bytes appended and not yet handed to their file, over all packs. */
  private unwritten = 0
  private unwrittenWaiters: (() => void)[] = []
  private staging: Staging | null = null
  private readonly spareStaging: Staging[] = []
  private stagingMade = 0
  private stagingWaiters: (() => void)[] = []

  constructor(
    private readonly fs: StoreFs,
    private readonly dir: string,
    private readonly sizeLimit: number,
    /** Hands out unused pack numbers (shared by every writer of a store). */
    private readonly allocatePack: () => number,
    /** A pack to keep appending to (already repaired to its committed length), if any. */
    private resume: { pack: number; length: number } | null,
    /** Write packs past the page cache where the platform allows (ChunkStoreInit.packWrites). */
    private readonly direct = false,
  ) {}

  /**
   * Reserves space and queues the write; returns where each record will be and a promise that
   * settles once the bytes are handed to the file (callers may then reuse their buffers). One
   * writev per pack is in flight at a time, taking every append queued behind it: a few large
   * sequential writes, and the thread pool stays free for reads and index lookups.
   */
  async append(records: PackRecord[]): Promise<{ locations: RecordLocation[]; written: Promise<void> }> {
    const buffers: Uint8Array[] = []
    for (const r of records) buffers.push(encodeHeader(r), r.stored)
    return this.appendBuffers(
      records.map((r) => r.stored.byteLength),
      buffers,
    )
  }

  /** Queues `buffers` (records of these stored lengths, back to back) at the active pack's end. */
  private async appendBuffers(
    storedLengths: number[],
    buffers: Uint8Array[],
  ): Promise<{ locations: RecordLocation[]; written: Promise<void> }> {
    const target = await this.target()
    const locations: RecordLocation[] = []
    let pos = target.end
    for (const storedLength of storedLengths) {
      locations.push({ pack: target.pack, offset: pos, storedLength })
      pos += RECORD_HEADER_BYTES + storedLength
    }
    const start = target.end
    target.end = pos
    this.unwritten += pos - start
    this.dirty.set(target.pack, target)
    let done!: () => void
    const write = new Promise<void>((resolve) => {
      done = resolve
    })
    target.queue.push({ buffers, start, end: pos, done })
    target.pending.add(write)
    void write.finally(() => target.pending.delete(write))
    this.pump(target)
    return { locations, written: write }
  }

  /**
   * append() for records whose bytes the caller will reuse or drop at once (a receiver's chunk
   * frames): they are copied into reused staging buffers, written from there, and the caller's
   * buffers are never held. Memory stays bounded and a received chunk is garbage young (a buffer
   * held until its pack write lives long enough to need a full collection: the receiver's largest
   * cost before). `written` settles once the copies are written.
   */
  async appendCopy(records: PackRecord[]): Promise<{ locations: RecordLocation[]; written: Promise<void> }> {
    let total = 0
    for (const r of records) total += RECORD_HEADER_BYTES + r.stored.byteLength
    if (total > STAGING_BUFFER_BYTES) {
      // Larger than a staging buffer (only a caller passing many chunks at once): in parts.
      const half = Math.ceil(records.length / 2)
      if (records.length > 1) {
        const a = await this.appendCopy(records.slice(0, half))
        const b = await this.appendCopy(records.slice(half))
        return {
          locations: [...a.locations, ...b.locations],
          written: Promise.all([a.written, b.written]).then(() => {}),
        }
      }
      return this.append(records.map((r) => ({ ...r, stored: Buffer.from(r.stored) })))
    }
    const { slab, at } = await this.reserveStaging(total)
    let pos = at
    for (const r of records) {
      writeHeader(r, slab.buf, pos)
      slab.buf.set(r.stored, pos + RECORD_HEADER_BYTES)
      pos += RECORD_HEADER_BYTES + r.stored.byteLength
    }
    let result: { locations: RecordLocation[]; written: Promise<void> }
    try {
      result = await this.appendBuffers(
        records.map((r) => r.stored.byteLength),
        [slab.buf.subarray(at, at + total)],
      )
    } catch (err) {
      this.stagingDone(slab)
      throw err
    }
    void result.written.finally(() => this.stagingDone(slab))
    return result
  }

  /** Reserves `bytes` of a staging buffer (counted as a write), waiting while every one is in use. */
  private async reserveStaging(bytes: number): Promise<{ slab: Staging; at: number }> {
    for (;;) {
      const c = this.staging
      if (c && c.writes === 0) c.used = 0
      if (c && c.used + bytes <= c.buf.length) {
        const at = c.used
        c.used += bytes
        c.writes++
        return { slab: c, at }
      }
      if (c) {
        this.staging = null
        if (c.writes === 0) this.spareStaging.push(c)
      }
      let next = this.spareStaging.pop() ?? null
      if (!next && this.stagingMade < STAGING_BUFFERS) {
        this.stagingMade++
        next = { buf: Buffer.allocUnsafeSlow(STAGING_BUFFER_BYTES), used: 0, writes: 0 }
      }
      if (next) {
        next.used = 0
        this.staging = next
        continue
      }
      await new Promise<void>((resolve) => this.stagingWaiters.push(resolve))
    }
  }

  private stagingDone(slab: Staging): void {
    slab.writes--
    if (slab.writes > 0) return
    if (slab !== this.staging) this.spareStaging.push(slab)
    for (const wake of this.stagingWaiters.splice(0)) wake()
  }

  /** Writes the queued appends of a pack, one writev at a time, each taking all it may. */
  private pump(target: OpenPack): void {
    if (target.writing || target.queue.length === 0) return
    const batch: QueuedWrite[] = []
    const buffers: Uint8Array[] = []
    let bytes = 0
    while (target.queue.length > 0) {
      const next = target.queue[0]
      const size = next.end - next.start
      if (
        batch.length > 0 &&
        (buffers.length + next.buffers.length > WRITEV_MAX_BUFFERS || bytes + size > WRITEV_MAX_BYTES)
      )
        break
      target.queue.shift()
      batch.push(next)
      buffers.push(...next.buffers)
      bytes += size
    }
    target.writing = true
    // Later writes go ahead after a failed one (the pack is poisoned anyway): a read of a pending
    // record then finds its bytes, and the failure surfaces at sync() as the write error.
    const write = target.file.writev(buffers, batch[0].start)
    void write
      .catch((err) => {
        target.failed ??= err
      })
      .then(() => {
        target.writing = false
        for (const w of batch) w.done()
        this.unwritten -= bytes
        for (const wake of this.unwrittenWaiters.splice(0)) wake()
        target.unsynced += bytes
        this.pump(target)
        this.maybeBackgroundSync(target)
      })
  }

  /**
   * A background sync after every BACKGROUND_SYNC_BYTES written, and once a sealed pack's last
   * write is done (else its tail would wait for the commit's sync).
   */
  private maybeBackgroundSync(target: OpenPack): void {
    if (target.background || target.failed || target.unsynced === 0) return
    const sealed = target !== this.active && !target.writing && target.queue.length === 0
    if (sealed || target.unsynced >= BACKGROUND_SYNC_BYTES) this.backgroundSync(target)
  }

  /**
   * Starts writeback early: an fdatasync of what is written so far, not awaited, so the disk
   * writes while ingest keeps reading and the commit's own sync finds little left. Durability
   * still comes only from sync(); a failure here poisons the pack like a failed sync.
   */
  private backgroundSync(target: OpenPack): void {
    target.unsynced = 0
    target.background = target.file
      .sync()
      .catch((err) => {
        target.failed ??= err
      })
      .finally(() => {
        target.background = null
      })
  }

  /** Resolves once at most `limit` appended bytes wait for their write (bounds callers' memory). */
  async waitForUnwrittenBelow(limit: number): Promise<void> {
    while (this.unwritten > limit) await new Promise<void>((resolve) => this.unwrittenWaiters.push(resolve))
  }

  /** The write or sync failure of a pack written by this writer since its last sync, if any. */
  failure(pack: number): unknown {
    return this.dirty.get(pack)?.failed ?? null
  }

  /** Bytes in flight on the active pack (for callers bounding memory). */
  get pendingWrites(): number {
    return this.active?.pending.size ?? 0
  }

  async waitForOneWrite(): Promise<void> {
    if (this.active && this.active.pending.size > 0) await Promise.race(this.active.pending)
  }

  /** Makes every appended record durable; returns the durable length of each touched pack. */
  async sync(): Promise<{ pack: number; length: number }[]> {
    const out: { pack: number; length: number }[] = []
    for (const p of [...this.dirty.values()]) {
      // Only the writes queued so far: they cover every byte up to `end` (a pack's writes are
      // done in order). Waiting for the ones appended meanwhile would chase a receiver that
      // keeps appending, and its flush would end only when the disk caught up with the network.
      const end = p.end
      await Promise.all([...p.pending])
      if (p.background) await p.background
      if (p.failed) throw p.failed
      try {
        await p.file.sync()
      } catch (err) {
        // After a failed fsync the kernel may have dropped the dirty pages: never commit this
        // pack's data again in this process; reopening the store cuts it back to its last commit.
        p.failed = err
        throw err
      }
      out.push({ pack: p.pack, length: end })
      if (p.end === end) this.dirty.delete(p.pack)
      if (p !== this.active && !this.dirty.has(p.pack)) await p.file.close()
    }
    return out
  }

  async close(): Promise<void> {
    for (const p of this.dirty.values()) await Promise.allSettled([...p.pending, p.background])
    for (const p of new Set([...this.dirty.values(), ...(this.active ? [this.active] : [])]))
      await p.file.close()
    this.dirty.clear()
    this.active = null
  }

  /** The pack currently appended to (GC never compacts it). */
  get activePack(): number | null {
    return this.active?.pack ?? this.resume?.pack ?? null
  }

  private opening: Promise<OpenPack> | null = null

  private async target(): Promise<OpenPack> {
    if (this.active && this.active.end < this.sizeLimit) return this.active
    // Two appends arriving at a roll must not open two packs.
    this.opening ??= this.roll().finally(() => {
      this.opening = null
    })
    return this.opening
  }

  private async roll(): Promise<OpenPack> {
    const sealed = this.active
    if (!this.active && this.resume && this.resume.length < this.sizeLimit) {
      const file = await this.fs.open(join(this.dir, packFileName(this.resume.pack)), 'r+', {
        direct: this.direct,
      })
      this.active = openPack(this.resume.pack, file, this.resume.length)
      this.resume = null
      return this.active
    }
    this.resume = null
    const pack = this.allocatePack()
    const file = await this.fs.open(join(this.dir, packFileName(pack)), 'wx', { direct: this.direct })
    await this.fs.syncDir(this.dir)
    this.active = openPack(pack, file, 0)
    // The sealed pack is closed by whoever is last with it: here when nothing is left to sync,
    // else by the sync() that finds it clean and no longer active. Decided only now that the new
    // pack is active: a sync() that finished while it was opening found the sealed pack still
    // active and left it open.
    if (sealed && this.dirty.has(sealed.pack)) this.maybeBackgroundSync(sealed)
    else if (sealed) await sealed.file.close()
    return this.active
  }
}

/** Reads records, keeping a few read handles open. */
export class PackReader {
  private readonly handles = new Map<number, Promise<StoreFile>>()

  constructor(
    private readonly fs: StoreFs,
    private readonly dir: string,
    private readonly maxOpen = 32,
  ) {}

  /** The record's stored bytes, after checking its header names `id`. */
  async read(id: Buffer, loc: RecordLocation): Promise<{ stored: Buffer; flags: number; rawLength: number }> {
    const file = await this.handle(loc.pack)
    const total = RECORD_HEADER_BYTES + loc.storedLength
    const buf = Buffer.allocUnsafe(total)
    const got = await file.read(buf, 0, total, loc.offset)
    const name = packFileName(loc.pack)
    const hex = id.toString('hex')
    if (got !== total) throw new ChunkVerifyError(hex, name, loc.offset, 'record is cut short')
    const h = parseHeader(buf.subarray(0, RECORD_HEADER_BYTES))
    if (!h || !h.id.equals(id)) throw new ChunkVerifyError(hex, name, loc.offset, 'record header is damaged')
    if (h.storedLength !== loc.storedLength)
      throw new ChunkVerifyError(hex, name, loc.offset, 'record length is damaged')
    return { stored: buf.subarray(RECORD_HEADER_BYTES), flags: h.flags, rawLength: h.rawLength }
  }

  /** Closes the handle of a pack about to be deleted. */
  async forget(pack: number): Promise<void> {
    const h = this.handles.get(pack)
    this.handles.delete(pack)
    if (h) await (await h.catch(() => null))?.close()
  }

  async close(): Promise<void> {
    for (const pack of [...this.handles.keys()]) await this.forget(pack)
  }

  private handle(pack: number): Promise<StoreFile> {
    let h = this.handles.get(pack)
    if (h) {
      // Refresh LRU order.
      this.handles.delete(pack)
      this.handles.set(pack, h)
      return h
    }
    if (this.handles.size >= this.maxOpen) {
      const oldest = this.handles.keys().next().value as number
      void this.forget(oldest)
    }
    h = this.fs.open(join(this.dir, packFileName(pack)), 'r')
    h.catch(() => this.handles.delete(pack))
    this.handles.set(pack, h)
    return h
  }
}

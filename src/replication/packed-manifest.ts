// A disk's manifest as the source holds it: 32-byte chunk ids (all-zero bytes for an all-zero
// chunk, as in the manifest file, settings.ts) in pages of PAGE_ENTRIES entries.
//
// Memory. An array of 64-digit hex strings cost about 90 bytes per data chunk in the V8 heap
// (34 MiB for a full 100 GiB disk), each string an object every full collection marks, and a
// point copied the whole array. Here:
//   - a data chunk costs its 32 bytes, outside the heap;
//   - a page of all-zero chunks costs nothing (a thin disk's empty terabyte holds no pages);
//   - clone() shares every page (copy on write): a point's new manifest costs the pages its
//     changes touch, and differences() skips the pages two manifests still share.
// Hex ids are made only for the entries a point reads or sends.
import { CHUNK_ID_BYTES } from './constants.js'
import type { ChunkId } from './ids.js'
import { idFromBytes, idToBytes, isZeroIdBytes } from './ids.js'
import type { ManifestEntry } from './messages.js'

const ID = CHUNK_ID_BYTES
/** Entries in a page: one level-0 Merkle node's worth at the default fanout (MERKLE_FANOUT). */
export const PAGE_ENTRIES = 1024
const PAGE_BYTES = PAGE_ENTRIES * ID
const ZERO_PAGE = Buffer.alloc(PAGE_BYTES)

export class PackedManifest {
  /** null: every entry of the page is zero. */
  private readonly pages: Array<Buffer | null>
  /** Pages this manifest may write in place; the rest are shared with clones (or the zero page). */
  private readonly owned: Uint8Array

  private constructor(readonly length: number) {
    const count = Math.ceil(length / PAGE_ENTRIES)
    this.pages = new Array(count).fill(null)
    this.owned = new Uint8Array(count)
  }

  /** `count` all-zero entries. */
  static zeros(count: number): PackedManifest {
    return new PackedManifest(count)
  }

  /** The manifest laid out in `bytes` (32 per entry; a trailing partial entry is dropped), copied. */
  static fromBytes(bytes: Uint8Array): PackedManifest {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    const m = new PackedManifest(Math.floor(buf.length / ID))
    for (let p = 0; p < m.pages.length; p++) m.setPage(p, buf.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES))
    return m
  }

  static fromIds(ids: ReadonlyArray<ChunkId | null>): PackedManifest {
    const m = new PackedManifest(ids.length)
    ids.forEach((id, i) => {
      if (id !== null) m.set(i, id)
    })
    return m
  }

  /** The bytes of page `p` as the manifest file holds them (shared: not to be written). */
  pageBytes(p: number): Buffer {
    const bytes = (Math.min(this.length, (p + 1) * PAGE_ENTRIES) - p * PAGE_ENTRIES) * ID
    return (this.pages[p] ?? ZERO_PAGE).subarray(0, bytes)
  }

  get pageCount(): number {
    return this.pages.length
  }

  /** Sets page `p` from its bytes in file layout (copied; an all-zero page is held as none). */
  setPage(p: number, bytes: Uint8Array): void {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    if (buf.equals(ZERO_PAGE.subarray(0, buf.length))) {
      this.pages[p] = null
      this.owned[p] = 0
      return
    }
    const page = Buffer.alloc(PAGE_BYTES)
    buf.copy(page)
    this.pages[p] = page
    this.owned[p] = 1
  }

  /** The id of entry `i` in hex, null for an all-zero chunk. */
  get(i: number): ChunkId | null {
    const page = this.pages[this.pageOf(i)]
    const at = (i % PAGE_ENTRIES) * ID
    return page === null || isZeroIdBytes(page, at) ? null : idFromBytes(page, at)
  }

  isZero(i: number): boolean {
    const page = this.pages[this.pageOf(i)]
    return page === null || isZeroIdBytes(page, (i % PAGE_ENTRIES) * ID)
  }

  set(i: number, id: ChunkId | null): void {
    if (id === null) this.setBytes(i, null)
    else this.setBytes(i, idToBytes(id))
  }

  /** Sets entry `i` from an id's 32 bytes (null: an all-zero chunk). */
  setBytes(i: number, id: Uint8Array | null): void {
    const p = this.pageOf(i)
    if (id === null && this.pages[p] === null) return
    const page = this.writable(p)
    const at = (i % PAGE_ENTRIES) * ID
    if (id === null) page.fill(0, at, at + ID)
    else page.set(id.subarray(0, ID), at)
  }

  /** Whether entry `i` holds `id` (its 32 bytes; null: an all-zero chunk). */
  holds(i: number, id: Uint8Array | null): boolean {
    const page = this.pages[this.pageOf(i)]
    const at = (i % PAGE_ENTRIES) * ID
    if (id === null) return page === null || isZeroIdBytes(page, at)
    if (page === null) return false
    return Buffer.from(id.buffer, id.byteOffset, ID).compare(page, at, at + ID) === 0
  }

  /** Copies entry `i`'s 32 bytes into `target` at `at`. */
  copyEntry(i: number, target: Uint8Array, at: number): void {
    const page = this.pages[this.pageOf(i)]
    const from = (i % PAGE_ENTRIES) * ID
    if (page === null) target.fill(0, at, at + ID)
    else target.set(page.subarray(from, from + ID), at)
  }

  /** Entries [from, to) in file layout, within one page; null when all are zero. */
  run(from: number, to: number): Buffer | null {
    const p = this.pageOf(from)
    if (to <= from || to > this.length || this.pageOf(to - 1) !== p)
      throw new RangeError(`entries ${from}..${to - 1} are not within one page`)
    const page = this.pages[p]
    return page === null ? null : page.subarray((from % PAGE_ENTRIES) * ID, (to - p * PAGE_ENTRIES) * ID)
  }

  /** A manifest with the same entries: pages are shared until either side writes one. */
  clone(): PackedManifest {
    const c = new PackedManifest(this.length)
    for (let p = 0; p < this.pages.length; p++) c.pages[p] = this.pages[p]
    this.owned.fill(0)
    return c
  }

  /** Indexes of the entries that are not zero, in order (pages of zeros are skipped). */
  *dataIndexes(): Generator<number> {
    for (let p = 0; p < this.pages.length; p++) {
      const page = this.pages[p]
      if (page === null) continue
      const end = Math.min(this.length, (p + 1) * PAGE_ENTRIES)
      for (let i = p * PAGE_ENTRIES; i < end; i++) if (!isZeroIdBytes(page, (i % PAGE_ENTRIES) * ID)) yield i
    }
  }

  /**
   * The indexes at which this manifest and `other` (of the same length) differ, in order. Pages
   * they share are skipped unread, others are compared whole first: a small change to a large
   * manifest costs the pages it touched.
   */
  differences(other: PackedManifest): number[] {
    if (other.length !== this.length) throw new RangeError('manifests of different lengths')
    const out: number[] = []
    for (let p = 0; p < this.pages.length; p++) {
      const a = this.pages[p] ?? ZERO_PAGE
      const b = other.pages[p] ?? ZERO_PAGE
      if (a === b || a.equals(b)) continue
      const end = Math.min(this.length, (p + 1) * PAGE_ENTRIES)
      for (let i = p * PAGE_ENTRIES; i < end; i++) {
        const at = (i % PAGE_ENTRIES) * ID
        if (a.compare(b, at, at + ID, at, at + ID) !== 0) out.push(i)
      }
    }
    return out
  }

  /** How many entries are not zero. */
  dataCount(): number {
    let n = 0
    for (const _ of this.dataIndexes()) n++
    return n
  }

  /** Every entry in hex, null for zero (tests, and small manifests). */
  toArray(): Array<ChunkId | null> {
    return Array.from({ length: this.length }, (_, i) => this.get(i))
  }

  /** Bytes held in pages (shared pages counted in each manifest that holds them). */
  get heldBytes(): number {
    return this.pages.reduce((n, p) => n + (p ? PAGE_BYTES : 0), 0)
  }

  private writable(p: number): Buffer {
    const page = this.pages[p]
    if (page !== null && this.owned[p]) return page
    const copy = Buffer.alloc(PAGE_BYTES)
    page?.copy(copy)
    this.pages[p] = copy
    this.owned[p] = 1
    return copy
  }

  private pageOf(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.length)
      throw new RangeError(`manifest entry ${i} is outside 0..${this.length - 1}`)
    return Math.floor(i / PAGE_ENTRIES)
  }
}

/** Entry i as its 32 bytes (null: zero, or past the end), of a packed manifest or an id array. */
export function idBytesAt(ids: ReadonlyArray<ChunkId | null> | PackedManifest): (i: number) => Buffer | null {
  if (ids instanceof PackedManifest) return (i) => (i < ids.length ? ids.run(i, i + 1) : null)
  return (i) => {
    const id = ids[i]
    return id ? Buffer.from(id, 'hex') : null
  }
}

/** Manifest entries of one disk for a commit: a list, or a full manifest's made on demand. */
export type EntryList = { readonly length: number } & Iterable<ManifestEntry>

/**
 * Every data chunk of a manifest as entries, made as they are iterated (TargetSession.commit sends
 * them a frame at a time): a full manifest sent to a target costs no object per chunk beforehand
 * (~120 bytes a chunk: 47 MiB for a full 100 GiB disk, per target).
 */
export function fullEntries(ids: PackedManifest): EntryList {
  let length: number | null = null
  return {
    // Counted when asked (a commit's header), not by a reader that only iterates.
    get length() {
      length ??= ids.dataCount()
      return length
    },
    *[Symbol.iterator]() {
      for (const index of ids.dataIndexes()) yield { index, id: ids.get(index) }
    },
  }
}

/** Entries in frames of at most `max` (a manifest frame's limit), made as they are iterated. */
export function* entryFrames(entries: Iterable<ManifestEntry>, max: number): Generator<ManifestEntry[]> {
  let frame: ManifestEntry[] = []
  for (const e of entries) {
    frame.push(e)
    if (frame.length === max) {
      yield frame
      frame = []
    }
  }
  if (frame.length > 0) yield frame
}

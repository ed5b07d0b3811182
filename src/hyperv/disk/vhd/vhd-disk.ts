// A VHD opened for reading and writing. Fixed disks are the data followed by a footer;
// dynamic and differencing disks have a footer copy at 0, a dynamic header, a BAT of 32-bit
// sector numbers and blocks of [sector bitmap | data], with the footer at the very end.
//
// Reads: an unallocated block reads as zeros (dynamic) or from the parent (differencing). In an
// allocated dynamic block every sector is data (qemu sets the whole bitmap and reads ignore it);
// in a differencing block the MSB-first bitmap says which sectors are here (1) or the parent's.
//
// Writes allocate blocks at the end of the file in a crash-safe order: the footer moves first
// to the block's far end (so the file always ends with a valid footer), then the bitmap and
// data are written and synced, and only then the BAT entry names the block. A crash leaves
// at worst an unreferenced block. Existing differencing blocks get their data before their
// bitmap bits.
import type { FileHandle } from 'node:fs/promises'
import { DiskRangeError, ReadOnlyDiskError } from '../errors.js'
import { readFull, writeFull } from '../file-io.js'
import type { DiskInfo, DiskSubformat, Extent, MapOptions, VirtualDisk } from '../types.js'
import {
  bitmapSet,
  bitmapSizeFor,
  bitmapTest,
  type DynamicHeader,
  FOOTER_SIZE,
  type Footer,
  SECTOR_SIZE,
  serializeFooter,
  UNALLOCATED,
} from './format.js'

/** Sector bitmaps kept in memory (512 bytes each for 2 MiB blocks). */
const BITMAP_CACHE_ENTRIES = 8192

export interface VhdLayout {
  path: string
  fh: FileHandle
  readOnly: boolean
  footer: Footer
  virtualSize: number
  /** Dynamic and differencing only. */
  header: DynamicHeader | null
  bat: Uint32Array | null
  /** Where the footer at the end of the file sits; new blocks go here. */
  footerOffset: number
  parent: VirtualDisk | null
  parentPath: string | null
}

export class VhdDisk implements VirtualDisk {
  readonly format = 'vhd' as const
  readonly subformat: DiskSubformat
  readonly logicalSectorSize = SECTOR_SIZE
  readonly physicalSectorSize = SECTOR_SIZE
  readonly blockSize: number
  readonly path: string
  readonly readOnly: boolean
  readonly virtualSize: number
  readonly parent: VirtualDisk | null
  readonly footer: Footer
  private readonly fh: FileHandle
  private readonly header: DynamicHeader | null
  private readonly bat: Uint32Array | null
  private readonly bitmapSize: number
  private readonly parentPath: string | null
  private footerOffset: number
  private readonly bitmaps = new Map<number, Uint8Array>()
  private writeLock: Promise<void> = Promise.resolve()
  private closed = false

  constructor(layout: VhdLayout) {
    this.path = layout.path
    this.fh = layout.fh
    this.readOnly = layout.readOnly
    this.footer = layout.footer
    this.virtualSize = layout.virtualSize
    this.header = layout.header
    this.bat = layout.bat
    this.footerOffset = layout.footerOffset
    this.parent = layout.parent
    this.parentPath = layout.parentPath
    this.subformat = layout.header === null ? 'fixed' : layout.parent ? 'differencing' : 'dynamic'
    this.blockSize = layout.header?.blockSize ?? 0
    this.bitmapSize = layout.header ? bitmapSizeFor(this.blockSize) : 0
  }

  get uniqueId(): Buffer {
    return this.footer.uniqueId
  }

  info(): DiskInfo {
    let allocatedBytes = this.virtualSize
    if (this.bat) {
      let blocks = 0
      for (const e of this.bat) if (e !== UNALLOCATED) blocks++
      allocatedBytes = blocks * this.blockSize
    }
    return {
      format: 'vhd',
      subformat: this.subformat,
      virtualSize: this.virtualSize,
      blockSize: this.blockSize,
      logicalSectorSize: SECTOR_SIZE,
      physicalSectorSize: SECTOR_SIZE,
      parent: this.parentPath,
      allocatedBytes,
    }
  }

  async map(options: MapOptions = {}): Promise<Extent[]> {
    const out: Extent[] = []
    const push = (start: number, length: number, state: Extent['state']) =>
      appendExtent(out, start, length, state)
    if (!this.bat) {
      push(0, this.virtualSize, 'data')
      return out
    }
    const diff = this.parent !== null
    for (let block = 0; block * this.blockSize < this.virtualSize; block++) {
      options.signal?.throwIfAborted()
      const start = block * this.blockSize
      const length = Math.min(this.blockSize, this.virtualSize - start)
      if (this.bat[block] === UNALLOCATED) push(start, length, diff ? 'parent' : 'zero')
      else if (!diff) push(start, length, 'data')
      else {
        const bitmap = await this.bitmap(block)
        for (let s = 0; s * SECTOR_SIZE < length; s++) {
          const len = Math.min(SECTOR_SIZE, length - s * SECTOR_SIZE)
          push(start + s * SECTOR_SIZE, len, bitmapTest(bitmap, s) ? 'data' : 'parent')
        }
      }
    }
    if (!options.resolveParents || !this.parent) return out
    return resolveParentExtents(out, this.parent, options)
  }

  async read(buffer: Uint8Array, offset: number, lengthArg?: number, bufferOffset = 0): Promise<void> {
    const length = lengthArg ?? buffer.length - bufferOffset
    this.checkRange(offset, length)
    if (bufferOffset + length > buffer.length) throw new DiskRangeError('read buffer too small', this.path)
    if (!this.bat) {
      // Fixed: the data area is [0, footerOffset); a CHS size may run past it, which reads as 0.
      const inFile = Math.max(0, Math.min(length, this.footerOffset - offset))
      if (inFile > 0) await readFull(this.fh, this.path, buffer, bufferOffset, inFile, offset)
      buffer.fill(0, bufferOffset + inFile, bufferOffset + length)
      return
    }
    let done = 0
    while (done < length) {
      const pos = offset + done
      const block = Math.floor(pos / this.blockSize)
      const inBlock = pos - block * this.blockSize
      const n = Math.min(length - done, this.blockSize - inBlock)
      await this.readInBlock(block, inBlock, buffer, bufferOffset + done, n)
      done += n
    }
  }

  private async readInBlock(block: number, inBlock: number, buf: Uint8Array, at: number, n: number) {
    const entry = this.bat![block]
    const blockStart = block * this.blockSize
    if (entry === UNALLOCATED) {
      await this.readParent(buf, at, blockStart + inBlock, n)
      return
    }
    const dataOffset = entry * SECTOR_SIZE + this.bitmapSize
    if (!this.parent) {
      await readFull(this.fh, this.path, buf, at, n, dataOffset + inBlock)
      return
    }
    // Differencing: runs of sectors that are here (bit set) or in the parent.
    const bitmap = await this.bitmap(block)
    let pos = inBlock
    const end = inBlock + n
    while (pos < end) {
      const here = bitmapTest(bitmap, Math.floor(pos / SECTOR_SIZE))
      let runEnd = (Math.floor(pos / SECTOR_SIZE) + 1) * SECTOR_SIZE
      while (runEnd < end && bitmapTest(bitmap, runEnd / SECTOR_SIZE) === here) runEnd += SECTOR_SIZE
      runEnd = Math.min(runEnd, end)
      const dst = at + (pos - inBlock)
      if (here) await readFull(this.fh, this.path, buf, dst, runEnd - pos, dataOffset + pos)
      else await this.readParent(buf, dst, blockStart + pos, runEnd - pos)
      pos = runEnd
    }
  }

  /** Parent bytes, or zeros for a dynamic disk or past the end of a smaller parent. */
  private async readParent(buf: Uint8Array, at: number, offset: number, n: number) {
    const p = this.parent
    const inParent = p ? Math.max(0, Math.min(n, p.virtualSize - offset)) : 0
    if (inParent > 0) await p!.read(buf, offset, inParent, at)
    buf.fill(0, at + inParent, at + n)
  }

  private async bitmap(block: number): Promise<Uint8Array> {
    const cached = this.bitmaps.get(block)
    if (cached) return cached
    const bitmap = Buffer.alloc(this.bitmapSize)
    await readFull(this.fh, this.path, bitmap, 0, this.bitmapSize, this.bat![block] * SECTOR_SIZE)
    this.cacheBitmap(block, bitmap)
    return bitmap
  }

  private cacheBitmap(block: number, bitmap: Uint8Array) {
    if (this.bitmaps.size >= BITMAP_CACHE_ENTRIES) {
      const oldest = this.bitmaps.keys().next().value
      if (oldest !== undefined) this.bitmaps.delete(oldest)
    }
    this.bitmaps.set(block, bitmap)
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new ReadOnlyDiskError('opened read-only', this.path)
    this.checkRange(offset, data.length)
    const run = this.writeLock.then(() => this.writeLocked(data, offset))
    this.writeLock = run.catch(() => {})
    return run
  }

  private async writeLocked(data: Uint8Array, offset: number): Promise<void> {
    if (data.length === 0) return
    if (!this.bat) {
      // A CHS size can exceed the data area; never write over the footer that follows it.
      if (offset + data.length > this.footerOffset)
        throw new DiskRangeError(
          `write past the data area of a fixed VHD (${this.footerOffset} bytes)`,
          this.path,
        )
      await writeFull(this.fh, data, 0, data.length, offset)
      return
    }
    // Bitmaps track whole sectors: widen a ragged write with the sectors' current contents.
    const start = Math.floor(offset / SECTOR_SIZE) * SECTOR_SIZE
    const end = Math.min(this.virtualSize, Math.ceil((offset + data.length) / SECTOR_SIZE) * SECTOR_SIZE)
    let aligned = data
    if (start !== offset || end !== offset + data.length) {
      aligned = Buffer.alloc(end - start)
      await this.read(aligned, start, SECTOR_SIZE, 0)
      if (end - SECTOR_SIZE > start)
        await this.read(aligned, end - SECTOR_SIZE, SECTOR_SIZE, end - start - SECTOR_SIZE)
      aligned.set(data, offset - start)
    }
    let done = 0
    while (done < aligned.length) {
      const pos = start + done
      const block = Math.floor(pos / this.blockSize)
      const inBlock = pos - block * this.blockSize
      const n = Math.min(aligned.length - done, this.blockSize - inBlock)
      await this.writeInBlock(block, inBlock, aligned.subarray(done, done + n))
      done += n
    }
  }

  private async writeInBlock(block: number, inBlock: number, piece: Uint8Array) {
    const bat = this.bat!
    const firstSector = inBlock / SECTOR_SIZE
    const sectors = Math.ceil(piece.length / SECTOR_SIZE)
    if (bat[block] === UNALLOCATED) {
      await this.allocate(block, inBlock, piece, firstSector, sectors)
      return
    }
    const dataOffset = bat[block] * SECTOR_SIZE + this.bitmapSize
    await writeFull(this.fh, piece, 0, piece.length, dataOffset + inBlock)
    if (!this.parent) return
    const bitmap = await this.bitmap(block)
    let changed = false
    for (let s = firstSector; s < firstSector + sectors; s++) {
      if (!bitmapTest(bitmap, s)) {
        bitmapSet(bitmap, s)
        changed = true
      }
    }
    if (!changed) return
    await this.fh.datasync() // the data is durable before the bitmap claims it
    await writeFull(this.fh, bitmap, 0, this.bitmapSize, bat[block] * SECTOR_SIZE)
  }

  private async allocate(
    block: number,
    inBlock: number,
    piece: Uint8Array,
    firstSector: number,
    sectors: number,
  ) {
    const blockOffset = this.footerOffset
    const newFooterOffset = blockOffset + this.bitmapSize + this.blockSize
    // 1. The footer moves to the new end first: the file always ends with a valid footer.
    await writeFull(this.fh, serializeFooter(this.footer), 0, FOOTER_SIZE, newFooterOffset)
    this.footerOffset = newFooterOffset
    // 2. Bitmap and data. A dynamic block is all data (unwritten parts are file holes = zeros).
    const bitmap = Buffer.alloc(this.bitmapSize, this.parent ? 0 : 0xff)
    if (this.parent) for (let s = firstSector; s < firstSector + sectors; s++) bitmapSet(bitmap, s)
    await writeFull(this.fh, bitmap, 0, this.bitmapSize, blockOffset)
    // The old footer sat where the bitmap now is. The rest of the block is past the old end of
    // the file: a hole that reads as zeros.
    await writeFull(this.fh, piece, 0, piece.length, blockOffset + this.bitmapSize + inBlock)
    await this.fh.datasync()
    // 3. Only now does the BAT name the block.
    const entry = Buffer.alloc(4)
    entry.writeUInt32BE(blockOffset / SECTOR_SIZE)
    await writeFull(this.fh, entry, 0, 4, this.header!.tableOffset + block * 4)
    this.bat![block] = blockOffset / SECTOR_SIZE
    this.cacheBitmap(block, bitmap)
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.closed) return
    await this.writeLock
    await this.fh.datasync()
  }

  async close(): Promise<void> {
    if (this.closed) return
    try {
      await this.flush()
    } finally {
      this.closed = true
      await this.fh.close()
      await this.parent?.close()
    }
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
      throw new DiskRangeError(`bad range ${offset}+${length}`, this.path)
    if (offset + length > this.virtualSize)
      throw new DiskRangeError(
        `range ${offset}+${length} is past the end of the disk (${this.virtualSize} bytes)`,
        this.path,
      )
  }
}

/** Replaces `parent` extents with the parent's own (resolved) map over the same ranges. */
export async function resolveParentExtents(
  extents: Extent[],
  parent: VirtualDisk,
  options: MapOptions,
): Promise<Extent[]> {
  const parentMap = await parent.map({ resolveParents: true, signal: options.signal })
  const out: Extent[] = []
  const push = (start: number, length: number, state: Extent['state']) =>
    appendExtent(out, start, length, state)
  let j = 0
  for (const e of extents) {
    if (e.state !== 'parent') {
      push(e.start, e.length, e.state)
      continue
    }
    const end = e.start + e.length
    let pos = e.start
    while (j > 0 && parentMap[j - 1].start + parentMap[j - 1].length > pos) j--
    while (pos < end) {
      while (j < parentMap.length && parentMap[j].start + parentMap[j].length <= pos) j++
      if (j >= parentMap.length) {
        push(pos, end - pos, 'zero') // past the end of a smaller parent
        break
      }
      const p = parentMap[j]
      const stop = Math.min(end, p.start + p.length)
      push(pos, stop - pos, p.state === 'parent' ? 'zero' : p.state)
      pos = stop
    }
  }
  return out
}

/** Appends an extent, merging it into the previous one when they touch and share a state. */
export function appendExtent(out: Extent[], start: number, length: number, state: Extent['state']): void {
  if (length <= 0) return
  const last = out[out.length - 1]
  if (last && last.state === state && last.start + last.length === start) last.length += length
  else out.push({ start, length, state })
}

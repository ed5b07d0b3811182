// A VHDX file as a VirtualDisk. Reads walk the BAT block by block and turn each piece into a
// file range, a parent range or zeros; contiguous file (and parent) ranges are coalesced so a
// large read of a contiguous area costs one syscall. Writes follow a crash-safe order
// (MS-VHDX §2.2.2.1 and §2.5): the header gets new FileWriteGuid/DataWriteGuid before the
// session's first change; new payload (and sector bitmap) blocks are written and fdatasync'd
// before the BAT entry that points at them; data is durable before the bitmap bits that
// make it visible.
import { DiskError, DiskRangeError, ReadOnlyDiskError } from '../errors.js'
import type { DiskInfo, DiskSubformat, Extent, ExtentState, MapOptions, VirtualDisk } from '../types.js'
import { type Bat, isAllocated } from './bat.js'
import { bitmapRuns, SectorBitmaps } from './bitmap.js'
import {
  MiB,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
} from './constants.js'
import type { VhdxFile } from './file.js'
import { guidToString, newGuid } from './guid.js'
import { type CurrentHeader, updateHeader, type VhdxLayout } from './layout.js'
import { ReadPlan } from './read-plan.js'

export interface VhdxDiskInit {
  file: VhdxFile
  layout: VhdxLayout
  bat: Bat
  readOnly: boolean
  parent: VirtualDisk | null
  parentPath: string | null
  /** End of the last structure in the file: new blocks are placed after it. */
  allocationEnd: number
}

interface PayloadWrite {
  fileOffset: number
  /** Offset in the (aligned) source buffer. */
  from: number
  length: number
}

interface BatUpdate {
  index: number
  state: number
  fileOffset: number
}

interface WritePlan {
  payload: PayloadWrite[]
  /**
   * Sectors to mark present. With `bitmapOffset` (the chunk's sector bitmap block), the block
   * is new: its whole bitmap slice is rewritten with only these sectors set.
   */
  marks: { block: number; first: number; count: number; bitmapOffset?: number }[]
  /** New sector bitmap blocks: their BAT entries go first. */
  bitmapEntries: BatUpdate[]
  payloadEntries: BatUpdate[]
  /** File end after the new blocks. */
  end: number
}

export class VhdxDisk implements VirtualDisk {
  readonly format = 'vhdx' as const
  readonly subformat: DiskSubformat
  readonly path: string
  readonly virtualSize: number
  readonly logicalSectorSize: number
  readonly physicalSectorSize: number
  readonly blockSize: number
  readonly readOnly: boolean
  readonly parent: VirtualDisk | null
  private readonly file: VhdxFile
  private readonly layout: VhdxLayout
  private readonly bat: Bat
  private readonly bitmaps: SectorBitmaps
  private readonly parentPath: string | null
  private current: CurrentHeader
  private sessionStarted = false
  private dirty = false
  private closed = false
  private nextFree: number
  private writeChain: Promise<void> = Promise.resolve()

  constructor(init: VhdxDiskInit) {
    const { layout } = init
    this.file = init.file
    this.layout = layout
    this.bat = init.bat
    this.path = init.file.path
    this.readOnly = init.readOnly
    this.parent = init.parent
    this.parentPath = init.parentPath
    this.current = layout.current
    this.virtualSize = layout.virtualSize
    this.logicalSectorSize = layout.logicalSectorSize
    this.physicalSectorSize = layout.physicalSectorSize
    this.blockSize = layout.blockSize
    this.subformat = layout.hasParent ? 'differencing' : layout.leaveBlocksAllocated ? 'fixed' : 'dynamic'
    this.bitmaps = new SectorBitmaps(this.file, this.bat, layout.batOffset)
    this.nextFree = Math.ceil(Math.max(init.allocationEnd, this.file.size) / MiB) * MiB
  }

  /** The DataWriteGuid a child's parent_linkage must name (MS-VHDX §2.6.2.6.3). */
  get vhdxDataWriteGuid(): string {
    return guidToString(this.current.header.dataWriteGuid)
  }

  info(): DiskInfo {
    let allocated = 0
    for (let b = 0; b < this.layout.geometry.payloadBlocks; b++)
      if (isAllocated(this.bat.blockState(b))) allocated++
    return {
      format: 'vhdx',
      subformat: this.subformat,
      virtualSize: this.virtualSize,
      blockSize: this.blockSize,
      logicalSectorSize: this.logicalSectorSize,
      physicalSectorSize: this.physicalSectorSize,
      parent: this.parentPath,
      allocatedBytes: allocated * this.blockSize,
    }
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new DiskRangeError(`bad range: offset ${offset}, length ${length}`, this.path)
    }
    if (offset + length > this.virtualSize) {
      throw new DiskRangeError(
        `range ${offset}+${length} is past the virtual size ${this.virtualSize}`,
        this.path,
      )
    }
  }

  async read(buffer: Uint8Array, offset: number, length?: number, bufferOffset = 0): Promise<void> {
    const len = length ?? buffer.length - bufferOffset
    if (this.closed) throw new DiskError('disk is closed', this.path)
    this.checkRange(offset, len)
    if (bufferOffset < 0 || bufferOffset + len > buffer.length) {
      throw new DiskRangeError(
        `buffer of ${buffer.length} bytes cannot take ${len} at ${bufferOffset}`,
        this.path,
      )
    }
    const bs = this.blockSize
    // The common case of a streaming read (a piece inside one present block): one file read,
    // no plan. Saves the plan's async hops, which cost a visible share of a page-cache copy.
    const first = Math.floor(offset / bs)
    if (offset + len <= (first + 1) * bs && this.bat.blockState(first) === PAYLOAD_BLOCK_FULLY_PRESENT) {
      if (len > 0)
        await this.file.read(buffer, bufferOffset, len, this.bat.blockOffset(first) + offset - first * bs)
      return
    }
    const plan = new ReadPlan(this.file, this.parent, buffer)
    const lss = this.logicalSectorSize
    const end = offset + len
    for (let pos = offset; pos < end; ) {
      const block = Math.floor(pos / bs)
      const inBlock = pos - block * bs
      const n = Math.min(bs - inBlock, end - pos)
      const at = bufferOffset + (pos - offset)
      const state = this.bat.blockState(block)
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT) {
        await plan.file(this.bat.blockOffset(block) + inBlock, n, at)
      } else if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        const base = this.bat.blockOffset(block)
        const bits = await this.bitmaps.get(block)
        const first = Math.floor(inBlock / lss)
        const last = Math.floor((inBlock + n - 1) / lss)
        for (const run of bitmapRuns(bits, first, last - first + 1)) {
          const a = Math.max(run.start * lss, inBlock)
          const b = Math.min((run.start + run.count) * lss, inBlock + n)
          if (run.present) await plan.file(base + a, b - a, at + (a - inBlock))
          else await plan.parent(block * bs + a, b - a, at + (a - inBlock))
        }
      } else if (state === PAYLOAD_BLOCK_NOT_PRESENT && this.parent) {
        await plan.parent(pos, n, at)
      } else {
        plan.zero(at, n)
      }
      pos += n
    }
    await plan.finish()
  }

  async map(options: MapOptions = {}): Promise<Extent[]> {
    const own: Extent[] = []
    const push = (start: number, length: number, state: ExtentState) =>
      appendExtent(own, start, length, state)
    const bs = this.blockSize
    const lss = this.logicalSectorSize
    for (let block = 0; block < this.layout.geometry.payloadBlocks; block++) {
      options.signal?.throwIfAborted()
      const start = block * bs
      const length = Math.min(bs, this.virtualSize - start)
      const state = this.bat.blockState(block)
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT) push(start, length, 'data')
      else if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        const bits = await this.bitmaps.get(block)
        for (const run of bitmapRuns(bits, 0, Math.ceil(length / lss))) {
          push(start + run.start * lss, run.count * lss, run.present ? 'data' : 'parent')
        }
      } else if (state === PAYLOAD_BLOCK_NOT_PRESENT && this.parent) push(start, length, 'parent')
      else push(start, length, 'zero')
    }
    if (!options.resolveParents || !this.parent) return own
    const parentMap = await this.parent.map({ resolveParents: true, signal: options.signal })
    return resolveParentExtents(own, parentMap)
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    if (this.closed) throw new DiskError('disk is closed', this.path)
    if (this.readOnly) throw new ReadOnlyDiskError('disk is open read-only', this.path)
    this.checkRange(offset, data.length)
    const run = this.writeChain.then(() => this.writeSerial(data, offset))
    this.writeChain = run.catch(() => undefined)
    return run
  }

  private async writeSerial(input: Uint8Array, inputOffset: number): Promise<void> {
    if (input.length === 0) return
    if (!this.sessionStarted) {
      // MS-VHDX §2.2.2: new FileWriteGuid and DataWriteGuid before the first change.
      this.current = await updateHeader(this.file, this.current, {
        fileWriteGuid: newGuid(),
        dataWriteGuid: newGuid(),
      })
      this.sessionStarted = true
    }
    const { data, offset } = this.parent
      ? await this.alignToSectors(input, inputOffset)
      : { data: input, offset: inputOffset }
    const plan = this.planWrite(data.length, offset)
    if (plan.end > this.nextFree) {
      await this.file.truncate(plan.end)
      this.nextFree = plan.end
    }
    await this.writePayload(data, plan.payload)
    // Rewriting sectors a partial block already holds changes no bitmap: no ordering needed.
    const marks = []
    for (const m of plan.marks) {
      if (m.bitmapOffset !== undefined || !(await this.bitmaps.allPresent(m.block, m.first, m.count)))
        marks.push(m)
    }
    plan.marks = marks
    const needsOrder =
      plan.marks.length > 0 || plan.bitmapEntries.length > 0 || plan.payloadEntries.length > 0
    if (needsOrder) await this.file.sync()
    for (const m of plan.marks) await this.bitmaps.markPresent(m.block, m.first, m.count, m.bitmapOffset)
    await this.promoteFullBlocks(plan)
    // A sector bitmap block and its BAT entry are durable before a payload entry relies on them.
    if (plan.bitmapEntries.length > 0) await this.writeBatEntries(plan.bitmapEntries)
    if (plan.marks.some((m) => m.bitmapOffset !== undefined) || plan.bitmapEntries.length > 0)
      await this.file.sync()
    if (plan.payloadEntries.length > 0) await this.writeBatEntries(plan.payloadEntries)
    this.dirty = true
  }

  /**
   * A partial block whose sectors are now all present becomes FULLY_PRESENT at the same place
   * (both states read the same bytes, so this entry needs no particular order).
   */
  private async promoteFullBlocks(plan: WritePlan): Promise<void> {
    const g = this.layout.geometry
    for (const m of plan.marks) {
      const sectors = Math.ceil(
        Math.min(this.blockSize, this.virtualSize - m.block * this.blockSize) / this.logicalSectorSize,
      )
      if (!(await this.bitmaps.allPresent(m.block, 0, sectors))) continue
      const index = g.payloadIndex(m.block)
      const planned = plan.payloadEntries.find((e) => e.index === index)
      const fileOffset = planned ? planned.fileOffset : this.bat.fileOffset(index)
      plan.payloadEntries.push({ index, state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset })
    }
  }

  /**
   * Decides, block by block, where `length` bytes at virtual `offset` go: in place, or into
   * new blocks placed from nextFree (FULLY_PRESENT, or PARTIALLY_PRESENT with only the
   * written sectors marked when a differencing disk's block still comes from the parent).
   */
  private planWrite(length: number, offset: number): WritePlan {
    const g = this.layout.geometry
    const bs = this.blockSize
    const lss = this.logicalSectorSize
    const plan: WritePlan = {
      payload: [],
      marks: [],
      bitmapEntries: [],
      payloadEntries: [],
      end: this.nextFree,
    }
    const allocate = (size: number) => {
      const at = plan.end
      plan.end += size
      return at
    }
    for (let pos = offset; pos < offset + length; ) {
      const block = Math.floor(pos / bs)
      const inBlock = pos - block * bs
      const n = Math.min(bs - inBlock, offset + length - pos)
      const from = pos - offset
      const state = this.bat.blockState(block)
      const index = g.payloadIndex(block)
      const sectors = { block, first: inBlock / lss, count: n / lss }
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT || state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        plan.payload.push({ fileOffset: this.bat.fileOffset(index) + inBlock, from, length: n })
        if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) plan.marks.push(sectors)
      } else {
        const at = allocate(bs)
        plan.payload.push({ fileOffset: at + inBlock, from, length: n })
        const whole = inBlock === 0 && (n === bs || pos + n === this.virtualSize)
        if (state === PAYLOAD_BLOCK_NOT_PRESENT && this.parent && !whole) {
          // Only the written sectors become present; the rest still comes from the parent.
          const sbIndex = g.bitmapIndex(Math.floor(block / g.chunkRatio))
          let sbAt = plan.bitmapEntries.find((e) => e.index === sbIndex)?.fileOffset
          if (sbAt === undefined && this.bat.state(sbIndex) !== SB_BLOCK_PRESENT) {
            sbAt = allocate(SECTOR_BITMAP_BLOCK_SIZE)
            plan.bitmapEntries.push({ index: sbIndex, state: SB_BLOCK_PRESENT, fileOffset: sbAt })
          }
          const bitmapOffset = sbAt ?? this.bat.fileOffset(sbIndex)
          plan.marks.push({ ...sectors, bitmapOffset })
          plan.payloadEntries.push({ index, state: PAYLOAD_BLOCK_PARTIALLY_PRESENT, fileOffset: at })
        } else {
          // Dynamic, fixed, ZERO/UNMAPPED/UNDEFINED or a whole block: the rest reads as zeros,
          // which is what the file's new (sparse) space holds.
          plan.payloadEntries.push({ index, state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset: at })
        }
      }
      pos += n
    }
    return plan
  }

  /** Coalesces writes that are contiguous both in the file and in the source buffer. */
  private async writePayload(data: Uint8Array, writes: PayloadWrite[]): Promise<void> {
    let i = 0
    while (i < writes.length) {
      const first = writes[i]
      let length = first.length
      let j = i + 1
      while (
        j < writes.length &&
        writes[j].fileOffset === first.fileOffset + length &&
        writes[j].from === first.from + length
      ) {
        length += writes[j].length
        j++
      }
      await this.file.write(data.subarray(first.from, first.from + length), first.fileOffset)
      i = j
    }
  }

  private async writeBatEntries(
    updates: { index: number; state: number; fileOffset: number }[],
  ): Promise<void> {
    for (const u of updates) this.bat.set(u.index, u.state, u.fileOffset)
    const indexes = [...new Set(updates.map((u) => u.index))].sort((a, b) => a - b)
    let i = 0
    while (i < indexes.length) {
      let j = i + 1
      while (j < indexes.length && indexes[j] === indexes[j - 1] + 1) j++
      const from = indexes[i]
      const to = indexes[j - 1] + 1
      await this.file.write(this.bat.table.subarray(from * 8, to * 8), this.layout.batOffset + from * 8)
      i = j
    }
  }

  /** Differencing writes work in whole sectors: the partial edges are filled from current content. */
  private async alignToSectors(
    data: Uint8Array,
    offset: number,
  ): Promise<{ data: Uint8Array; offset: number }> {
    const lss = this.logicalSectorSize
    const start = Math.floor(offset / lss) * lss
    const end = Math.ceil((offset + data.length) / lss) * lss
    if (start === offset && end === offset + data.length) return { data, offset }
    const buf = Buffer.alloc(end - start)
    if (start < offset) await this.read(buf, start, lss, 0)
    if (end > offset + data.length) await this.read(buf, end - lss, lss, buf.length - lss)
    buf.set(data, offset - start)
    return { data: buf, offset: start }
  }

  async flush(): Promise<void> {
    await this.writeChain
    if (this.dirty) {
      await this.file.sync()
      this.dirty = false
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    try {
      if (!this.readOnly) await this.flush()
    } finally {
      this.closed = true
      await this.file.close()
      await this.parent?.close()
    }
  }
}

function appendExtent(out: Extent[], start: number, length: number, state: ExtentState): void {
  if (length <= 0) return
  const last = out[out.length - 1]
  if (last && last.state === state && last.start + last.length === start) last.length += length
  else out.push({ start, length, state })
}

/** Replaces each `parent` extent of `own` by the parent's (resolved) extents over that range. */
export function resolveParentExtents(own: Extent[], parentMap: Extent[]): Extent[] {
  const out: Extent[] = []
  let p = 0
  for (const e of own) {
    if (e.state !== 'parent') {
      appendExtent(out, e.start, e.length, e.state)
      continue
    }
    const end = e.start + e.length
    while (p < parentMap.length && parentMap[p].start + parentMap[p].length <= e.start) p++
    let pos = e.start
    for (let q = p; q < parentMap.length && pos < end; q++) {
      const pe = parentMap[q]
      const a = Math.max(pos, pe.start)
      const b = Math.min(end, pe.start + pe.length)
      if (b > a) {
        appendExtent(out, a, b - a, pe.state)
        pos = b
      }
    }
    if (pos < end) appendExtent(out, pos, end - pos, 'zero')
  }
  return out
}

// Sector bitmaps of differencing disks (MS-VHDX §2.4): one bit per logical sector, LSB-first,
// 1 = the sector is in this file, 0 = read it from the parent. Each 1 MiB bitmap block covers
// chunkRatio payload blocks; we read and cache only the slice that covers one payload block.
import { CorruptDiskError } from '../errors.js'
import type { Bat } from './bat.js'
import { SB_BLOCK_PRESENT, SECTOR_BITMAP_CACHE_BLOCKS } from './constants.js'
import type { VhdxFile } from './file.js'

export interface SectorRun {
  /** First sector, relative to the payload block. */
  start: number
  count: number
  present: boolean
}

function bit(bits: Uint8Array, sector: number): boolean {
  return (bits[sector >>> 3] & (1 << (sector & 7))) !== 0
}

/** Runs of equal bits over sectors [first, first+count) of a block's bitmap slice. */
export function bitmapRuns(bits: Uint8Array, first: number, count: number): SectorRun[] {
  const runs: SectorRun[] = []
  const end = first + count
  let s = first
  while (s < end) {
    const present = bit(bits, s)
    const start = s
    s++
    while (s < end) {
      if ((s & 7) === 0 && s + 8 <= end) {
        const byte = bits[s >>> 3]
        if (byte === (present ? 0xff : 0)) {
          s += 8
          continue
        }
      }
      if (bit(bits, s) !== present) break
      s++
    }
    runs.push({ start, count: s - start, present })
  }
  return runs
}

export function setBits(bits: Uint8Array, first: number, count: number): void {
  for (let s = first; s < first + count; s++) bits[s >>> 3] |= 1 << (s & 7)
}

export class SectorBitmaps {
  private readonly cache = new Map<number, Buffer>()

  constructor(
    private readonly file: VhdxFile,
    private readonly bat: Bat,
    private readonly batOffset: number,
  ) {}

  private location(block: number, bitmapBlockOffset?: number): { fileOffset: number; length: number } {
    const g = this.bat.geometry
    const chunk = Math.floor(block / g.chunkRatio)
    const index = g.bitmapIndex(chunk)
    if (bitmapBlockOffset === undefined && this.bat.state(index) !== SB_BLOCK_PRESENT) {
      throw new CorruptDiskError(
        this.file.path,
        `BAT: payload block ${block} is partially present but its sector bitmap (entry ${index}) is not`,
        this.batOffset + index * 8,
      )
    }
    const firstSector = (block % g.chunkRatio) * g.sectorsPerBlock
    const base = bitmapBlockOffset ?? this.bat.fileOffset(index)
    return { fileOffset: base + firstSector / 8, length: g.sectorsPerBlock / 8 }
  }

  /** The bitmap bits of payload block `block` (sector 0 of the block is bit 0). */
  async get(block: number): Promise<Buffer> {
    const hit = this.cache.get(block)
    if (hit) {
      this.cache.delete(block)
      this.cache.set(block, hit)
      return hit
    }
    const { fileOffset, length } = this.location(block)
    const bits = await this.file.readBytes(fileOffset, length)
    this.remember(block, bits)
    return bits
  }

  /** Whether every sector of [first, first+count) of the block is already present. */
  async allPresent(block: number, first: number, count: number): Promise<boolean> {
    const runs = bitmapRuns(await this.get(block), first, count)
    return runs.length === 1 && runs[0].present
  }

  /**
   * Marks sectors [first, first+count) of the block present and writes the slice. With
   * `newBlockBitmap` (the file offset of the chunk's sector bitmap block, which the BAT may
   * not name yet), the payload block is new: every other sector of it is marked absent.
   */
  async markPresent(block: number, first: number, count: number, newBlockBitmap?: number): Promise<void> {
    const fresh = newBlockBitmap !== undefined
    const bits = fresh
      ? Buffer.alloc(this.bat.geometry.sectorsPerBlock / 8)
      : Buffer.from(await this.get(block))
    setBits(bits, first, count)
    const { fileOffset } = this.location(block, newBlockBitmap)
    await this.file.write(bits, fileOffset)
    this.remember(block, bits)
  }

  private remember(block: number, bits: Buffer): void {
    this.cache.delete(block)
    this.cache.set(block, bits)
    if (this.cache.size > SECTOR_BITMAP_CACHE_BLOCKS) {
      const oldest = this.cache.keys().next().value
      if (oldest !== undefined) this.cache.delete(oldest)
    }
  }
}

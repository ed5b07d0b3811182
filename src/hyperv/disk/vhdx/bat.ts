// The Block Allocation Table held in memory (MS-VHDX §2.5): 8 bytes per entry, read once at
// open, updated in place by the writer. Entries are split into two u32 halves so no BigInt
// is needed: state = low & 7, file offset = FileOffsetMB (bits 20..63) × 1 MiB.
import { CorruptDiskError } from '../errors.js'
import {
  MiB,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_UNMAPPED_V095,
  SB_BLOCK_NOT_PRESENT,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
} from './constants.js'
import type { BatGeometry } from './format.js'

export class Bat {
  constructor(
    readonly table: Buffer,
    readonly geometry: BatGeometry,
  ) {}

  state(index: number): number {
    return this.table[index * 8] & 7
  }

  fileOffset(index: number): number {
    const lo = this.table.readUInt32LE(index * 8)
    const hi = this.table.readUInt32LE(index * 8 + 4)
    return (lo >>> 20) * MiB + hi * 4096 * MiB
  }

  set(index: number, state: number, fileOffset: number): void {
    const mb = fileOffset / MiB
    this.table.writeUInt32LE((((mb % 4096) << 20) | state) >>> 0, index * 8)
    this.table.writeUInt32LE(Math.floor(mb / 4096), index * 8 + 4)
  }

  /** The 8 bytes of entry `index` as stored. */
  entryBytes(index: number): Buffer {
    return this.table.subarray(index * 8, index * 8 + 8)
  }

  /** State of payload block `block`. */
  blockState(block: number): number {
    return this.state(this.geometry.payloadIndex(block))
  }

  blockOffset(block: number): number {
    return this.fileOffset(this.geometry.payloadIndex(block))
  }

  /**
   * Checks every entry against the file: known states, allocated data inside the file, sector
   * bitmaps only where a parent exists. Returns the end of the last allocated structure.
   */
  validate(path: string, batOffset: number, fileSize: number): number {
    const g = this.geometry
    let end = 0
    for (let block = 0; block < g.payloadBlocks; block++) {
      const index = g.payloadIndex(block)
      const state = this.state(index)
      const at = batOffset + index * 8
      if (state === 4 || (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT && !g.hasParent)) {
        throw new CorruptDiskError(path, `BAT: entry ${index} has state ${state}, not valid here`, at)
      }
      if (state === PAYLOAD_BLOCK_UNMAPPED_V095) continue
      if (state !== PAYLOAD_BLOCK_FULLY_PRESENT && state !== PAYLOAD_BLOCK_PARTIALLY_PRESENT) continue
      const off = this.fileOffset(index)
      const need = Math.min(g.blockSize, g.virtualSize - block * g.blockSize)
      if (off < MiB || off + need > fileSize) {
        throw new CorruptDiskError(
          path,
          `BAT: entry ${index} points to ${off}, past the end of the file (${fileSize} bytes)`,
          at,
        )
      }
      end = Math.max(end, off + g.blockSize)
    }
    for (let chunk = 0; chunk < g.sectorBitmapBlocks; chunk++) {
      const index = g.bitmapIndex(chunk)
      if (index >= g.entryCount) break
      const state = this.state(index)
      const at = batOffset + index * 8
      if (state === SB_BLOCK_NOT_PRESENT) continue
      if (state !== SB_BLOCK_PRESENT || !g.hasParent) {
        throw new CorruptDiskError(
          path,
          `BAT: sector bitmap entry ${index} has state ${state}, not valid here`,
          at,
        )
      }
      const off = this.fileOffset(index)
      if (off < MiB || off + SECTOR_BITMAP_BLOCK_SIZE > fileSize) {
        throw new CorruptDiskError(
          path,
          `BAT: sector bitmap entry ${index} points to ${off}, past the end of the file (${fileSize} bytes)`,
          at,
        )
      }
      end = Math.max(end, off + SECTOR_BITMAP_BLOCK_SIZE)
    }
    return end
  }
}

export function isAllocated(state: number): boolean {
  return state === PAYLOAD_BLOCK_FULLY_PRESENT || state === PAYLOAD_BLOCK_PARTIALLY_PRESENT
}

// The VHDX metadata log (MS-VHDX §2.3): finding the active sequence of entries and turning it
// into 4 KiB page updates (replay), and writing entries (used to build dirty-log fixtures and
// by anything that wants to log metadata updates).
//
// An entry is: one or more descriptor sectors (a 64-byte header, then 32-byte descriptors),
// then one 4 KiB data sector per data descriptor. A data sector keeps 4084 bytes of the
// updated sector; its first 8 and last 4 bytes travel in the descriptor (LeadingBytes,
// TrailingBytes) because the data sector's own signature and sequence halves take their place.
import { CorruptDiskError } from '../errors.js'
import {
  LOG_DATA_SIGNATURE,
  LOG_DESC_SIGNATURE,
  LOG_DESCRIPTOR_SIZE,
  LOG_ENTRY_HEADER_SIZE,
  LOG_ENTRY_SIGNATURE,
  LOG_SECTOR_SIZE,
  LOG_ZERO_SIGNATURE,
} from './constants.js'
import { crc32c, crc32cWithZeroField } from './crc32c.js'
import { guidEquals } from './guid.js'

export interface LogUpdate {
  fileOffset: number
  /** A full 4 KiB sector to write at fileOffset. */
  data?: Uint8Array
  /** Or: a number of bytes (a multiple of 4 KiB) to zero at fileOffset. */
  zeroLength?: number
}

export interface LogReplay {
  /** Page index (file offset / 4096) to its 4 KiB content after replay. */
  pages: Map<number, Buffer>
  /**
   * Byte ranges [start, end) zeroed by zero descriptors. Every page in `pages` is newer than
   * any zero range over it (a later zero range removes older pages), so applying the zero
   * ranges first and the pages second gives the replayed content.
   */
  zeroRanges: [number, number][]
  /** The file must be at least this long after replay. */
  lastFileOffset: number
  /** The file must be at least this long before replay, or it was cut short. */
  flushedFileOffset: number
  entryCount: number
}

interface ParsedEntry {
  position: number
  length: number
  tail: number
  sequence: bigint
  flushedFileOffset: number
  lastFileOffset: number
  updates: LogUpdate[]
}

/** Bytes [position, position+length) of the ring, wrapping at its end. */
function ringSlice(ring: Buffer, position: number, length: number): Buffer {
  if (position + length <= ring.length) return ring.subarray(position, position + length)
  const first = ring.length - position
  return Buffer.concat([ring.subarray(position), ring.subarray(0, length - first)])
}

function descriptorSectors(count: number): number {
  return Math.ceil((LOG_ENTRY_HEADER_SIZE + count * LOG_DESCRIPTOR_SIZE) / LOG_SECTOR_SIZE)
}

function parseEntry(ring: Buffer, position: number, logGuid: Buffer): ParsedEntry | null {
  const head = ringSlice(ring, position, LOG_ENTRY_HEADER_SIZE)
  if (head.toString('latin1', 0, 4) !== LOG_ENTRY_SIGNATURE) return null
  const length = head.readUInt32LE(8)
  const tail = head.readUInt32LE(12)
  const sequence = head.readBigUInt64LE(16)
  const count = head.readUInt32LE(24)
  if (length === 0 || length % LOG_SECTOR_SIZE || length > ring.length) return null
  if (tail % LOG_SECTOR_SIZE || tail >= ring.length || sequence === 0n) return null
  if (!guidEquals(head.subarray(32, 48), logGuid)) return null
  const descSectors = descriptorSectors(count)
  if (descSectors * LOG_SECTOR_SIZE > length) return null
  const entry = ringSlice(ring, position, length)
  if (crc32cWithZeroField(entry, 4) !== head.readUInt32LE(4)) return null
  const updates: LogUpdate[] = []
  let dataSector = descSectors
  for (let i = 0; i < count; i++) {
    const d = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE
    const sig = entry.toString('latin1', d, d + 4)
    const fileOffset = Number(entry.readBigUInt64LE(d + 16))
    if (entry.readBigUInt64LE(d + 24) !== sequence || fileOffset % LOG_SECTOR_SIZE) return null
    if (sig === LOG_ZERO_SIGNATURE) {
      const zeroLength = Number(entry.readBigUInt64LE(d + 8))
      if (zeroLength % LOG_SECTOR_SIZE) return null
      updates.push({ fileOffset, zeroLength })
    } else if (sig === LOG_DESC_SIGNATURE) {
      const s = dataSector++ * LOG_SECTOR_SIZE
      if (s + LOG_SECTOR_SIZE > length) return null
      const sector = entry.subarray(s, s + LOG_SECTOR_SIZE)
      if (sector.toString('latin1', 0, 4) !== LOG_DATA_SIGNATURE) return null
      const seq = (BigInt(sector.readUInt32LE(4)) << 32n) | BigInt(sector.readUInt32LE(LOG_SECTOR_SIZE - 4))
      if (seq !== sequence) return null
      const data = Buffer.alloc(LOG_SECTOR_SIZE)
      entry.copy(data, 0, d + 8, d + 16) // LeadingBytes
      sector.copy(data, 8, 8, LOG_SECTOR_SIZE - 4)
      entry.copy(data, LOG_SECTOR_SIZE - 4, d + 4, d + 8) // TrailingBytes
      updates.push({ fileOffset, data })
    } else {
      return null
    }
  }
  return {
    position,
    length,
    tail,
    sequence,
    flushedFileOffset: Number(head.readBigUInt64LE(48)),
    lastFileOffset: Number(head.readBigUInt64LE(56)),
    updates,
  }
}

/**
 * Finds the active sequence (§2.3.3: the chain of consecutive entries whose head has the
 * highest sequence number, replayed from the entry its Tail names) and returns its updates.
 * Returns null when the log holds no valid entry. `ring` is the whole log region.
 */
export function findActiveLog(
  ring: Buffer,
  logGuid: Buffer,
  path: string,
  logOffset: number,
): LogReplay | null {
  const valid = new Map<number, ParsedEntry>()
  for (let p = 0; p < ring.length; p += LOG_SECTOR_SIZE) {
    const e = parseEntry(ring, p, logGuid)
    if (e) valid.set(p, e)
  }
  let best: ParsedEntry[] | null = null
  for (const start of valid.values()) {
    const seq: ParsedEntry[] = [start]
    for (;;) {
      const last = seq[seq.length - 1]
      const next = valid.get((last.position + last.length) % ring.length)
      if (!next || next.sequence !== last.sequence + 1n || seq.length * LOG_SECTOR_SIZE > ring.length) break
      seq.push(next)
    }
    const head = seq[seq.length - 1]
    const bestHead = best?.[best.length - 1]
    if (
      !best ||
      !bestHead ||
      head.sequence > bestHead.sequence ||
      (head.sequence === bestHead.sequence && seq.length > best.length)
    ) {
      best = seq
    }
  }
  if (!best) return null
  const head = best[best.length - 1]
  const from = best.findIndex((e) => e.position === head.tail)
  if (from < 0) {
    throw new CorruptDiskError(
      path,
      'log: the active sequence does not contain its tail entry',
      logOffset + head.tail,
    )
  }
  const pages = new Map<number, Buffer>()
  const zeroRanges: [number, number][] = []
  for (const entry of best.slice(from)) {
    for (const u of entry.updates) {
      if (u.data) {
        pages.set(u.fileOffset / LOG_SECTOR_SIZE, u.data as Buffer)
        continue
      }
      const start = u.fileOffset
      const end = u.fileOffset + (u.zeroLength ?? 0)
      const first = start / LOG_SECTOR_SIZE
      const last = end / LOG_SECTOR_SIZE
      if (last - first < pages.size) {
        for (let page = first; page < last; page++) pages.delete(page)
      } else {
        for (const page of pages.keys()) if (page >= first && page < last) pages.delete(page)
      }
      if (end > start) zeroRanges.push([start, end])
    }
  }
  return {
    pages,
    zeroRanges,
    lastFileOffset: head.lastFileOffset,
    flushedFileOffset: head.flushedFileOffset,
    entryCount: best.length - from,
  }
}

export interface LogEntryFields {
  logGuid: Buffer
  sequence: bigint
  /** Offset within the log of the oldest entry still needed (this one's own for a lone entry). */
  tail: number
  flushedFileOffset: number
  lastFileOffset: number
}

/** Serializes one log entry holding `updates` in order (§2.3.1). */
export function serializeLogEntry(fields: LogEntryFields, updates: LogUpdate[]): Buffer {
  const dataCount = updates.filter((u) => u.data).length
  const descSectors = descriptorSectors(updates.length)
  const length = (descSectors + dataCount) * LOG_SECTOR_SIZE
  const entry = Buffer.alloc(length)
  entry.write(LOG_ENTRY_SIGNATURE, 0, 'latin1')
  entry.writeUInt32LE(length, 8)
  entry.writeUInt32LE(fields.tail, 12)
  entry.writeBigUInt64LE(fields.sequence, 16)
  entry.writeUInt32LE(updates.length, 24)
  fields.logGuid.copy(entry, 32)
  entry.writeBigUInt64LE(BigInt(fields.flushedFileOffset), 48)
  entry.writeBigUInt64LE(BigInt(fields.lastFileOffset), 56)
  let dataSector = descSectors
  updates.forEach((u, i) => {
    const d = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE
    entry.writeBigUInt64LE(BigInt(u.fileOffset), d + 16)
    entry.writeBigUInt64LE(fields.sequence, d + 24)
    if (u.data) {
      if (u.data.length !== LOG_SECTOR_SIZE) throw new RangeError('a log data update is one 4 KiB sector')
      const data = Buffer.from(u.data.buffer, u.data.byteOffset, LOG_SECTOR_SIZE)
      entry.write(LOG_DESC_SIGNATURE, d, 'latin1')
      data.copy(entry, d + 4, LOG_SECTOR_SIZE - 4) // TrailingBytes
      data.copy(entry, d + 8, 0, 8) // LeadingBytes
      const s = dataSector++ * LOG_SECTOR_SIZE
      entry.write(LOG_DATA_SIGNATURE, s, 'latin1')
      entry.writeUInt32LE(Number(fields.sequence >> 32n), s + 4)
      data.copy(entry, s + 8, 8, LOG_SECTOR_SIZE - 4)
      entry.writeUInt32LE(Number(fields.sequence & 0xffffffffn), s + LOG_SECTOR_SIZE - 4)
    } else {
      entry.write(LOG_ZERO_SIGNATURE, d, 'latin1')
      entry.writeBigUInt64LE(BigInt(u.zeroLength ?? 0), d + 8)
    }
  })
  entry.writeUInt32LE(crc32c(entry), 4)
  return entry
}

// The guest's record stream: a ring of 512-byte records in the last MiB of each disk. Record n
// sits in slot n % RECORD_SLOTS, so the newest record on any copy of the disk is simply the valid
// record with the highest sequence number. Each record also carries the stream position at which
// the current run of the VM began (start*): on a failed-over replica, that is what it inherited.
import { crc32 } from 'node:zlib'
import type { VirtualDisk } from '../disk/index.js'
import { RECORD_BYTES, RECORD_REGION_BYTES, RECORD_SLOTS } from './constants.js'

const MAGIC = 'RMRECORD'
const CRC_OFFSET = RECORD_BYTES - 4

export interface StreamRecord {
  seq: number
  timeMs: number
  startSeq: number
  startTime: number
}

/** What `vm records --json` prints. Zeros mean "no record" (sequence numbers start at 1). */
export interface RecordSummary {
  lastSeq: number
  lastTime: number
  startSeq: number
  startTime: number
}

export const recordRegionStart = (virtualSize: number) => virtualSize - RECORD_REGION_BYTES
export const recordOffset = (virtualSize: number, seq: number) =>
  recordRegionStart(virtualSize) + (seq % RECORD_SLOTS) * RECORD_BYTES

export function encodeRecord(r: StreamRecord): Buffer {
  const b = Buffer.alloc(RECORD_BYTES)
  b.write(MAGIC, 0, 'latin1')
  b.writeBigUInt64LE(BigInt(r.seq), 8)
  b.writeBigUInt64LE(BigInt(r.timeMs), 16)
  b.writeBigUInt64LE(BigInt(r.startSeq), 24)
  b.writeBigUInt64LE(BigInt(r.startTime), 32)
  b.writeUInt32LE(crc32(b.subarray(0, CRC_OFFSET)), CRC_OFFSET)
  return b
}

/** The record in `b` (one slot), or null when the slot is empty, torn or foreign. */
export function decodeRecord(b: Uint8Array): StreamRecord | null {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength)
  if (buf.length < RECORD_BYTES || buf.toString('latin1', 0, 8) !== MAGIC) return null
  if (buf.readUInt32LE(CRC_OFFSET) !== crc32(buf.subarray(0, CRC_OFFSET))) return null
  return {
    seq: Number(buf.readBigUInt64LE(8)),
    timeMs: Number(buf.readBigUInt64LE(16)),
    startSeq: Number(buf.readBigUInt64LE(24)),
    startTime: Number(buf.readBigUInt64LE(32)),
  }
}

const MAGIC_LO = Buffer.from(MAGIC, 'latin1').readUInt32LE(0)
const MAGIC_HI = Buffer.from(MAGIC, 'latin1').readUInt32LE(4)

/**
 * The newest valid record of a whole ring region, or null. Every guest start reads it (a failover
 * starts ten at once): slots are ranked by the sequence number they claim, and only from the
 * highest down is a record checked in full (checksum), not all 2048 of a full ring.
 */
export function newestRecord(region: Uint8Array): StreamRecord | null {
  const buf = Buffer.from(region.buffer, region.byteOffset, region.byteLength)
  // DataView, not Buffer's readUInt32LE: this runs once per process, before the JIT warms up.
  const view = new DataView(region.buffer, region.byteOffset, region.byteLength)
  const claimed: Array<{ slot: number; seq: number }> = []
  for (let slot = 0; (slot + 1) * RECORD_BYTES <= buf.length; slot++) {
    const at = slot * RECORD_BYTES
    if (view.getUint32(at, true) !== MAGIC_LO || view.getUint32(at + 4, true) !== MAGIC_HI) continue
    const seq = view.getUint32(at + 12, true) * 2 ** 32 + view.getUint32(at + 8, true)
    // A record only counts in its own slot: a stale copy elsewhere would be a torn ring.
    if (seq % RECORD_SLOTS === slot) claimed.push({ slot, seq })
  }
  claimed.sort((a, b) => b.seq - a.seq)
  for (const { slot, seq } of claimed) {
    const r = decodeRecord(buf.subarray(slot * RECORD_BYTES, (slot + 1) * RECORD_BYTES))
    if (r && r.seq === seq) return r
  }
  return null
}

export function summarize(r: StreamRecord | null): RecordSummary {
  return r
    ? { lastSeq: r.seq, lastTime: r.timeMs, startSeq: r.startSeq, startTime: r.startTime }
    : { lastSeq: 0, lastTime: 0, startSeq: 0, startTime: 0 }
}

/** Reads the ring of an opened disk and returns its newest record. */
export async function readNewestRecord(disk: VirtualDisk): Promise<StreamRecord | null> {
  if (disk.virtualSize < RECORD_REGION_BYTES) return null
  const region = new Uint8Array(RECORD_REGION_BYTES)
  await disk.read(region, recordRegionStart(disk.virtualSize), RECORD_REGION_BYTES)
  return newestRecord(region)
}

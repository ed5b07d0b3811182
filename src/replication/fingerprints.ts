// Sub-chunk change detection on the source. Change tracking may report coarse ranges (the lab
// hypervisor tracks 64 KiB blocks, RCT its own granularity), and the source keeps no copy of the
// old bytes. So it keeps, per chunk it has read, a short fingerprint of every 4 KiB block; the
// blocks whose fingerprint changed are the delta's ranges. A collision could only leave out a
// changed block, and then the receiver's check of the rebuilt chunk's hash fails and the chunk
// is sent whole: fingerprints save bytes, never correctness.
import type { ByteRange } from './messages.js'

export const FINGERPRINT_BLOCK_BYTES = 4096
export const FINGERPRINT_BYTES = 8

/** Fingerprints of each block of `chunk`, back to back. */
export function fingerprintChunk(
  chunk: Uint8Array,
  hash: (b: Uint8Array) => Uint8Array,
  blockBytes = FINGERPRINT_BLOCK_BYTES,
): Buffer {
  const blocks = Math.ceil(chunk.length / blockBytes)
  const out = Buffer.allocUnsafe(blocks * FINGERPRINT_BYTES)
  for (let i = 0; i < blocks; i++) {
    const h = hash(chunk.subarray(i * blockBytes, Math.min(chunk.length, (i + 1) * blockBytes)))
    out.set(h.subarray(0, FINGERPRINT_BYTES), i * FINGERPRINT_BYTES)
  }
  return out
}

/** Byte ranges (within the chunk) of the blocks whose fingerprints differ, merged when adjacent. */
export function changedBlocks(
  before: Uint8Array,
  after: Uint8Array,
  chunkLength: number,
  blockBytes = FINGERPRINT_BLOCK_BYTES,
): ByteRange[] | null {
  if (before.length !== after.length) return null
  const out: ByteRange[] = []
  const a = Buffer.from(before.buffer, before.byteOffset, before.byteLength)
  const blocks = before.length / FINGERPRINT_BYTES
  for (let i = 0; i < blocks; i++) {
    const at = i * FINGERPRINT_BYTES
    if (a.compare(after, at, at + FINGERPRINT_BYTES, at, at + FINGERPRINT_BYTES) === 0) continue
    const offset = i * blockBytes
    const length = Math.min(blockBytes, chunkLength - offset)
    const last = out[out.length - 1]
    if (last && last[0] + last[1] === offset) last[1] += length
    else out.push([offset, length])
  }
  return out
}

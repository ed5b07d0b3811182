// Sub-chunk change detection on the source. Change tracking may report coarse ranges (the lab
// hypervisor tracks 64 KiB blocks, RCT its own granularity), and the source keeps no copy of the
// old bytes. A short fingerprint of every 4 KiB block of the old and the new chunk tells which
// blocks changed; those are the delta's ranges. The source keeps the fingerprints of chunks it
// read as changed, in a cache bounded in bytes (all of them would be 2 MiB per GiB of disk); the
// old chunk's come from there, or from a target that holds it (the 'prints' request), which
// computes them from its copy. A collision could only leave out a changed block, and then the
// receiver's check of the rebuilt chunk's hash fails and the chunk is sent whole: fingerprints
// save bytes, never correctness.
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

/**
 * Fingerprints like fingerprintChunk's, computed in JavaScript without a hash call per block:
 * a native hash call per 4 KiB block costs ~1.7 CPU-s per GiB here (call overhead and a short
 * input), ten times a whole-chunk BLAKE3 and a large part of a seed's sending CPU; this costs
 * ~0.2 CPU-s per GiB. Not a cryptographic hash, and it needs not be one: a fingerprint only
 * chooses which blocks a delta carries, and the receiver verifies the rebuilt chunk's real hash.
 * Four 32-bit lanes over 32-bit words (xor, multiply by an odd constant, xorshift: each step a
 * bijection, so one changed word always changes its lane), folded into 8 bytes per block.
 */
export function fastFingerprintChunk(chunk: Uint8Array, blockBytes = FINGERPRINT_BLOCK_BYTES): Buffer {
  // Int32Array needs a 4-byte aligned start: copy the rare unaligned chunk.
  const aligned = chunk.byteOffset % 4 === 0 ? chunk : Uint8Array.from(chunk)
  const words = new Int32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >> 2)
  const blocks = Math.ceil(chunk.length / blockBytes)
  const out = Buffer.allocUnsafe(blocks * FINGERPRINT_BYTES)
  for (let b = 0; b < blocks; b++) {
    const start = b * blockBytes
    const end = Math.min(chunk.length, start + blockBytes)
    let h1 = 0x9e3779b9 | 0
    let h2 = 0x85ebca6b | 0
    let h3 = 0xc2b2ae35 | 0
    let h4 = (0x27d4eb2f ^ (end - start)) | 0
    const wordEnd = (start >> 2) + ((end - start) >> 4) * 4
    for (let i = start >> 2; i < wordEnd; i += 4) {
      h1 = Math.imul(h1 ^ words[i], 0x01000193)
      h1 ^= h1 >>> 15
      h2 = Math.imul(h2 ^ words[i + 1], 0x01000193)
      h2 ^= h2 >>> 15
      h3 = Math.imul(h3 ^ words[i + 2], 0x01000193)
      h3 ^= h3 >>> 15
      h4 = Math.imul(h4 ^ words[i + 3], 0x01000193)
      h4 ^= h4 >>> 15
    }
    // A block whose length is not a multiple of 16 (a short last chunk): the tail bytewise.
    for (let at = wordEnd << 2; at < end; at++) {
      h1 = Math.imul(h1 ^ aligned[at], 0x01000193)
      h1 ^= h1 >>> 15
    }
    out.writeInt32LE(h1 ^ Math.imul(h3, 0x5bd1e995), b * FINGERPRINT_BYTES)
    out.writeInt32LE(h2 ^ Math.imul(h4, 0x5bd1e995), b * FINGERPRINT_BYTES + 4)
  }
  return out
}

/** What one cached entry costs beyond its fingerprint bytes (the id string, Map entry, Buffer object). */
const CACHE_ENTRY_OVERHEAD = 200

/** Block fingerprints by chunk id, bounded in bytes; the least recently used go first. */
export class FingerprintCache {
  private readonly entries = new Map<string, Uint8Array>()
  private used = 0

  constructor(readonly capacityBytes: number) {}

  get size(): number {
    return this.entries.size
  }

  /** Bytes held, by the same estimate that bounds them. */
  get bytes(): number {
    return this.used
  }

  get(id: string): Uint8Array | undefined {
    const fp = this.entries.get(id)
    if (fp) {
      this.entries.delete(id)
      this.entries.set(id, fp)
    }
    return fp
  }

  set(id: string, fp: Uint8Array): void {
    const old = this.entries.get(id)
    if (old) {
      this.entries.delete(id)
      this.used -= old.length + CACHE_ENTRY_OVERHEAD
    }
    this.entries.set(id, fp)
    this.used += fp.length + CACHE_ENTRY_OVERHEAD
    for (const [oldest, v] of this.entries) {
      if (this.used <= this.capacityBytes) break
      this.entries.delete(oldest)
      this.used -= v.length + CACHE_ENTRY_OVERHEAD
    }
  }
}

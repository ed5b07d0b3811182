// Sub-chunk deltas: a small write must not cost a whole chunk on the wire. The sender ships the
// changed byte ranges of the new chunk plus the id of the chunk they patch (which the receiver
// holds); the receiver rebuilds the new chunk from its stored base and checks the result's hash
// before storing it. Pure functions over byte arrays; the engine supplies the hash.
import { coalesceRanges } from '../hyperv/index.js'
import { DELTA_MAX_FRACTION, MAX_DELTA_RANGES, SECTOR_BYTES } from './constants.js'
import { ChunkHashMismatchError, FrameError } from './errors.js'
import type { ChunkId } from './ids.js'
import type { ByteRange } from './messages.js'

export interface DiskRange {
  offset: number
  length: number
}

/** Bytes of chunk `index` of a disk (the last chunk may be short). */
export function chunkLength(index: number, chunkSize: number, virtualSize: number): number {
  return Math.max(0, Math.min(chunkSize, virtualSize - index * chunkSize))
}

/** Sorts, clips to [0, limit) and merges touching or overlapping ranges. */
export function coalesce(ranges: Iterable<DiskRange>, limit = Number.POSITIVE_INFINITY): DiskRange[] {
  return coalesceRanges(ranges, limit)
}

/**
 * Cuts disk-level changed ranges into per-chunk ranges (offsets within each chunk), keyed by
 * chunk index in ascending order.
 */
export function rangesByChunk(
  changed: Iterable<DiskRange>,
  chunkSize: number,
  virtualSize: number,
): Map<number, ByteRange[]> {
  const out = new Map<number, ByteRange[]>()
  for (const r of coalesce(changed, virtualSize)) {
    let at = r.offset
    const end = r.offset + r.length
    while (at < end) {
      const index = Math.floor(at / chunkSize)
      const chunkEnd = Math.min((index + 1) * chunkSize, end)
      let list = out.get(index)
      if (!list) {
        list = []
        out.set(index, list)
      }
      list.push([at - index * chunkSize, chunkEnd - at])
      at = chunkEnd
    }
  }
  return out
}

/** Payload bytes a delta with these ranges carries. */
export function deltaBytes(ranges: ByteRange[]): number {
  let n = 0
  for (const [, length] of ranges) n += length
  return n
}

/** Whether a delta pays for a chunk of `length` bytes, or the whole chunk should go. */
export function shouldSendDelta(
  ranges: ByteRange[],
  length: number,
  maxFraction = DELTA_MAX_FRACTION,
): boolean {
  return ranges.length > 0 && ranges.length <= MAX_DELTA_RANGES && deltaBytes(ranges) <= length * maxFraction
}

/** The changed bytes of `chunk`, back to back in range order. */
export function extractDelta(chunk: Uint8Array, ranges: ByteRange[]): Uint8Array {
  const out = new Uint8Array(deltaBytes(ranges))
  let at = 0
  for (const [offset, length] of ranges) {
    out.set(chunk.subarray(offset, offset + length), at)
    at += length
  }
  return out
}

/** Rebuilds a chunk: the base (null: all zeros) with `bytes` laid over `ranges`. */
export function applyDelta(
  base: Uint8Array | null,
  length: number,
  ranges: ByteRange[],
  bytes: Uint8Array,
): Uint8Array {
  if (base !== null && base.length !== length)
    throw new FrameError(`delta of a ${length}-byte chunk names a base of ${base.length} bytes`)
  const out = new Uint8Array(length)
  if (base) out.set(base)
  let at = 0
  for (const [offset, rangeLength] of ranges) {
    if (offset + rangeLength > length || at + rangeLength > bytes.length)
      throw new FrameError('delta range runs past its chunk or payload')
    out.set(bytes.subarray(at, at + rangeLength), offset)
    at += rangeLength
  }
  if (at !== bytes.length)
    throw new FrameError(`delta carries ${bytes.length} bytes for ranges covering ${at}`)
  return out
}

/** applyDelta, then checks the rebuilt chunk hashes to `id`; throws ChunkHashMismatchError. */
export function rebuildChunk(
  base: Uint8Array | null,
  delta: { id: ChunkId; length: number; ranges: ByteRange[]; bytes: Uint8Array },
  hash: (bytes: Uint8Array) => ChunkId,
  peer?: string,
): Uint8Array {
  const rebuilt = applyDelta(base, delta.length, delta.ranges, delta.bytes)
  const actual = hash(rebuilt)
  if (actual !== delta.id) throw new ChunkHashMismatchError(delta.id, actual, peer)
  return rebuilt
}

/**
 * The sector-aligned ranges where `after` differs from `before` (null: all zeros). A chain hop
 * uses it to forward deltas: it holds both versions of a chunk in its store.
 */
export function diffRanges(
  before: Uint8Array | null,
  after: Uint8Array,
  sectorBytes = SECTOR_BYTES,
): ByteRange[] {
  const out: ByteRange[] = []
  const a = before ? Buffer.from(before.buffer, before.byteOffset, before.byteLength) : null
  const b = Buffer.from(after.buffer, after.byteOffset, after.byteLength)
  for (let at = 0; at < b.length; at += sectorBytes) {
    const end = Math.min(at + sectorBytes, b.length)
    const same = a ? a.compare(b, at, end, at, end) === 0 : isZero(b, at, end)
    if (same) continue
    const last = out[out.length - 1]
    if (last && last[0] + last[1] === at) last[1] += end - at
    else out.push([at, end - at])
  }
  return out
}

function isZero(b: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (b[i] !== 0) return false
  return true
}

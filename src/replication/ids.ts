// Chunk ids: lowercase hex in memory and in JSON, 32 raw bytes on the wire. The all-zero id
// stands for an all-zero chunk, which is a flag in manifests and never stored or sent.
import { CHUNK_ID_BYTES } from './constants.js'
import { FrameError } from './errors.js'

/** Hex of a chunk's hash (64 lowercase hex digits). */
export type ChunkId = string

export const CHUNK_ID_PATTERN = /^[0-9a-f]{64}$/
const ZERO_ID_BYTES = new Uint8Array(CHUNK_ID_BYTES)

export function idToBytes(id: ChunkId, into?: Uint8Array, at = 0): Uint8Array {
  const out = into ?? new Uint8Array(CHUNK_ID_BYTES)
  const written = Buffer.from(out.buffer, out.byteOffset + at, CHUNK_ID_BYTES).write(id, 'hex')
  if (written !== CHUNK_ID_BYTES || !CHUNK_ID_PATTERN.test(id))
    throw new FrameError(`'${id}' is not a chunk id`)
  return out
}

export function idFromBytes(bytes: Uint8Array, at = 0): ChunkId {
  return Buffer.from(bytes.buffer, bytes.byteOffset + at, CHUNK_ID_BYTES).toString('hex')
}

/** Packs ids back to back (null = the all-zero id). */
export function packIds(ids: ReadonlyArray<ChunkId | null>): Uint8Array {
  const out = new Uint8Array(ids.length * CHUNK_ID_BYTES)
  ids.forEach((id, i) => {
    if (id !== null) idToBytes(id, out, i * CHUNK_ID_BYTES)
  })
  return out
}

export function unpackIds(bytes: Uint8Array, max: number): ChunkId[] {
  if (bytes.length % CHUNK_ID_BYTES !== 0)
    throw new FrameError(`id list of ${bytes.length} bytes is not a whole number of ids`)
  const n = bytes.length / CHUNK_ID_BYTES
  if (n > max) throw new FrameError(`id list of ${n} ids exceeds ${max}`)
  const out: ChunkId[] = new Array(n)
  for (let i = 0; i < n; i++) out[i] = idFromBytes(bytes, i * CHUNK_ID_BYTES)
  return out
}

export function isZeroIdBytes(bytes: Uint8Array, at: number): boolean {
  for (let i = 0; i < CHUNK_ID_BYTES; i++) if (bytes[at + i] !== 0) return false
  return true
}

export const ZERO_ID_HEX: ChunkId = idFromBytes(ZERO_ID_BYTES)

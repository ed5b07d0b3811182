// The LevelDB index: one database, keys by prefix.
//   meta              JSON {version, hash, createdAt}
//   c!<id hex>        chunk entry (binary, see encodeEntry): where its record is, refs, kind
//   k!<pack 8 digits> JSON {length}: the committed (durable, indexed) length of a pack
//   p!<vm>!<seq 16>   JSON recovery point
// Refs count references from points (to roots) and from stored Merkle nodes (to their children);
// a node's children are counted once, when the node's own count rises from zero.
import { Level } from 'level'
import type { RecordLocation } from './packs.js'

export type ChunkKind = 'data' | 'node'

export interface ChunkEntry extends RecordLocation {
  rawLength: number
  flags: number
  refs: number
  kind: ChunkKind
}

export const ENTRY_BYTES = 24

export function encodeEntry(e: ChunkEntry): Buffer {
  const b = Buffer.alloc(ENTRY_BYTES)
  b.writeUInt32LE(e.pack, 0)
  b.writeUIntLE(e.offset, 4, 6)
  b.writeUInt32LE(e.storedLength, 10)
  b.writeUInt32LE(e.rawLength, 14)
  b.writeUInt8(e.flags, 18)
  b.writeUInt8(e.kind === 'node' ? 1 : 0, 19)
  b.writeUInt32LE(e.refs, 20)
  return b
}

export function decodeEntry(b: Buffer): ChunkEntry {
  return {
    pack: b.readUInt32LE(0),
    offset: b.readUIntLE(4, 6),
    storedLength: b.readUInt32LE(10),
    rawLength: b.readUInt32LE(14),
    flags: b.readUInt8(18),
    kind: b.readUInt8(19) === 1 ? 'node' : 'data',
    refs: b.readUInt32LE(20),
  }
}

export const chunkKey = (hex: string) => `c!${hex}`
export const packKey = (pack: number) => `k!${String(pack).padStart(8, '0')}`
export const pointKey = (vm: string, seq: number) => `p!${vm}!${String(seq).padStart(16, '0')}`
export const CHUNK_RANGE = { gt: 'c!', lt: 'c"' }
export const PACK_RANGE = { gt: 'k!', lt: 'k"' }
export const POINT_RANGE = { gt: 'p!', lt: 'p"' }
export const vmPointRange = (vm: string) => ({ gt: `p!${vm}!`, lt: `p!${vm}"` })

export type IndexDb = Level<string, Buffer>

export function openIndexDb(dir: string): IndexDb {
  return new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' })
}

export type BatchOp = { type: 'put'; key: string; value: Buffer } | { type: 'del'; key: string }

export const jsonValue = (v: unknown) => Buffer.from(JSON.stringify(v))
export const parseJson = <T>(b: Buffer): T => JSON.parse(b.toString('utf8')) as T

// Open-time repair of the pack directory against the index's committed lengths.
//
// Between two commits a pack grows past its committed length: records written, not yet indexed.
// A process killed there (kill -9, a crash) left whole records that a restarted seed would
// otherwise fetch again over the WAN (up to two flush intervals of a receiver). Open reads them
// back, indexes every record that is whole and hashes to its id (fdatasync of the pack first,
// then one index batch, the commit order of a flush), and cuts the pack at the first record that
// is not. Nothing unverified is ever indexed: a torn write, or pages lost with a failed fsync,
// fails its hash and is cut off.
import { join } from 'node:path'
import { MAX_CHUNK_SIZE } from './constants.js'
import type { StoreFile, StoreFs } from './fs.js'
import type { HashFn } from './hash.js'
import {
  type BatchOp,
  type ChunkEntry,
  chunkKey,
  encodeEntry,
  type IndexDb,
  jsonValue,
  PACK_RANGE,
  packKey,
  parseJson,
} from './index-db.js'
import { FLAG_DEFLATE, parseHeader, parsePackFileName, RECORD_HEADER_BYTES, recordBytes } from './packs.js'

export interface RepairResult {
  /** The pack the writer keeps appending to, at its committed length. */
  resume: { pack: number; length: number } | null
  nextPack: number
  /** Packs shorter than their committed length (their chunks are damaged). */
  short: number[]
  /** Records past a committed length, verified by their hash and indexed (unreferenced). */
  recovered: { chunks: number; bytes: number }
}

/**
 * Open-time repair: whole, verified records past a pack's committed length are indexed and the
 * rest cut off; a pack with no committed length and nothing to recover is deleted.
 */
export async function repairPacks(
  fs: StoreFs,
  dir: string,
  db: IndexDb,
  hash: HashFn,
): Promise<RepairResult> {
  const committed = new Map<number, number>()
  for await (const [k, v] of db.iterator(PACK_RANGE))
    committed.set(Number(k.slice(2)), parseJson<{ length: number }>(v).length)
  let max = 0
  const short: number[] = []
  const recovered = { chunks: 0, bytes: 0 }
  const seen = new Set<string>()
  let changed = false
  const packs = (await fs.list(dir))
    .map((name) => ({ name, pack: parsePackFileName(name) }))
    .filter((p): p is { name: string; pack: number } => p.pack !== null)
    .sort((a, b) => a.pack - b.pack)
  for (const { name, pack } of packs) {
    max = Math.max(max, pack)
    const length = committed.get(pack)
    const file = await fs.open(join(dir, name), 'r+')
    let keep = true
    try {
      const size = await file.size()
      if (length !== undefined && size < length) short.push(pack)
      else if (size > (length ?? 0)) {
        const tail = await recoverTail(file, pack, length ?? 0, size, db, hash, seen)
        if (length === undefined && tail.entries.length === 0) keep = false
        else {
          // Nothing new in the tail (records indexed elsewhere): back to the committed length.
          await file.truncate(tail.entries.length > 0 ? tail.end : (length ?? 0))
          await file.sync()
          if (tail.entries.length > 0) {
            const ops: BatchOp[] = tail.entries.map(([hex, e]) => ({
              type: 'put',
              key: chunkKey(hex),
              value: encodeEntry(e),
            }))
            ops.push({ type: 'put', key: packKey(pack), value: jsonValue({ length: tail.end }) })
            await db.batch(ops, { sync: true })
            committed.set(pack, tail.end)
            recovered.chunks += tail.entries.length
            recovered.bytes += tail.entries.reduce((n, [, e]) => n + e.rawLength, 0)
          }
        }
      } else if (length === undefined) keep = false
    } finally {
      await file.close()
    }
    if (!keep) {
      await fs.remove(join(dir, name))
      changed = true
    }
  }
  if (changed) await fs.syncDir(dir)
  const present = new Set((await fs.list(dir)).map(parsePackFileName))
  for (const pack of committed.keys()) {
    max = Math.max(max, pack)
    if (!present.has(pack)) short.push(pack)
  }
  const last = [...committed.keys()].sort((a, b) => b - a)[0]
  const resume =
    last !== undefined && !short.includes(last) ? { pack: last, length: committed.get(last)! } : null
  return { resume, nextPack: max + 1, short, recovered }
}

/**
 * Reads the records of `file` from `from` up to `size`, stopping at the first that is cut short,
 * damaged or does not hash to its id. Returns the entries of those not indexed yet (nor seen in
 * an earlier pack's tail; one index lookup for the whole tail) and the end of the last whole record.
 */
async function recoverTail(
  file: StoreFile,
  pack: number,
  from: number,
  size: number,
  db: IndexDb,
  hash: HashFn,
  seen: Set<string>,
): Promise<{ entries: Array<[string, ChunkEntry]>; end: number }> {
  const whole: Array<[string, ChunkEntry]> = []
  const header = Buffer.alloc(RECORD_HEADER_BYTES)
  let pos = from
  while (pos + RECORD_HEADER_BYTES <= size) {
    if ((await file.read(header, 0, RECORD_HEADER_BYTES, pos)) !== RECORD_HEADER_BYTES) break
    const h = parseHeader(header)
    if (
      !h ||
      (h.flags & ~FLAG_DEFLATE) !== 0 ||
      h.rawLength > MAX_CHUNK_SIZE ||
      h.storedLength > MAX_CHUNK_SIZE ||
      pos + RECORD_HEADER_BYTES + h.storedLength > size
    )
      break
    const stored = Buffer.allocUnsafe(h.storedLength)
    if ((await file.read(stored, 0, h.storedLength, pos + RECORD_HEADER_BYTES)) !== h.storedLength) break
    if (
      typeof (await recordBytes({ stored, flags: h.flags, rawLength: h.rawLength }, h.id, hash)) === 'string'
    )
      break
    const hex = h.id.toString('hex')
    // Unreferenced, like any chunk stored before its point: a later point's commit counts its
    // references (and sets its kind from its level in the tree).
    if (!seen.has(hex))
      whole.push([
        hex,
        {
          pack,
          offset: pos,
          storedLength: h.storedLength,
          rawLength: h.rawLength,
          flags: h.flags,
          kind: 'data',
          refs: 0,
        },
      ])
    seen.add(hex)
    pos += RECORD_HEADER_BYTES + h.storedLength
  }
  const indexed = whole.length > 0 ? await db.getMany(whole.map(([hex]) => chunkKey(hex))) : []
  return { entries: whole.filter((_, i) => indexed[i] === undefined), end: pos }
}

// Garbage collection, in three steps that each hold the store's mutex only for one bounded
// LevelDB batch, so puts keep going:
//   1. retention: delete the points the policy does not keep (refs fall, cascading down trees);
//   2. sweep: delete index entries of chunks nobody references and no lease protects;
//   3. compact: rewrite the live chunks of mostly-dead sealed packs into a new pack, move their
//      index entries in batches, then delete the old pack.

import { join } from 'node:path'
import { GC_BATCH_KEYS, GC_COMPACT_LIVE_RATIO } from './constants.js'
import { PointPinnedError } from './errors.js'
import {
  CHUNK_RANGE,
  type ChunkEntry,
  chunkKey,
  decodeEntry,
  encodeEntry,
  jsonValue,
  packKey,
} from './index-db.js'
import { packFileName, RECORD_HEADER_BYTES } from './packs.js'
import { pointName } from './points.js'
import { type RetentionPolicy, selectRetained } from './retention.js'
import type { ChunkStore } from './store.js'

export interface GcOptions {
  policy?: RetentionPolicy
  nowMs?: number
  signal?: AbortSignal
}

export interface GcReport {
  deletedPoints: string[]
  freedChunks: number
  compactedPacks: string[]
  movedChunks: number
  /** Pack bytes given back to the file system. */
  reclaimedBytes: number
  /** Chunks that failed verification while being moved (their packs were kept). */
  damagedChunks: string[]
}

export async function collectGarbage(store: ChunkStore, options: GcOptions = {}): Promise<GcReport> {
  const report: GcReport = {
    deletedPoints: [],
    freedChunks: 0,
    compactedPacks: [],
    movedChunks: 0,
    reclaimedBytes: 0,
    damagedChunks: [],
  }
  if (options.policy) {
    const points = await store.listPoints()
    const keep = selectRetained(points, options.policy, options.nowMs ?? Date.now())
    for (const p of points) {
      options.signal?.throwIfAborted()
      const name = pointName(p)
      if (keep.has(name)) continue
      // A point a restore is reading (pinned) is kept this time; the next collection takes it.
      try {
        await store.deletePoint(name)
      } catch (err) {
        if (err instanceof PointPinnedError) continue
        throw err
      }
      report.deletedPoints.push(name)
    }
  }
  await sweep(store, report, options.signal)
  await compact(store, report, options.signal)
  return report
}

async function sweep(store: ChunkStore, report: GcReport, signal?: AbortSignal): Promise<void> {
  let candidates: string[] = []
  const drop = async () => {
    const hexes = candidates
    candidates = []
    await store.mutex.run(async () => {
      store.deletionsInFlight++
      try {
        const now = await store.db.getMany(hexes.map(chunkKey))
        const dead = hexes.filter(
          (h, i) => now[i] && decodeEntry(now[i]!).refs === 0 && !store.isProtected(h),
        )
        if (dead.length === 0) return
        await store.db.batch(
          dead.map((h) => ({ type: 'del' as const, key: chunkKey(h) })),
          { sync: true },
        )
        report.freedChunks += dead.length
      } finally {
        store.deletionGeneration++
        store.deletionsInFlight--
      }
    })
  }
  for await (const [key, value] of store.db.iterator(CHUNK_RANGE)) {
    signal?.throwIfAborted()
    if (decodeEntry(value).refs === 0) candidates.push(key.slice(2))
    if (candidates.length >= GC_BATCH_KEYS) await drop()
  }
  if (candidates.length > 0) await drop()
}

async function compact(store: ChunkStore, report: GcReport, signal?: AbortSignal): Promise<void> {
  const lengths = await store.packLengths()
  const busy = new Set<number>([...store.pending.values()].map((e) => e.pack))
  if (store.writer.activePack !== null) busy.add(store.writer.activePack)
  const live = new Map<number, number>()
  for await (const value of store.db.values(CHUNK_RANGE)) {
    const e = decodeEntry(value)
    live.set(e.pack, (live.get(e.pack) ?? 0) + RECORD_HEADER_BYTES + e.storedLength)
  }
  const chosen = [...lengths].filter(
    ([pack, length]) => !busy.has(pack) && (live.get(pack) ?? 0) < length * GC_COMPACT_LIVE_RATIO,
  )
  if (chosen.length === 0) return
  const chosenSet = new Set(chosen.map(([p]) => p))
  const byPack = new Map<number, [string, ChunkEntry][]>()
  for await (const [key, value] of store.db.iterator(CHUNK_RANGE)) {
    const e = decodeEntry(value)
    if (chosenSet.has(e.pack)) byPack.set(e.pack, [...(byPack.get(e.pack) ?? []), [key.slice(2), e]])
  }
  const writer = store.newWriter()
  try {
    for (const [pack, length] of chosen) {
      signal?.throwIfAborted()
      const moved = await movePack(store, writer, byPack.get(pack) ?? [], report)
      if (!moved) continue
      await store.mutex.run(async () => {
        await store.db.del(packKey(pack), { sync: true })
      })
      await store.reader.forget(pack)
      await store.fs.remove(join(store.packsDir, packFileName(pack)))
      report.compactedPacks.push(packFileName(pack))
      report.reclaimedBytes += length - (live.get(pack) ?? 0)
    }
    await store.fs.syncDir(store.packsDir)
  } finally {
    await writer.close()
  }
}

/** Copies a pack's live chunks (verified) to `writer`; false if any was damaged. */
async function movePack(
  store: ChunkStore,
  writer: ReturnType<ChunkStore['newWriter']>,
  entries: [string, ChunkEntry][],
  report: GcReport,
): Promise<boolean> {
  let intact = true
  for (let at = 0; at < entries.length; at += GC_BATCH_KEYS) {
    const group = entries.slice(at, at + GC_BATCH_KEYS)
    const records = []
    const kept: [string, ChunkEntry][] = []
    for (const [hex, e] of group) {
      try {
        await store.readEntry(hex, e)
      } catch {
        report.damagedChunks.push(hex)
        intact = false
        continue
      }
      const rec = await store.reader.read(Buffer.from(hex, 'hex'), e)
      records.push({
        id: Buffer.from(hex, 'hex'),
        stored: rec.stored,
        rawLength: rec.rawLength,
        flags: rec.flags,
      })
      kept.push([hex, e])
    }
    if (records.length === 0) continue
    const { locations } = await writer.append(records)
    await store.mutex.run(async () => {
      const lengths = await writer.sync()
      const now = await store.db.getMany(kept.map(([h]) => chunkKey(h)))
      const ops = []
      for (let i = 0; i < kept.length; i++) {
        const cur = now[i] ? decodeEntry(now[i]!) : null
        const [hex, old] = kept[i]
        if (!cur || cur.pack !== old.pack || cur.offset !== old.offset) continue
        ops.push({
          type: 'put' as const,
          key: chunkKey(hex),
          value: encodeEntry({ ...cur, ...locations[i] }),
        })
        report.movedChunks++
      }
      for (const { pack, length } of lengths)
        ops.push({ type: 'put' as const, key: packKey(pack), value: jsonValue({ length }) })
      await store.db.batch(ops, { sync: true })
    })
  }
  return intact
}

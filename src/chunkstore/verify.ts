// Scrub: re-read and re-hash every indexed chunk, then walk every point's manifests to name the
// points that need a damaged or missing chunk.

import { MERKLE_FANOUT } from './constants.js'
import { ChunkVerifyError } from './errors.js'
import { ZERO_HEX } from './hash.js'
import { CHUNK_RANGE, decodeEntry } from './index-db.js'
import { decodeNode, treeShape } from './merkle.js'
import { packFileName } from './packs.js'
import { pointName } from './points.js'
import type { ChunkStore } from './store.js'

const SCRUB_CONCURRENCY = 4

export interface DamagedChunk {
  chunk: string
  /** Pack file and record offset, when the chunk is indexed. */
  pack: string | null
  offset: number | null
  reason: string
}

export interface VerifyReport {
  ok: boolean
  chunks: number
  bytes: number
  damaged: DamagedChunk[]
  /** Points (`vm@seq`) that need at least one damaged or missing chunk. */
  damagedPoints: string[]
}

export async function verifyStore(
  store: ChunkStore,
  options: { signal?: AbortSignal; onProgress?: (chunks: number) => void } = {},
): Promise<VerifyReport> {
  await store.flush()
  const damaged = new Map<string, DamagedChunk>()
  let chunks = 0
  let bytes = 0
  const running = new Set<Promise<void>>()
  for await (const [key, value] of store.db.iterator(CHUNK_RANGE)) {
    options.signal?.throwIfAborted()
    const hex = key.slice(2)
    const e = decodeEntry(value)
    chunks++
    bytes += e.storedLength
    const p = store
      .readEntry(hex, e)
      .then(
        () => {},
        (err) => {
          const reason =
            err instanceof ChunkVerifyError ? err.message : `unreadable: ${(err as Error).message}`
          damaged.set(hex, { chunk: hex, pack: packFileName(e.pack), offset: e.offset, reason })
        },
      )
      .finally(() => running.delete(p))
    running.add(p)
    if (running.size >= SCRUB_CONCURRENCY) await Promise.race(running)
    if (chunks % 1024 === 0) options.onProgress?.(chunks)
  }
  await Promise.all(running)

  // Walk each point's trees; a subtree's verdict is memoised so shared subtrees are walked once.
  const bad = new Map<string, boolean>()
  const visit = async (hex: string, level: number): Promise<boolean> => {
    if (hex === ZERO_HEX) return false
    const known = bad.get(hex)
    if (known !== undefined) return known
    let result = damaged.has(hex)
    if (!result) {
      const e = await store.entry(hex)
      if (!e) {
        damaged.set(hex, { chunk: hex, pack: null, offset: null, reason: 'missing from the store' })
        result = true
      } else if (level >= 0) {
        const ids = decodeNode(await store.readEntry(hex, e)).ids.map((id) => id.toString('hex'))
        for (const child of ids) if (await visit(child, level - 1)) result = true
      }
    }
    bad.set(hex, result)
    return result
  }
  const damagedPoints: string[] = []
  for (const point of await store.listPoints()) {
    let hurt = false
    for (const d of point.disks) {
      const level = treeShape(d.virtualSize, d.chunkSize, MERKLE_FANOUT).depth - 1
      if (await visit(d.root, level)) hurt = true
    }
    if (hurt) damagedPoints.push(pointName(point))
  }
  const list = [...damaged.values()]
  return { ok: list.length === 0, chunks, bytes, damaged: list, damagedPoints }
}

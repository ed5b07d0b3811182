// Open-time repair of the pack directory against the index's committed lengths.
import { join } from 'node:path'
import type { StoreFs } from './fs.js'
import { type IndexDb, PACK_RANGE, parseJson } from './index-db.js'
import { parsePackFileName } from './packs.js'

/**
 * Open-time repair: packs without a committed length were never indexed (deleted); bytes past a
 * pack's committed length were never indexed (cut off).
 */
export async function repairPacks(
  fs: StoreFs,
  dir: string,
  db: IndexDb,
): Promise<{ resume: { pack: number; length: number } | null; nextPack: number; short: number[] }> {
  const committed = new Map<number, number>()
  for await (const [k, v] of db.iterator(PACK_RANGE))
    committed.set(Number(k.slice(2)), parseJson<{ length: number }>(v).length)
  let max = 0
  const short: number[] = []
  let changed = false
  for (const name of await fs.list(dir)) {
    const pack = parsePackFileName(name)
    if (pack === null) continue
    max = Math.max(max, pack)
    const length = committed.get(pack)
    if (length === undefined) {
      await fs.remove(join(dir, name))
      changed = true
      continue
    }
    const file = await fs.open(join(dir, name), 'r+')
    try {
      const size = await file.size()
      if (size > length) {
        await file.truncate(length)
        await file.sync()
      } else if (size < length) short.push(pack)
    } finally {
      await file.close()
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
  return { resume, nextPack: max + 1, short }
}

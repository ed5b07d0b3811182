import { randomBytes } from 'node:crypto'
import { basename, join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type ChunkStore, nodeStoreFs, openChunkStore, type StoreFs } from '../../src/chunkstore/index.js'
import { tempDir } from './helpers.js'

let tmp: ReturnType<typeof tempDir>
let store: ChunkStore | null = null
beforeEach(() => {
  tmp = tempDir('pack-roll')
})
afterEach(async () => {
  await store?.close().catch(() => {})
  store = null
  tmp.cleanup()
})

/** Resolves with a promise's settling, or rejects after `ms` (every wait of this file is bounded). */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms)
  })
  return Promise.race([p, late]).finally(() => clearTimeout(timer))
}

describe('rolling to a new pack', () => {
  it('closes the sealed pack when a sync finishes it while the next pack is being opened', async () => {
    // The real file system, counting the pack files left open, with two gates that force one
    // interleaving: the sync of pack 1 waits until pack 2 starts opening, and that open waits
    // until the sync (the store's flush) is over. So the flush finds pack 1 still active when it
    // is done with it, and the roll finds it no longer dirty when the new pack is open.
    const open = new Set<string>()
    let pack2Opening!: () => void
    const pack2Started = new Promise<void>((resolve) => {
      pack2Opening = resolve
    })
    let flushed: Promise<unknown> = Promise.resolve()
    const fs: StoreFs = {
      ...nodeStoreFs,
      async open(path, flags, options) {
        const name = basename(path)
        const isPack = name.endsWith('.pack')
        if (isPack && Number.parseInt(name, 10) === 2 && flags === 'wx') {
          pack2Opening()
          await flushed.catch(() => {})
        }
        const f = await nodeStoreFs.open(path, flags, options)
        const key = `${name}#${Math.random()}`
        open.add(key)
        // A pack appender is a class: its methods are bound one by one, not spread.
        return {
          read: (...args) => f.read(...args),
          writev: (...args) => f.writev(...args),
          truncate: (length) => f.truncate(length),
          size: () => f.size(),
          async sync() {
            if (isPack && Number.parseInt(name, 10) === 1) await pack2Started
            return f.sync()
          },
          async close() {
            open.delete(key)
            return f.close()
          },
        }
      },
    }
    const chunkBytes = 64 * 1024
    store = await openChunkStore({ dir: join(tmp.dir, 'store'), fs, packSizeLimit: chunkBytes })
    const s = store
    const chunk = () => {
      const bytes = randomBytes(chunkBytes)
      return { hex: s.hash(bytes).toString('hex'), bytes }
    }
    const a = chunk()
    const b = chunk()
    // Pack 1 takes a and is full; its record is written before the flush starts.
    expect(await within(10_000, 'put a', s.putChunk(a.hex, a.bytes))).toBe(true)
    flushed = s.flush()
    // b needs a new pack: the roll seals pack 1 while the flush still holds it.
    const putB = s.putChunk(b.hex, b.bytes)
    await within(10_000, 'flush', flushed)
    expect(await within(10_000, 'put b', putB)).toBe(true)
    await within(10_000, 'second flush', s.flush())
    const packs = [...open].filter((k) => k.includes('.pack#')).map((k) => k.split('#')[0])
    // Only the active pack (2) may still be open; pack 1 is sealed and synced.
    expect(packs).toEqual(['00000002.pack'])
    await s.close()
    store = null
    expect([...open].filter((k) => k.includes('.pack#'))).toEqual([])
    // Both chunks are there after a reopen.
    store = await openChunkStore({ dir: join(tmp.dir, 'store') })
    expect(await store.has([a.hex, b.hex])).toEqual([])
    expect((await store.getChunk(b.hex)).equals(b.bytes)).toBe(true)
  })
})

// Where O_DIRECT is missing (Windows, a file system without it) the pack writer's files are
// written through the page cache: a store must work the same, new packs included.
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { nodeStoreFs, openChunkStore } from '../../src/chunkstore/index.js'
import { tempDir } from './helpers.js'

vi.mock('../../src/chunkstore/direct-file.js', async (original) => ({
  ...(await original<typeof import('../../src/chunkstore/direct-file.js')>()),
  openDirectAppender: vi.fn(async () => null),
}))

let tmp: ReturnType<typeof tempDir>
beforeEach(() => {
  tmp = tempDir('direct-fallback')
})
afterEach(() => tmp.cleanup())

describe('pack files without O_DIRECT', () => {
  it('creates a new pack and appends to it through the page cache', async () => {
    const path = join(tmp.dir, 'a.pack')
    const file = await nodeStoreFs.open(path, 'wx', { direct: true })
    const a = randomBytes(5000)
    const b = randomBytes(70_001)
    await file.writev([a], 0)
    await file.writev([b.subarray(0, 1), b.subarray(1)], a.length)
    await file.sync()
    await file.close()
    expect(readFileSync(path).equals(Buffer.concat([a, b]))).toBe(true)
    await expect(nodeStoreFs.open(path, 'wx', { direct: true })).rejects.toThrow(/EEXIST/)
  })

  it('a store puts, commits and reads back chunks', async () => {
    const bytes = randomBytes(300_000)
    let hex: string
    const store = await openChunkStore({ dir: tmp.dir })
    try {
      hex = store.hash(bytes).toString('hex')
      await store.putChunk(hex, bytes)
      await store.flush()
    } finally {
      await store.close()
    }
    const again = await openChunkStore({ dir: tmp.dir })
    try {
      expect((await again.getChunk(hex)).equals(bytes)).toBe(true)
    } finally {
      await again.close()
    }
  })
})

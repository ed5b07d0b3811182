import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ChunkHashMismatchError, type ChunkStore, openChunkStore } from '../../src/chunkstore/index.js'
import { tempDir } from './helpers.js'

let tmp: ReturnType<typeof tempDir>
let store: ChunkStore

beforeEach(async () => {
  tmp = tempDir('put-chunks')
  store = await openChunkStore({ dir: tmp.dir })
})

afterEach(async () => {
  await store.close()
  tmp.cleanup()
})

describe('putChunks (a receiver storing several frames with one lookup)', () => {
  it('stores new chunks, skips held and repeated ones, rejects a bad one, and all survive a reopen', async () => {
    const chunk = () => {
      const bytes = randomBytes(64 * 1024)
      return { hex: store.hash(bytes).toString('hex'), bytes }
    }
    const held = chunk()
    expect(await store.putChunk(held.hex, held.bytes)).toBe(true)
    await store.flush()
    const [a, b] = [chunk(), chunk()]
    const bad = { hex: chunk().hex, bytes: randomBytes(64 * 1024) }
    const lease = store.lease()
    const results = await store.putChunks([a, held, bad, b, a], lease, { owned: true })
    expect(results.slice(0, 2)).toEqual([true, false])
    expect(results[2]).toBeInstanceOf(ChunkHashMismatchError)
    expect(results.slice(3)).toEqual([true, false])
    await store.flush()
    lease.release()
    await store.close()
    store = await openChunkStore({ dir: tmp.dir })
    expect(await store.has([a.hex, b.hex, held.hex, bad.hex])).toEqual([bad.hex])
    expect((await store.getChunk(a.hex)).equals(a.bytes)).toBe(true)
    expect((await store.getChunk(b.hex)).equals(b.bytes)).toBe(true)
  })

  it('an id a query found absent and then stored by someone else is not stored twice', async () => {
    const bytes = randomBytes(64 * 1024)
    const hex = store.hash(bytes).toString('hex')
    expect(await store.has([hex])).toEqual([hex])
    // Another session stores it between the query and this receiver's frame.
    expect(await store.putChunk(hex, bytes)).toBe(true)
    await store.flush()
    expect(await store.putChunks([{ hex, bytes }])).toEqual([false])
    // Queried absent, stored by nobody else: stored once, then held.
    const other = randomBytes(64 * 1024)
    const otherHex = store.hash(other).toString('hex')
    expect(await store.has([otherHex])).toEqual([otherHex])
    expect(await store.putChunks([{ hex: otherHex, bytes: other }])).toEqual([true])
    expect(await store.putChunks([{ hex: otherHex, bytes: other }])).toEqual([false])
    await store.flush()
    expect(await store.has([hex, otherHex])).toEqual([])
  })
})

describe('putChunks copies into reused staging buffers', () => {
  it('keeps every chunk intact though the caller overwrites its buffer at once, across many staging buffers', async () => {
    // One buffer the "receiver" reuses for every chunk: the store must have copied each before
    // putChunks returned. 200 x 256 KiB = 50 MiB passes through several 8 MiB staging buffers.
    const scratch = Buffer.allocUnsafe(256 * 1024)
    const ids: Array<{ hex: string; seed: number }> = []
    const fill = (seed: number) => {
      for (let i = 0; i < scratch.length; i += 4) scratch.writeUInt32LE((seed * 2654435761 + i) >>> 0, i)
    }
    const lease = store.lease()
    for (let seed = 0; seed < 200; seed++) {
      fill(seed)
      const hex = store.hash(scratch).toString('hex')
      const [r] = await store.putChunks([{ hex, bytes: scratch }], lease)
      expect(r).toBe(true)
      ids.push({ hex, seed })
      // Read back while still pending now and then (waits for its pack write).
      if (seed % 37 === 0) expect((await store.getChunk(hex)).equals(scratch)).toBe(true)
      scratch.fill(0xee)
    }
    await store.flush()
    lease.release()
    await store.close()
    store = await openChunkStore({ dir: tmp.dir })
    for (const { hex, seed } of ids) {
      fill(seed)
      expect((await store.getChunk(hex)).equals(scratch)).toBe(true)
    }
  })
})

describe('putChunks with retain writes from the caller’s buffers', () => {
  it('hands over the write promise only for new chunks; buffers reused once it settles keep every chunk intact', async () => {
    // A receiver's pooled slab: chunks are views of one buffer, reused after `written`.
    const slab = Buffer.allocUnsafe(4 * 256 * 1024)
    const chunks: Array<{ hex: string; bytes: Buffer; copy: Buffer }> = []
    const lease = store.lease()
    for (let round = 0; round < 20; round++) {
      const batch = [0, 1, 2, 3].map((k) => {
        const bytes = slab.subarray(k * 256 * 1024, (k + 1) * 256 * 1024)
        randomBytes(bytes.length).copy(bytes)
        return { hex: store.hash(bytes).toString('hex'), bytes, copy: Buffer.from(bytes) }
      })
      const handed: Array<Promise<void>> = []
      const results = await store.putChunks(batch, lease, { retain: (w) => handed.push(w) })
      expect(results).toEqual([true, true, true, true])
      expect(handed).toHaveLength(1)
      // Read back while pending (waits for its write, which reads the slab as it still is).
      if (round % 7 === 0) expect((await store.getChunk(batch[1].hex)).equals(batch[1].copy)).toBe(true)
      await handed[0]
      chunks.push(...batch)
    }
    // Nothing new: no write to wait for, and the callback is not called.
    const again: Array<Promise<void>> = []
    const last = chunks.at(-1)!
    expect(
      await store.putChunks([{ hex: last.hex, bytes: last.copy }], lease, { retain: (w) => again.push(w) }),
    ).toEqual([false])
    expect(again).toHaveLength(0)
    slab.fill(0xee)
    await store.flush()
    lease.release()
    await store.close()
    store = await openChunkStore({ dir: tmp.dir })
    for (const c of chunks) expect((await store.getChunk(c.hex)).equals(c.copy)).toBe(true)
  })
})

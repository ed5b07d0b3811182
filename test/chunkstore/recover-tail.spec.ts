// Records written after the last commit (a process killed between flushes) are indexed when the
// store opens again if they are whole and hash to their ids; the rest is cut off.
import { randomBytes } from 'node:crypto'
import { copyFileSync, existsSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type ChunkStore, openChunkStore } from '../../src/chunkstore/index.js'
import { RECORD_HEADER_BYTES } from '../../src/chunkstore/packs.js'
import { tempDir } from './helpers.js'

let tmp: ReturnType<typeof tempDir>
let store: ChunkStore

beforeEach(async () => {
  tmp = tempDir('recover-tail')
  store = await openChunkStore({ dir: tmp.dir })
})

afterEach(async () => {
  await store.close()
  tmp.cleanup()
})

const pack = (n: number) => join(tmp.dir, 'packs', `${String(n).padStart(8, '0')}.pack`)

function chunk(bytes = randomBytes(64 * 1024)) {
  return { hex: store.hash(bytes).toString('hex'), bytes }
}

/** Stores the chunks without a commit, then closes: the packs hold them, the index does not. */
async function putUncommitted(chunks: Array<{ hex: string; bytes: Buffer }>) {
  expect(await store.putChunks(chunks)).toEqual(chunks.map(() => true))
  const where = chunks.map((c) => ({ ...store.pending.get(c.hex)! }))
  await store.close()
  return where
}

async function expectHeld(chunks: Array<{ hex: string; bytes: Buffer }>) {
  expect(await store.has(chunks.map((c) => c.hex))).toEqual([])
  for (const c of chunks) expect((await store.getChunk(c.hex)).equals(c.bytes)).toBe(true)
}

describe('open indexes the records written after the last commit', () => {
  it('indexes whole records past the committed length, and appends after them', async () => {
    const a = chunk()
    await store.putChunk(a.hex, a.bytes)
    await store.flush()
    const committed = statSync(pack(1)).size
    const tail = [chunk(), chunk(), chunk()]
    await putUncommitted(tail)
    expect(statSync(pack(1)).size).toBeGreaterThan(committed)
    store = await openChunkStore({ dir: tmp.dir })
    expect(store.recoveredAtOpen).toEqual({ chunks: 3, bytes: 3 * 64 * 1024 })
    await expectHeld([a, ...tail])
    // New records go after the recovered ones, and everything survives the next reopen.
    const e = chunk()
    await store.putChunk(e.hex, e.bytes)
    await store.flush()
    await store.close()
    store = await openChunkStore({ dir: tmp.dir })
    expect(store.recoveredAtOpen.chunks).toBe(0)
    await expectHeld([a, ...tail, e])
  })

  it('stops at a damaged record: the records before it are indexed, it and the rest cut off', async () => {
    const tail = [chunk(), chunk(), chunk()]
    const where = await putUncommitted(tail)
    const bytes = readFileSync(pack(1))
    bytes[where[1].offset + RECORD_HEADER_BYTES + 1000] ^= 0xff
    writeFileSync(pack(1), bytes)
    store = await openChunkStore({ dir: tmp.dir })
    expect(store.recoveredAtOpen.chunks).toBe(1)
    expect(statSync(pack(1)).size).toBe(where[1].offset)
    await expectHeld([tail[0]])
    expect(await store.has([tail[1].hex, tail[2].hex])).toEqual([tail[1].hex, tail[2].hex])
    // Stored again (a sender asked for them again), they are written where the cut was.
    expect(await store.putChunks([tail[1], tail[2]])).toEqual([true, true])
    await store.flush()
    await expectHeld(tail)
  })

  it('cuts a torn last record and garbage after it', async () => {
    const tail = [chunk(), chunk(), chunk()]
    const where = await putUncommitted(tail)
    truncateSync(pack(1), where[2].offset + RECORD_HEADER_BYTES + 100)
    store = await openChunkStore({ dir: tmp.dir })
    expect(store.recoveredAtOpen.chunks).toBe(2)
    expect(statSync(pack(1)).size).toBe(where[2].offset)
    await expectHeld(tail.slice(0, 2))
    await store.close()
    writeFileSync(pack(1), randomBytes(5000), { flag: 'a' })
    store = await openChunkStore({ dir: tmp.dir })
    expect(store.recoveredAtOpen.chunks).toBe(0)
    expect(statSync(pack(1)).size).toBe(where[2].offset)
    await expectHeld(tail.slice(0, 2))
  })

  it('recovers a pack never committed, and deletes one whose records are all indexed elsewhere', async () => {
    const tail = [chunk(), chunk()]
    await putUncommitted(tail)
    store = await openChunkStore({ dir: tmp.dir })
    expect(store.recoveredAtOpen.chunks).toBe(2)
    await expectHeld(tail)
    await store.close()
    // A copy of those records in a pack the index never named (as a compaction killed before
    // its commit leaves): nothing to index, so the pack goes.
    copyFileSync(pack(1), pack(7))
    store = await openChunkStore({ dir: tmp.dir })
    expect(store.recoveredAtOpen.chunks).toBe(0)
    expect(existsSync(pack(7))).toBe(false)
    await expectHeld(tail)
  })

  it('recovers compressed records', async () => {
    await store.close()
    store = await openChunkStore({ dir: tmp.dir, compression: 'deflate' })
    const text = Buffer.alloc(256 * 1024)
    for (let i = 0; i < text.length; i += 16) text.write(`line ${i}\n`, i)
    const c = chunk(text)
    const [where] = await putUncommitted([c])
    expect(where.storedLength).toBeLessThan(text.length / 2)
    store = await openChunkStore({ dir: tmp.dir })
    expect(store.recoveredAtOpen).toEqual({ chunks: 1, bytes: text.length })
    await expectHeld([c])
  })
})

// The pack appender writes past the page cache (O_DIRECT) through aligned bounce buffers: any
// sequence of unaligned appends must leave exactly the appended bytes, whether the file was
// closed (trimmed to its data) or left as a crash leaves it (padded to a block).
import { randomBytes } from 'node:crypto'
import {
  closeSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { DIRECT_BLOCK_BYTES, DIRECT_BOUNCE_BYTES } from '../../src/chunkstore/direct-file.js'
import { type ChunkStore, nodeStoreFs, openChunkStore } from '../../src/chunkstore/index.js'
import { tempDir } from './helpers.js'

let tmp: ReturnType<typeof tempDir>
beforeEach(() => {
  tmp = tempDir('direct-file')
})
afterEach(() => tmp.cleanup())

/** The open flags of this process's descriptors of `path` (from /proc/self/fdinfo). */
function openFlags(path: string): number[] {
  const out: number[] = []
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      continue
    }
    if (target !== path) continue
    const flags = /flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1]
    out.push(Number.parseInt(flags ?? '0', 8))
  }
  return out
}
const O_DIRECT = 0o40000

/** Bytes [from, to) of a file. */
function readRange(path: string, from: number, to: number): Buffer {
  const fd = openSync(path, 'r')
  try {
    const out = Buffer.alloc(to - from)
    expect(readSync(fd, out, 0, out.length, from)).toBe(out.length)
    return out
  } finally {
    closeSync(fd)
  }
}

describe('direct pack appender', () => {
  it('keeps exactly the appended bytes across unaligned appends of every size, syncs and a close', async () => {
    const path = join(tmp.dir, 'a.pack')
    const file = await nodeStoreFs.open(path, 'wx', { direct: true })
    // The descriptor really is O_DIRECT here (Linux, ext4/tmpfs): else this test proves nothing.
    expect(openFlags(path).some((f) => f & O_DIRECT)).toBe(true)
    const sizes = [1, 47, DIRECT_BLOCK_BYTES - 1, 2, 256 * 1024 + 48, DIRECT_BOUNCE_BYTES + 3, 5000]
    for (let i = 0; i < 12; i++) sizes.push(1 + Math.floor(Math.random() * 3 * DIRECT_BOUNCE_BYTES))
    const expected = randomBytes(sizes.reduce((n, s) => n + s, 0))
    let end = 0
    for (const [i, size] of sizes.entries()) {
      // Several buffers per call, like a writev of records (header, bytes).
      const head = Math.min(48, size)
      await file.writev([expected.subarray(end, end + head), expected.subarray(end + head, end + size)], end)
      end += size
      if (i % 5 === 0) await file.sync()
      // Between writes the file holds the data, then at most the padding of its last block; the
      // block before this append (rewritten with it) still holds its earlier bytes.
      const fileSize = statSync(path).size
      expect(fileSize - end).toBeGreaterThanOrEqual(0)
      expect(fileSize - end).toBeLessThan(DIRECT_BLOCK_BYTES)
      const from = Math.max(0, end - size - DIRECT_BLOCK_BYTES)
      expect(readRange(path, from, end).equals(expected.subarray(from, end))).toBe(true)
    }
    await file.close()
    expect(statSync(path).size).toBe(end)
    expect(readFileSync(path).equals(expected)).toBe(true)
  }, 60_000)

  it('appends to an existing file at its end, and after a truncate at the new end', async () => {
    const path = join(tmp.dir, 'b.pack')
    const first = randomBytes(10_000)
    writeFileSync(path, first)
    const file = await nodeStoreFs.open(path, 'r+', { direct: true })
    const second = randomBytes(70_001)
    await file.writev([second], first.length)
    await file.truncate(12_345)
    const third = randomBytes(3)
    await file.writev([third], 12_345)
    await file.close()
    expect(
      readFileSync(path).equals(Buffer.concat([first, second.subarray(0, 12_345 - first.length), third])),
    ).toBe(true)
  })
})

describe('a store whose process died between pack writes and their commit', () => {
  let store: ChunkStore
  afterEach(async () => store?.close())

  it('opens a pack left padded by the appender: its whole records are recovered, the padding cut', async () => {
    store = await openChunkStore({ dir: tmp.dir })
    const chunks = [randomBytes(100_000), randomBytes(100_001), randomBytes(3)].map((bytes) => ({
      hex: store.hash(bytes).toString('hex'),
      bytes,
    }))
    const putResult = await store.putChunks(chunks)
    expect(putResult).toEqual([true, true, true])
    const pack = join(tmp.dir, 'packs', '00000001.pack')
    // Wait for the writes (not a commit): the file then looks as a kill -9 would leave it.
    await store.getChunk(chunks[2].hex)
    const crashImage = readFileSync(pack)
    const dataEnd = chunks.reduce((n, c) => n + 48 + c.bytes.length, 0)
    expect(crashImage.length % DIRECT_BLOCK_BYTES).toBe(0)
    expect(crashImage.length).toBeGreaterThan(dataEnd)
    await store.close()
    writeFileSync(pack, crashImage)
    store = await openChunkStore({ dir: tmp.dir })
    expect(store.recoveredAtOpen.chunks).toBe(3)
    expect(statSync(pack).size).toBe(dataEnd)
    for (const c of chunks) expect((await store.getChunk(c.hex)).equals(c.bytes)).toBe(true)
  })
})

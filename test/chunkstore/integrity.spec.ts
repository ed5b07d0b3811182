import { closeSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  type ChunkStore,
  ChunkVerifyError,
  collectGarbage,
  materialise,
  nodeStoreFs,
  openChunkStore,
  PointPinnedError,
  putDisks,
  type StoreFs,
  verifyStore,
} from '../../src/chunkstore/index.js'
import { createDisk, openDisk } from '../../src/hyperv/index.js'
import { MiB, makeRawDisk, scribble, tempDir } from './helpers.js'

let tmp: ReturnType<typeof tempDir>
let stores: ChunkStore[] = []
beforeEach(() => {
  tmp = tempDir('integrity')
})
afterEach(async () => {
  for (const s of stores) await s.close().catch(() => {})
  stores = []
  tmp.cleanup()
})

async function open(options: { fs?: StoreFs; packSizeLimit?: number; compression?: 'off' | 'deflate' } = {}) {
  const s = await openChunkStore({ dir: join(tmp.dir, 'store'), ...options })
  stores.push(s)
  return s
}

async function put(store: ChunkStore, path: string, vm: string) {
  const disk = await openDisk(path)
  try {
    return await putDisks(store, [disk], { vm })
  } finally {
    await disk.close()
  }
}

async function readBack(store: ChunkStore, name: string): Promise<Buffer> {
  const point = await store.getPoint(name)
  const out = join(tmp.dir, `${name.replace('@', '-')}-${Date.now()}.raw`)
  const target = await createDisk(out, { format: 'raw', virtualSize: point.disks[0].virtualSize })
  try {
    await materialise(store, point, 0, target, { targetIsZero: true })
  } finally {
    await target.close()
  }
  return readFileSync(out)
}

/** Flips one byte of a pack file; returns the id named in the header of the record holding it. */
function flipByte(packPath: string, offset: number): string {
  const fd = openSync(packPath, 'r+')
  try {
    const b = Buffer.alloc(1)
    readSync(fd, b, 0, 1, offset)
    b[0] ^= 0x5a
    writeSync(fd, b, 0, 1, offset)
    const header = Buffer.alloc(48)
    readSync(fd, header, 0, 48, 0)
    return header.subarray(16, 48).toString('hex')
  } finally {
    closeSync(fd)
  }
}

describe('damage', () => {
  it.each(['off', 'deflate'] as const)(
    'a flipped byte is named by verify and fails get (compression %s)',
    async (compression) => {
      const src = join(tmp.dir, 'a.raw')
      makeRawDisk(src, 8 * MiB, 8 * MiB)
      // Half of each MiB compressible, so deflate keeps its output.
      scribble(src, [0], 0)
      const store = await open({ compression })
      await put(store, src, 'a')
      expect((await verifyStore(store)).ok).toBe(true)
      const chunk = flipByte(join(tmp.dir, 'store', 'packs', '00000001.pack'), 48 + 1000)
      const report = await verifyStore(store)
      expect(report.ok).toBe(false)
      expect(report.damaged.map((d) => d.chunk)).toEqual([chunk])
      expect(report.damaged[0].pack).toBe('00000001.pack')
      expect(report.damagedPoints).toEqual(['a@1'])
      await expect(store.getChunk(chunk)).rejects.toBeInstanceOf(ChunkVerifyError)
      await expect(readBack(store, 'a@1')).rejects.toThrow(new RegExp(`chunk ${chunk}`))
    },
  )
})

/** The real file system, failing the nth pack write (after writing part of it) or the nth sync. */
function faultyFs(failWriteAt: number, failSyncAt = Number.POSITIVE_INFINITY): StoreFs {
  let writes = 0
  let syncs = 0
  return {
    ...nodeStoreFs,
    async open(path, flags) {
      const f = await nodeStoreFs.open(path, flags)
      return {
        ...f,
        async writev(buffers, position) {
          if (++writes === failWriteAt) {
            // A torn write: the first buffer lands, then the "disk" fails.
            await f.writev(buffers.slice(0, 1), position)
            throw Object.assign(new Error('injected write failure'), { code: 'EIO' })
          }
          return f.writev(buffers, position)
        },
        async sync() {
          if (++syncs === failSyncAt)
            throw Object.assign(new Error('injected fsync failure'), { code: 'EIO' })
          return f.sync()
        },
      }
    },
  }
}

describe('opening', () => {
  it('a second opener of a store in use gets a named error, and a reopen keeps everything', async () => {
    const src = join(tmp.dir, 'a.raw')
    makeRawDisk(src, 4 * MiB, 4 * MiB)
    const store = await open()
    await put(store, src, 'a')
    await expect(openChunkStore({ dir: join(tmp.dir, 'store') })).rejects.toThrow(/in use by another process/)
    await store.close()
    stores = []
    const again = await open()
    expect((await again.listPoints()).map((p) => p.seq)).toEqual([1])
    expect((await readBack(again, 'a@1')).equals(readFileSync(src))).toBe(true)
    // Appends resume in the last pack rather than starting a new one per process.
    await put(again, src, 'b')
    makeRawDisk(src, 4 * MiB, 4 * MiB)
    await put(again, src, 'c')
    expect([...(await again.packLengths()).keys()]).toEqual([1])
  })
})

describe('faults while writing', () => {
  it.each([
    ['the 3rd pack write fails', 3, Number.POSITIVE_INFINITY],
    ['the 1st pack write fails', 1, Number.POSITIVE_INFINITY],
    ['the pack fsync fails', Number.POSITIVE_INFINITY, 1],
  ])(
    '%s: the put fails, committed points survive, the store repairs on open',
    async (_n, failWrite, failSync) => {
      const a = join(tmp.dir, 'a.raw')
      const b = join(tmp.dir, 'b.raw')
      makeRawDisk(a, 16 * MiB, 16 * MiB)
      makeRawDisk(b, 48 * MiB, 48 * MiB)
      const first = await open()
      await put(first, a, 'a')
      await first.close()
      stores = []
      const faulty = await open({ fs: faultyFs(failWrite, failSync) })
      await expect(put(faulty, b, 'b')).rejects.toThrow(/injected/)
      await faulty.close().catch(() => {})
      stores = []
      const store = await open()
      const lengths = await store.packLengths()
      for (const [pack, length] of lengths)
        expect(statSync(join(tmp.dir, 'store', 'packs', `${String(pack).padStart(8, '0')}.pack`)).size).toBe(
          length,
        )
      expect((await store.listPoints()).map((p) => `${p.vm}@${p.seq}`)).toEqual(['a@1'])
      expect((await verifyStore(store)).ok).toBe(true)
      expect((await readBack(store, 'a@1')).equals(readFileSync(a))).toBe(true)
      await put(store, b, 'b')
      expect((await readBack(store, 'b@1')).equals(readFileSync(b))).toBe(true)
      expect((await verifyStore(store)).ok).toBe(true)
    },
  )
})

describe('garbage collection', () => {
  it('frees chunks no kept point uses and compacts their packs; kept points stay intact', async () => {
    const a = join(tmp.dir, 'a.raw')
    const b = join(tmp.dir, 'b.raw')
    makeRawDisk(a, 24 * MiB, 24 * MiB, false)
    makeRawDisk(b, 8 * MiB, 8 * MiB, false)
    const store = await open({ packSizeLimit: 4 * MiB })
    await put(store, a, 'a')
    makeRawDisk(a, 24 * MiB, 18 * MiB, false) // most of the disk rewritten
    await put(store, a, 'a')
    await put(store, b, 'b')
    const before = [...(await store.packLengths()).values()].reduce((x, y) => x + y, 0)
    const r = await collectGarbage(store, { policy: { keepLast: 1 } })
    expect(r.deletedPoints).toEqual(['a@1'])
    expect(r.freedChunks).toBe(96 + 1) // a@1's 24 MiB of chunks (all rewritten or now zero), and its root
    expect(r.compactedPacks.length).toBeGreaterThan(0)
    const after = [...(await store.packLengths()).values()].reduce((x, y) => x + y, 0)
    expect(before - after).toBeGreaterThan(23 * MiB)
    expect((await verifyStore(store)).ok).toBe(true)
    expect((await readBack(store, 'a@2')).equals(readFileSync(a))).toBe(true)
    expect((await readBack(store, 'b@1')).equals(readFileSync(b))).toBe(true)
    // A second run finds nothing to do.
    const again = await collectGarbage(store, { policy: { keepLast: 1 } })
    expect(again.freedChunks + again.deletedPoints.length + again.movedChunks).toBe(0)
  })

  it('runs while a put is in progress without losing the put', async () => {
    const a = join(tmp.dir, 'a.raw')
    const b = join(tmp.dir, 'b.raw')
    makeRawDisk(a, 16 * MiB, 16 * MiB, false)
    makeRawDisk(b, 64 * MiB, 64 * MiB, false)
    const store = await open({ packSizeLimit: 2 * MiB })
    await put(store, a, 'a')
    makeRawDisk(a, 16 * MiB, 16 * MiB, false)
    await put(store, a, 'a')
    const putting = put(store, b, 'b')
    let runs = 0
    let done = false
    void putting.finally(() => {
      done = true
    })
    while (!done) {
      await collectGarbage(store, { policy: { keepLast: 1 } })
      runs++
    }
    await putting
    await collectGarbage(store, { policy: { keepLast: 1 } })
    expect(runs).toBeGreaterThan(0)
    expect((await verifyStore(store)).ok).toBe(true)
    expect((await readBack(store, 'b@1')).equals(readFileSync(b))).toBe(true)
    expect((await readBack(store, 'a@2')).equals(readFileSync(a))).toBe(true)
  })

  it('keeps points by the retention policy', async () => {
    const a = join(tmp.dir, 'a.raw')
    makeRawDisk(a, 4 * MiB, 4 * MiB)
    const store = await open()
    const r = await put(store, a, 'a')
    const base = await store.getPoint(r.point)
    const now = Date.UTC(2026, 0, 15, 12, 7)
    const H = 3_600_000
    // Points 1 h, 3 h, 29.5 h and 30 h old (the store accepts any times a producer sends).
    for (const [seq, age] of [
      [2, 30 * H],
      [3, 29.5 * H],
      [4, 3 * H],
      [5, 1 * H],
    ])
      await store.commitPoint({ ...base, seq, time: now - age })
    await store.deletePoint('a@1')
    const gc = await collectGarbage(store, { policy: { keepAllHours: 2, hourlyDays: 2 }, nowMs: now })
    // a@2 and a@3 share an hour bucket: the newer (a@3) is kept.
    expect(gc.deletedPoints).toEqual(['a@2'])
    expect((await store.listPoints('a')).map((p) => p.seq)).toEqual([3, 4, 5])
  })

  it('keeps a point a lease pins (a restore reading it), chunks and all, until the lease is released', async () => {
    const a = join(tmp.dir, 'a.raw')
    makeRawDisk(a, 8 * MiB, 8 * MiB, false)
    const store = await open()
    await put(store, a, 'a')
    const first = readFileSync(a)
    makeRawDisk(a, 8 * MiB, 8 * MiB, false) // every chunk rewritten
    await put(store, a, 'a')
    const lease = store.lease()
    lease.pinPoint('a@1')
    await expect(store.deletePoint('a@1')).rejects.toThrow(PointPinnedError)
    // Retention passes it over, and no chunk it names is freed.
    const kept = await collectGarbage(store, { policy: { keepLast: 1 } })
    expect(kept.deletedPoints).toEqual([])
    expect(kept.freedChunks).toBe(0)
    expect((await readBack(store, 'a@1')).equals(first)).toBe(true)
    // A second pin of the same point by another lease holds it after the first is released.
    const other = store.lease()
    other.pinPoint('a@1')
    lease.release()
    expect((await collectGarbage(store, { policy: { keepLast: 1 } })).deletedPoints).toEqual([])
    other.release()
    const freed = await collectGarbage(store, { policy: { keepLast: 1 } })
    expect(freed.deletedPoints).toEqual(['a@1'])
    expect(freed.freedChunks).toBe(32 + 1) // its 8 MiB of chunks and its root
    expect((await verifyStore(store)).ok).toBe(true)
  })
})

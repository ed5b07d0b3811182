import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  ChunkHashMismatchError,
  type ChunkStore,
  IncompletePointError,
  materialise,
  openChunkStore,
  PointExistsError,
  putDisks,
  type RecoveryPoint,
  ZERO_HEX,
} from '../../src/chunkstore/index.js'
import { createDisk, openDisk } from '../../src/hyperv/index.js'
import { hasTool, oracle, qemuImg } from '../helpers/oracles.js'
import { MiB, makeRawDisk, scribble, tempDir } from './helpers.js'

const haveQemu = oracle('qemu-img', hasTool('qemu-img'))

let tmp: ReturnType<typeof tempDir>
let stores: ChunkStore[] = []
beforeEach(() => {
  tmp = tempDir('store')
})
afterEach(async () => {
  for (const s of stores) await s.close().catch(() => {})
  stores = []
  tmp.cleanup()
})

async function open(name = 'store') {
  const s = await openChunkStore({ dir: join(tmp.dir, name) })
  stores.push(s)
  return s
}

async function put(
  store: ChunkStore,
  path: string,
  vm: string,
  changed?: { start: number; length: number }[],
) {
  const disk = await openDisk(path)
  try {
    return await putDisks(store, [disk], { vm, changedRanges: changed ? [changed] : undefined })
  } finally {
    await disk.close()
  }
}

async function getTo(store: ChunkStore, name: string, out: string, format: 'raw' | 'vhdx') {
  const point = await store.getPoint(name)
  const target = await createDisk(out, { format, virtualSize: point.disks[0].virtualSize })
  try {
    return await materialise(store, point, 0, target, { targetIsZero: true })
  } finally {
    await target.close()
  }
}

const packBytes = (store: ChunkStore) =>
  store.packLengths().then((m) => [...m.values()].reduce((a, b) => a + b, 0))

describe('put and get', () => {
  it('returns the identical raw disk', async () => {
    const src = join(tmp.dir, 'a.raw')
    makeRawDisk(src, 24 * MiB + 4096, 20 * MiB)
    const store = await open()
    const r = await put(store, src, 'a')
    expect(r.point).toBe('a@1')
    expect(r.chunks).toBe(Math.ceil((24 * MiB + 4096) / (256 * 1024)))
    const out = join(tmp.dir, 'out.raw')
    await getTo(store, 'a@1', out, 'raw')
    expect(readFileSync(out).equals(readFileSync(src))).toBe(true)
  })

  it.runIf(haveQemu)(
    'returns the identical disk as VHDX, read from and written to VHDX (qemu-img checks)',
    async () => {
      const raw = join(tmp.dir, 'a.raw')
      makeRawDisk(raw, 40 * MiB, 30 * MiB)
      const vhdx = join(tmp.dir, 'a.vhdx')
      qemuImg(['convert', '-f', 'raw', '-O', 'vhdx', raw, vhdx])
      const store = await open()
      await put(store, vhdx, 'a')
      const out = join(tmp.dir, 'out.vhdx')
      await getTo(store, 'a@1', out, 'vhdx')
      qemuImg(['check', '-f', 'vhdx', out])
      expect(qemuImg(['compare', '-f', 'raw', '-F', 'vhdx', raw, out])).toMatch(/identical/)
    },
  )
})

describe('deduplication and deltas', () => {
  it('after 40 scattered 4 KiB writes to a 256 MiB disk the second put stores a few MiB', async () => {
    const src = join(tmp.dir, 'big.raw')
    makeRawDisk(src, 256 * MiB, 256 * MiB, false)
    const store = await open()
    const first = await put(store, src, 'vm')
    expect(first.newBytes).toBeGreaterThan(255 * MiB)
    const offsets = Array.from({ length: 40 }, (_, i) => i * 6 * MiB + 4096 * ((i * 37) % 60))
    scribble(src, offsets)
    const second = await put(store, src, 'vm')
    const touched = new Set(offsets.map((o) => Math.floor(o / (256 * 1024))))
    expect(second.newChunks).toBe(touched.size + 1) // + the root (1024 chunks: one leaf-list node)
    expect(second.newBytes).toBeLessThan(11 * MiB)
    const [p1, p2] = await store.listPoints('vm')
    expect(await store.diffManifests(p1.disks[0], p2.disks[0])).toEqual([...touched].sort((a, b) => a - b))

    // With change tracking, only the changed ranges are read.
    scribble(src, [100 * MiB])
    const third = await put(store, src, 'vm', [{ start: 100 * MiB, length: 4096 }])
    expect(third.readChunks).toBe(1)
    expect(third.newChunks).toBe(2)
    const out = join(tmp.dir, 'out.raw')
    await getTo(store, 'vm@3', out, 'raw')
    expect(readFileSync(out).equals(readFileSync(src))).toBe(true)
  })

  it.runIf(haveQemu)('the same content as VHD after VHDX stores nothing new', async () => {
    const raw = join(tmp.dir, 'a.raw')
    makeRawDisk(raw, 32 * MiB, 32 * MiB)
    const vhdx = join(tmp.dir, 'a.vhdx')
    const vhd = join(tmp.dir, 'a.vhd')
    qemuImg(['convert', '-f', 'raw', '-O', 'vhdx', raw, vhdx])
    qemuImg(['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw, vhd])
    const store = await open()
    const a = await put(store, vhdx, 'a')
    const b = await put(store, vhd, 'b')
    expect(b.root).toBe(a.root)
    expect(b.newChunks).toBe(0)
    expect(b.newBytes).toBe(0)
  })

  it('five clones of one image with small divergences store about one image plus the divergences', async () => {
    const base = join(tmp.dir, 'base.raw')
    makeRawDisk(base, 32 * MiB, 32 * MiB, false)
    const store = await open()
    const baseBytes = (await put(store, base, 'base')).newBytes
    let divergent = 0
    for (let i = 0; i < 5; i++) {
      const clone = join(tmp.dir, `clone${i}.raw`)
      makeRawDisk(clone, 32 * MiB, 0)
      // A clone: the base's bytes plus three 4 KiB writes of its own.
      const { copyFileSync } = await import('node:fs')
      copyFileSync(base, clone)
      scribble(clone, [i * MiB, 10 * MiB + i * 8192, 20 * MiB + i * 300_000])
      const r = await put(store, clone, `clone${i}`)
      divergent += r.newBytes
      expect(r.newChunks).toBeLessThanOrEqual(3 + 2)
    }
    expect(divergent).toBeLessThan(5 * 3 * 256 * 1024 + 5 * 2 * 64 * 1024)
    expect(await packBytes(store)).toBeLessThan(baseBytes + divergent + MiB)
  })

  it.runIf(haveQemu)('an 8 GiB empty disk is put in seconds and costs almost nothing', async () => {
    const vhdx = join(tmp.dir, 'empty.vhdx')
    qemuImg(['create', '-f', 'vhdx', vhdx, '8G'])
    const ours = join(tmp.dir, 'ours.vhdx')
    await (await createDisk(ours, { format: 'vhdx', virtualSize: 8 * 1024 * MiB })).close()
    const store = await open()
    for (const [path, vm] of [
      [vhdx, 'empty'],
      [ours, 'ours'],
    ]) {
      const started = Date.now()
      const r = await put(store, path, vm)
      expect(Date.now() - started).toBeLessThan(5000)
      expect(r.chunks).toBe(32768)
      expect(r.root).toBe(ZERO_HEX)
      expect(r.newBytes).toBe(0)
    }
    expect(await packBytes(store)).toBe(0)
    const out = join(tmp.dir, 'out.vhdx')
    await getTo(store, 'empty@1', out, 'vhdx')
    expect(statSync(out).size).toBeLessThan(16 * MiB)
  })
})

describe('the replication API', () => {
  it('copies a point between stores with has/getChunk/putChunk and commits only when complete', async () => {
    const src = join(tmp.dir, 'a.raw')
    makeRawDisk(src, 8 * MiB, 8 * MiB)
    const a = await open('a')
    const b = await open('b')
    await put(a, src, 'vm')
    const point = await a.getPoint('vm@1')
    await expect(b.commitPoint(point)).rejects.toBeInstanceOf(IncompletePointError)
    const lease = b.lease()
    const ids: string[] = []
    for await (const { hex } of a.manifestIds(point.disks[0])) ids.push(hex)
    expect(await b.has(ids)).toEqual(ids)
    const half = ids.slice(0, ids.length / 2)
    for (const hex of half) await b.putChunk(hex, await a.getChunk(hex), lease)
    await expect(b.commitPoint(point)).rejects.toBeInstanceOf(IncompletePointError)
    const missing = await b.has(ids)
    expect(missing).toEqual(ids.slice(ids.length / 2))
    await expect(b.putChunk(missing[0], Buffer.from('not it'))).rejects.toBeInstanceOf(ChunkHashMismatchError)
    for (const hex of missing) expect(await b.putChunk(hex, await a.getChunk(hex), lease)).toBe(true)
    await b.commitPoint(point)
    lease.release()
    await expect(b.commitPoint(point)).rejects.toBeInstanceOf(PointExistsError)
    expect((await b.listPoints('vm')).map((p) => p.seq)).toEqual([1])
    const out = join(tmp.dir, 'out.raw')
    await getTo(b, 'vm@1', out, 'raw')
    expect(readFileSync(out).equals(readFileSync(src))).toBe(true)
  })

  it('materialise with a base writes only the chunks that differ', async () => {
    const src = join(tmp.dir, 'a.raw')
    makeRawDisk(src, 16 * MiB, 16 * MiB)
    const store = await open()
    await put(store, src, 'vm')
    const out = join(tmp.dir, 'out.raw')
    await getTo(store, 'vm@1', out, 'raw')
    scribble(src, [MiB, 9 * MiB, 9 * MiB + 8192])
    scribble(src, [12 * MiB], 256 * 1024) // a whole chunk turns to... random
    await put(store, src, 'vm')
    const [base, next] = await store.listPoints('vm')
    const target = await openDisk(out, { readOnly: false })
    try {
      const r = await materialise(store, next as RecoveryPoint, 0, target, { base })
      expect(r.chunksWritten).toBe(3)
    } finally {
      await target.close()
    }
    expect(readFileSync(out).equals(readFileSync(src))).toBe(true)
  })
})

// The two-thread hasher of ingest (hash-pool.ts) against an independent oracle: node:crypto's
// SHA-256 and the native BLAKE3 on one thread. The worker exists only in the compiled build, so
// these tests load the module from a private copy of dist/ (see snapshotBuild).
import { createHash, randomFillSync } from 'node:crypto'
import { readFileSync, rmSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { blake3 } from '@napi-rs/blake-hash'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { build, cli, MiB, makeRawDisk, snapshotBuild, tempDir } from './helpers.js'

interface Hasher {
  start(): void
  hashChunks(data: Buffer, starts: number[], lengths: number[]): Promise<Buffer>
  close(): Promise<void>
}
interface HashPoolModule {
  ParallelHasher: new (algorithm: 'blake3' | 'sha256', hash: (b: Uint8Array) => Buffer) => Hasher
  sharedBuffer(size: number): Buffer
}

let dropBuild: () => void
let mod: HashPoolModule
const hashers: Hasher[] = []
let tmp: ReturnType<typeof tempDir> | null = null
beforeAll(async () => {
  dropBuild = snapshotBuild()
  const root = dirname(dirname(build.bin))
  const file = join(root, 'dist', 'src', 'chunkstore', 'hash-pool.js')
  statSync(join(root, 'dist', 'src', 'chunkstore', 'hash-worker.js'))
  mod = (await import(pathToFileURL(file).href)) as HashPoolModule
})
afterEach(async () => {
  for (const h of hashers.splice(0)) await h.close()
  tmp?.cleanup()
  tmp = null
})
afterAll(() => dropBuild())

// The hasher passes Uint8Array views (its HashFn); blake3's binding takes a Buffer: wrap, no copy.
const asBuffer = (b: Uint8Array): Buffer =>
  Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)
const oracles: Record<'blake3' | 'sha256', (b: Uint8Array) => Buffer> = {
  blake3: (b) => blake3(asBuffer(b)),
  sha256: (b) => createHash('sha256').update(b).digest(),
}

describe('ParallelHasher', () => {
  for (const algorithm of ['blake3', 'sha256'] as const) {
    it(`gives the one-thread ${algorithm} ids, zero chunks as the zero id (${algorithm})`, async () => {
      const hasher = new mod.ParallelHasher(algorithm, oracles[algorithm])
      hashers.push(hasher)
      hasher.start()
      const chunk = 64 * 1024
      const data = mod.sharedBuffer(64 * chunk + 100)
      randomFillSync(data)
      // Every fifth chunk all zero; the last one short.
      for (let k = 0; k < 64; k += 5) data.fill(0, k * chunk, (k + 1) * chunk)
      const starts: number[] = []
      const lengths: number[] = []
      for (let at = 0; at < data.length; at += chunk) {
        starts.push(at)
        lengths.push(Math.min(chunk, data.length - at))
      }
      // Many windows in a row: the worker is started and shares the work at some point.
      for (let round = 0; round < 20; round++) {
        const ids = await hasher.hashChunks(data, starts, lengths)
        expect(ids.length).toBe(starts.length * 32)
        starts.forEach((s, k) => {
          const bytes = data.subarray(s, s + lengths[k])
          const want = k % 5 === 0 ? Buffer.alloc(32) : oracles[algorithm](bytes)
          expect(ids.subarray(k * 32, k * 32 + 32).equals(want), `chunk ${k}`).toBe(true)
        })
      }
    })
  }

  it('hashes a window at an offset of its shared buffer, and plain buffers on this thread', async () => {
    const hasher = new mod.ParallelHasher('blake3', oracles.blake3)
    hashers.push(hasher)
    hasher.start()
    const whole = mod.sharedBuffer(4 * MiB)
    randomFillSync(whole)
    const view = whole.subarray(MiB)
    const plain = Buffer.from(view)
    for (const data of [view, plain]) {
      const ids = await hasher.hashChunks(data, [0, MiB, 2 * MiB], [MiB, MiB, 1000])
      expect(ids.subarray(0, 32).equals(blake3(view.subarray(0, MiB)))).toBe(true)
      expect(ids.subarray(64, 96).equals(blake3(view.subarray(2 * MiB, 2 * MiB + 1000)))).toBe(true)
    }
  })

  it('finishes a window when its worker is gone (closed mid-run)', async () => {
    const hasher = new mod.ParallelHasher('blake3', oracles.blake3)
    hasher.start()
    const data = mod.sharedBuffer(32 * MiB)
    randomFillSync(data)
    const starts = Array.from({ length: 128 }, (_, k) => k * 256 * 1024)
    const lengths = starts.map(() => 256 * 1024)
    const pending = hasher.hashChunks(data, starts, lengths)
    await hasher.close()
    const ids = await pending
    starts.forEach((s, k) => {
      expect(ids.subarray(k * 32, k * 32 + 32).equals(blake3(data.subarray(s, s + 256 * 1024)))).toBe(true)
    })
  })
})

describe('store put of a disk big enough to hash on two threads', () => {
  it('stores what get returns byte for byte, and verify re-hashes every chunk clean', {
    timeout: 180_000,
  }, () => {
    tmp = tempDir('hashpool')
    const src = join(tmp.dir, 'big.raw')
    const out = join(tmp.dir, 'out.raw')
    const store = join(tmp.dir, 'st')
    makeRawDisk(src, 96 * MiB, 96 * MiB)
    const put = cli(['store', 'put', '--store', store, src, '--json'], 120_000)
    expect(put.status, put.stderr).toBe(0)
    const name = JSON.parse(put.stdout).point as string
    const get = cli(['store', 'get', '--store', store, name, '--out', out], 120_000)
    expect(get.status, get.stderr).toBe(0)
    const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex')
    expect(sha(out)).toBe(sha(src))
    const verify = cli(['store', 'verify', '--store', store, '--json'], 120_000)
    expect(verify.status, verify.stdout + verify.stderr).toBe(0)
    rmSync(out, { force: true })
  })
})

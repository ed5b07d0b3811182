// OpenOptions.blockingReads (what `disk cat` to a file uses): the same bytes as thread-pool reads
// for every format and through differencing chains (partially present blocks included), and the
// reads really run on the calling thread: they complete before the event loop turns.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDisk, openDisk, type VirtualDisk } from '../../src/hyperv/disk/index.js'

const MiB = 1024 * 1024
const SIZE = 12 * MiB
let dir: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replimesh-blocking-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** Writes [offset, length] pieces of random bytes into the disk and into `model`. */
async function scribble(disk: VirtualDisk, model: Buffer, writes: [number, number][]): Promise<void> {
  for (const [offset, length] of writes) {
    const data = randomBytes(length)
    await disk.write(data, offset)
    data.copy(model, offset)
  }
}

/** A base and a child in `format`; the child has sector-sized writes inside parent blocks. */
async function chain(format: 'vhdx' | 'vhd'): Promise<{ child: string; model: Buffer }> {
  const base = join(dir, `base.${format}`)
  const child = join(dir, `child.${format}`)
  const model = Buffer.alloc(SIZE)
  const b = await createDisk(base, { format, virtualSize: SIZE, blockSize: 2 * MiB })
  await scribble(b, model, [
    [0, 3 * MiB],
    [5 * MiB + 512, 70_000],
  ])
  await b.close()
  const c = await createDisk(child, { format, parent: base })
  await scribble(c, model, [
    [4096, 1024],
    [5 * MiB, 4096],
    [9 * MiB, MiB],
  ])
  await c.close()
  return { child, model }
}

/** Reads the whole disk in 1 MiB + 512 pieces (unaligned to blocks on purpose). */
async function readAll(disk: VirtualDisk): Promise<Buffer> {
  const out = Buffer.alloc(disk.virtualSize)
  const piece = MiB + 512
  for (let at = 0; at < disk.virtualSize; at += piece)
    await disk.read(out, at, Math.min(piece, disk.virtualSize - at), at)
  return out
}

/** True when `read` completes before a setImmediate queued just before it runs. */
async function completesBeforeLoopTurns(read: () => Promise<void>): Promise<boolean> {
  let turned = false
  setImmediate(() => {
    turned = true
  })
  await read()
  return !turned
}

describe('blocking reads', () => {
  it.each(['vhdx', 'vhd'] as const)('read a %s differencing chain like thread-pool reads', async (format) => {
    const { child, model } = await chain(format)
    const pooled = await openDisk(child)
    const blocking = await openDisk(child, { blockingReads: true })
    try {
      expect((await readAll(pooled)).equals(model)).toBe(true)
      expect((await readAll(blocking)).equals(model)).toBe(true)
      const buf = Buffer.alloc(2 * MiB)
      // 5 MiB: a partially present block whose other sectors come from the parent (also blocking).
      expect(await completesBeforeLoopTurns(() => blocking.read(buf, 4 * MiB))).toBe(true)
      expect(buf.equals(model.subarray(4 * MiB, 6 * MiB))).toBe(true)
      expect(await completesBeforeLoopTurns(() => pooled.read(buf, 4 * MiB))).toBe(false)
    } finally {
      await pooled.close()
      await blocking.close()
    }
  })

  it('read a raw file on the calling thread', async () => {
    const file = join(dir, 'plain.raw')
    const bytes = randomBytes(3 * MiB + 100)
    await writeFile(file, bytes)
    const disk = await openDisk(file, { blockingReads: true })
    try {
      const buf = Buffer.alloc(bytes.length)
      expect(await completesBeforeLoopTurns(() => disk.read(buf, 0))).toBe(true)
      expect(buf.equals(bytes)).toBe(true)
    } finally {
      await disk.close()
    }
  })
})

// The VirtualDisk contract, run against every format through the dispatcher: seeded random
// writes (unaligned, across blocks, concurrent) against an in-memory model, the map's shape,
// reopening, range and read-only errors.
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type CreateOptions,
  createDisk,
  DiskRangeError,
  openDisk,
  ReadOnlyDiskError,
  type VirtualDisk,
} from '../../../src/hyperv/disk/index.js'
import { pattern, readAll, tempDir } from './fixtures.js'

const MiB = 1024 * 1024
const SIZE = 8 * MiB

interface Case {
  name: string
  options: CreateOptions
  /** Builds a parent first and returns its expected content (differencing cases). */
  parent?: CreateOptions
}

const CASES: Case[] = [
  { name: 'raw', options: { format: 'raw', virtualSize: SIZE } },
  { name: 'vhd fixed', options: { format: 'vhd', subformat: 'fixed', virtualSize: SIZE } },
  { name: 'vhd dynamic', options: { format: 'vhd', virtualSize: SIZE, blockSize: 512 * 1024 } },
  {
    name: 'vhd differencing',
    options: { format: 'vhd', blockSize: 512 * 1024 },
    parent: { format: 'vhd', virtualSize: SIZE },
  },
  { name: 'vhdx dynamic', options: { format: 'vhdx', virtualSize: SIZE, blockSize: MiB } },
  { name: 'vhdx fixed', options: { format: 'vhdx', subformat: 'fixed', virtualSize: SIZE, blockSize: MiB } },
  {
    name: 'vhdx differencing',
    options: { format: 'vhdx', blockSize: MiB },
    parent: { format: 'vhdx', virtualSize: SIZE, blockSize: MiB },
  },
]

function rng(seed: number) {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 2 ** 32
  }
}

let dir: string
beforeAll(async () => {
  dir = await tempDir('disk-contract')
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe.each(CASES)('VirtualDisk contract: $name', ({ name, options, parent }) => {
  const file = () => join(dir, `${name.replace(/\W+/g, '-')}.img`)
  const model = Buffer.alloc(SIZE)

  beforeAll(async () => {
    let parentPath: string | undefined
    if (parent) {
      parentPath = join(dir, `${name.replace(/\W+/g, '-')}-parent.img`)
      const p = await createDisk(parentPath, parent)
      for (const [off, len, id] of [
        [0, 300_000, 1],
        [3 * MiB - 100, MiB, 2],
        [SIZE - 4096, 4096, 3],
      ]) {
        const data = pattern(id, len)
        await p.write(data, off)
        data.copy(model, off)
      }
      await p.close()
    }
    const d = await createDisk(file(), { ...options, parent: parentPath })
    expect(d.virtualSize).toBe(SIZE)
    await d.close()
  })

  it('random writes, some concurrent, read back as the model, before and after reopening', async () => {
    const next = rng(name.length * 7919)
    const d = await openDisk(file(), { readOnly: false })
    try {
      for (let round = 0; round < 12; round++) {
        // One large write anywhere, across block boundaries…
        const bigLen = 1 + Math.floor(next() * 1.5 * MiB)
        const bigOff = Math.floor(next() * (SIZE - bigLen))
        const big = pattern(round + 100, bigLen)
        big.copy(model, bigOff)
        await d.write(big, bigOff)
        // …then small concurrent ones in disjoint eighths of the disk (their order is moot).
        const batch: Promise<void>[] = []
        for (let lane = round % 2; lane < 8; lane += 1 + Math.floor(next() * 3)) {
          const len = 1 + Math.floor(next() * 5000)
          const off = lane * (SIZE / 8) + Math.floor(next() * (SIZE / 8 - len))
          const data = pattern(round * 10 + lane, len)
          data.copy(model, off)
          batch.push(d.write(data, off))
        }
        await Promise.all(batch)
      }
      const probe = Buffer.alloc(777)
      await d.read(probe, 5 * MiB - 300)
      expect(probe.equals(model.subarray(5 * MiB - 300, 5 * MiB + 477))).toBe(true)
      expect((await readAll(d)).equals(model)).toBe(true)
      await d.flush()
    } finally {
      await d.close()
    }
    const again = await openDisk(file())
    try {
      expect((await readAll(again)).equals(model)).toBe(true)
    } finally {
      await again.close()
    }
  })

  it('maps [0, size) exactly, coalesced, with zero extents reading as zeros', async () => {
    const d = await openDisk(file())
    try {
      for (const resolveParents of [false, true]) {
        const map = await d.map({ resolveParents })
        let pos = 0
        map.forEach((e, i) => {
          expect(e.start).toBe(pos)
          expect(e.length).toBeGreaterThan(0)
          if (i > 0) expect(e.state).not.toBe(map[i - 1].state)
          pos += e.length
        })
        expect(pos).toBe(SIZE)
        if (resolveParents || !parent) expect(map.some((e) => e.state === 'parent')).toBe(false)
        for (const e of map.filter((x) => x.state === 'zero'))
          expect(model.subarray(e.start, e.start + e.length).every((b) => b === 0)).toBe(true)
      }
      const info = d.info()
      expect(info).toMatchObject({ format: d.format, subformat: d.subformat, virtualSize: SIZE })
      expect(info.parent === null).toBe(!parent)
    } finally {
      await d.close()
    }
  })

  it('refuses reads past the end and writes when read-only', async () => {
    const d: VirtualDisk = await openDisk(file())
    try {
      expect(d.readOnly).toBe(true)
      await expect(d.read(Buffer.alloc(10), SIZE - 5)).rejects.toBeInstanceOf(DiskRangeError)
      await expect(d.write(Buffer.alloc(1), 0)).rejects.toBeInstanceOf(ReadOnlyDiskError)
    } finally {
      await d.close()
    }
    const w = await openDisk(file(), { readOnly: false })
    try {
      await expect(w.write(Buffer.alloc(10), SIZE - 5)).rejects.toBeInstanceOf(DiskRangeError)
    } finally {
      await w.close()
    }
  })
})

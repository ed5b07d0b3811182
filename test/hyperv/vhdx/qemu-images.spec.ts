// Images made by qemu-img/qemu-io read through our reader exactly as `qemu-img convert -O raw`
// reads them, and report qemu's virtual size.
import { writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { afterAll, describe, expect, it, vi } from 'vitest'
import {
  HAVE_QEMU,
  MiB,
  openRead,
  prng,
  qemuRaw,
  qemuVirtualSize,
  randomBytes,
  readAll,
  run,
  tempDir,
} from './fixtures.js'

const tmp = tempDir('vhdx-qemu')
afterAll(() => tmp.remove())

interface Case {
  name: string
  subformat: 'dynamic' | 'fixed'
  blockSize: string
  zero: 'on' | 'off'
  size: number
  /** qemu-io writes: [offset, length, pattern]. */
  writes: [number, number, number][]
}

const cases: Case[] = [
  {
    name: 'dynamic 1M, zero on, odd size',
    subformat: 'dynamic',
    blockSize: '1M',
    zero: 'on',
    size: 20 * MiB + 7 * 512,
    writes: [
      [0, 4096, 0xab],
      [MiB - 512, 2 * MiB + 1024, 0x5a],
      [20 * MiB, 7 * 512, 0xcd],
    ],
  },
  {
    name: 'dynamic 1M, zero off',
    subformat: 'dynamic',
    blockSize: '1M',
    zero: 'off',
    size: 9 * MiB + 512,
    writes: [
      [5 * MiB + 512, 12345 * 512 - 5 * MiB, 0x11],
      [9 * MiB, 512, 0xee],
    ],
  },
  {
    name: 'dynamic 8M, zero on',
    subformat: 'dynamic',
    blockSize: '8M',
    zero: 'on',
    size: 30 * MiB,
    writes: [
      [7 * MiB, 2 * MiB, 0xab],
      [29 * MiB, MiB, 0x01],
    ],
  },
  {
    name: 'fixed 8M, zero off (FULLY_PRESENT blocks)',
    subformat: 'fixed',
    blockSize: '8M',
    zero: 'off',
    size: 21 * MiB + 4096,
    writes: [
      [4096, 65536, 0xab],
      [16 * MiB - 100 * 512, 200 * 512, 0x77],
    ],
  },
  {
    name: 'fixed 32M, zero on (ZERO entries even for fixed)',
    subformat: 'fixed',
    blockSize: '32M',
    zero: 'on',
    size: 40 * MiB,
    writes: [[33 * MiB, 3 * MiB, 0x42]],
  },
  {
    name: 'dynamic 32M, zero off, size past a block',
    subformat: 'dynamic',
    blockSize: '32M',
    zero: 'off',
    size: 48 * MiB + 512,
    writes: [
      [31 * MiB, 2 * MiB, 0x99],
      [48 * MiB, 512, 0x98],
    ],
  },
  {
    name: 'dynamic 256M, disk smaller than one block',
    subformat: 'dynamic',
    blockSize: '256M',
    zero: 'off',
    size: 40 * MiB + 512,
    writes: [
      [0, MiB, 0xab],
      [40 * MiB - 4096, 4608, 0xba],
    ],
  },
]

describe.runIf(HAVE_QEMU)('VHDX made by qemu-img reads like qemu-img convert -O raw', () => {
  it.each(cases)('$name', async (c) => {
    const image = tmp.path(`${c.name.replace(/\W+/g, '-')}.vhdx`)
    run('qemu-img', [
      'create',
      '-q',
      '-f',
      'vhdx',
      '-o',
      `subformat=${c.subformat},block_size=${c.blockSize},block_state_zero=${c.zero}`,
      image,
      String(c.size),
    ])
    for (const [off, len, pattern] of c.writes) {
      run('qemu-io', ['-f', 'vhdx', '-c', `write -P ${pattern} ${off} ${len}`, image])
    }
    const expected = qemuRaw(image, `${image}.raw`)
    const disk = await openRead(image)
    try {
      expect(disk.virtualSize).toBe(qemuVirtualSize(image))
      expect(disk.virtualSize).toBe(c.size)
      expect(disk.subformat).toBe(c.subformat)
      const ours = await readAll(disk)
      expect(ours.equals(expected)).toBe(true)
      // Every written range is reported as data; nothing outside an allocated block is.
      const map = await disk.map()
      expect(map.reduce((n, e) => n + e.length, 0)).toBe(c.size)
      for (const [off, len] of c.writes) {
        const covered = map.filter(
          (e) => e.state === 'data' && e.start <= off && e.start + e.length >= off + len,
        )
        expect(covered.length).toBe(1)
      }
      const data = map.filter((e) => e.state === 'data').reduce((n, e) => n + e.length, 0)
      expect(disk.info().allocatedBytes).toBeGreaterThanOrEqual(data)
    } finally {
      await disk.close()
    }
  })

  it('a disk converted from a random sparse raw file reads back identical, at random offsets too', async () => {
    const rand = prng(42)
    const size = 24 * MiB + 3 * 512
    const raw = Buffer.alloc(size)
    for (let i = 0; i < 12; i++) {
      const off = Math.floor(rand() * (size - 300_000))
      randomBytes(rand, 1 + Math.floor(rand() * 300_000)).copy(raw, off)
    }
    const rawPath = tmp.path('random.raw')
    writeFileSync(rawPath, raw)
    const image = tmp.path('random.vhdx')
    run('qemu-img', ['convert', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=1M', rawPath, image])
    const disk = await openRead(image)
    try {
      expect((await readAll(disk)).equals(raw)).toBe(true)
      expect(qemuRaw(image, `${image}.out`).equals(raw)).toBe(true)
      for (let i = 0; i < 200; i++) {
        const off = Math.floor(rand() * size)
        const len = Math.min(size - off, 1 + Math.floor(rand() * 3 * MiB))
        const buf = Buffer.alloc(len + 7)
        await disk.read(buf, off, len, 7)
        expect(buf.subarray(7).equals(raw.subarray(off, off + len))).toBe(true)
      }
      await expect(disk.read(Buffer.alloc(2), size - 1)).rejects.toThrow(/past the virtual size/)
    } finally {
      await disk.close()
    }
  })

  it('a 4 MiB read over contiguous blocks is a few syscalls, not thousands', async () => {
    const image = tmp.path('contig.vhdx')
    run('qemu-img', [
      'create',
      '-q',
      '-f',
      'vhdx',
      '-o',
      'subformat=fixed,block_size=1M,block_state_zero=off',
      image,
      '64M',
    ])
    const disk = await openRead(image)
    const probe = await open(image)
    const fileHandleProto = Object.getPrototypeOf(probe) as { read: () => unknown }
    await probe.close()
    const spy = vi.spyOn(fileHandleProto, 'read')
    try {
      const buf = Buffer.alloc(4 * MiB)
      await disk.read(buf, 10 * MiB + 512)
      expect(spy.mock.calls.length).toBeGreaterThanOrEqual(1)
      expect(spy.mock.calls.length).toBeLessThanOrEqual(2)
    } finally {
      spy.mockRestore()
      await disk.close()
    }
  })
})

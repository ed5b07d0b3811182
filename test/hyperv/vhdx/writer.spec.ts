// Files our writer makes: qemu-img check finds no error and qemu-img compare finds them equal
// to a raw file holding the same writes (512-byte sectors; qemu refuses 4096-byte logical
// sectors with ENOTSUP, so those are checked through libvhdi), and our reader agrees.
import { readFileSync, writeFileSync } from 'node:fs'
import { afterAll, describe, expect, it } from 'vitest'
import { DiskRangeError, ReadOnlyDiskError } from '../../../src/hyperv/disk/errors.js'
import { createVhdx, openVhdx } from '../../../src/hyperv/disk/vhdx/index.js'
import {
  HAVE_PYVHDI,
  HAVE_QEMU,
  MiB,
  openParent,
  openRead,
  prng,
  pyvhdiInfo,
  pyvhdiRead,
  randomBytes,
  readAll,
  run,
  tempDir,
} from './fixtures.js'

const tmp = tempDir('vhdx-writer')
afterAll(() => tmp.remove())

interface Case {
  subformat: 'dynamic' | 'fixed'
  blockSize: number
  logicalSectorSize: 512 | 4096
  size: number
  seed: number
}

const cases: Case[] = [
  { subformat: 'dynamic', blockSize: MiB, logicalSectorSize: 512, size: 24 * MiB + 512, seed: 1 },
  { subformat: 'dynamic', blockSize: 8 * MiB, logicalSectorSize: 512, size: 40 * MiB, seed: 2 },
  { subformat: 'dynamic', blockSize: 32 * MiB, logicalSectorSize: 512, size: 70 * MiB + 3 * 512, seed: 3 },
  { subformat: 'fixed', blockSize: 2 * MiB, logicalSectorSize: 512, size: 21 * MiB, seed: 4 },
  { subformat: 'fixed', blockSize: 32 * MiB, logicalSectorSize: 512, size: 33 * MiB, seed: 5 },
  { subformat: 'dynamic', blockSize: 256 * MiB, logicalSectorSize: 512, size: 40 * MiB + 512, seed: 6 },
  { subformat: 'fixed', blockSize: 256 * MiB, logicalSectorSize: 512, size: 24 * MiB, seed: 10 },
  { subformat: 'dynamic', blockSize: MiB, logicalSectorSize: 4096, size: 24 * MiB, seed: 7 },
  { subformat: 'fixed', blockSize: 8 * MiB, logicalSectorSize: 4096, size: 20 * MiB, seed: 8 },
  { subformat: 'dynamic', blockSize: 4 * MiB, logicalSectorSize: 4096, size: 30 * MiB + 4096, seed: 9 },
]

/** Random scattered writes (unaligned, some spanning blocks, one at the very end). */
function scatteredWrites(seed: number, size: number): { offset: number; data: Buffer }[] {
  const rand = prng(seed)
  const writes: { offset: number; data: Buffer }[] = []
  for (let i = 0; i < 30; i++) {
    const length = 1 + Math.floor(rand() * 400_000)
    writes.push({ offset: Math.floor(rand() * (size - length)), data: randomBytes(rand, length) })
  }
  writes.push({ offset: size - 3 * MiB - 11, data: randomBytes(rand, 3 * MiB) })
  writes.push({ offset: size - 100, data: randomBytes(rand, 100) })
  return writes
}

describe('VHDX writer', () => {
  it.each(cases)(
    '$subformat, $blockSize-byte blocks, $logicalSectorSize-byte sectors, $size bytes',
    async (c) => {
      const name = `w-${c.seed}`
      const image = tmp.path(`${name}.vhdx`)
      const model = Buffer.alloc(c.size)
      const disk = await createVhdx(
        image,
        {
          format: 'vhdx',
          subformat: c.subformat,
          virtualSize: c.size,
          blockSize: c.blockSize,
          logicalSectorSize: c.logicalSectorSize,
        },
        openParent,
      )
      for (const w of scatteredWrites(c.seed, c.size)) {
        await disk.write(w.data, w.offset)
        w.data.copy(model, w.offset)
      }
      await disk.close()

      const back = await openRead(image)
      try {
        expect(back.info()).toMatchObject({
          format: 'vhdx',
          subformat: c.subformat,
          virtualSize: c.size,
          blockSize: c.blockSize,
          logicalSectorSize: c.logicalSectorSize,
          physicalSectorSize: 4096,
          parent: null,
        })
        expect((await readAll(back)).equals(model)).toBe(true)
        const map = await back.map()
        for (const e of map.filter((x) => x.state === 'zero')) {
          expect(model.subarray(e.start, e.start + e.length).every((x) => x === 0)).toBe(true)
        }
      } finally {
        await back.close()
      }

      if (HAVE_PYVHDI) {
        const info = pyvhdiInfo(image)
        expect(info.mediaSize).toBe(c.size)
        expect(info.bytesPerSector).toBe(c.logicalSectorSize)
        expect(pyvhdiRead([image]).equals(model)).toBe(true)
      }
      if (HAVE_QEMU && c.logicalSectorSize === 512) {
        const rawPath = tmp.path(`${name}.raw`)
        writeFileSync(rawPath, model)
        expect(run('qemu-img', ['check', '-f', 'vhdx', image])).toMatch(/No errors were found/)
        expect(run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', image, rawPath])).toMatch(
          /Images are identical/,
        )
      }
    },
  )

  it('a session updates both headers with a higher sequence and a new DataWriteGuid before writing', async () => {
    const image = tmp.path('headers.vhdx')
    const disk = await createVhdx(image, { format: 'vhdx', virtualSize: 8 * MiB, blockSize: MiB }, openParent)
    await disk.close()
    const before = readFileSync(image)
    const w = await openVhdx(image, { readOnly: false, openParent })
    await w.write(Buffer.from('x'), 5)
    await w.close()
    const after = readFileSync(image)
    const seq = (b: Buffer, at: number) => Number(b.readBigUInt64LE(at + 8))
    const dataGuid = (b: Buffer, at: number) => b.subarray(at + 32, at + 48).toString('hex')
    const maxBefore = Math.max(seq(before, 64 * 1024), seq(before, 128 * 1024))
    expect(seq(after, 64 * 1024)).toBeGreaterThan(maxBefore)
    expect(seq(after, 128 * 1024)).toBeGreaterThan(maxBefore)
    expect(dataGuid(after, 64 * 1024)).toBe(dataGuid(after, 128 * 1024))
    expect(dataGuid(after, 64 * 1024)).not.toBe(dataGuid(before, 64 * 1024))
    if (HAVE_QEMU) expect(run('qemu-img', ['check', image])).toMatch(/No errors were found/)
  })

  it('concurrent writes are serialized; reads, range checks and read-only are enforced', async () => {
    const image = tmp.path('concurrent.vhdx')
    const size = 16 * MiB
    const model = Buffer.alloc(size)
    const disk = await createVhdx(image, { format: 'vhdx', virtualSize: size, blockSize: MiB }, openParent)
    const rand = prng(99)
    const writes = Array.from({ length: 24 }, () => {
      const length = 1 + Math.floor(rand() * 2 * MiB)
      return { offset: Math.floor(rand() * (size - length)), data: randomBytes(rand, length) }
    })
    await Promise.all(writes.map((w) => disk.write(w.data, w.offset)))
    for (const w of writes) w.data.copy(model, w.offset)
    expect((await readAll(disk)).equals(model)).toBe(true)
    await expect(disk.write(Buffer.alloc(2), size - 1)).rejects.toBeInstanceOf(DiskRangeError)
    await disk.flush()
    await disk.close()
    const ro = await openRead(image)
    await expect(ro.write(Buffer.alloc(1), 0)).rejects.toBeInstanceOf(ReadOnlyDiskError)
    expect((await readAll(ro)).equals(model)).toBe(true)
    await ro.close()
    await expect(ro.read(Buffer.alloc(1), 0)).rejects.toThrow(/disk is closed/)
    await expect(createVhdx(image, { format: 'vhdx', virtualSize: size }, openParent)).rejects.toThrow(
      /EEXIST/,
    )
    if (HAVE_QEMU) expect(run('qemu-img', ['check', image])).toMatch(/No errors were found/)
  })

  it
    .runIf(HAVE_QEMU)
    .each([
      'subformat=dynamic,block_size=1M,block_state_zero=on',
      'subformat=dynamic,block_size=8M,block_state_zero=off',
      'subformat=fixed,block_size=2M,block_state_zero=off',
      'subformat=fixed,block_size=1M,block_state_zero=on',
    ])('writes into a file qemu-img made (%s) stay valid for qemu-img', async (opts) => {
    const size = 20 * MiB + 512
    const image = tmp.path(`q-${opts.replace(/\W+/g, '-')}.vhdx`)
    run('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', opts, image, String(size)])
    run('qemu-io', ['-f', 'vhdx', '-c', `write -P 0x61 ${3 * MiB - 512} ${MiB}`, image])
    const model = Buffer.alloc(size)
    model.fill(0x61, 3 * MiB - 512, 4 * MiB - 512)
    const w = await openVhdx(image, { readOnly: false, openParent })
    for (const { offset, data } of scatteredWrites(11, size)) {
      await w.write(data, offset)
      data.copy(model, offset)
    }
    await w.close()
    const rawPath = tmp.path('q-model.raw')
    writeFileSync(rawPath, model)
    expect(run('qemu-img', ['check', '-f', 'vhdx', image])).toMatch(/No errors were found/)
    expect(run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', image, rawPath])).toMatch(
      /Images are identical/,
    )
  })

  it('refuses block sizes that are not a power of two from 1 to 256 MiB', async () => {
    for (const blockSize of [3 * MiB, 512 * 1024, 512 * MiB]) {
      await expect(
        createVhdx(
          tmp.path(`bad-${blockSize}.vhdx`),
          { format: 'vhdx', virtualSize: 8 * MiB, blockSize },
          openParent,
        ),
      ).rejects.toThrow(/power of two/)
    }
  })
})

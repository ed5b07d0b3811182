import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDisk, detectFormat, openDisk } from '../../src/hyperv/disk/index.js'

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replimesh-raw-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('raw disks', () => {
  it('detects a plain file as raw and reads its bytes', async () => {
    const file = join(dir, 'plain.img')
    const bytes = randomBytes(3 * 4096 + 17)
    await writeFile(file, bytes)
    expect(await detectFormat(file)).toBe('raw')
    const disk = await openDisk(file)
    try {
      expect(disk.format).toBe('raw')
      expect(disk.readOnly).toBe(true)
      expect(disk.virtualSize).toBe(bytes.length)
      expect(await disk.map()).toEqual([{ start: 0, length: bytes.length, state: 'data' }])
      const out = Buffer.alloc(5000)
      await disk.read(out, 1000)
      expect(out.equals(bytes.subarray(1000, 6000))).toBe(true)
      await expect(disk.read(Buffer.alloc(10), bytes.length - 5)).rejects.toThrow(/past the end/)
      await expect(disk.write(Buffer.alloc(1), 0)).rejects.toThrow(/read-only/)
      expect(disk.info()).toMatchObject({ format: 'raw', subformat: 'fixed', parent: null, blockSize: 0 })
    } finally {
      await disk.close()
    }
  })

  it('writes in place when opened writable', async () => {
    const file = join(dir, 'rw.img')
    await writeFile(file, Buffer.alloc(8192))
    const disk = await openDisk(file, { readOnly: false })
    await disk.write(Buffer.from('hello'), 4000)
    await disk.close()
    const back = await readFile(file)
    expect(back.subarray(4000, 4005).toString()).toBe('hello')
    expect(back.length).toBe(8192)
  })

  it('creates a sparse raw file and refuses to replace one', async () => {
    const file = join(dir, 'new.img')
    const disk = await createDisk(file, { format: 'raw', virtualSize: 1 << 20 })
    await disk.write(Buffer.from([1, 2, 3]), (1 << 20) - 3)
    await disk.close()
    expect((await stat(file)).size).toBe(1 << 20)
    await expect(createDisk(file, { format: 'raw', virtualSize: 10 })).rejects.toThrow(/already exists/)
  })

  it('maps a file with no blocks allocated as zero, and as data once written', async () => {
    const file = join(dir, 'sparse.img')
    await writeFile(file, '')
    await truncate(file, 64 << 20)
    const disk = await openDisk(file, { readOnly: false })
    try {
      expect(await disk.map()).toEqual([{ start: 0, length: 64 << 20, state: 'zero' }])
      await disk.write(Buffer.from([7]), 40 << 20)
      expect(await disk.map()).toEqual([{ start: 0, length: 64 << 20, state: 'data' }])
      const out = Buffer.alloc(2)
      await disk.read(out, (40 << 20) - 1)
      expect([...out]).toEqual([0, 7])
    } finally {
      await disk.close()
    }
    // Below 1 MiB st_blocks is not trusted (inline data has none): read as data.
    const small = join(dir, 'small-sparse.img')
    await writeFile(small, '')
    await truncate(small, 512 * 1024)
    const s = await openDisk(small)
    expect(await s.map()).toEqual([{ start: 0, length: 512 * 1024, state: 'data' }])
    await s.close()
  })

  it('names the file when it is missing', async () => {
    await expect(openDisk(join(dir, 'nope.img'))).rejects.toThrow(/nope\.img: no such file/)
  })
})

// Differencing chains made by our writer (base + child + grandchild, partial-block writes that
// leave blocks PARTIALLY_PRESENT) read identically through our reader and through libvhdi
// with set_parent, and match a model of the writes.
import { createHash } from 'node:crypto'
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import { afterAll, describe, expect, it } from 'vitest'
import { ParentMismatchError } from '../../../src/hyperv/disk/errors.js'
import type { VirtualDisk } from '../../../src/hyperv/disk/types.js'
import { createVhdx, openVhdx } from '../../../src/hyperv/disk/vhdx/index.js'
import {
  batEntry,
  batOffsetOf,
  HAVE_PYVHDI,
  MiB,
  openParent,
  openRead,
  prng,
  pyvhdiInfo,
  pyvhdiRead,
  pyvhdiReadRanges,
  randomBytes,
  readAll,
  readHead,
  tempDir,
} from './fixtures.js'

const tmp = tempDir('vhdx-diff')
afterAll(() => tmp.remove())

type Write = [offset: number, length: number]

async function applyWrites(disk: VirtualDisk, model: Buffer, writes: Write[], seed: number): Promise<void> {
  const rand = prng(seed)
  for (const [offset, length] of writes) {
    const data = randomBytes(rand, length)
    await disk.write(data, offset)
    data.copy(model, offset)
  }
}

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')

describe.each([512, 4096] as const)('differencing chain with %d-byte logical sectors', (lss) => {
  const size = 24 * MiB
  const base = tmp.path(`base-${lss}.vhdx`)
  const child = tmp.path(`child-${lss}.vhdx`)
  const grandchild = tmp.path(`grandchild-${lss}.vhdx`)
  const model = Buffer.alloc(size)
  let childModel: Buffer

  it('builds base, child and grandchild with partial-block writes', async () => {
    const b = await createVhdx(
      base,
      { format: 'vhdx', virtualSize: size, blockSize: 2 * MiB, logicalSectorSize: lss },
      openParent,
    )
    await applyWrites(
      b,
      model,
      [
        [0, 5 * MiB + 3],
        [9 * MiB - 7, 1000],
        [20 * MiB, 4 * MiB],
      ],
      1,
    )
    await b.close()

    const c = await createVhdx(child, { format: 'vhdx', parent: base, blockSize: MiB }, openParent)
    expect(c.subformat).toBe('differencing')
    expect(c.logicalSectorSize).toBe(lss)
    await applyWrites(
      c,
      model,
      [
        [4097, 10], // inside one sector: read-modify-write of the sector from the parent
        [MiB + 300, 5000], // unaligned, crosses sectors
        [3 * MiB, MiB], // a whole block: FULLY_PRESENT
        [6 * MiB - 4096, 12288], // spans a NOT_PRESENT block edge into the next
        [MiB + 200_000, 70_000], // second write into an already partial block
        [MiB + 700, 2000], // rewrite of sectors the partial block already holds
        [size - 513, 513], // the last sector(s)
      ],
      2,
    )
    await c.close()
    childModel = Buffer.from(model)

    const g = await createVhdx(grandchild, { format: 'vhdx', parent: child, blockSize: 4 * MiB }, openParent)
    await applyWrites(
      g,
      model,
      [
        [4100, 3],
        [MiB + 1000, 2 * MiB],
        [17 * MiB + 5, 33_333],
      ],
      3,
    )
    await g.close()

    // The child's block 1 is PARTIALLY_PRESENT (state 7) and its chunk's sector bitmap is
    // present (state 6), as read by an independent parser of the BAT.
    const file = readFileSync(child)
    expect(batEntry(file, 1).state).toBe(7)
    expect(batEntry(file, 3).state).toBe(6)
    const chunkRatio = (2 ** 23 * lss) / MiB
    expect(batEntry(file, chunkRatio).state).toBe(6)
  })

  it('our reader returns the writes through the chain', async () => {
    const g = await openRead(grandchild)
    try {
      expect(g.info().parent).toBe(child)
      expect(g.parent?.info().parent).toBe(base)
      expect((await readAll(g)).equals(model)).toBe(true)
      const c = await openRead(child)
      expect((await readAll(c)).equals(childModel)).toBe(true)
      await c.close()
    } finally {
      await g.close()
    }
  })

  it.runIf(HAVE_PYVHDI)(
    'libvhdi with set_parent reads the same bytes and the same parent identifier',
    async () => {
      expect(pyvhdiRead([grandchild, child, base]).equals(model)).toBe(true)
      expect(pyvhdiRead([child, base]).equals(childModel)).toBe(true)
      const b = await openRead(base)
      const guid = (b as unknown as { vhdxDataWriteGuid: string }).vhdxDataWriteGuid
      await b.close()
      expect(pyvhdiInfo(child).parentIdentifier?.toLowerCase()).toBe(guid.slice(1, -1))
      expect(pyvhdiInfo(child).bytesPerSector).toBe(lss)
    },
  )

  it('a partial block whose sectors all become present turns FULLY_PRESENT', async () => {
    const path = tmp.path(`promote-${lss}.vhdx`)
    const d = await createVhdx(path, { format: 'vhdx', parent: base, blockSize: MiB }, openParent)
    const first = Buffer.alloc(MiB / 2 + lss, 0x31)
    const second = Buffer.alloc(MiB / 2, 0x32)
    await d.write(first, 5 * MiB)
    expect(batEntry(readHead(path, 8 * MiB), 5).state).toBe(7)
    await d.write(second, 5 * MiB + MiB / 2)
    await d.close()
    expect(batEntry(readHead(path, 8 * MiB), 5).state).toBe(6)
    const baseDisk = await openRead(base)
    const expected = await readAll(baseDisk)
    await baseDisk.close()
    first.copy(expected, 5 * MiB)
    second.copy(expected, 5 * MiB + MiB / 2)
    const r = await openRead(path)
    expect((await readAll(r)).equals(expected)).toBe(true)
    await r.close()
    if (HAVE_PYVHDI) expect(pyvhdiRead([path, base]).equals(expected)).toBe(true)
  })

  it('map says data, parent and zero, and resolves parents to data or zero', async () => {
    const c = await openRead(child)
    try {
      const own = await c.map()
      expect(new Set(own.map((e) => e.state))).toEqual(new Set(['data', 'parent']))
      const sector = own.find((e) => e.start <= 4097 && e.start + e.length > 4097)
      expect(sector).toEqual({ start: 4096 - (4096 % lss), length: lss, state: 'data' })
      const resolved = await c.map({ resolveParents: true })
      let at = 0
      for (const e of resolved) {
        expect(e.start).toBe(at)
        expect(e.state === 'data' || e.state === 'zero').toBe(true)
        if (e.state === 'zero')
          expect(childModel.subarray(e.start, e.start + e.length).every((x) => x === 0)).toBe(true)
        at += e.length
      }
      expect(at).toBe(size)
    } finally {
      await c.close()
    }
  })
})

describe('differencing disks larger than one sector bitmap chunk', () => {
  it.runIf(HAVE_PYVHDI)('5 GiB chain with 256 MiB and 1 MiB blocks: bitmaps of chunk 1 work', async () => {
    const GiB = 1024 * MiB
    const size = 5 * GiB
    const base = tmp.path('big-base.vhdx')
    const child = tmp.path('big-child.vhdx')
    const grandchild = tmp.path('big-grandchild.vhdx')
    const rand = prng(77)
    const writes: [string, number, Buffer][] = [
      [base, 4 * GiB + 300 * MiB - 5000, randomBytes(rand, 3 * MiB)],
      [base, 100, randomBytes(rand, 1000)],
      [child, 4 * GiB + 300 * MiB + 1234, randomBytes(rand, 20_000)], // 256 MiB blocks: chunk 1
      [child, 5 * GiB - 700, randomBytes(rand, 700)],
      [grandchild, 4 * GiB + 300 * MiB - 513, randomBytes(rand, 1500)], // 1 MiB blocks: chunk 1
      [grandchild, 90, randomBytes(rand, 20)],
    ]
    const blockSizes: Record<string, number> = { [base]: 32 * MiB, [child]: 256 * MiB, [grandchild]: MiB }
    for (const path of [base, child, grandchild]) {
      const parent = path === base ? undefined : path === child ? base : child
      const d = await createVhdx(
        path,
        { format: 'vhdx', virtualSize: parent ? undefined : size, parent, blockSize: blockSizes[path] },
        openParent,
      )
      for (const [target, offset, data] of writes) if (target === path) await d.write(data, offset)
      await d.close()
    }
    const ranges: [number, number][] = [
      [0, 2 * MiB],
      [4 * GiB + 299 * MiB, 8 * MiB],
      [5 * GiB - 2 * MiB, 2 * MiB],
    ]
    const expected = ranges.map(([off, len]) => {
      const m = Buffer.alloc(len)
      for (const [, o, data] of writes) {
        const a = Math.max(o, off)
        const b = Math.min(o + data.length, off + len)
        if (b > a) data.copy(m, a - off, a - o, b - o)
      }
      return m
    })
    const g = await openRead(grandchild)
    try {
      const ours = await Promise.all(
        ranges.map(async ([off, len]) => {
          const b = Buffer.alloc(len)
          await g.read(b, off)
          return b
        }),
      )
      expect(Buffer.concat(ours).equals(Buffer.concat(expected))).toBe(true)
      expect(pyvhdiReadRanges([grandchild, child, base], ranges).equals(Buffer.concat(expected))).toBe(true)
      const resolved = await g.map({ resolveParents: true })
      expect(resolved.reduce((n, e) => n + e.length, 0)).toBe(size)
    } finally {
      await g.close()
    }
    const file = readHead(child, 8 * MiB) // the BAT, not the sparse payload
    expect(batEntry(file, 17 + 1).state).toBe(7) // payload block 17 (chunk 1) is BAT index 17 + 1
    expect(batEntry(file, 33).state).toBe(6) // chunk 1's sector bitmap: 1 * (16 + 1) + 16
  })
})

describe('differencing disks without sector bitmap blocks', () => {
  it('a child whose bitmap entry is NOT_PRESENT reads its parent and allocates the bitmap on a partial write', async () => {
    const size = 8 * MiB
    const model = Buffer.alloc(size)
    const base = tmp.path('nosb-base.vhdx')
    const child = tmp.path('nosb-child.vhdx')
    const b = await createVhdx(base, { format: 'vhdx', virtualSize: size, blockSize: MiB }, openParent)
    await applyWrites(b, model, [[100, 5000]], 8)
    await b.close()
    await (await createVhdx(child, { format: 'vhdx', parent: base, blockSize: MiB }, openParent)).close()
    // As another writer may leave it: the chunk's sector bitmap entry NOT_PRESENT (BAT index 4096).
    const fd = openSync(child, 'r+')
    const head = readHead(child, 8 * MiB)
    writeSync(fd, Buffer.alloc(8), 0, 8, batOffsetOf(head) + 4096 * 8)
    closeSync(fd)
    expect(batEntry(readHead(child, 8 * MiB), 4096).state).toBe(0)
    const r = await openRead(child)
    expect((await readAll(r)).equals(model)).toBe(true)
    await r.close()

    const w = await openVhdx(child, { readOnly: false, openParent })
    await applyWrites(
      w,
      model,
      [
        [2 * MiB + 1000, 3000],
        [2 * MiB + 600_000, 10],
      ],
      9,
    )
    await w.close()
    const after = readHead(child, 8 * MiB)
    expect(batEntry(after, 4096).state).toBe(6)
    expect(batEntry(after, 2).state).toBe(7)
    const d = await openRead(child)
    expect((await readAll(d)).equals(model)).toBe(true)
    await d.close()
    if (HAVE_PYVHDI) expect(pyvhdiRead([child, base]).equals(model)).toBe(true)
  })
})

describe('differencing parents', () => {
  it('finds a moved chain by relative_path, and refuses a parent that changed or is missing', async () => {
    const size = 8 * MiB
    const model = Buffer.alloc(size)
    const base = tmp.path('p-base.vhdx')
    const child = tmp.path('p-child.vhdx')
    const b = await createVhdx(base, { format: 'vhdx', virtualSize: size, blockSize: MiB }, openParent)
    await applyWrites(b, model, [[0, 3 * MiB]], 4)
    await b.close()
    const c = await createVhdx(child, { format: 'vhdx', parent: base }, openParent)
    await applyWrites(c, model, [[MiB + 512, 1024]], 5)
    await c.close()

    const moved = tmp.path('moved')
    mkdirSync(moved)
    renameSync(base, `${moved}/p-base.vhdx`)
    renameSync(child, `${moved}/p-child.vhdx`)
    const before = sha(`${moved}/p-base.vhdx`)
    const w = await openVhdx(`${moved}/p-child.vhdx`, { readOnly: false, openParent })
    expect(w.info().parent).toBe(`${moved}/p-base.vhdx`)
    await applyWrites(w, model, [[5 * MiB + 1, 2]], 6)
    expect((await readAll(w)).equals(model)).toBe(true)
    await w.close()
    expect(sha(`${moved}/p-base.vhdx`)).toBe(before) // the parent is never written

    // Writing to the parent gives it a new DataWriteGuid: the child no longer matches.
    const pb = await openVhdx(`${moved}/p-base.vhdx`, { readOnly: false, openParent })
    await pb.write(Buffer.from([1]), 0)
    await pb.close()
    await expect(openRead(`${moved}/p-child.vhdx`)).rejects.toBeInstanceOf(ParentMismatchError)
    await expect(openRead(`${moved}/p-child.vhdx`)).rejects.toThrow(/DataWriteGuid/)

    renameSync(`${moved}/p-base.vhdx`, `${moved}/elsewhere.vhdx`)
    await expect(openRead(`${moved}/p-child.vhdx`)).rejects.toThrow(/parent not found/)
  })
})

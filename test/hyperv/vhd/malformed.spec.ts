// Broken VHDs give a named error with the file and what is wrong, quickly; never a hang, a
// crash or a wrong answer. A property-based fuzz (fast-check) covers what the hand-made cases miss.
import { copyFile, readFile, rm, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CorruptDiskError, createDisk, DiskError, openDisk } from '../../../src/hyperv/disk/index.js'
import { vhdChecksum } from '../../../src/hyperv/disk/vhd/format.js'
import { pattern, readAll, tempDir } from './fixtures.js'

const MiB = 1024 * 1024
let dir: string
let dynamic: string
let fixed: string
let child: string
let content: Buffer

beforeAll(async () => {
  dir = await tempDir('vhd-bad')
  dynamic = join(dir, 'good.vhd')
  fixed = join(dir, 'fixed.vhd')
  child = join(dir, 'child.vhd')
  content = Buffer.alloc(6 * MiB)
  pattern(1, 3 * MiB).copy(content, MiB)
  for (const [file, subformat] of [
    [dynamic, 'dynamic'],
    [fixed, 'fixed'],
  ] as const) {
    const d = await createDisk(file, { format: 'vhd', subformat, virtualSize: content.length })
    await d.write(content.subarray(MiB, 4 * MiB), MiB)
    await d.close()
  }
  const c = await createDisk(child, { format: 'vhd', parent: dynamic })
  await c.write(pattern(2, 4096), 8192)
  await c.close()
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function variant(name: string, from: string, edit: (b: Buffer) => void): Promise<string> {
  const b = await readFile(from)
  edit(b)
  const file = join(dir, name)
  await writeFile(file, b)
  return file
}

function fixHeaderChecksum(b: Buffer) {
  b.writeUInt32BE(vhdChecksum(b.subarray(512, 1536), 36), 512 + 36)
}

describe('malformed VHDs', () => {
  it('uses the footer at the end when the copy at 0 is damaged, and the reverse', async () => {
    const headBad = await variant('head-bad.vhd', dynamic, (b) => {
      b[100] ^= 0xff
    })
    const tailBad = await variant('tail-bad.vhd', dynamic, (b) => {
      b[b.length - 400] ^= 0xff
    })
    for (const file of [headBad, tailBad]) {
      const d = await openDisk(file)
      expect((await readAll(d)).equals(content)).toBe(true)
      await d.close()
    }
  })

  it.each([
    [
      'both footers damaged',
      'dyn',
      (b: Buffer) => {
        b[70] ^= 1
        b[b.length - 512 + 70] ^= 1
      },
      /footer checksum/,
    ],
    [
      'fixed footer damaged',
      'fixed',
      (b: Buffer) => {
        b[b.length - 512 + 50] ^= 1
      },
      /checksum/,
    ],
    [
      'dynamic header checksum',
      'dyn',
      (b: Buffer) => {
        b[512 + 40] ^= 1
      },
      /dynamic header checksum/,
    ],
    [
      'block size not a power of two',
      'dyn',
      (b: Buffer) => {
        b.writeUInt32BE(3 * MiB, 512 + 32)
        fixHeaderChecksum(b)
      },
      /block size 3145728 is not a power of two/,
    ],
    [
      'BAT entry past the end',
      'dyn',
      (b: Buffer) => {
        b.writeUInt32BE(0x00ffffff, 1536)
        fixHeaderChecksum(b)
      },
      /BAT entry 0 points past the end/,
    ],
    [
      'BAT too small for the size',
      'dyn',
      (b: Buffer) => {
        b.writeUInt32BE(1, 512 + 28)
        fixHeaderChecksum(b)
      },
      /BAT of 1 entries is too small/,
    ],
    [
      'header offset past the end',
      'dyn',
      (b: Buffer) => {
        for (const at of [0, b.length - 512]) {
          b.writeBigUInt64BE(1n << 40n, at + 16)
          b.writeUInt32BE(vhdChecksum(b.subarray(at, at + 512), 64), at + 64)
        }
      },
      /dynamic header offset points past the end/,
    ],
  ])('%s: CorruptDiskError naming the file', async (name, base, edit, message) => {
    const file = await variant(`${name.replace(/\W+/g, '-')}.vhd`, base === 'dyn' ? dynamic : fixed, edit)
    const err = await openDisk(file).catch((e) => e)
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(err.message).toContain(file)
    expect(err.message).toMatch(message)
  })

  it('a file cut short is refused', async () => {
    const cut = join(dir, 'cut.vhd')
    await copyFile(dynamic, cut)
    await truncate(cut, 3 * MiB)
    await expect(openDisk(cut)).rejects.toThrow(/cut\.vhd: BAT entry \d+ points past the end/)
    await truncate(cut, 700)
    await expect(openDisk(cut)).rejects.toBeInstanceOf(DiskError)
  })

  it('a differencing disk whose parent locators point nowhere names the parent', async () => {
    const orphan = await variant('orphan.vhd', child, (b) => {
      // Blank the ParentName and both locator codes: nothing left to find the parent by.
      b.fill(0, 512 + 64, 512 + 576 + 48)
      fixHeaderChecksum(b)
    })
    await expect(openDisk(orphan)).rejects.toThrow(/orphan\.vhd: parent not found/)
  })

  it('property: mutations of footer, header and BAT give a DiskError or a good read', async () => {
    const good = await readFile(child)
    const regions = [
      [0, 512],
      [512, 1536],
      [1536, 2048],
      [good.length - 512, good.length],
    ]
    const mutation = fc.record({
      region: fc.integer({ min: 0, max: regions.length - 1 }),
      edits: fc.array(fc.record({ pos: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }), {
        minLength: 1,
        maxLength: 4,
      }),
      // Re-sealing the header checksum reaches the checks behind it.
      refix: fc.boolean(),
    })
    let refused = 0
    await fc.assert(
      fc.asyncProperty(mutation, async ({ region, edits, refix }) => {
        const b = Buffer.from(good)
        const [lo, hi] = regions[region]
        for (const e of edits) b[lo + (e.pos % (hi - lo))] = e.byte
        if (refix && lo >= 512 && hi <= 1536) fixHeaderChecksum(b)
        const file = join(dir, 'fuzz.vhd')
        await writeFile(file, b)
        try {
          const d = await openDisk(file)
          try {
            await readAll(d)
            await d.map({ resolveParents: true })
          } finally {
            await d.close()
          }
        } catch (err) {
          if (!(err instanceof DiskError)) throw err
          refused++
        }
      }),
      { numRuns: 100, seed: 0x2545f491 },
    )
    expect(refused).toBeGreaterThan(0)
  })
})

describe('crash-safe block allocation', () => {
  it('a block written but not yet in the BAT is invisible and harmless', async () => {
    const file = join(dir, 'crash.vhd')
    await copyFile(dynamic, file)
    const before = await readFile(file)
    const d = await openDisk(file, { readOnly: false })
    await d.write(pattern(3, 4096), 5 * MiB) // block 2, unallocated until now
    await d.close()
    const after = await readFile(file)
    // The crash we model: everything reached the disk except the BAT entry, written last.
    const batAt = 1536 + 2 * 4
    expect(after.readUInt32BE(batAt)).not.toBe(0xffffffff)
    after.writeUInt32BE(0xffffffff, batAt)
    expect(after.length).toBeGreaterThan(before.length)
    const torn = join(dir, 'torn.vhd')
    await writeFile(torn, after)
    const t = await openDisk(torn)
    expect((await readAll(t)).equals(content)).toBe(true)
    await t.close()
    // And the file stays writable: the next allocation goes past the leaked block.
    const w = await openDisk(torn, { readOnly: false })
    await w.write(pattern(4, 512), 5 * MiB)
    await w.close()
    const expected = Buffer.from(content)
    pattern(4, 512).copy(expected, 5 * MiB)
    const r = await openDisk(torn)
    expect((await readAll(r)).equals(expected)).toBe(true)
    await r.close()
  })
})

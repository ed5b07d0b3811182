// Broken files give a named error that says which structure and where, quickly; a damaged
// copy of a redundant structure (header, region table) falls back to the other copy.
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CorruptDiskError, DiskError, UnsupportedDiskError } from '../../../src/hyperv/disk/errors.js'
import { crc32c, createVhdx } from '../../../src/hyperv/disk/vhdx/index.js'
import { batOffsetOf, HAVE_QEMU, MiB, openParent, openRead, prng, readAll, run, tempDir } from './fixtures.js'

const tmp = tempDir('vhdx-bad')
afterAll(() => tmp.remove())

const SIZE = 8 * MiB
let good: Buffer
let content: Buffer

beforeAll(async () => {
  const path = tmp.path('good.vhdx')
  const d = await createVhdx(path, { format: 'vhdx', virtualSize: SIZE, blockSize: MiB }, openParent)
  await d.write(Buffer.alloc(MiB + 5, 0xab), 0)
  await d.write(Buffer.alloc(4096, 0xcd), 3 * MiB)
  await d.close()
  good = readFileSync(path)
  const r = await openRead(path)
  content = await readAll(r)
  await r.close()
})

/** Writes a damaged copy and returns its path. */
function damaged(name: string, edit: (b: Buffer) => Buffer | undefined): string {
  const copy = Buffer.from(good)
  const out = edit(copy) ?? copy
  const path = tmp.path(`${name}.vhdx`)
  writeFileSync(path, out)
  return path
}

function refixChecksum(b: Buffer, at: number, length: number): void {
  b.writeUInt32LE(0, at + 4)
  b.writeUInt32LE(crc32c(b.subarray(at, at + length)), at + 4)
}

async function openError(path: string): Promise<Error> {
  const err = await openRead(path).then(
    async (d) => {
      await d.close()
      return null
    },
    (e: Error) => e,
  )
  if (!err) throw new Error(`${path} opened, but should not have`)
  return err
}

const META_FILE_PARAMETERS = Buffer.from('3767a1ca36fa434db3b633f0aa44e76b', 'hex')

/** The file offset of the File Parameters item, found from the region table (MS-VHDX §2.6). */
function fileParametersOffset(b: Buffer): number {
  const table = b.subarray(192 * 1024)
  const metaGuid = Buffer.from('06a27c8b90479a4bb8fe575f050f886e', 'hex')
  for (let i = 0; i < table.readUInt32LE(8); i++) {
    const e = table.subarray(16 + i * 32)
    if (!e.subarray(0, 16).equals(metaGuid)) continue
    const region = Number(e.readBigUInt64LE(16))
    for (let j = 0; j < b.readUInt16LE(region + 10); j++) {
      const m = b.subarray(region + 32 + j * 32)
      if (m.subarray(0, 16).equals(META_FILE_PARAMETERS)) return region + m.readUInt32LE(16)
    }
  }
  throw new Error('no File Parameters')
}

describe('CRC-32C', () => {
  it('matches the standard check value and the checksums qemu-img writes', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283)
    expect(crc32c(Buffer.alloc(0))).toBe(0)
    // Continuing a CRC over a split buffer equals the CRC of the whole, at every split.
    const data = Buffer.from(Array.from({ length: 77 }, (_, i) => (i * 37) & 0xff))
    for (let n = 0; n <= data.length; n++) {
      expect(crc32c(data.subarray(n), crc32c(data.subarray(0, n)))).toBe(crc32c(data))
    }
    if (HAVE_QEMU) {
      const path = tmp.path('qemu.vhdx')
      run('qemu-img', ['create', '-q', '-f', 'vhdx', path, '8M'])
      const header = Buffer.from(readFileSync(path).subarray(64 * 1024, 68 * 1024))
      const stored = header.readUInt32LE(4)
      header.writeUInt32LE(0, 4)
      expect(crc32c(header)).toBe(stored)
    }
  })
})

describe('malformed VHDX', () => {
  it('bad file identifier signature', async () => {
    const err = await openError(damaged('sig', (b) => void b.write('vhdxfilX', 0, 'latin1')))
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(err.message).toMatch(/file identifier: signature.*at file offset 0/)
  })

  it.each([64 * 1024, 128 * 1024])(
    'a bad checksum in one header (at %d) falls back to the other',
    async (at) => {
      const d = await openRead(
        damaged(`hdr-${at}`, (b) => {
          b[at + 200] ^= 1
        }),
      )
      expect((await readAll(d)).equals(content)).toBe(true)
      await d.close()
    },
  )

  it('bad checksums in both headers are refused', async () => {
    const err = await openError(
      damaged('hdr-both', (b) => {
        b[64 * 1024 + 4] ^= 1
        b[128 * 1024 + 4] ^= 1
      }),
    )
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(err.message).toMatch(/header: both copies are invalid \(1: bad checksum; 2: bad checksum\).*65536/)
  })

  it('a bad region table copy falls back; both bad are refused', async () => {
    const d = await openRead(
      damaged('rt-1', (b) => {
        b[192 * 1024 + 20] ^= 1
      }),
    )
    expect((await readAll(d)).equals(content)).toBe(true)
    await d.close()
    const err = await openError(
      damaged('rt-both', (b) => {
        b[192 * 1024 + 20] ^= 1
        b[256 * 1024 + 20] ^= 1
      }),
    )
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(err.message).toMatch(/region table: both copies are invalid/)
  })

  it('a truncated BAT is refused', async () => {
    const bat = batOffsetOf(good)
    const err = await openError(damaged('bat-cut', (b) => b.subarray(0, bat + 4096)))
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(err.message).toMatch(
      new RegExp(`BAT region extends past the end of the file.*at file offset ${bat}`),
    )
  })

  it('a BAT region placed past the end of the file is refused', async () => {
    const err = await openError(
      damaged('bat-far', (b) => {
        for (const t of [192 * 1024, 256 * 1024]) {
          const e = b.subarray(t + 16, t + 16 + 32 * b.readUInt32LE(t + 8))
          for (let i = 0; i < e.length; i += 32) {
            if (e.readUInt32LE(i) === 0x2dc27766) e.writeBigUInt64LE(1024n * 1024n * 1024n, i + 16)
          }
          refixChecksum(b, t, 64 * 1024)
        }
      }),
    )
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(err.message).toMatch(/BAT region extends past the end of the file/)
  })

  it('a BAT entry pointing past the end of the file is refused', async () => {
    const bat = batOffsetOf(good)
    const err = await openError(
      damaged('bat-entry', (b) => void b.writeBigUInt64LE(1024n * 1024n * 1024n + 6n, bat + 3 * 8)),
    )
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(err.message).toMatch(
      new RegExp(`BAT: entry 3 points to 1073741824, past the end.*at file offset ${bat + 24}`),
    )
  })

  it.each([3 * MiB, 512 * 1024, 0, 512 * MiB])('block size %d is refused', async (blockSize) => {
    const err = await openError(
      damaged(`bs-${blockSize}`, (b) => void b.writeUInt32LE(blockSize, fileParametersOffset(b))),
    )
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(err.message).toMatch(
      new RegExp(`metadata File Parameters: block size ${blockSize} is not a power of two`),
    )
  })

  it.each([0, 4096, 100 * 1024, 200 * 1024, MiB + 100])(
    'a file cut to %d bytes is refused',
    async (length) => {
      const path = damaged(`cut-${length}`, (b) => b.subarray(0, length))
      truncateSync(path, length)
      const err = await openError(path)
      expect(err).toBeInstanceOf(CorruptDiskError)
    },
  )

  it('random bytes are refused', async () => {
    const rand = prng(7)
    const path = tmp.path('random.bin')
    writeFileSync(path, Buffer.from(Array.from({ length: 2 * MiB }, () => (rand() * 256) | 0)))
    expect(await openError(path)).toBeInstanceOf(CorruptDiskError)
  })

  it('an unknown required region, or an unknown header version, is unsupported rather than corrupt', async () => {
    const region = await openError(
      damaged('unknown-region', (b) => {
        for (const t of [192 * 1024, 256 * 1024]) {
          const n = b.readUInt32LE(t + 8)
          const e = t + 16 + n * 32
          b.fill(0x42, e, e + 16)
          b.writeBigUInt64LE(BigInt(10 * MiB), e + 16)
          b.writeUInt32LE(MiB, e + 24)
          b.writeUInt32LE(1, e + 28)
          b.writeUInt32LE(n + 1, t + 8)
          refixChecksum(b, t, 64 * 1024)
        }
      }),
    )
    expect(region).toBeInstanceOf(UnsupportedDiskError)
    expect(region.message).toMatch(/unknown required region/)
    const version = await openError(
      damaged('header-v2', (b) => {
        for (const h of [64 * 1024, 128 * 1024]) {
          b.writeUInt16LE(2, h + 66)
          refixChecksum(b, h, 4096)
        }
      }),
    )
    expect(version).toBeInstanceOf(UnsupportedDiskError)
    expect(version.message).toMatch(/header version 2/)
  })

  it.each([
    [1, 'UNDEFINED'],
    [2, 'ZERO'],
    [3, 'UNMAPPED'],
    [5, 'UNMAPPED of the 0.95 draft'],
  ])('BAT state %d (%s) reads as zeros', async (state) => {
    const bat = batOffsetOf(good)
    const path = damaged(`state-${state}`, (b) => {
      b[bat + 3 * 8] = (b[bat + 3 * 8] & ~7) | state
    })
    const d = await openRead(path)
    const expected = Buffer.from(content)
    expected.fill(0, 3 * MiB, 4 * MiB)
    expect((await readAll(d)).equals(expected)).toBe(true)
    expect(await d.map()).toEqual([
      { start: 0, length: 2 * MiB, state: 'data' },
      { start: 2 * MiB, length: 6 * MiB, state: 'zero' },
    ])
    expect(d.info().allocatedBytes).toBe(2 * MiB)
    await d.close()
  })

  it.each([4, 7])('BAT state %d is refused in a dynamic disk', async (state) => {
    const bat = batOffsetOf(good)
    const err = await openError(
      damaged(`bad-state-${state}`, (b) => {
        b[bat + 3 * 8] = (b[bat + 3 * 8] & ~7) | state
      }),
    )
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(err.message).toMatch(new RegExp(`BAT: entry 3 has state ${state}`))
  })

  it('property: mutated headers, region tables, metadata and BAT give a named error or a good read', async () => {
    const path = tmp.path('fuzz.vhdx')
    writeFileSync(path, good)
    const bat = batOffsetOf(good)
    const meta = fileParametersOffset(good) - 64 * 1024
    const targets = [
      { at: 64 * 1024, length: 80, crc: 4096 },
      { at: 128 * 1024, length: 80, crc: 4096 },
      { at: 192 * 1024, length: 16 + 64, crc: 64 * 1024 },
      { at: meta, length: 32 + 6 * 32, crc: 0 },
      { at: meta + 64 * 1024, length: 200, crc: 0 },
      { at: bat, length: 64, crc: 0 },
    ]
    const mutation = fc.record({
      target: fc.integer({ min: 0, max: targets.length - 1 }),
      edits: fc.array(fc.record({ pos: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }), {
        minLength: 1,
        maxLength: 4,
      }),
      // Most cases re-seal the checksum so the checks behind it are reached too.
      refix: fc.boolean(),
    })
    const fd = openSync(path, 'r+')
    let opened = 0
    try {
      await fc.assert(
        fc.asyncProperty(mutation, async ({ target, edits, refix }) => {
          const t = targets[target]
          const region = Buffer.from(good.subarray(t.at, t.at + Math.max(t.length, t.crc)))
          for (const e of edits) region[e.pos % t.length] = e.byte
          if (t.crc && refix) refixChecksum(region, 0, t.crc)
          writeSync(fd, region, 0, region.length, t.at)
          try {
            const d = await openRead(path)
            opened++
            try {
              // A mutated size may be large: read a bounded prefix, not the whole disk.
              await d.read(Buffer.alloc(Math.min(d.virtualSize, 16 * MiB)), 0)
              await d.map()
            } catch (e) {
              expect(e).toBeInstanceOf(DiskError)
            } finally {
              await d.close()
            }
          } catch (e) {
            expect(e, String(e)).toBeInstanceOf(DiskError)
          } finally {
            writeSync(fd, good, t.at, region.length, t.at)
          }
        }),
        { numRuns: 300, seed: 2024 },
      )
    } finally {
      closeSync(fd)
    }
    expect(opened).toBeGreaterThan(0)
  })
})

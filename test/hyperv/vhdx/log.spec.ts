// A VHDX whose log holds updates never applied (what a crash between logging and applying
// leaves): read-only opens see the logged state without writing the file; writable opens
// replay it into the file and clear the log; qemu-img check -r all, replaying the same log
// its own way, agrees.
import { createHash } from 'node:crypto'
import {
  closeSync,
  copyFileSync,
  openSync,
  readFileSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { afterAll, describe, expect, it } from 'vitest'
import { CorruptDiskError, DiskError } from '../../../src/hyperv/disk/errors.js'
import {
  crc32c,
  createVhdx,
  type LogUpdate,
  openVhdx,
  writeVhdxDirtyLog,
} from '../../../src/hyperv/disk/vhdx/index.js'
import {
  batEntry,
  batOffsetOf,
  HAVE_QEMU,
  MiB,
  openParent,
  openRead,
  prng,
  qemuRaw,
  readAll,
  run,
  tempDir,
} from './fixtures.js'

const tmp = tempDir('vhdx-log')
afterAll(() => tmp.remove())

const SIZE = 16 * MiB
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')

interface Fixture {
  /** The content before the log is applied. */
  clean: Buffer
  /** Entry 1: a data sector and a zeroed range inside block 0. */
  entry1: LogUpdate[]
  /** Entry 2: allocates block 5 past the end of the file (a BAT page) and fills two sectors. */
  entry2: LogUpdate[]
  /** The file size once the log is applied: the new block is wholly inside. */
  lastFileOffset: number
}

async function makeDisk(path: string): Promise<Fixture> {
  const clean = Buffer.alloc(SIZE)
  const d = await createVhdx(path, { format: 'vhdx', virtualSize: SIZE, blockSize: MiB }, openParent)
  const a = Buffer.alloc(MiB, 0xaa)
  await d.write(a, 0)
  a.copy(clean, 0)
  const b = Buffer.alloc(5000, 0xbb)
  await d.write(b, 2 * MiB + 77)
  b.copy(clean, 2 * MiB + 77)
  await d.close()
  const file = readFileSync(path)
  const block0 = batEntry(file, 0).fileOffset
  const newBlock = Math.ceil(file.length / MiB) * MiB
  const entryAt = batOffsetOf(file) + 5 * 8
  const page = Math.floor(entryAt / 4096) * 4096
  const batPage = Buffer.from(file.subarray(page, page + 4096))
  batPage.writeBigUInt64LE(BigInt(newBlock) | 6n, entryAt - page)
  return {
    clean,
    lastFileOffset: newBlock + MiB,
    entry1: [
      { fileOffset: block0 + 8192, data: Buffer.alloc(4096, 0x5c) },
      { fileOffset: block0 + 65536, zeroLength: 8192 },
    ],
    entry2: [
      { fileOffset: page, data: batPage },
      { fileOffset: newBlock + 4096, data: Buffer.alloc(4096, 0x77) },
      // qemu's replay extends the file only as far as the logged sectors reach, not to
      // LastFileOffset: log the block's last sector too, so both replays agree.
      { fileOffset: newBlock + MiB - 4096, data: Buffer.alloc(4096, 0x78) },
    ],
  }
}

function afterEntry1(clean: Buffer): Buffer {
  const m = Buffer.from(clean)
  m.fill(0x5c, 8192, 12288)
  m.fill(0, 65536, 65536 + 8192)
  return m
}

function afterBoth(clean: Buffer): Buffer {
  const m = afterEntry1(clean)
  m.fill(0x77, 5 * MiB + 4096, 5 * MiB + 8192)
  m.fill(0x78, 6 * MiB - 4096, 6 * MiB)
  return m
}

function logGuids(path: string): string[] {
  const f = readFileSync(path)
  return [64 * 1024, 128 * 1024].map((at) => f.subarray(at + 48, at + 64).toString('hex'))
}

describe('VHDX log replay', () => {
  it('read-only: reads as the log says, never writing the file', async () => {
    const path = tmp.path('ro.vhdx')
    const fx = await makeDisk(path)
    await writeVhdxDirtyLog(path, [...fx.entry1, ...fx.entry2], {
      entries: 2,
      lastFileOffset: fx.lastFileOffset,
    })
    expect(logGuids(path).some((g) => g !== '0'.repeat(32))).toBe(true)
    const before = sha(path)
    const d = await openRead(path)
    try {
      expect((await readAll(d)).equals(afterBoth(fx.clean))).toBe(true)
      expect((await d.map()).find((e) => e.start === 5 * MiB)).toEqual({
        start: 5 * MiB,
        length: MiB,
        state: 'data',
      })
    } finally {
      await d.close()
    }
    expect(sha(path)).toBe(before)
  })

  it.runIf(HAVE_QEMU)(
    'qemu-img refuses it read-only, and after its own replay (check -r all) agrees',
    async () => {
      const path = tmp.path('qemu.vhdx')
      const fx = await makeDisk(path)
      await writeVhdxDirtyLog(path, [...fx.entry1, ...fx.entry2], {
        entries: 2,
        lastFileOffset: fx.lastFileOffset,
      })
      expect(() => run('qemu-img', ['convert', '-O', 'raw', path, tmp.path('x.raw')])).toThrow(
        /log that needs to be replayed/,
      )
      const copy = tmp.path('qemu-copy.vhdx')
      copyFileSync(path, copy)
      run('qemu-img', ['check', '-r', 'all', copy])
      const ours = await openRead(path)
      expect((await readAll(ours)).equals(qemuRaw(copy, tmp.path('qemu-copy.raw')))).toBe(true)
      await ours.close()
    },
  )

  it('writable: replays into the file, clears LogGuid, and the result passes qemu-img check', async () => {
    const path = tmp.path('rw.vhdx')
    const fx = await makeDisk(path)
    await writeVhdxDirtyLog(path, [...fx.entry1, ...fx.entry2], {
      entries: 2,
      lastFileOffset: fx.lastFileOffset,
    })
    const w = await openVhdx(path, { readOnly: false, openParent })
    await w.close()
    expect(logGuids(path)).toEqual(['0'.repeat(32), '0'.repeat(32)])
    const d = await openRead(path)
    const expected = afterBoth(fx.clean)
    expect((await readAll(d)).equals(expected)).toBe(true)
    await d.close()
    if (HAVE_QEMU) {
      expect(run('qemu-img', ['check', path])).toMatch(/No errors were found/)
      const raw = tmp.path('rw.raw')
      writeFileSync(raw, expected)
      expect(run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', path, raw])).toMatch(
        /Images are identical/,
      )
    }
  })

  it('a torn second entry is ignored: only the complete first entry applies', async () => {
    const path = tmp.path('torn.vhdx')
    const fx = await makeDisk(path)
    await writeVhdxDirtyLog(path, [...fx.entry1, ...fx.entry2], {
      entries: 2,
      lastFileOffset: fx.lastFileOffset,
    })
    const file = readFileSync(path)
    const logOffset = Number(file.readBigUInt64LE(64 * 1024 + 72))
    // Entry 1 is one descriptor sector and one data sector.
    file[logOffset + 8192 + 4096 + 100] ^= 0xff
    writeFileSync(path, file)
    const d = await openRead(path)
    expect((await readAll(d)).equals(afterEntry1(fx.clean))).toBe(true)
    await d.close()
  })

  it('an entry that wraps around the end of the log ring replays', async () => {
    const path = tmp.path('wrap.vhdx')
    const fx = await makeDisk(path)
    await writeVhdxDirtyLog(path, [...fx.entry1, ...fx.entry2], {
      entries: 2,
      startPosition: MiB - 4096,
      lastFileOffset: fx.lastFileOffset,
    })
    const d = await openRead(path)
    expect((await readAll(d)).equals(afterBoth(fx.clean))).toBe(true)
    await d.close()
  })

  it('a file cut short of the log FlushedFileOffset is refused', async () => {
    const path = tmp.path('cut.vhdx')
    const fx = await makeDisk(path)
    await writeVhdxDirtyLog(path, fx.entry1)
    const size = readFileSync(path).length
    truncateSync(path, size - MiB)
    const err = await openRead(path).catch((e) => e)
    expect(err).toBeInstanceOf(CorruptDiskError)
    expect(String(err.message)).toMatch(/log: .*cut short/)
  })

  it('later updates win: a zero range clears an older page, a newer page overrides the zeros', async () => {
    for (const readOnly of [true, false]) {
      const path = tmp.path(`order-${readOnly}.vhdx`)
      const fx = await makeDisk(path)
      const block0 = batEntry(readFileSync(path), 0).fileOffset
      await writeVhdxDirtyLog(
        path,
        [
          { fileOffset: block0 + 8192, data: Buffer.alloc(4096, 0x5c) },
          { fileOffset: block0 + 8192, zeroLength: 8192 },
          { fileOffset: block0 + 12288, data: Buffer.alloc(4096, 0x66) },
        ],
        { entries: 2 },
      )
      if (!readOnly) await (await openVhdx(path, { readOnly: false, openParent })).close()
      const expected = Buffer.from(fx.clean)
      expected.fill(0, 8192, 12288)
      expected.fill(0x66, 12288, 16384)
      const d = await openRead(path)
      expect((await readAll(d)).equals(expected), `readOnly ${readOnly}`).toBe(true)
      await d.close()
    }
  })

  it('seeded mutations of log entries (checksums refixed or not) never crash or hang', async () => {
    const path = tmp.path('fuzz.vhdx')
    const fx = await makeDisk(path)
    await writeVhdxDirtyLog(path, [...fx.entry1, ...fx.entry2], {
      entries: 2,
      lastFileOffset: fx.lastFileOffset,
    })
    const good = readFileSync(path)
    const logOffset = Number(good.readBigUInt64LE(64 * 1024 + 72))
    const entries = [
      { at: logOffset, length: 8192 },
      { at: logOffset + 8192, length: 12288 },
    ]
    const rand = prng(31)
    const fd = openSync(path, 'r+')
    let replayed = 0
    try {
      for (let i = 0; i < 250; i++) {
        const e = entries[Math.floor(rand() * entries.length)]
        const entry = Buffer.from(good.subarray(e.at, e.at + e.length))
        // Mostly the header and descriptors, where the lengths and offsets live.
        const span = rand() < 0.8 ? 64 + 3 * 32 : e.length
        for (let k = 0, n = 1 + Math.floor(rand() * 3); k < n; k++) {
          entry[Math.floor(rand() * span)] = (rand() * 256) | 0
        }
        if (rand() < 0.7) {
          entry.writeUInt32LE(0, 4)
          entry.writeUInt32LE(crc32c(entry), 4)
        }
        writeSync(fd, entry, 0, entry.length, e.at)
        try {
          const d = await openRead(path)
          try {
            await d.read(Buffer.alloc(SIZE), 0)
            replayed++
          } finally {
            await d.close()
          }
        } catch (err) {
          expect(err, String(err)).toBeInstanceOf(DiskError)
        }
        writeSync(fd, good, e.at, e.length, e.at)
      }
    } finally {
      closeSync(fd)
    }
    expect(replayed).toBeGreaterThan(0)
  })
})

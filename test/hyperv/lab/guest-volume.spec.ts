// The guest's disk layer in-process (no guest process): the freeze keeps the disk files at the
// barrier's instant, release replays the journal in order, references diff exactly, and a
// journal left by a crash is replayed at the next open.
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createDisk } from '../../../src/hyperv/index.js'
import { GuestVolume } from '../../../src/hyperv/lab/guest-volume.js'
import { Journal } from '../../../src/hyperv/lab/journal.js'
import { parseVmConfig, type VmConfig } from '../../../src/hyperv/lab/vm-config.js'
import { MiB } from './helpers.js'

describe('GuestVolume', () => {
  let dir: string
  let config: VmConfig
  const volumes: GuestVolume[] = []
  const open = async () => {
    const v = await GuestVolume.open(dir, config)
    volumes.push(v)
    return v
  }
  const fileBytes = async (i: number, offset: number, length: number) =>
    (await readFile(join(dir, `d${i}.img`))).subarray(offset, offset + length)

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'replimesh-volume-'))
    for (const i of [0, 1])
      await (await createDisk(join(dir, `d${i}.img`), { format: 'raw', virtualSize: 4 * MiB })).close()
    config = parseVmConfig(
      {
        name: 'v',
        id: '6f1c1d3e-3b1a-4c55-9a64-3d2b1f0e9a11',
        disks: [0, 1].map((i) => ({ path: `d${i}.img`, format: 'raw', virtualSize: 4 * MiB })),
        trackingBlockBytes: 4096,
      },
      'test',
    )
  })
  afterEach(async () => {
    for (const v of volumes.splice(0)) await v.close().catch(() => undefined)
    await rm(dir, { recursive: true, force: true })
  })

  it('freezes the files at the barrier, replays the journal in order at release', async () => {
    const v = await open()
    await v.write(0, 0, Buffer.alloc(4096, 1))
    const p0 = await v.freeze(null)
    expect(p0.disks.map((d) => d.changed)).toEqual([null, null])
    await v.write(0, 0, Buffer.alloc(4096, 2))
    await v.write(0, 0, Buffer.alloc(10, 3)) // order matters: 3s over 2s
    await v.write(1, 8192, Buffer.alloc(100, 4))
    expect(v.journalBytes).toBeGreaterThan(0)
    expect((await fileBytes(0, 0, 4096)).every((b) => b === 1)).toBe(true) // frozen
    expect((await fileBytes(1, 8192, 100)).every((b) => b === 0)).toBe(true)
    await expect(v.freeze(null)).rejects.toThrow(/already frozen/)
    const ref = await v.release()
    expect(ref).toMatch(/^lab1:\d+:[0-9a-f]+,[0-9a-f]+$/)
    const d0 = await fileBytes(0, 0, 4096)
    expect(d0.subarray(0, 10).every((b) => b === 3) && d0.subarray(10).every((b) => b === 2)).toBe(true)
    expect((await fileBytes(1, 8192, 100)).every((b) => b === 4)).toBe(true)

    // Since that reference: exactly what was written during and after the freeze.
    await v.write(1, 2 * MiB, Buffer.alloc(1, 5))
    const p1 = await v.freeze(ref)
    expect(p1.disks.map((d) => d.changed)).toEqual([
      [{ offset: 0, length: 4096 }],
      [
        { offset: 8192, length: 4096 },
        { offset: 2 * MiB, length: 4096 },
      ],
    ])
    await v.release()
    await expect(v.release()).rejects.toThrow(/no point/)
  })

  it('answers null for a reference of another tracking, and refuses the record region', async () => {
    const v = await open()
    const p = await v.freeze('lab1:1:0123456789abcdef,0123456789abcdef')
    expect(p.disks.map((d) => d.changed)).toEqual([null, null])
    await v.release()
    await expect(v.write(0, 4 * MiB - 512, Buffer.alloc(512))).rejects.toThrow(/record stream/)
    await expect(v.write(0, 4 * MiB, Buffer.alloc(1))).rejects.toThrow(/outside/)
  })

  it('replays a journal left by a crash at the next open, and then trusts no old reference', async () => {
    const v = await open()
    const ref = await (async () => {
      await v.freeze(null)
      return v.release()
    })()
    // A crash mid-freeze leaves journal entries that never reached the disks: write one by hand.
    const journal = await Journal.create(join(dir, 'point-journal.bin.tmp'))
    await journal.append(1, 4096, Buffer.alloc(300, 9))
    await journal.close(false)
    // "Killed": `v` is never closed before the next open, so its maps were not saved clean
    // (afterEach closes it, to release its file handles).
    const { rename } = await import('node:fs/promises')
    await rename(join(dir, 'point-journal.bin.tmp'), join(dir, 'point-journal.bin'))
    const after = await open()
    expect(after.journalReplayedAtOpen).toBe(1)
    expect(after.mapDistrust).toEqual(['not-clean', 'not-clean'])
    expect((await fileBytes(1, 4096, 300)).every((b) => b === 9)).toBe(true)
    const p = await after.freeze(ref)
    expect(p.disks.map((d) => d.changed)).toEqual([null, null])
    await after.release()
  })
})

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { changedRanges, DirtyMap } from '../../../src/hyperv/lab/dirty-map.js'

describe('changedRanges (pure)', () => {
  it.each([
    { gens: [0, 0, 0, 0], since: 0, want: [] },
    { gens: [1, 0, 0, 0], since: 0, want: [{ offset: 0, length: 100 }] },
    {
      gens: [1, 2, 0, 3],
      since: 0,
      want: [
        { offset: 0, length: 200 },
        { offset: 300, length: 50 },
      ],
    },
    {
      gens: [1, 2, 0, 3],
      since: 1,
      want: [
        { offset: 100, length: 100 },
        { offset: 300, length: 50 },
      ],
    },
    { gens: [1, 2, 0, 3], since: 3, want: [] },
  ])('generations $gens since $since', ({ gens, since, want }) => {
    // 4 blocks of 100 bytes, the last one cut short: the disk is 350 bytes.
    expect(changedRanges(Uint32Array.from(gens), since, 100, 350)).toEqual(want)
  })
})

describe('DirtyMap persistence', () => {
  let dir: string
  let disk: string
  let mapFile: string
  const geometry = { virtualSize: 1024 * 1024, blockBytes: 64 * 1024 }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'replimesh-dirty-'))
    disk = join(dir, 'disk.img')
    mapFile = join(dir, 'disk.dirty')
    await writeFile(disk, Buffer.alloc(geometry.virtualSize))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('marks blocks in generations and answers changed ranges since one', async () => {
    const m = await DirtyMap.open(mapFile, disk, geometry)
    expect(m.distrust).toBe('missing')
    m.setGeneration(1)
    m.mark(100, 10) // block 0
    m.setGeneration(2)
    m.mark(64 * 1024 - 1, 2) // blocks 0 and 1
    m.mark(5 * 64 * 1024, 64 * 1024) // exactly block 5
    expect(m.changedSince(0)).toEqual([
      { offset: 0, length: 128 * 1024 },
      { offset: 320 * 1024, length: 64 * 1024 },
    ])
    expect(m.changedSince(1)).toEqual(m.changedSince(0))
    expect(m.changedSince(2)).toEqual([])
  })

  it('survives a clean save and reopen: same tracking id, same ranges', async () => {
    const m = await DirtyMap.open(mapFile, disk, geometry)
    m.setGeneration(4)
    m.mark(200 * 1024, 1)
    await m.saveClean(disk)
    const again = await DirtyMap.open(mapFile, disk, geometry)
    expect(again.distrust).toBeNull()
    expect(again.trackingId).toBe(m.trackingId)
    expect(again.generation).toBe(4)
    expect(again.changedSince(3)).toEqual([{ offset: 192 * 1024, length: 64 * 1024 }])
  })

  it('does not trust a map whose owner crashed (opened, never saved clean): new tracking id', async () => {
    const m = await DirtyMap.open(mapFile, disk, geometry)
    m.mark(0, 1)
    await m.saveClean(disk)
    const running = await DirtyMap.open(mapFile, disk, geometry) // marks the file not-clean
    running.mark(512 * 1024, 1)
    // ... the guest is killed here: no saveClean.
    const after = await DirtyMap.open(mapFile, disk, geometry)
    expect(after.distrust).toBe('not-clean')
    expect(after.trackingId).not.toBe(m.trackingId)
  })

  it('does not trust a map when the disk file changed after the clean save', async () => {
    const m = await DirtyMap.open(mapFile, disk, geometry)
    await m.saveClean(disk)
    await new Promise((r) => setTimeout(r, 20))
    await writeFile(disk, Buffer.alloc(geometry.virtualSize, 1)) // written by someone else
    const after = await DirtyMap.open(mapFile, disk, geometry)
    expect(after.distrust).toBe('disk-changed')
    expect(after.trackingId).not.toBe(m.trackingId)
  })

  it('does not trust a corrupt map or one of another geometry', async () => {
    const m = await DirtyMap.open(mapFile, disk, geometry)
    await m.saveClean(disk)
    const bytes = await readFile(mapFile)
    bytes[130] ^= 0xff // in the body (header is 128 bytes)
    await writeFile(mapFile, bytes)
    expect((await DirtyMap.open(mapFile, disk, geometry)).distrust).toBe('corrupt')
    const m2 = await DirtyMap.open(mapFile, disk, geometry)
    await m2.saveClean(disk)
    expect((await DirtyMap.open(mapFile, disk, { ...geometry, blockBytes: 4096 })).distrust).toBe('geometry')
  })
})

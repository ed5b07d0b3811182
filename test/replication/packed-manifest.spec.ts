// PackedManifest: the source's manifests as 32-byte ids in one buffer, read and written as hex,
// compared a run at a time.
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  entryFrames,
  fullEntries,
  PAGE_ENTRIES,
  PackedManifest,
} from '../../src/replication/packed-manifest.js'

const id = (s: string) => createHash('sha256').update(s).digest('hex')

describe('PackedManifest', () => {
  it('holds hex ids and zeros as the manifest file lays them out', () => {
    const ids = [id('a'), null, id('c')]
    const m = PackedManifest.fromIds(ids)
    expect(m.length).toBe(3)
    expect(m.toArray()).toEqual(ids)
    expect(m.isZero(1)).toBe(true)
    const file = m.pageBytes(0)
    expect(file.length).toBe(3 * 32)
    expect(file.subarray(64, 96).toString('hex')).toBe(id('c'))
    expect(file.subarray(32, 64).every((b: number) => b === 0)).toBe(true)
    expect(PackedManifest.fromBytes(file).toArray()).toEqual(ids)
    m.set(0, null)
    m.setBytes(1, Buffer.from(id('b'), 'hex'))
    expect(m.toArray()).toEqual([null, id('b'), id('c')])
    expect(m.holds(1, Buffer.from(id('b'), 'hex'))).toBe(true)
    expect(m.holds(1, Buffer.from(id('c'), 'hex'))).toBe(false)
    expect(m.holds(0, null)).toBe(true)
    expect(m.holds(2, null)).toBe(false)
    const out = Buffer.alloc(40, 7)
    m.copyEntry(2, out, 8)
    expect(out.subarray(8).toString('hex')).toBe(id('c'))
    // A trailing partial entry (a torn file) is not an entry.
    expect(PackedManifest.fromBytes(Buffer.alloc(32 * 2 + 5)).length).toBe(2)
  })

  it('pages of zeros hold nothing: an empty terabyte costs no page', () => {
    const tib = (1024 * 1024 * 1024 * 1024) / (256 * 1024) // 4 Mi chunks of 256 KiB
    const m = PackedManifest.zeros(tib)
    expect(m.heldBytes).toBe(0)
    m.set(tib - 1, id('last'))
    m.set(5, id('first'))
    expect(m.heldBytes, 'two pages').toBe(2 * PAGE_ENTRIES * 32)
    expect([...m.dataIndexes()]).toEqual([5, tib - 1])
    m.set(5, null)
    expect([...m.dataIndexes()]).toEqual([tib - 1])
    // A page read back from a file of zeros is none either.
    expect(PackedManifest.fromBytes(Buffer.alloc(3 * PAGE_ENTRIES * 32)).heldBytes).toBe(0)
  })

  it('a clone shares pages until either side writes: each keeps its own entries', () => {
    const a = PackedManifest.fromIds(Array.from({ length: 3 * PAGE_ENTRIES }, (_, i) => id(`${i}`)))
    const b = a.clone()
    b.set(1, id('b'))
    a.set(PAGE_ENTRIES + 1, id('a'))
    expect(a.get(1)).toBe(id('1'))
    expect(b.get(1)).toBe(id('b'))
    expect(b.get(PAGE_ENTRIES + 1)).toBe(id(`${PAGE_ENTRIES + 1}`))
    expect(a.get(PAGE_ENTRIES + 1)).toBe(id('a'))
    expect(a.differences(b)).toEqual([1, PAGE_ENTRIES + 1])
    // A clone of a clone, written, leaves both before it alone.
    const c = b.clone()
    c.set(2 * PAGE_ENTRIES, null)
    expect(b.get(2 * PAGE_ENTRIES)).toBe(id(`${2 * PAGE_ENTRIES}`))
    expect(b.differences(c)).toEqual([2 * PAGE_ENTRIES])
  })

  it('run gives one page of entries in file layout, null for zeros', () => {
    const m = PackedManifest.zeros(PAGE_ENTRIES + 10)
    expect(m.run(0, PAGE_ENTRIES)).toBeNull()
    m.set(PAGE_ENTRIES + 3, id('x'))
    const run = m.run(PAGE_ENTRIES, PAGE_ENTRIES + 10)
    expect(run?.length).toBe(10 * 32)
    expect(run?.subarray(96, 128).toString('hex')).toBe(id('x'))
    expect(() => m.run(PAGE_ENTRIES - 1, PAGE_ENTRIES + 1)).toThrow(/within one page/)
  })

  it('refuses entries outside it and ids that are not ids', () => {
    const m = PackedManifest.zeros(4)
    expect(() => m.get(4)).toThrow(/outside 0..3/)
    expect(() => m.set(-1, null)).toThrow(/outside/)
    expect(() => m.isZero(1.5)).toThrow(/outside/)
    expect(() => m.set(0, 'not-hex')).toThrow(/not a chunk id/)
    expect(() => m.differences(PackedManifest.zeros(5))).toThrow(/different lengths/)
  })

  it('differences finds exactly the entries that differ, in order (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3 * 1024 + 5 }),
        fc.array(fc.tuple(fc.nat(), fc.boolean()), { maxLength: 60 }),
        (count, changes) => {
          // Half the time b is a copy (no page shared), half a clone (pages shared until written).
          const a = PackedManifest.fromIds(
            Array.from({ length: count }, (_, i) => (i % 3 ? id(`${i}`) : null)),
          )
          const b = changes.length % 2 ? a.clone() : PackedManifest.fromIds(a.toArray())
          const expected = new Set<number>()
          for (const [at, zero] of changes) {
            if (count === 0) break
            const i = at % count
            const next = zero ? null : id(`changed ${at}`)
            b.set(i, next)
            if (a.get(i) === next) expected.delete(i)
            else expected.add(i)
          }
          expect(a.differences(b)).toEqual([...expected].sort((x, y) => x - y))
          expect(b.differences(a)).toEqual(a.differences(b))
        },
      ),
      { numRuns: 100 },
    )
  })

  it('fullEntries lists the data chunks in order; entryFrames cuts them into frames as they are read', () => {
    const m = PackedManifest.zeros(3 * PAGE_ENTRIES)
    for (const i of [7, PAGE_ENTRIES, 3 * PAGE_ENTRIES - 1]) m.set(i, id(`${i}`))
    const list = fullEntries(m)
    expect(list.length).toBe(3)
    expect([...list]).toEqual(
      [7, PAGE_ENTRIES, 3 * PAGE_ENTRIES - 1].map((index) => ({ index, id: id(`${index}`) })),
    )
    expect([...entryFrames(list, 2)].map((f) => f.length)).toEqual([2, 1])
    expect([...entryFrames(list, 3)].map((f) => f.length)).toEqual([3])
    expect([...entryFrames([], 3)]).toEqual([])
    // Lazy: the first frame is out before the rest of the entries are made.
    let made = 0
    const counted = (function* () {
      for (let index = 0; index < 10; index++) {
        made++
        yield { index, id: null }
      }
    })()
    const frames = entryFrames(counted, 4)
    expect(frames.next().value).toHaveLength(4)
    expect(made).toBe(4)
  })
})

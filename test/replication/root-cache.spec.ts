// RootCache: the incremental manifest root equals the full computation (manifestRoot, which
// builds the tree with TreeBuilder) for random change sets, growth and shrinking, and touches
// only the nodes over the change.
import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { PackedManifest } from '../../src/replication/packed-manifest.js'
import { manifestRoot } from '../../src/replication/point-signature.js'
import { RootCache as PackedRootCache } from '../../src/replication/root-cache.js'

const CHUNK = 4096
const FANOUT = 16
const id = () => randomBytes(32).toString('hex')

/** manifestRoot with a small fanout: the same TreeBuilder, so deep trees come cheap. */
async function fullRoot(virtualSize: number, ids: ReadonlyArray<string | null>, fanout = FANOUT) {
  const { TreeBuilder, treeShape, hashFunction, ZERO_HEX } = await import('../../src/chunkstore/index.js')
  const shape = treeShape(virtualSize, CHUNK, fanout)
  const b = new TreeBuilder(shape, hashFunction('blake3'), async () => {})
  for (let i = 0; i < shape.chunkCount; i++) await b.push(Buffer.from(ids[i] ?? ZERO_HEX, 'hex'))
  return (await b.finish()).toString('hex')
}

/** The packed manifest of an id array, the same object for the same array (RootCache keys by it). */
const packedOf = new WeakMap<ReadonlyArray<string | null>, PackedManifest>()
function packed(ids: ReadonlyArray<string | null>): PackedManifest {
  let m = packedOf.get(ids)
  if (!m) {
    m = PackedManifest.fromIds(ids)
    packedOf.set(ids, m)
  }
  return m
}

/** RootCache spoken to in id arrays (the tests' notation). */
class RootCache extends PackedRootCache {
  override root(
    virtualSize: number,
    chunkSize: number,
    ids: PackedManifest | ReadonlyArray<string | null>,
    base?: { ids: PackedManifest | ReadonlyArray<string | null>; changed: Iterable<number> } | null,
  ): string {
    const p = (m: PackedManifest | ReadonlyArray<string | null>) =>
      m instanceof PackedManifest ? m : packed(m)
    return super.root(virtualSize, chunkSize, p(ids), base && { ids: p(base.ids), changed: base.changed })
  }
}

describe('RootCache', () => {
  it('equals the full root for random changes, zeroing, growth and shrinking (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 3000 }),
        fc.array(
          fc.record({
            // a new size (chunks) or null for the same size
            resize: fc.option(fc.integer({ min: 0, max: 3000 }), { nil: null }),
            changes: fc.array(fc.tuple(fc.nat(), fc.boolean()), { maxLength: 40 }),
          }),
          { minLength: 1, maxLength: 5 },
        ),
        async (startChunks, steps) => {
          const cache = new RootCache('blake3', FANOUT)
          let ids: Array<string | null> = Array.from({ length: startChunks }, (_, i) =>
            i % 7 === 0 ? null : id(),
          )
          // a last partial chunk when the size is odd
          let size = startChunks * CHUNK - (startChunks % 3 === 1 ? 100 : 0)
          expect(cache.root(size, CHUNK, ids)).toBe(await fullRoot(size, ids))
          for (const step of steps) {
            const next = [...ids]
            const changed: number[] = []
            let nextSize = size
            if (step.resize !== null) {
              nextSize = step.resize * CHUNK
              next.length = step.resize
              for (let i = ids.length; i < step.resize; i++) next[i] = i % 2 ? id() : null
            }
            for (const [at, zero] of step.changes) {
              if (next.length === 0) break
              const i = at % next.length
              next[i] = zero ? null : id()
              changed.push(i)
            }
            const got = cache.root(nextSize, CHUNK, next, { ids, changed })
            expect(got).toBe(await fullRoot(nextSize, next))
            ids = next
            size = nextSize
          }
        },
      ),
      { numRuns: 60 },
    )
  })

  it('equals manifestRoot at the real fanout and rehashes only the changed paths', async () => {
    const count = 5000 // depth 2 at fanout 1024
    const ids: Array<string | null> = Array.from({ length: count }, (_, i) => (i % 5 ? id() : null))
    const cache = new RootCache('blake3')
    const size = count * CHUNK
    expect(cache.root(size, CHUNK, ids)).toBe(await manifestRoot(size, CHUNK, ids, 'blake3'))
    expect(cache.stats.nodesHashed).toBe(5 + 1)
    const next = [...ids]
    next[17] = id()
    next[4999] = null
    const root = cache.root(size, CHUNK, next, { ids, changed: [17, 4999] })
    expect(root).toBe(await manifestRoot(size, CHUNK, next, 'blake3'))
    expect(cache.stats).toEqual({ nodesHashed: 3, incremental: true })
    // No change at all: the root is reused.
    expect(cache.root(size, CHUNK, [...next], { ids: next, changed: [] })).toBe(root)
    // An unknown base: built whole, still right.
    const other = [...next]
    other[0] = id()
    expect(cache.root(size, CHUNK, other, { ids: [...next], changed: [0] })).toBe(
      await manifestRoot(size, CHUNK, other, 'blake3'),
    )
    expect(cache.stats.incremental).toBe(false)
  })

  it('all-zero disks and empty disks have the ZERO root like the full computation', async () => {
    const cache = new RootCache('blake3')
    const zeros = new Array(3000).fill(null)
    expect(cache.root(3000 * CHUNK, CHUNK, zeros)).toBe(
      await manifestRoot(3000 * CHUNK, CHUNK, zeros, 'blake3'),
    )
    expect(cache.root(0, CHUNK, [])).toBe(await manifestRoot(0, CHUNK, [], 'blake3'))
  })

  it('per point cost for a 2 GiB disk with a 1 MiB change (printed, not asserted)', async () => {
    const chunk = 256 * 1024
    const size = 2 * 1024 ** 3
    const count = size / chunk
    const ids = Array.from({ length: count }, id)
    const cache = new RootCache('blake3')
    cache.root(size, chunk, ids)
    let prev = ids
    const full: number[] = []
    const inc: number[] = []
    for (let r = 0; r < 5; r++) {
      const next = [...prev]
      const at = (r * 997) % (count - 4)
      const changed = [at, at + 1, at + 2, at + 3] // 1 MiB
      for (const i of changed) next[i] = id()
      let t = performance.now()
      const a = await manifestRoot(size, chunk, next, 'blake3')
      full.push(performance.now() - t)
      t = performance.now()
      const b = cache.root(size, chunk, next, { ids: prev, changed })
      inc.push(performance.now() - t)
      expect(b).toBe(a)
      prev = next
    }
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]
    console.log(
      `root per point, 2 GiB disk (8192 chunks), 1 MiB change: full ${median(full).toFixed(2)} ms, incremental ${median(inc).toFixed(3)} ms (median of 5)`,
    )
  })
})

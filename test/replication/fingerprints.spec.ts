import { createHash, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { changedBlocks, FingerprintCache, fingerprintChunk } from '../../src/replication/fingerprints.js'

const hash = (b: Uint8Array) => createHash('sha256').update(b).digest()

describe('block fingerprints', () => {
  it.each([
    ['nothing changed', [], []],
    ['one byte in block 3', [3 * 4096 + 10], [[3 * 4096, 4096]]],
    ['adjacent blocks merge', [4096, 8192 + 1], [[4096, 8192]]],
    [
      'first and last block',
      [0, 65535],
      [
        [0, 4096],
        [61440, 4096],
      ],
    ],
  ] as Array<[string, number[], Array<[number, number]>]>)('%s', (_n, flips, expected) => {
    const before = new Uint8Array(randomBytes(65536))
    const after = new Uint8Array(before)
    for (const at of flips) after[at] ^= 1
    expect(
      changedBlocks(fingerprintChunk(before, hash), fingerprintChunk(after, hash), after.length),
    ).toEqual(expected)
  })

  it('a short last block is cut to the chunk', () => {
    const before = new Uint8Array(5000)
    const after = new Uint8Array(5000)
    after[4999] = 1
    expect(changedBlocks(fingerprintChunk(before, hash), fingerprintChunk(after, hash), 5000)).toEqual([
      [4096, 904],
    ])
  })

  it('fingerprints of chunks of different lengths are not compared', () => {
    expect(
      changedBlocks(
        fingerprintChunk(new Uint8Array(8192), hash),
        fingerprintChunk(new Uint8Array(4096), hash),
        4096,
      ),
    ).toBeNull()
  })
})

describe('fingerprint cache', () => {
  it('stays within its bytes however many chunks pass, dropping the least recently used', () => {
    const cache = new FingerprintCache(64 * 1024)
    const fp = () => new Uint8Array(512)
    for (let i = 0; i < 10_000; i++) {
      cache.set(`c${i}`, fp())
      if (i % 50 === 0) cache.get('c0') // kept warm (92 entries fit)
      expect(cache.bytes).toBeLessThanOrEqual(64 * 1024)
    }
    // 712 bytes an entry by its estimate: 92 fit.
    expect(cache.size).toBe(Math.floor((64 * 1024) / 712))
    expect(cache.get('c0'), 'the entry used all along').toBeDefined()
    expect(cache.get('c1'), 'an entry never used again').toBeUndefined()
    expect(cache.get('c9999')).toBeDefined()
    // Setting an id again replaces it: the bytes do not grow.
    const before = cache.bytes
    cache.set('c9999', fp())
    expect(cache.bytes).toBe(before)
  })
})

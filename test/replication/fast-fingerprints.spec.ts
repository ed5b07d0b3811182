import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { changedBlocks, fastFingerprintChunk } from '../../src/replication/fingerprints.js'

describe('fast block fingerprints', () => {
  it.each([
    ['nothing changed', [], []],
    ['one byte in block 3', [3 * 4096 + 10], [[3 * 4096, 4096]]],
    ['adjacent blocks merge', [4096, 8192 + 1], [[4096, 8192]]],
    [
      'first and last byte',
      [0, 65535],
      [
        [0, 4096],
        [61440, 4096],
      ],
    ],
    // Two flips of one bit position in one lane cancel in a plain xor-multiply hash.
    ['two top bits in one lane', [3, 19], [[0, 4096]]],
  ] as Array<[string, number[], Array<[number, number]>]>)('%s', (_n, flips, expected) => {
    const before = new Uint8Array(randomBytes(65536))
    const after = new Uint8Array(before)
    for (const at of flips) after[at] ^= 0x80
    expect(changedBlocks(fastFingerprintChunk(before), fastFingerprintChunk(after), after.length)).toEqual(
      expected,
    )
  })

  it('every single-byte change of a block is seen, at any position', () => {
    const before = new Uint8Array(randomBytes(4096))
    const fp = fastFingerprintChunk(before)
    for (let at = 0; at < 4096; at++) {
      const after = new Uint8Array(before)
      after[at] ^= 1 << (at % 8)
      expect(fastFingerprintChunk(after).equals(fp)).toBe(false)
    }
  })

  it('a short last block (not a multiple of 16 bytes) is covered to its last byte', () => {
    const before = new Uint8Array(5003)
    const after = new Uint8Array(5003)
    after[5002] = 1
    expect(changedBlocks(fastFingerprintChunk(before), fastFingerprintChunk(after), 5003)).toEqual([
      [4096, 907],
    ])
  })

  it('an unaligned view fingerprints like an aligned copy', () => {
    const backing = new Uint8Array(randomBytes(8192 + 1))
    const view = backing.subarray(1)
    expect(fastFingerprintChunk(view).equals(fastFingerprintChunk(Uint8Array.from(view)))).toBe(true)
  })
})

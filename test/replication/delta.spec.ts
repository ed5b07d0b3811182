import { createHash, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  applyDelta,
  ChunkHashMismatchError,
  chunkLength,
  coalesce,
  diffRanges,
  extractDelta,
  rangesByChunk,
  rebuildChunk,
  shouldSendDelta,
} from '../../src/replication/index.js'

const hash = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const K = 1024

describe('coalesce', () => {
  it.each([
    ['empty', [], Infinity, []],
    [
      'sorts and merges overlaps',
      [
        { offset: 100, length: 50 },
        { offset: 0, length: 120 },
      ],
      Infinity,
      [{ offset: 0, length: 150 }],
    ],
    [
      'merges touching ranges',
      [
        { offset: 0, length: 10 },
        { offset: 10, length: 10 },
      ],
      Infinity,
      [{ offset: 0, length: 20 }],
    ],
    [
      'keeps gaps',
      [
        { offset: 0, length: 10 },
        { offset: 11, length: 1 },
      ],
      Infinity,
      [
        { offset: 0, length: 10 },
        { offset: 11, length: 1 },
      ],
    ],
    [
      'clips to the limit',
      [
        { offset: 90, length: 50 },
        { offset: 200, length: 5 },
      ],
      100,
      [{ offset: 90, length: 10 }],
    ],
    ['drops empty ranges', [{ offset: 5, length: 0 }], Infinity, []],
  ])('%s', (_n, input, limit, expected) => {
    expect(coalesce(input, limit)).toEqual(expected)
  })
})

describe('rangesByChunk', () => {
  const chunk = 256 * K
  it.each([
    ['one 4 KiB write', [{ offset: 4 * K, length: 4 * K }], 1 << 20, [[0, [[4 * K, 4 * K]]]]],
    [
      'a write across a chunk boundary',
      [{ offset: chunk - 512, length: 1024 }],
      1 << 20,
      [
        [0, [[chunk - 512, 512]]],
        [1, [[0, 512]]],
      ],
    ],
    [
      'a write spanning three chunks',
      [{ offset: chunk - 512, length: chunk + 1024 }],
      1 << 20,
      [
        [0, [[chunk - 512, 512]]],
        [1, [[0, chunk]]],
        [2, [[0, 512]]],
      ],
    ],
    [
      'scattered writes, unsorted',
      [
        { offset: 3 * chunk + 512, length: 512 },
        { offset: 512, length: 512 },
        { offset: 8192, length: 512 },
      ],
      1 << 20,
      [
        [
          0,
          [
            [512, 512],
            [8192, 512],
          ],
        ],
        [3, [[512, 512]]],
      ],
    ],
    [
      'a range past the end of the disk is clipped',
      [{ offset: (1 << 20) - 512, length: 4096 }],
      1 << 20,
      [[3, [[chunk - 512, 512]]]],
    ],
  ])('%s', (_n, changed, size, expected) => {
    expect([...rangesByChunk(changed, chunk, size)]).toEqual(expected)
  })
})

describe('chunkLength', () => {
  it.each([
    [0, 256 * K, 1 << 20, 256 * K],
    [3, 256 * K, 1 << 20, 256 * K],
    [3, 256 * K, (1 << 20) - 512, 256 * K - 512],
    [4, 256 * K, 1 << 20, 0],
  ])('chunk %i of size %i on a %i-byte disk is %i bytes', (i, c, v, expected) => {
    expect(chunkLength(i, c, v)).toBe(expected)
  })
})

describe('shouldSendDelta', () => {
  it.each([
    ['one 4 KiB write in a 256 KiB chunk', [[0, 4096]], 256 * K, true],
    ['nothing changed', [], 256 * K, false],
    ['half the chunk', [[0, 128 * K]], 256 * K, true],
    ['more than half', [[0, 128 * K + 512]], 256 * K, false],
    ['too many ranges', Array.from({ length: 1025 }, (_, i) => [i * 1024, 512]), 4 << 20, false],
  ] as Array<[string, Array<[number, number]>, number, boolean]>)('%s → %s', (_n, ranges, len, expected) => {
    expect(shouldSendDelta(ranges, len)).toBe(expected)
  })
})

describe('delta round trip', () => {
  const cases: Array<[string, Uint8Array | null, Array<[number, number]>]> = [
    ['one sector over a random base', new Uint8Array(randomBytes(64 * K)), [[512, 512]]],
    [
      'several ranges',
      new Uint8Array(randomBytes(64 * K)),
      [
        [0, 4096],
        [8192, 512],
        [65024, 512],
      ],
    ],
    ['over a zero base', null, [[1024, 2048]]],
  ]
  it.each(cases)('%s: the receiver rebuilds the exact new chunk and its hash checks', (_n, base, ranges) => {
    const after = new Uint8Array(base ?? new Uint8Array(64 * K))
    for (const [o, l] of ranges) after.set(randomBytes(l), o)
    const bytes = extractDelta(after, ranges)
    expect(bytes.length).toBe(ranges.reduce((n, [, l]) => n + l, 0))
    const rebuilt = rebuildChunk(base, { id: hash(after), length: after.length, ranges, bytes }, hash)
    expect(Buffer.from(rebuilt).equals(Buffer.from(after))).toBe(true)
  })

  it('a patch against the wrong base fails its hash check, naming the peer', () => {
    const base = new Uint8Array(randomBytes(64 * K))
    const after = new Uint8Array(base)
    after.set(randomBytes(512), 0)
    const other = new Uint8Array(randomBytes(64 * K))
    const delta = {
      id: hash(after),
      length: after.length,
      ranges: [[0, 512]] as Array<[number, number]>,
      bytes: after.subarray(0, 512),
    }
    expect(() => rebuildChunk(other, delta, hash, 'peerB')).toThrow(ChunkHashMismatchError)
    expect(() => rebuildChunk(other, delta, hash, 'peerB')).toThrow(/sent by peerB/)
  })

  it('a base of another length is refused', () => {
    expect(() => applyDelta(new Uint8Array(100), 200, [], new Uint8Array(0))).toThrow(/base of 100 bytes/)
  })
})

describe('diffRanges', () => {
  it.each([
    ['identical', (b: Uint8Array) => b, []],
    [
      'one byte changed marks its sector',
      (b: Uint8Array) => {
        b[1000] ^= 1
        return b
      },
      [[512, 512]],
    ],
    [
      'adjacent sectors merge',
      (b: Uint8Array) => {
        b[0] ^= 1
        b[600] ^= 1
        b[5000] ^= 1
        return b
      },
      [
        [0, 1024],
        [4608, 512],
      ],
    ],
  ])('%s', (_n, mutate, expected) => {
    const before = new Uint8Array(randomBytes(8 * K))
    expect(diffRanges(before, mutate(new Uint8Array(before)))).toEqual(expected)
  })

  it('against zeros (no base) finds the non-zero sectors', () => {
    const after = new Uint8Array(8 * K)
    after[2048] = 7
    expect(diffRanges(null, after)).toEqual([[2048, 512]])
  })

  it('diff then apply reproduces the new chunk', () => {
    const before = new Uint8Array(randomBytes(256 * K))
    const after = new Uint8Array(before)
    for (let i = 0; i < 10; i++) after.set(randomBytes(100), Math.floor(Math.random() * (256 * K - 100)))
    const ranges = diffRanges(before, after)
    expect(
      Buffer.from(applyDelta(before, after.length, ranges, extractDelta(after, ranges))).equals(
        Buffer.from(after),
      ),
    ).toBe(true)
  })
})

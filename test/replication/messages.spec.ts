import { createHash, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  type ChunksMessage,
  decodeChunksMessage,
  decodePointsMessage,
  encodeChunksMessage,
  encodeFrame,
  encodePointsMessage,
  FrameDecoder,
  FrameError,
  MAX_FRAME_BYTES,
  type PointHeader,
  type PointsMessage,
} from '../../src/replication/index.js'

const id = (s: string) => createHash('sha256').update(s).digest('hex')

function roundTrip<T>(
  bytes: Uint8Array,
  decode: (f: NonNullable<ReturnType<FrameDecoder['next']>>) => T,
  cut = 7,
): T[] {
  const d = new FrameDecoder()
  const out: T[] = []
  for (let at = 0; at < bytes.length; at += cut) {
    d.push(bytes.subarray(at, at + cut))
    for (let f = d.next(); f; f = d.next()) out.push(decode(f))
  }
  expect(d.bufferedBytes).toBe(0)
  return out
}

const point: PointHeader = {
  vm: 'web1',
  vmId: '1f0c',
  seq: 7,
  epoch: 1,
  time: 1_764_000_000_000,
  consistency: 'crash',
  baseSeq: 6,
  alg: 'blake3',
  source: '12D3KooWsource',
  rpoSeconds: 5,
  forward: ['12D3KooWc'],
  config: { name: 'web1', cpus: 2 },
  disks: [{ index: 0, virtualSize: 64 << 20, chunkSize: 256 << 10, entries: 2 }],
}

describe('chunks protocol codec', () => {
  const cases: Array<[string, ChunksMessage]> = [
    ['query', { type: 'query', req: 3, ids: [id('a'), id('b')] }],
    ['empty query', { type: 'query', req: 0, ids: [] }],
    ['lack', { type: 'lack', req: 3, lacking: [true, false, false, true, true, false, true, false, true] }],
    ['chunk', { type: 'chunk', id: id('c'), bytes: new Uint8Array(randomBytes(4096)) }],
    [
      'delta',
      {
        type: 'delta',
        id: id('d'),
        base: id('e'),
        length: 262144,
        ranges: [
          [0, 512],
          [4096, 1024],
        ],
        bytes: new Uint8Array(1536).fill(9),
      },
    ],
    [
      'delta over zeros',
      {
        type: 'delta',
        id: id('f'),
        base: null,
        length: 65536,
        ranges: [[512, 512]],
        bytes: new Uint8Array(512).fill(1),
      },
    ],
    ['stored', { type: 'stored', ids: [id('g')] }],
    ['reject', { type: 'reject', id: id('h'), reason: 'hash' }],
    ['get', { type: 'get', req: 9, ids: [id('i')] }],
    ['missing', { type: 'missing', req: 9, ids: [id('j'), id('k')] }],
    ['prints', { type: 'prints', req: 4, ids: [id('l'), id('m')] }],
    [
      'printed, one chunk not held',
      {
        type: 'printed',
        req: 4,
        prints: [new Uint8Array(512).fill(7), null, new Uint8Array(8).fill(3)],
      },
    ],
  ]
  it.each(cases)('%s survives encode, arbitrary cuts and decode', (_name, m) => {
    const bytes = encodeChunksMessage(m)
    for (const cut of [1, 5, 64, bytes.length])
      expect(roundTrip(bytes, decodeChunksMessage, cut)).toEqual([m])
  })

  it('a chunk frame costs 9 bytes of framing plus its 32-byte id', () => {
    const bytes = encodeChunksMessage({ type: 'chunk', id: id('x'), bytes: new Uint8Array(262144) })
    expect(bytes.length - 262144).toBe(9 + 32)
  })

  it('many frames back to back decode in order', () => {
    const ms: ChunksMessage[] = Array.from({ length: 20 }, (_, i) => ({
      type: 'stored',
      ids: [id(String(i))],
    }))
    const all = Buffer.concat(ms.map(encodeChunksMessage))
    expect(roundTrip(all, decodeChunksMessage, 13)).toEqual(ms)
  })

  const bad: Array<[string, Uint8Array]> = [
    ['unknown kind', encodeFrame(99, null)],
    ['query with extra header field', encodeFrame(1, { req: 1, evil: true })],
    ['query with negative req', encodeFrame(1, { req: -1 })],
    ['query with a partial id', encodeFrame(1, { req: 1 }, new Uint8Array(33))],
    ['lack bitmap of the wrong size', encodeFrame(2, { req: 1, count: 9 }, new Uint8Array(1))],
    ['chunk without data', encodeFrame(3, null, new Uint8Array(32))],
    ['chunk with a header', encodeFrame(3, { x: 1 }, new Uint8Array(40))],
    [
      'delta range past the chunk',
      encodeFrame(4, { base: null, length: 1024, ranges: [[1000, 100]] }, new Uint8Array(132)),
    ],
    [
      'delta ranges overlapping',
      encodeFrame(
        4,
        {
          base: null,
          length: 4096,
          ranges: [
            [0, 512],
            [256, 512],
          ],
        },
        new Uint8Array(32 + 1024),
      ),
    ],
    [
      'delta payload not matching ranges',
      encodeFrame(4, { base: null, length: 4096, ranges: [[0, 512]] }, new Uint8Array(32 + 100)),
    ],
    [
      'delta with a bad base id',
      encodeFrame(4, { base: 'zz', length: 4096, ranges: [] }, new Uint8Array(32)),
    ],
    ['prints of more ids than a frame may ask', encodeFrame(10, { req: 1 }, new Uint8Array(32 * 129))],
    [
      'printed payload not matching its sizes',
      encodeFrame(11, { req: 1, sizes: [512, 0] }, new Uint8Array(504)),
    ],
    ['printed size not whole fingerprints', encodeFrame(11, { req: 1, sizes: [12] }, new Uint8Array(12))],
    ['printed size past the largest chunk', encodeFrame(11, { req: 1, sizes: [8200] }, new Uint8Array(8200))],
    ['reject with an unknown reason', encodeFrame(6, { reason: 'bored' }, new Uint8Array(32))],
    [
      'header not JSON',
      (() => {
        const f = encodeFrame(1, { req: 1 })
        f[9] = 0x7b + 1
        return f
      })(),
    ],
  ]
  it.each(bad)('rejects %s with a FrameError', (_name, bytes) => {
    expect(() => roundTrip(bytes, decodeChunksMessage)).toThrow(FrameError)
  })

  it('refuses an oversized frame from its length prefix, before buffering it', () => {
    const d = new FrameDecoder()
    const prefix = new Uint8Array(4)
    new DataView(prefix.buffer).setUint32(0, MAX_FRAME_BYTES + 1)
    d.push(prefix)
    expect(() => d.next()).toThrow(/exceeds the limit/)
  })

  it('refuses a header length that runs past the frame', () => {
    const f = encodeFrame(1, { req: 1 })
    new DataView(f.buffer).setUint32(5, 1000)
    expect(() => roundTrip(f, decodeChunksMessage)).toThrow(/runs past/)
  })
})

describe('points protocol codec', () => {
  const cases: Array<[string, PointsMessage]> = [
    ['hello', { type: 'hello', vm: 'web1', vmId: '1f0c' }],
    ['state, nothing held', { type: 'state', vm: 'web1', lastSeq: null, epoch: null, disks: [] }],
    [
      'state',
      {
        type: 'state',
        vm: 'web1',
        lastSeq: 4,
        epoch: 1,
        disks: [{ index: 0, chunkSize: 262144, virtualSize: 1 << 30 }],
      },
    ],
    ['point', { type: 'point', point }],
    ['full point', { type: 'point', point: { ...point, baseSeq: null, forward: [] } }],
    [
      'manifest',
      {
        type: 'manifest',
        seq: 7,
        disk: 0,
        entries: [
          { index: 0, id: id('m') },
          { index: 4095, id: null },
        ],
      },
    ],
    ['commit', { type: 'commit', seq: 7 }],
    ['ack', { type: 'ack', seq: 7 }],
    [
      'nack',
      {
        type: 'nack',
        seq: 7,
        reason: 'missing-chunks',
        message: '2 chunks missing',
        missing: [id('n'), id('o')],
      },
    ],
  ]
  it.each(cases)('%s survives encode, arbitrary cuts and decode', (_name, m) => {
    const bytes = encodePointsMessage(m)
    for (const cut of [1, 3, 100, bytes.length])
      expect(roundTrip(bytes, decodePointsMessage, cut)).toEqual([m])
  })

  it('a manifest entry costs 36 bytes (u32 index + id)', () => {
    const entries = Array.from({ length: 100 }, (_, i) => ({ index: i, id: id(String(i)) }))
    const one = encodePointsMessage({ type: 'manifest', seq: 1, disk: 0, entries: [] }).length
    expect(encodePointsMessage({ type: 'manifest', seq: 1, disk: 0, entries }).length - one).toBe(3600)
  })

  const bad: Array<[string, Uint8Array]> = [
    ['point with no disks', encodeFrame(3, { ...point, disks: [] })],
    ['point with a missing field', encodeFrame(3, { ...point, seq: undefined })],
    ['point with a fractional seq', encodeFrame(3, { ...point, seq: 1.5 })],
    ['point with an unknown consistency', encodeFrame(3, { ...point, consistency: 'maybe' })],
    ['point forwarded too far', encodeFrame(3, { ...point, forward: Array(17).fill('p') })],
    ['hello with an empty vm', encodeFrame(1, { vm: '', vmId: '' })],
    ['manifest with a partial entry', encodeFrame(4, { seq: 1, disk: 0 }, new Uint8Array(35))],
    ['nack with an unknown reason', encodeFrame(7, { seq: 1, reason: 'nope', message: '' })],
  ]
  it.each(bad)('rejects %s with a FrameError', (_name, bytes) => {
    expect(() => roundTrip(bytes, decodePointsMessage)).toThrow(FrameError)
  })
})

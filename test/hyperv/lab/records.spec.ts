import { describe, expect, it } from 'vitest'
import { RECORD_BYTES, RECORD_REGION_BYTES, RECORD_SLOTS } from '../../../src/hyperv/lab/constants.js'
import { decodeRecord, encodeRecord, newestRecord, summarize } from '../../../src/hyperv/lab/records.js'

const region = () => new Uint8Array(RECORD_REGION_BYTES)
const put = (r: Uint8Array, seq: number, timeMs = 1000 + seq) =>
  r.set(encodeRecord({ seq, timeMs, startSeq: 7, startTime: 77 }), (seq % RECORD_SLOTS) * RECORD_BYTES)

describe('record stream', () => {
  it('round-trips a record and rejects a torn one', () => {
    const b = encodeRecord({ seq: 12345678901, timeMs: 1_790_000_000_123, startSeq: 5, startTime: 6 })
    expect(decodeRecord(b)).toEqual({
      seq: 12345678901,
      timeMs: 1_790_000_000_123,
      startSeq: 5,
      startTime: 6,
    })
    b[20] ^= 1
    expect(decodeRecord(b)).toBeNull()
    expect(decodeRecord(new Uint8Array(RECORD_BYTES))).toBeNull()
  })

  it('finds the newest record, also after the ring wrapped', () => {
    const r = region()
    expect(newestRecord(r)).toBeNull()
    expect(summarize(newestRecord(r))).toEqual({ lastSeq: 0, lastTime: 0, startSeq: 0, startTime: 0 })
    for (let s = 1; s <= RECORD_SLOTS + 10; s++) put(r, s)
    expect(newestRecord(r)?.seq).toBe(RECORD_SLOTS + 10)
    expect(summarize(newestRecord(r))).toEqual({
      lastSeq: RECORD_SLOTS + 10,
      lastTime: 1000 + RECORD_SLOTS + 10,
      startSeq: 7,
      startTime: 77,
    })
  })

  it('ignores a valid record sitting in the wrong slot', () => {
    const r = region()
    put(r, 3)
    r.set(encodeRecord({ seq: 99, timeMs: 1, startSeq: 0, startTime: 0 }), 5 * RECORD_BYTES)
    expect(newestRecord(r)?.seq).toBe(3)
  })
})

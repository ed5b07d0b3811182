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

  it('skips a torn newest record for the newest intact one, as a full decode of every slot does', () => {
    const r = region()
    for (let s = 1; s <= 3 * RECORD_SLOTS; s++) put(r, s)
    const newest = 3 * RECORD_SLOTS
    r[(newest % RECORD_SLOTS) * RECORD_BYTES + 20] ^= 1 // torn: its checksum fails
    expect(newestRecord(r)?.seq).toBe(newest - 1)
    // Against a full decode of every slot (the definition).
    let best = 0
    for (let slot = 0; slot < RECORD_SLOTS; slot++) {
      const x = decodeRecord(r.subarray(slot * RECORD_BYTES, (slot + 1) * RECORD_BYTES))
      if (x && x.seq % RECORD_SLOTS === slot) best = Math.max(best, x.seq)
    }
    expect(best).toBe(newest - 1)
    const t0 = performance.now()
    for (let i = 0; i < 20; i++) newestRecord(r)
    const t1 = performance.now()
    for (let i = 0; i < 20; i++)
      for (let slot = 0; slot < RECORD_SLOTS; slot++)
        decodeRecord(r.subarray(slot * RECORD_BYTES, (slot + 1) * RECORD_BYTES))
    const t2 = performance.now()
    console.log(
      `full ring: newestRecord ${((t1 - t0) / 20).toFixed(2)} ms, decoding every slot ${((t2 - t1) / 20).toFixed(2)} ms`,
    )
  })

  it('ignores a valid record sitting in the wrong slot', () => {
    const r = region()
    put(r, 3)
    r.set(encodeRecord({ seq: 99, timeMs: 1, startSeq: 0, startTime: 0 }), 5 * RECORD_BYTES)
    expect(newestRecord(r)?.seq).toBe(3)
  })
})

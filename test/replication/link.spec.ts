// Link settings (rates, schedules, the links file) and the token bucket, with a fake clock.
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  type ChunksMessage,
  type Clock,
  compressChunk,
  compressionOn,
  decodeChunksMessage,
  encodeChunksMessage,
  FrameDecoder,
  FrameError,
  Link,
  LinkSettingsError,
  LinkTable,
  parseLinksFile,
  parseRate,
  parseSchedule,
  RateMeter,
  rateAt,
  TokenBucket,
} from '../../src/replication/index.js'

const MiB = 1024 * 1024

function fakeClock(start = 0): Clock & { t: number } {
  const c = {
    t: start,
    now: () => c.t,
    sleep: async (ms: number) => {
      c.t += ms
    },
  }
  return c
}

/** A local-time date on a known weekday: 2026-11-23 is a Monday. */
const at = (day: number, hh: number, mm = 0) => new Date(2026, 10, 23 + day, hh, mm)

describe('parseRate', () => {
  it.each([
    ['20M', 20 * MiB],
    ['20MB/s', 20 * MiB],
    ['20 MiB', 20 * MiB],
    ['512K', 512 * 1024],
    ['1.5G', 1.5 * 1024 * MiB],
    ['100mbit', 12_500_000],
    ['1gbps', 125_000_000],
    ['65536', 65_536],
    ['unlimited', null],
  ])('%s', (text, bytes) => expect(parseRate(text)).toBe(bytes))

  it.each([['fast'], ['20X'], ['-1M'], ['1K'], ['']])('refuses %j with one line', (text) => {
    expect(() => parseRate(text)).toThrow(LinkSettingsError)
    try {
      parseRate(text)
    } catch (err) {
      expect((err as Error).message).not.toContain('\n')
    }
  })
})

describe('schedules', () => {
  const office = parseSchedule('08:00-18:00 20M, else unlimited')
  const week = parseSchedule('mon-fri 08:00-18:00 10M; sat-sun 00:00-24:00 50M, else 100M')
  const night = parseSchedule('22:00-06:00 unlimited, else 5M')

  it.each([
    [office, at(0, 7, 59), null],
    [office, at(0, 8, 0), 20 * MiB],
    [office, at(0, 17, 59), 20 * MiB],
    [office, at(0, 18, 0), null],
    [week, at(0, 12), 10 * MiB],
    [week, at(4, 12), 10 * MiB],
    [week, at(5, 12), 50 * MiB],
    [week, at(6, 3), 50 * MiB],
    [week, at(0, 20), 100 * MiB],
    [night, at(0, 23), null],
    [night, at(1, 5, 59), null],
    [night, at(1, 6), 5 * MiB],
    [parseSchedule('20M'), at(3, 3), 20 * MiB],
  ])('rate at a given time (%#)', (schedule, when, rate) => expect(rateAt(schedule, when)).toBe(rate))

  it.each([
    ['08:00-25:00 20M', /25:00.*not a time of day/],
    ['8-18 20M', /not a schedule rule/],
    ['08:00-18:00', /not a schedule rule/],
    ['funday 08:00-18:00 1M', /not a day/],
    ['08:00-08:00 1M', /empty time window/],
    ['else 1M, else 2M', /more than one default/],
    ['08:00-18:00 20Q', /not a rate/],
  ])('refuses %j', (text, message) => expect(() => parseSchedule(text)).toThrow(message))
})

describe('links file', () => {
  it('fills defaults and decides compression', () => {
    const f = parseLinksFile(
      JSON.stringify({ links: [{ to: 'lyon', limit: '08:00-18:00 20M, else unlimited' }, { to: '*' }] }),
      'links.json',
    )
    expect(f.links[0]).toEqual({
      to: 'lyon',
      limit: '08:00-18:00 20M, else unlimited',
      compress: 'auto',
      wan: false,
    })
    expect(compressionOn(f.links[0])).toBe(true)
    expect(compressionOn(f.links[1])).toBe(false)
    expect(compressionOn({ ...f.links[1], wan: true })).toBe(true)
    expect(compressionOn({ ...f.links[0], compress: 'off' })).toBe(false)
  })

  it.each([
    [
      { links: [{ to: 'lyon', limit: '20 parsecs' }] },
      /^links.json: links.0.limit: '20 parsecs' is not a rate/,
    ],
    [{ links: [{ to: 'lyon', compress: 'maybe' }] }, /^links.json: links.0.compress: /],
    [{ links: [{ to: 'a' }, { to: 'a' }] }, /^links.json: links.1.to: 'a' is listed twice/],
    [{ links: [{ to: 'a', speed: 1 }] }, /^links.json: links.0: /],
  ])('names the bad field in one line (%#)', (content, message) => {
    expect(() => parseLinksFile(JSON.stringify(content), 'links.json')).toThrow(message)
  })
})

describe('LinkTable reload', () => {
  it('a forced reload reads the file whatever its time stamp; a bad file is named and changes nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'replimesh-links-'))
    try {
      const file = join(dir, 'links.json')
      const write = (links: object[]) => {
        writeFileSync(file, JSON.stringify({ links }))
        utimesSync(file, 1_000_000, 1_000_000) // the same time stamp every write
      }
      write([{ to: 'lyon', limit: '4M' }])
      const warnings: string[] = []
      const table = new LinkTable({
        file,
        siteOf: () => 'lyon',
        logger: { warn: (_o, msg) => warnings.push(msg ?? '') },
      })
      await table.reload()
      const link = table.forPeer('peer-1')
      expect(link.status()).toMatchObject({ name: 'lyon', limitBytesPerSecond: 4 * MiB })
      write([{ to: 'lyon', limit: '8M' }])
      expect(await table.reload()).toBeNull()
      expect(link.status().limitBytesPerSecond, 'an unforced reload trusts the time stamp').toBe(4 * MiB)
      expect(await table.reload(true)).toBeNull()
      expect(link.status().limitBytesPerSecond).toBe(8 * MiB)
      expect(table.entries).toEqual([{ to: 'lyon', limit: '8M', compress: 'auto', wan: false }])
      writeFileSync(file, '{"links": [{"to": "lyon", "limit": "fast"}]}')
      expect(await table.reload(true)).toMatch(/links\.0\.limit: 'fast' is not a rate/)
      expect(link.status().limitBytesPerSecond).toBe(8 * MiB)
      expect(warnings).toEqual(['links file ignored; previous link settings kept'])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('TokenBucket', () => {
  it('holds a steady rate over many frames', async () => {
    const clock = fakeClock()
    const bucket = new TokenBucket(() => 10 * MiB, clock)
    for (let i = 0; i < 100; i++) await bucket.take(256 * 1024)
    // 25 MiB at 10 MiB/s, less the initial burst (512 KiB).
    expect(clock.t / 1000).toBeCloseTo((25 * MiB - 512 * 1024) / (10 * MiB), 1)
  })

  it('is shared: two senders together get the rate, in turns', async () => {
    const clock = fakeClock()
    const bucket = new TokenBucket(() => 4 * MiB, clock)
    const order: string[] = []
    const sender = async (name: string) => {
      for (let i = 0; i < 20; i++) {
        await bucket.take(256 * 1024)
        order.push(name)
      }
    }
    await Promise.all([sender('a'), sender('b')])
    expect(clock.t / 1000).toBeCloseTo((10 * MiB - 512 * 1024) / (4 * MiB), 1)
    expect(order.slice(0, 6)).toEqual(['a', 'b', 'a', 'b', 'a', 'b'])
  })

  it('follows the schedule: unlimited costs no time, a limit opening mid-wait applies', async () => {
    const clock = fakeClock()
    let rate: number | null = null
    const bucket = new TokenBucket(() => rate, clock)
    for (let i = 0; i < 100; i++) await bucket.take(MiB)
    expect(clock.t).toBe(0)
    rate = 1 * MiB
    for (let i = 0; i < 4; i++) await bucket.take(MiB)
    expect(clock.t / 1000).toBeCloseTo(3.5, 1)
  })

  it('gives up waiting when its signal aborts', async () => {
    const bucket = new TokenBucket(() => 64 * 1024)
    await bucket.take(512 * 1024)
    await expect(bucket.take(512 * 1024, AbortSignal.timeout(50))).rejects.toThrow()
    // The queue goes on after an aborted taker.
    const ok = new TokenBucket(() => null)
    await ok.take(1)
  })
})

describe('RateMeter and Link', () => {
  it('measures bytes per second over its window', () => {
    const clock = fakeClock(1_000_000)
    const m = new RateMeter(clock)
    for (let i = 0; i < 40; i++) {
      m.add(MiB)
      clock.t += 100
    }
    expect(m.bytesPerSecond()).toBeCloseTo(10 * MiB, -5)
    expect(m.total).toBe(40 * MiB)
  })

  it('compresses only where it pays, and gives up on incompressible data', async () => {
    const link = new Link('lyon', { to: 'lyon', limit: '10M', compress: 'auto', wan: false })
    const text = Buffer.alloc(256 * 1024, 'replimesh protects virtual machines. ')
    const packed = await link.maybeCompress(text)
    expect(packed).not.toBeNull()
    expect(packed!.length).toBeLessThan(text.length / 10)
    const { randomBytes } = await import('node:crypto')
    for (let i = 0; i < 40; i++) expect(await link.maybeCompress(randomBytes(64 * 1024))).toBeNull()
    const s = link.status().compressionStats
    expect(s.compressed).toBe(1)
    // After 8 misses only every 16th chunk is tried.
    expect(s.notWorth).toBeLessThan(12)
    expect(s.skipped).toBeGreaterThan(28)
    const off = new Link('lan', { to: 'lan', limit: 'unlimited', compress: 'auto', wan: false })
    expect(await off.maybeCompress(text)).toBeNull()
  })
})

describe('zchunk frames', () => {
  const id = 'ab'.repeat(32)
  const roundTrip = (m: ChunksMessage) => {
    const frame = encodeChunksMessage(m)
    const d = new FrameDecoder()
    d.push(frame)
    return decodeChunksMessage(d.next()!)
  }

  it('decode to a plain chunk with the original bytes (the receiver verifies their hash)', async () => {
    const raw = Buffer.alloc(256 * 1024, 'compress me ')
    const bytes = await compressChunk(raw)
    const m = roundTrip({ type: 'zchunk', id, codec: 'br', length: raw.length, bytes })
    expect(m.type).toBe('chunk')
    expect(Buffer.from((m as { bytes: Uint8Array }).bytes).equals(raw)).toBe(true)
  })

  it('refuse a payload that decodes past its declared length, or to garbage', async () => {
    const raw = Buffer.alloc(1024 * 1024, 0x41)
    const bytes = await compressChunk(raw)
    expect(() => roundTrip({ type: 'zchunk', id, codec: 'br', length: 4096, bytes })).toThrow(FrameError)
    expect(() =>
      roundTrip({ type: 'zchunk', id, codec: 'br', length: 4096, bytes: new Uint8Array([1, 2, 3, 4]) }),
    ).toThrow(FrameError)
  })
})

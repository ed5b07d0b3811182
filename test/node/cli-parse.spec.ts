import { describe, expect, it } from 'vitest'
import { parseCount, parseDurationMs, parseSize } from '../../src/node/cli/output.js'

describe('command-line value parsing', () => {
  it.each([
    ['4096', 4096],
    ['512K', 512 * 1024],
    ['512M', 512 * 1024 ** 2],
    ['2G', 2 * 1024 ** 3],
    ['1.5G', 1.5 * 1024 ** 3],
    ['1TiB', 1024 ** 4],
  ])('size %s is %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes)
  })

  it.each(['', 'abc', '12Q', '-5M', '0.3'])('size %j is refused with a message naming it', (text) => {
    expect(() => parseSize(text)).toThrow(
      text === '' ? /is not/ : new RegExp(`'${text.replace('.', '\\.')}'`),
    )
  })

  it.each([
    ['30s', 30_000],
    ['5m', 300_000],
    ['250ms', 250],
    ['1h', 3_600_000],
    ['2', 2000],
  ])('duration %s is %d ms', (text, ms) => {
    expect(parseDurationMs(text)).toBe(ms)
  })

  it('refuses a bad duration and a negative count', () => {
    expect(() => parseDurationMs('soon')).toThrow(/not a duration/)
    expect(() => parseCount('-1')).toThrow(/non-negative/)
  })
})

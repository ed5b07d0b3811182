// What `protect` shows while a seed runs: the pure view of the node's per-target progress.
import { describe, expect, it } from 'vitest'
import { formatSeedLine, seedView, type TargetRow } from '../../src/node/cli/seed-progress.js'

const MiB = 1024 * 1024
const row = (over: Partial<TargetRow>): TargetRow => ({
  peer: '12D3KooWAbcdefghijklmnop',
  seq: null,
  lastError: null,
  seeding: null,
  ...over,
})

describe('seedView', () => {
  it('follows a target from starting through seeding to committed, with a rate', () => {
    const v1 = seedView([row({})], null, 0)
    expect(v1.lines[0]).toMatchObject({ state: 'starting', doneBytes: 0, bytesPerSecond: null })
    expect(v1.done).toBe(false)
    const v1b = seedView(
      [row({ seeding: { doneBytes: 0, totalBytes: 180 * MiB } })],
      { atMs: 0, lines: v1.lines },
      0,
    )
    const v2 = seedView(
      [row({ seeding: { doneBytes: 10 * MiB, totalBytes: 180 * MiB } })],
      { atMs: 0, lines: v1b.lines },
      1000,
    )
    expect(v2.lines[0]).toMatchObject({
      state: 'seeding',
      doneBytes: 10 * MiB,
      totalBytes: 180 * MiB,
      bytesPerSecond: 10 * MiB,
    })
    expect(formatSeedLine('big', v2.lines[0])).toBe('big → 12D3KooWAbcd…: 10/180 MiB (5%), 10.0 MiB/s')
    // The rate is an average since seeding began, not a poll-to-poll jump.
    const v2b = seedView(
      [row({ seeding: { doneBytes: 10 * MiB, totalBytes: 180 * MiB } })],
      { atMs: 1000, lines: v2.lines },
      2000,
    )
    expect(v2b.lines[0].bytesPerSecond).toBe(5 * MiB)
    const v3 = seedView([row({ seq: 1 })], { atMs: 2000, lines: v2b.lines }, 3000)
    expect(v3.done).toBe(true)
    expect(v3.lines[0]).toMatchObject({ state: 'committed', doneBytes: 180 * MiB, totalBytes: 180 * MiB })
    expect(formatSeedLine('big', v3.lines[0])).toBe('big → 12D3KooWAbcd…: seeded, point 1 committed')
  })

  it('is done only when every target committed, and shows the last error', () => {
    const v = seedView([row({ peer: 'B', seq: 3 }), row({ peer: 'C', lastError: 'dial timed out' })], null, 0)
    expect(v.done).toBe(false)
    expect(formatSeedLine('web', v.lines[1])).toBe('web → C: starting (last error: dial timed out)')
    expect(seedView([], null, 0).done).toBe(false)
  })
})

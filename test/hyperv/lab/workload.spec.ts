import { describe, expect, it } from 'vitest'
import { RECORD_REGION_BYTES } from '../../../src/hyperv/lab/constants.js'
import { workloadSchema } from '../../../src/hyperv/lab/vm-config.js'
import { WorkloadPlanner } from '../../../src/hyperv/lab/workload.js'

const MiB = 1024 * 1024

describe('workload planner', () => {
  it('writes the configured rate, in blocks, never into the record region', () => {
    const p = new WorkloadPlanner(workloadSchema.parse({ rateBytesPerSec: MiB, blockBytes: 4096 }), [
      8 * MiB,
      4 * MiB,
    ])
    let bytes = 0
    for (let t = 0; t < 20; t++)
      for (const w of p.due(50)) {
        bytes += w.length
        expect(w.offset % 4096).toBe(0)
        const size = w.disk === 0 ? 8 * MiB : 4 * MiB
        expect(w.offset + w.length).toBeLessThanOrEqual(size - RECORD_REGION_BYTES)
      }
    expect(bytes).toBe(MiB) // 20 ticks of 50 ms = 1 s
  })

  it('keeps random writes in the hot set and walks sequential ones', () => {
    const hot = new WorkloadPlanner(
      workloadSchema.parse({ rateBytesPerSec: 10 * MiB, blockBytes: 65536, hotSetFraction: 0.25 }),
      [9 * MiB],
    )
    for (const w of hot.due(1000)) expect(w.offset).toBeLessThan(2 * MiB)
    const seq = new WorkloadPlanner(
      workloadSchema.parse({ rateBytesPerSec: 4 * 65536, blockBytes: 65536, pattern: 'sequential' }),
      [5 * MiB],
    )
    expect(seq.due(1000).map((w) => w.offset)).toEqual([0, 65536, 131072, 196608])
  })

  it('owes at most a second of writes after a stall, and nothing when off', () => {
    const p = new WorkloadPlanner(workloadSchema.parse({ rateBytesPerSec: MiB, blockBytes: 4096 }), [8 * MiB])
    expect(p.due(60_000).length).toBe(256)
    const off = new WorkloadPlanner(workloadSchema.parse({ rateBytesPerSec: MiB, enabled: false }), [8 * MiB])
    expect(off.due(1000)).toEqual([])
  })
})

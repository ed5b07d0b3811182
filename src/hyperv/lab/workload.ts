// The guest's synthetic workload, as a pure planner: given elapsed time it says which writes are
// due (disk, offset, length). The guest supplies the bytes (random, so every write changes data).
import { RECORD_REGION_BYTES } from './constants.js'
import type { WorkloadSettings } from './vm-config.js'

export interface PlannedWrite {
  disk: number
  offset: number
  length: number
}

/** At most this much time of writing is owed after a stall (no burst of minutes of writes). */
const MAX_CREDIT_MS = 1000

export class WorkloadPlanner {
  private creditBytes = 0
  private nextDisk = 0
  private readonly cursors: number[]
  /** Per disk: blocks the workload may write (all but the record region), within the hot set. */
  private readonly hotBlocks: number[]

  constructor(
    readonly settings: WorkloadSettings,
    diskSizes: number[],
    private readonly random: () => number = Math.random,
  ) {
    const bs = settings.blockBytes
    this.hotBlocks = diskSizes.map((size) => {
      const usable = Math.floor(Math.max(0, size - RECORD_REGION_BYTES) / bs)
      return Math.max(0, Math.min(usable, Math.floor(usable * settings.hotSetFraction)))
    })
    this.cursors = diskSizes.map(() => 0)
  }

  get active(): boolean {
    return this.settings.enabled && this.settings.rateBytesPerSec > 0 && this.hotBlocks.some((n) => n > 0)
  }

  /** The writes due after `elapsedMs` more milliseconds. */
  due(elapsedMs: number): PlannedWrite[] {
    if (!this.active) return []
    const rate = this.settings.rateBytesPerSec
    this.creditBytes = Math.min(this.creditBytes + (rate * elapsedMs) / 1000, (rate * MAX_CREDIT_MS) / 1000)
    const out: PlannedWrite[] = []
    const bs = this.settings.blockBytes
    while (this.creditBytes >= bs) {
      this.creditBytes -= bs
      out.push(this.next())
    }
    return out
  }

  private next(): PlannedWrite {
    let disk = this.nextDisk
    while (this.hotBlocks[disk] === 0) disk = (disk + 1) % this.hotBlocks.length
    this.nextDisk = (disk + 1) % this.hotBlocks.length
    const blocks = this.hotBlocks[disk]
    let block: number
    if (this.settings.pattern === 'sequential') {
      block = this.cursors[disk] % blocks
      this.cursors[disk] = block + 1
    } else block = Math.floor(this.random() * blocks)
    return { disk, offset: block * this.settings.blockBytes, length: this.settings.blockBytes }
  }
}

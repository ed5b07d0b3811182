// The guest's virtual-disk layer: every write of a lab VM (workload, record stream, `vm write`)
// passes through here. It keeps each disk's dirty-range map and implements consistency points:
//
//   freeze:  flush all disks, note the changed ranges, and from then on send every write to the
//            copy-on-write journal, so the disk files stay exactly as they were at the barrier
//            (the node reads them directly, from its own process, while the guest keeps going);
//   release: replay the journal into the disks in order and return a reference id.
//
// All operations run one at a time through a queue, so the barrier falls between two writes and
// one `recordTick` (a record on every disk) is never split by it: all disks freeze at one instant.
import { join } from 'node:path'
import { openDisk, type VirtualDisk } from '../disk/index.js'
import type { ChangedRange } from '../hypervisor.js'
import { dirtyMapFile, JOURNAL_FILE, MAX_GUEST_WRITE_BYTES, RECORD_REGION_BYTES } from './constants.js'
import { DirtyMap, type MapDistrust } from './dirty-map.js'
import { GuestWriteError, PointError, VmConfigError } from './errors.js'
import { Journal, readJournalFile } from './journal.js'
import { encodeRecord, readNewestRecord, recordOffset, type StreamRecord } from './records.js'
import type { VmConfig } from './vm-config.js'
import { resolveDiskPath, vmConfigPath } from './vm-paths.js'

export interface FrozenPoint {
  /** The generation the point closes. */
  generation: number
  time: number
  disks: Array<{ index: number; virtualSize: number; changed: ChangedRange[] | null }>
}

const REFERENCE_PREFIX = 'lab1'

export function formatReference(generation: number, trackingIds: string[]): string {
  return `${REFERENCE_PREFIX}:${generation}:${trackingIds.join(',')}`
}

export function parseReference(ref: string): { generation: number; trackingIds: string[] } | null {
  const m = /^lab1:(\d+):([0-9a-f,]+)$/.exec(ref)
  return m ? { generation: Number(m[1]), trackingIds: m[2].split(',') } : null
}

export class GuestVolume {
  private tail: Promise<unknown> = Promise.resolve()
  private frozen: FrozenPoint | null = null
  private closed = false
  /** Writes that reached the journal since the last freeze (for status). */
  journalReplayedAtOpen = 0

  private constructor(
    readonly vmDir: string,
    readonly diskPaths: string[],
    private readonly disks: VirtualDisk[],
    private readonly maps: DirtyMap[],
    private readonly journal: Journal,
    private gen: number,
  ) {}

  /** Opens the VM's disks writable, their maps, and replays a journal left by a crash. */
  static async open(vmDir: string, config: VmConfig): Promise<GuestVolume> {
    const paths = config.disks.map((d) => resolveDiskPath(vmDir, d.path))
    const disks: VirtualDisk[] = []
    try {
      for (const [i, path] of paths.entries()) {
        const disk = await openDisk(path, { readOnly: false, format: config.disks[i].format })
        disks.push(disk)
        if (disk.virtualSize !== config.disks[i].virtualSize)
          throw new VmConfigError(
            vmConfigPath(vmDir),
            `disk ${i} (${path}) is ${disk.virtualSize} bytes, vm.json says ${config.disks[i].virtualSize}`,
          )
      }
      const maps: DirtyMap[] = []
      for (const [i, disk] of disks.entries())
        maps.push(
          await DirtyMap.open(join(vmDir, dirtyMapFile(i)), paths[i], {
            virtualSize: disk.virtualSize,
            blockBytes: config.trackingBlockBytes,
          }),
        )
      const gen = Math.max(1, ...maps.map((m) => m.generation))
      for (const m of maps) m.setGeneration(gen)
      const journalFile = join(vmDir, JOURNAL_FILE)
      let replayed = 0
      for await (const e of readJournalFile(journalFile)) {
        if (e.disk >= disks.length || e.offset + e.data.length > disks[e.disk].virtualSize) break
        await disks[e.disk].write(e.data, e.offset)
        maps[e.disk].mark(e.offset, e.data.length, gen)
        replayed++
      }
      const volume = new GuestVolume(vmDir, paths, disks, maps, await Journal.create(journalFile), gen)
      volume.journalReplayedAtOpen = replayed
      return volume
    } catch (err) {
      await Promise.allSettled(disks.map((d) => d.close()))
      throw err
    }
  }

  get isFrozen(): boolean {
    return this.frozen !== null
  }

  get journalBytes(): number {
    return this.journal.bytes
  }

  get diskCount(): number {
    return this.disks.length
  }

  virtualSize(disk: number): number {
    return this.disks[disk].virtualSize
  }

  /** Why each disk's saved map was not trusted at open (null: trusted). */
  get mapDistrust(): MapDistrust[] {
    return this.maps.map((m) => m.distrust)
  }

  /** The newest record already on disk 0 (before this run wrote any). */
  readNewestRecord(): Promise<StreamRecord | null> {
    return this.serial(() => readNewestRecord(this.disks[0]))
  }

  /** A write from the VM's user (`vm write`): refused in the record region. */
  async write(disk: number, offset: number, data: Uint8Array): Promise<void> {
    // Checked before queueing; `serial` is still entered synchronously, so order is kept.
    this.checkWrite(disk, offset, data.length, false)
    return this.serial(() => this.writeNow(disk, offset, data))
  }

  /** Appends record `r` to the stream of every disk, as one operation (never split by a barrier). */
  writeRecord(r: StreamRecord): Promise<void> {
    const data = encodeRecord(r)
    return this.serial(async () => {
      for (let i = 0; i < this.disks.length; i++)
        await this.writeNow(i, recordOffset(this.disks[i].virtualSize, r.seq), data)
    })
  }

  /** The barrier. `sinceReference` names the point to diff against (null: full). */
  freeze(sinceReference: string | null): Promise<FrozenPoint> {
    return this.serial(async () => {
      if (this.frozen) throw new PointError(`a point of ${this.vmDir} is already frozen; release it first`)
      for (const d of this.disks) await d.flush()
      const ref = sinceReference ? parseReference(sinceReference) : null
      const point: FrozenPoint = {
        generation: this.gen,
        time: Date.now(),
        disks: this.disks.map((d, i) => ({
          index: i,
          virtualSize: d.virtualSize,
          changed:
            ref && ref.trackingIds[i] === this.maps[i].trackingId && ref.generation <= this.gen
              ? this.maps[i].changedSince(ref.generation)
              : null,
        })),
      }
      this.frozen = point
      this.bumpGeneration()
      return point
    })
  }

  /** Ends the freeze: replays the journal into the disks and returns the point's reference. */
  release(): Promise<string> {
    return this.serial(async () => {
      const point = this.frozen
      if (!point) throw new PointError(`no point of ${this.vmDir} is frozen`)
      await this.mergeJournal()
      return formatReference(
        point.generation,
        this.maps.map((m) => m.trackingId),
      )
    })
  }

  /** Waits for queued writes, merges a frozen journal, closes the disks and saves clean maps. */
  close(): Promise<void> {
    return this.serial(async () => {
      if (this.closed) return
      this.closed = true
      if (this.frozen) await this.mergeJournal()
      for (const d of this.disks) await d.close()
      for (const [i, m] of this.maps.entries()) await m.saveClean(this.diskPaths[i])
      await this.journal.close(true)
    })
  }

  private async writeNow(disk: number, offset: number, data: Uint8Array): Promise<void> {
    if (this.closed) throw new GuestWriteError(`${this.vmDir}: the VM is shutting down`)
    this.maps[disk].mark(offset, data.length, this.gen)
    if (this.frozen) await this.journal.append(disk, offset, data)
    else await this.disks[disk].write(data, offset)
  }

  private async mergeJournal(): Promise<void> {
    for await (const e of this.journal.replay()) await this.disks[e.disk].write(e.data, e.offset)
    await this.journal.reset()
    this.frozen = null
  }

  private bumpGeneration(): void {
    this.gen++
    for (const m of this.maps) m.setGeneration(this.gen)
  }

  private checkWrite(disk: number, offset: number, length: number, recordRegion: boolean): void {
    if (!Number.isInteger(disk) || disk < 0 || disk >= this.disks.length)
      throw new GuestWriteError(`disk ${disk} does not exist (the VM has ${this.disks.length})`)
    if (length > MAX_GUEST_WRITE_BYTES)
      throw new GuestWriteError(`a write of ${length} bytes is larger than ${MAX_GUEST_WRITE_BYTES}`)
    const size = this.disks[disk].virtualSize
    const limit = recordRegion ? size : size - RECORD_REGION_BYTES
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > limit)
      throw new GuestWriteError(
        `write of ${length} bytes at offset ${offset} of disk ${disk} is outside [0, ${limit})` +
          (offset + length <= size ? ' (the last MiB holds the record stream)' : ''),
      )
  }

  /** Operations queued and not finished (the workload holds back when this grows). */
  get pending(): number {
    return this.queued
  }

  private queued = 0

  private serial<T>(op: () => Promise<T>): Promise<T> {
    this.queued++
    const run = this.tail.then(op, op).finally(() => {
      this.queued--
    })
    this.tail = run.catch(() => undefined)
    return run
  }
}

// A fake hypervisor for replication tests: a VM is a set of raw disk files; writes go through
// write() which records dirty ranges; a point copies the disks (small test disks) so the point is
// frozen while writes continue. Only what replication uses is implemented.
import { randomUUID } from 'node:crypto'
import { copyFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type {
  ChangedRange,
  ConsistencyPoint,
  Hypervisor,
  VirtualDisk,
  VmInfo,
} from '../../../src/hyperv/index.js'
import { createDisk, openDisk } from '../../../src/hyperv/index.js'

interface FakeVm {
  info: VmInfo
  dirty: ChangedRange[][]
  generation: number
}

export class FakeHypervisor {
  readonly kind = 'lab' as const
  private readonly vms = new Map<string, FakeVm>()
  private readonly open = new Map<string, { vm: FakeVm; files: string[]; generation: number }>()
  pointsTaken = 0
  /** Granularity of dirty tracking (the lab hypervisor tracks 64 KiB blocks); 0 = exact. */
  trackingBlockBytes = 0

  constructor(private readonly dir: string) {}

  async createVm(name: string, sizes: number[]): Promise<VmInfo> {
    const disks = []
    for (let i = 0; i < sizes.length; i++) {
      const path = join(this.dir, `${name}-disk${i}.raw`)
      const d = await createDisk(path, { format: 'raw', virtualSize: sizes[i] })
      await d.close()
      disks.push({ path, format: 'raw' as const, virtualSize: sizes[i], parents: [] })
    }
    const info: VmInfo = {
      id: randomUUID(),
      name,
      generation: 2,
      state: 'running',
      cpus: 1,
      memoryBytes: 1 << 30,
      disks,
      nics: [],
      notes: '',
      tags: [],
      configPath: null,
    }
    this.vms.set(name, { info, dirty: sizes.map(() => []), generation: 0 })
    return info
  }

  async write(vm: string, disk: number, offset: number, bytes: Uint8Array): Promise<void> {
    const v = this.get(vm)
    const d = await openDisk(v.info.disks[disk].path, { readOnly: false, format: 'raw' })
    try {
      await d.write(bytes, offset)
    } finally {
      await d.close()
    }
    const g = this.trackingBlockBytes
    if (g > 0) {
      const start = Math.floor(offset / g) * g
      v.dirty[disk].push({ offset: start, length: Math.ceil((offset + bytes.length) / g) * g - start })
    } else v.dirty[disk].push({ offset, length: bytes.length })
  }

  /**
   * Releases every block of a disk (a guest trimming all of it): it reads as zeros, and its map
   * says zero. Not tracked: a point after it sees the change only by reading the disk's map.
   */
  async deallocate(vm: string, disk: number): Promise<void> {
    const { path, virtualSize } = this.get(vm).info.disks[disk]
    await truncate(path, 0)
    await truncate(path, virtualSize)
  }

  /** Ends change tracking of `vm`: its next point reads its disks' data extents whole. */
  async loseTracking(vm: string): Promise<void> {
    this.get(vm).generation++
  }

  async read(vm: string, disk: number, offset: number, length: number): Promise<Buffer> {
    const d = await openDisk(this.get(vm).info.disks[disk].path, { format: 'raw' })
    try {
      const b = Buffer.alloc(length)
      await d.read(b, offset, length)
      return b
    } finally {
      await d.close()
    }
  }

  private get(vm: string): FakeVm {
    const v = this.vms.get(vm) ?? [...this.vms.values()].find((x) => x.info.id === vm)
    if (!v) throw new Error(`no VM ${vm}`)
    return v
  }

  async start() {}
  async stop() {}
  async listVms() {
    return [...this.vms.values()].map((v) => v.info)
  }
  async getVm(vm: string) {
    return this.get(vm).info
  }

  async createPoint(vm: string, options: { sinceReference?: string | null } = {}): Promise<ConsistencyPoint> {
    const v = this.get(vm)
    const id = randomUUID()
    // Take the dirty lists and start a new generation before the first await, as the lab
    // hypervisor's write barrier does: a write that lands while the disks are copied is then in
    // the next point's list, never lost between the copy and the reset.
    const tracked = options.sinceReference === `gen-${v.generation}`
    const dirty = v.dirty
    v.dirty = v.info.disks.map(() => [])
    v.generation++
    const generation = v.generation
    const files: string[] = []
    for (const d of v.info.disks) {
      const copy = join(this.dir, `point-${id}-${files.length}.raw`)
      // A disk with no block allocated stays so (copyFile allocates every block): its map says
      // zero, as a dynamic disk's does for deallocated blocks.
      if ((await stat(d.path)).blocks === 0) {
        await writeFile(copy, '')
        await truncate(copy, d.virtualSize)
      } else await copyFile(d.path, copy)
      files.push(copy)
    }
    const point: ConsistencyPoint = {
      id,
      vmId: v.info.id,
      time: Date.now(),
      consistency: 'crash',
      disks: v.info.disks.map((d, index) => ({
        index,
        virtualSize: d.virtualSize,
        changed: tracked ? dirty[index] : null,
      })),
    }
    this.open.set(id, { vm: v, files, generation })
    this.pointsTaken++
    return point
  }

  async openPointDisk(point: ConsistencyPoint, disk: number): Promise<VirtualDisk> {
    const o = this.open.get(point.id)
    if (!o) throw new Error('point not open')
    return openDisk(o.files[disk], { format: 'raw' })
  }

  async releasePoint(point: ConsistencyPoint): Promise<string> {
    const o = this.open.get(point.id)
    if (!o) throw new Error('point not open')
    this.open.delete(point.id)
    for (const f of o.files) await rm(f, { force: true })
    return `gen-${o.generation}`
  }

  asHypervisor(): Hypervisor {
    return this as unknown as Hypervisor
  }
}

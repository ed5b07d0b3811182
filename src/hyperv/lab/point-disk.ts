// The read-only view of one disk of a frozen point, read by the node from the disk file itself.
// While the point is frozen the guest sends its writes to the journal, so the file holds exactly
// the point's instant. The view refuses writes and reads after it was closed or released.
import type { DiskInfo, Extent, MapOptions, VirtualDisk } from '../disk/index.js'
import { PointError } from './errors.js'

export class PointDisk implements VirtualDisk {
  private closed = false

  constructor(
    private readonly inner: VirtualDisk,
    readonly pointId: string,
    private readonly onClose: (d: PointDisk) => void,
  ) {}

  get path() {
    return this.inner.path
  }
  get format() {
    return this.inner.format
  }
  get subformat() {
    return this.inner.subformat
  }
  get virtualSize() {
    return this.inner.virtualSize
  }
  get logicalSectorSize() {
    return this.inner.logicalSectorSize
  }
  get physicalSectorSize() {
    return this.inner.physicalSectorSize
  }
  get blockSize() {
    return this.inner.blockSize
  }
  get parent() {
    return this.inner.parent
  }
  readonly readOnly = true

  info(): DiskInfo {
    return this.inner.info()
  }

  map(options?: MapOptions): Promise<Extent[]> {
    this.checkOpen()
    return this.inner.map(options)
  }

  read(buffer: Uint8Array, offset: number, length?: number, bufferOffset?: number): Promise<void> {
    this.checkOpen()
    return this.inner.read(buffer, offset, length, bufferOffset)
  }

  async write(): Promise<void> {
    throw new PointError(`point ${this.pointId}: a point's disk is read-only (${this.path})`)
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.onClose(this)
    await this.inner.close()
  }

  private checkOpen(): void {
    if (this.closed) throw new PointError(`point ${this.pointId}: disk view of ${this.path} is closed`)
  }
}

// A raw disk: the file's bytes are the virtual disk. Node has no SEEK_DATA/SEEK_HOLE, so the
// allocation map reports the whole file as data; converters skip zero runs by content instead.
import { type FileHandle, open } from 'node:fs/promises'
import { DiskRangeError, ReadOnlyDiskError } from './errors.js'
import { describeOpenError, readFull, writeFull } from './file-io.js'
import type { CreateOptions, DiskInfo, Extent, VirtualDisk } from './types.js'

const RAW_SECTOR_SIZE = 512

export class RawDisk implements VirtualDisk {
  readonly format = 'raw' as const
  readonly subformat = 'fixed' as const
  readonly logicalSectorSize = RAW_SECTOR_SIZE
  readonly physicalSectorSize = RAW_SECTOR_SIZE
  readonly blockSize = 0
  readonly parent = null
  private closed = false

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly virtualSize: number,
    readonly readOnly: boolean,
  ) {}

  static async open(path: string, readOnly: boolean): Promise<RawDisk> {
    let fh: FileHandle
    try {
      fh = await open(path, readOnly ? 'r' : 'r+')
    } catch (err) {
      throw describeOpenError(err, path)
    }
    const { size } = await fh.stat()
    return new RawDisk(path, fh, size, readOnly)
  }

  /** Makes a sparse file of `virtualSize` bytes; refuses to replace an existing file. */
  static async create(path: string, options: CreateOptions): Promise<RawDisk> {
    const size = options.virtualSize
    if (size === undefined || !Number.isSafeInteger(size) || size < 0)
      throw new DiskRangeError(`raw disk needs a size in bytes, got ${size}`, path)
    let fh: FileHandle
    try {
      fh = await open(path, 'wx+')
    } catch (err) {
      throw describeOpenError(err, path)
    }
    await fh.truncate(size)
    return new RawDisk(path, fh, size, false)
  }

  info(): DiskInfo {
    return {
      format: 'raw',
      subformat: 'fixed',
      virtualSize: this.virtualSize,
      blockSize: 0,
      logicalSectorSize: RAW_SECTOR_SIZE,
      physicalSectorSize: RAW_SECTOR_SIZE,
      parent: null,
      allocatedBytes: this.virtualSize,
    }
  }

  async map(): Promise<Extent[]> {
    return this.virtualSize > 0 ? [{ start: 0, length: this.virtualSize, state: 'data' }] : []
  }

  async read(buffer: Uint8Array, offset: number, length = buffer.length, bufferOffset = 0): Promise<void> {
    this.checkRange(offset, length)
    // A file truncated under us reads as zeros rather than failing halfway through a stream.
    await readFull(this.fh, this.path, buffer, bufferOffset, length, offset, true)
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new ReadOnlyDiskError('opened read-only', this.path)
    this.checkRange(offset, data.length)
    await writeFull(this.fh, data, 0, data.length, offset)
  }

  async flush(): Promise<void> {
    if (!this.readOnly && !this.closed) await this.fh.datasync()
  }

  async close(): Promise<void> {
    if (this.closed) return
    await this.flush()
    this.closed = true
    await this.fh.close()
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
      throw new DiskRangeError(`bad range ${offset}+${length}`, this.path)
    if (offset + length > this.virtualSize)
      throw new DiskRangeError(
        `range ${offset}+${length} is past the end of the disk (${this.virtualSize} bytes)`,
        this.path,
      )
  }
}

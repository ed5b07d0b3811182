// A raw disk: the file's bytes are the virtual disk. Node has no SEEK_DATA/SEEK_HOLE, so the
// allocation map cannot name holes one by one: it reports the whole file as data, and converters
// and the chunk store skip zero runs by content. One case is known without reading: a file with
// no allocated blocks at all (st_blocks 0, e.g. made by truncate or `disk create` and never
// written) is all zeros, and its map says so (see allHoles for the guards).
import { type FileHandle, open } from 'node:fs/promises'
import { DiskRangeError, ReadOnlyDiskError } from './errors.js'
import { describeOpenError, isZero, readFull, readOnCallingThread, writeFull } from './file-io.js'
import type { CreateOptions, DiskInfo, Extent, VirtualDisk } from './types.js'

const RAW_SECTOR_SIZE = 512
/**
 * Smaller files are never taken as all holes from st_blocks: ext4 inline data and NTFS resident
 * files hold a few KiB of data with no blocks allocated. Reading them is cheap anyway.
 */
const ALL_HOLES_MIN_BYTES = 1024 * 1024
/** Places (evenly spread, first and last included) read to confirm an all-holes file. */
const ALL_HOLES_PROBES = 17
const ALL_HOLES_PROBE_BYTES = 64 * 1024

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

  static async open(path: string, readOnly: boolean, blockingReads = false): Promise<RawDisk> {
    let fh: FileHandle
    try {
      fh = await open(path, readOnly ? 'r' : 'r+')
    } catch (err) {
      throw describeOpenError(err, path)
    }
    if (blockingReads) readOnCallingThread(fh)
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
    if (this.virtualSize === 0) return []
    const state = (await this.allHoles()) ? 'zero' : 'data'
    return [{ start: 0, length: this.virtualSize, state }]
  }

  /**
   * True when the file has no block allocated (st_blocks 0, asked now, not at open: writes since
   * count, delayed allocation included on ext4, XFS and btrfs), is at least ALL_HOLES_MIN_BYTES,
   * and probes spread over it read as zeros. The probes guard against a file system that reports
   * 0 blocks for everything (some FUSE ones do): a real disk image has a partition table or a
   * boot sector at 0 and a backup GPT at the end.
   */
  private async allHoles(): Promise<boolean> {
    if (this.virtualSize < ALL_HOLES_MIN_BYTES) return false
    const st = await this.fh.stat()
    if (st.blocks !== 0 || st.size !== this.virtualSize) return false
    const probe = Buffer.allocUnsafe(ALL_HOLES_PROBE_BYTES)
    const last = this.virtualSize - ALL_HOLES_PROBE_BYTES
    for (let i = 0; i < ALL_HOLES_PROBES; i++) {
      const at = Math.floor((last * i) / (ALL_HOLES_PROBES - 1))
      await readFull(this.fh, this.path, probe, 0, probe.length, at, true)
      if (!isZero(probe)) return false
    }
    return true
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

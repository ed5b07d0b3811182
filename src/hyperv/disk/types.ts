// The one interface every disk format implements (raw, VHD, VHDX). All offsets and sizes are
// bytes of the *virtual* disk unless a name says otherwise. Numbers, not bigints: 2^53 bytes
// is 8 PiB, far beyond VHDX's 64 TiB limit.

export type DiskFormat = 'vhdx' | 'vhd' | 'raw'
export type DiskSubformat = 'fixed' | 'dynamic' | 'differencing'

/** data: stored in this file; zero: reads as zeros; parent: comes from the parent disk. */
export type ExtentState = 'data' | 'zero' | 'parent'

export interface Extent {
  start: number
  length: number
  state: ExtentState
}

/** What `disk info --json` prints (DESIGN.md §7). */
export interface DiskInfo {
  format: DiskFormat
  subformat: DiskSubformat
  virtualSize: number
  /** Allocation unit of the format: VHDX/VHD block size; raw reports 0. */
  blockSize: number
  logicalSectorSize: number
  physicalSectorSize: number
  /** The parent's path as resolved on this machine, or null. */
  parent: string | null
  /** Bytes of the file taken by allocated payload blocks (not metadata). */
  allocatedBytes: number
}

export interface MapOptions {
  /** Resolve `parent` extents through the differencing chain so only data|zero remain. */
  resolveParents?: boolean
  signal?: AbortSignal
}

export interface VirtualDisk {
  readonly path: string
  readonly format: DiskFormat
  readonly subformat: DiskSubformat
  readonly virtualSize: number
  readonly logicalSectorSize: number
  readonly physicalSectorSize: number
  readonly blockSize: number
  readonly readOnly: boolean
  /** The opened parent of a differencing disk, or null. */
  readonly parent: VirtualDisk | null

  info(): DiskInfo
  /** Ordered, coalesced extents covering [0, virtualSize) exactly. */
  map(options?: MapOptions): Promise<Extent[]>
  /**
   * Reads `length` bytes of virtual content at `offset` (parents resolved) into `buffer`
   * starting at `bufferOffset`. Reads past virtualSize are refused.
   */
  read(buffer: Uint8Array, offset: number, length?: number, bufferOffset?: number): Promise<void>
  /** Writes bytes at a virtual offset; allocates blocks as needed. Crash-safe ordering. */
  write(data: Uint8Array, offset: number): Promise<void>
  /** Makes every completed write durable (fdatasync of data, then metadata). */
  flush(): Promise<void>
  /** Flushes (if writable) and releases file handles, including the parent chain's. */
  close(): Promise<void>
}

export interface OpenOptions {
  /** Default true: open read-only, never writing the file (a dirty VHDX log is replayed in memory). */
  readOnly?: boolean
  /** Skip detection. */
  format?: DiskFormat
  /**
   * Default false. Reads (this disk's and its parents') run on the calling thread with
   * fs.readSync instead of libuv's thread pool. Only for a command whose output is synchronous
   * anyway (`disk cat` to a file or /dev/null): there the pool's thread hand-offs cost about as
   * much as copying from the page cache. Never in the daemon: a slow disk would stall its loop.
   */
  blockingReads?: boolean
}

export interface CreateOptions {
  format: DiskFormat
  /** Default dynamic (raw is always 'fixed'). */
  subformat?: 'fixed' | 'dynamic'
  /** Required unless `parent` is given (then the parent's size is used). */
  virtualSize?: number
  /** Bytes: VHDX 1–256 MiB power of two (default 32 MiB), VHD default 2 MiB. */
  blockSize?: number
  /** VHDX: 512 or 4096 (default 512). */
  logicalSectorSize?: number
  /** VHDX: 512 or 4096 (default 4096). */
  physicalSectorSize?: number
  /** Path of the parent: makes a differencing disk of the same format. */
  parent?: string
}

// Pack appends with O_DIRECT, past the page cache. Measured on this machine kind (a VM whose
// memory the host backs on first touch): writing 1 GiB buffered then fdatasync cost 0.8-2.4
// system CPU-seconds, almost all of it copying into fresh page-cache pages; O_DIRECT 0.09-0.12.
// A receiver seeding at full speed spent ~0.45 of a core there, on a two-core host that also runs
// the VMs. Pack bytes are read back rarely (a restore, a materialise, GC), so caching them is
// worth nothing to the writer.
//
// O_DIRECT wants the file offset, the length and the buffer's address to be multiples of the
// device's logical block (512 here; 4096 on some disks). Appends are at arbitrary offsets, so
// every write goes through aligned bounce buffers: the partial last block is kept in memory and
// written again, zero-padded, with the next append. The file may therefore be up to a block
// longer than the data between writes; close() trims it, and after a crash open's repair cuts
// the padding like any torn tail (it never parses as a record). Node cannot align an allocation,
// so the first write finds the aligned offset into its slab by trying them: the kernel refuses a
// misaligned address with EINVAL before it writes anything.
//
// Where O_DIRECT is missing (Windows, some file systems) or no offset works, the file is written
// through the page cache as before.
import { constants, type FileHandle, open } from 'node:fs/promises'
import type { StoreFile } from './fs.js'

/** Alignment asked of offsets, lengths and addresses: covers 512- and 4096-byte devices. */
export const DIRECT_BLOCK_BYTES = 4096
/** Each bounce buffer. */
export const DIRECT_BOUNCE_BYTES = 4 * 1024 * 1024
/**
 * Bounce buffers one write uses: one is filled while the others are written, so the disk has
 * the next write queued when one completes (appends of 256 KiB records: 427-429 MiB/s with
 * three in flight, 348-429 with one).
 */
const BOUNCES_PER_WRITE = 4
/** Bounce buffers carved from one slab (the slab is just over 32 MiB: see takeBounce). */
const BOUNCES_PER_SLAB = 8
/** Allocations are at least this aligned (glibc malloc on 64-bit). */
const MALLOC_ALIGN_BYTES = 16

/** Aligned bounce buffers not in use, shared by every appender of the process (LIFO: warm pages). */
const freeBounces: Buffer[] = []

/**
 * BOUNCES_PER_WRITE aligned bounce buffers, carving a new slab when too few are free. The slab's
 * aligned offset is found by writing the file's block at `blockStart` (its own bytes, `tail`,
 * zero-padded) from each candidate offset until the kernel takes one; null when none is taken.
 * The slab is larger than glibc's largest mmap threshold (32 MiB), so it is mapped on its own, 16
 * bytes past a page: the candidate 16 bytes short of the next page is tried first and is
 * page-aligned, which the virtual disk here needs for speed (4 MiB writes: 1067 MiB/s from a
 * page-aligned buffer, 174 MiB/s from one only 512-aligned).
 */
async function takeBounce(handle: FileHandle, blockStart: number, tail: Buffer, tailBytes: number) {
  if (freeBounces.length < BOUNCES_PER_WRITE) {
    const slab = Buffer.allocUnsafeSlow(BOUNCES_PER_SLAB * DIRECT_BOUNCE_BYTES + DIRECT_BLOCK_BYTES)
    const candidates = [DIRECT_BLOCK_BYTES - MALLOC_ALIGN_BYTES]
    for (let k = 0; k < DIRECT_BLOCK_BYTES - MALLOC_ALIGN_BYTES; k += MALLOC_ALIGN_BYTES) candidates.push(k)
    let aligned = -1
    for (const k of candidates) {
      const probe = slab.subarray(k, k + DIRECT_BLOCK_BYTES)
      tail.copy(probe, 0, 0, tailBytes)
      probe.fill(0, tailBytes)
      try {
        await handle.write(probe, 0, DIRECT_BLOCK_BYTES, blockStart)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EINVAL') continue
        throw err
      }
      aligned = k
      break
    }
    if (aligned < 0) return null
    for (let i = BOUNCES_PER_SLAB - 1; i >= 0; i--) {
      const at = aligned + i * DIRECT_BOUNCE_BYTES
      freeBounces.push(slab.subarray(at, at + DIRECT_BOUNCE_BYTES))
    }
  }
  return freeBounces.splice(-BOUNCES_PER_WRITE)
}

/**
 * Opens the existing file `path` for appends with O_DIRECT, or returns null when this platform
 * or file system has none. Reads are not offered (the pack writer never reads; a reader opens
 * the file on its own).
 */
export async function openDirectAppender(path: string): Promise<StoreFile | null> {
  const direct = constants.O_DIRECT
  if (direct === undefined) return null
  let handle: FileHandle
  try {
    handle = await open(path, constants.O_RDWR | direct)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EINVAL') return null
    throw err
  }
  return new DirectAppender(handle, path)
}

class DirectAppender implements StoreFile {
  /** Bytes of the file's data written by this appender so far, or -1 when unknown. */
  private end = -1
  /** The file's bytes from the block start before `end` up to `end` (the partial last block). */
  private tail = Buffer.alloc(DIRECT_BLOCK_BYTES)
  /** Writes go through the page cache: O_DIRECT refused every aligned offset. */
  private buffered: FileHandle | null = null

  constructor(
    private readonly handle: FileHandle,
    private readonly path: string,
  ) {}

  async read(): Promise<number> {
    throw new Error(`${this.path}: the pack appender does not read`)
  }

  async writev(buffers: Uint8Array[], position: number): Promise<void> {
    if (this.buffered) return this.writeBuffered(buffers, position)
    if (position !== this.end) await this.loadTail(position)
    const blockStart = position - (position % DIRECT_BLOCK_BYTES)
    const bounce = await takeBounce(this.handle, blockStart, this.tail, position - blockStart)
    if (!bounce) return this.writeBuffered(buffers, position)
    try {
      await this.writeThrough(bounce, buffers, position, blockStart)
    } catch (err) {
      // Buffers aligned for another device than this file's: write it through the page cache.
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err
      await this.writeBuffered(buffers, position)
    } finally {
      freeBounces.push(...bounce)
    }
  }

  /** Copies `buffers` after the partial block into the bounce buffers and writes them. */
  private async writeThrough(
    bounce: Buffer[],
    buffers: Uint8Array[],
    position: number,
    blockStart: number,
  ): Promise<void> {
    let at = blockStart
    let current = 0
    let fill = position - blockStart
    bounce[0].set(this.tail.subarray(0, fill))
    // Writes in flight, oldest first: buffer k is filled again only after its write is done.
    const inFlight: Promise<void>[] = []
    try {
      for (const b of buffers) {
        let off = 0
        while (off < b.length) {
          const n = Math.min(DIRECT_BOUNCE_BYTES - fill, b.length - off)
          bounce[current].set(b.subarray(off, off + n), fill)
          fill += n
          off += n
          if (fill < DIRECT_BOUNCE_BYTES) continue
          inFlight.push(this.writeAll(bounce[current], at))
          at += DIRECT_BOUNCE_BYTES
          current = (current + 1) % bounce.length
          fill = 0
          if (inFlight.length === bounce.length) await inFlight.shift()
        }
      }
      await Promise.all(inFlight)
    } finally {
      // Never hand the buffers back while a write still reads them.
      await Promise.allSettled(inFlight)
    }
    const whole = fill - (fill % DIRECT_BLOCK_BYTES)
    const last = bounce[current]
    if (fill > 0) {
      const padded = fill === whole ? fill : whole + DIRECT_BLOCK_BYTES
      last.fill(0, fill, padded)
      await this.writeAll(last.subarray(0, padded), at)
    }
    last.copy(this.tail, 0, whole, fill)
    this.end = at + fill
  }

  /** Writes all of an aligned buffer at an aligned offset. */
  private async writeAll(buf: Buffer, position: number): Promise<void> {
    let done = 0
    while (done < buf.length) {
      const { bytesWritten } = await this.handle.write(buf, done, buf.length - done, position + done)
      if (bytesWritten === 0) throw new Error(`${this.path}: write at ${position + done} wrote nothing`)
      done += bytesWritten
    }
  }

  /** Reads the partial block before `position` (an append where this appender did not end). */
  private async loadTail(position: number): Promise<void> {
    const blockStart = position - (position % DIRECT_BLOCK_BYTES)
    const want = position - blockStart
    if (want > 0) {
      const reader = await open(this.path, 'r')
      try {
        const { bytesRead } = await reader.read(this.tail, 0, want, blockStart)
        if (bytesRead !== want) throw new Error(`${this.path}: cannot append at ${position}, past its end`)
      } finally {
        await reader.close()
      }
    }
    this.end = position
  }

  private async writeBuffered(buffers: Uint8Array[], position: number): Promise<void> {
    this.buffered ??= await open(this.path, 'r+')
    await writevAll(this.buffered, buffers, position, this.path)
    this.end = -1
  }

  async sync(): Promise<void> {
    await (this.buffered ?? this.handle).datasync()
  }

  async truncate(length: number): Promise<void> {
    await this.handle.truncate(length)
    this.end = -1
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size
  }

  /** Trims the padding of the last block, so a closed pack ends at its data. */
  async close(): Promise<void> {
    try {
      if (this.end >= 0 && this.end % DIRECT_BLOCK_BYTES !== 0) await this.handle.truncate(this.end)
    } finally {
      await this.buffered?.close()
      await this.handle.close()
    }
  }
}

/** Writes all `buffers` back to back at `position`, however many calls the kernel takes. */
export async function writevAll(
  handle: FileHandle,
  buffers: Uint8Array[],
  position: number,
  path: string,
): Promise<void> {
  let pos = position
  let rest = buffers.filter((b) => b.byteLength > 0)
  while (rest.length > 0) {
    const { bytesWritten } = await handle.writev(rest, pos)
    if (bytesWritten === 0) throw new Error(`${path}: write at ${pos} wrote nothing`)
    pos += bytesWritten
    rest = dropBytes(rest, bytesWritten)
  }
}

/** What remains of `buffers` after the first `count` bytes (a partial writev). */
function dropBytes(buffers: Uint8Array[], count: number): Uint8Array[] {
  let left = count
  const out: Uint8Array[] = []
  for (const b of buffers) {
    if (left >= b.byteLength) {
      left -= b.byteLength
      continue
    }
    out.push(left > 0 ? b.subarray(left) : b)
    left = 0
  }
  return out
}

// Positional file I/O that never accepts a short read or write as done. Shared by raw, VHD and
// VHDX. A handle marked with readOnCallingThread reads with fs.readSync instead of the thread pool.
import { readSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { DiskError } from './errors.js'

/** Handles whose reads run on the calling thread (OpenOptions.blockingReads). */
const callingThreadHandles = new WeakSet<FileHandle>()

/**
 * Makes every later read through `fh` (readAt, readFull) a blocking fs.readSync on the calling
 * thread. For a command whose sink is synchronous anyway: a thread-pool read costs two thread
 * hand-offs, which for a page-cache hit cost about as much as the copy. Never for a daemon.
 */
export function readOnCallingThread(fh: FileHandle): void {
  callingThreadHandles.add(fh)
}

/** One positional read (possibly short); the bytes read. */
export function readAt(
  fh: FileHandle,
  buffer: Uint8Array,
  bufferOffset: number,
  length: number,
  position: number,
): number | Promise<number> {
  if (callingThreadHandles.has(fh)) return readSync(fh.fd, buffer, bufferOffset, length, position)
  return fh.read(buffer, bufferOffset, length, position).then((r) => r.bytesRead)
}

/**
 * Reads exactly `length` bytes at `position`. Bytes past the end of the file read as zeros only
 * when `zeroPastEof`; otherwise a short file is an error naming the offset.
 */
export async function readFull(
  fh: FileHandle,
  path: string,
  buffer: Uint8Array,
  bufferOffset: number,
  length: number,
  position: number,
  zeroPastEof = false,
): Promise<void> {
  let done = 0
  while (done < length) {
    const bytesRead = await readAt(fh, buffer, bufferOffset + done, length - done, position + done)
    if (bytesRead === 0) {
      if (!zeroPastEof)
        throw new DiskError(`file ends at ${position + done}, needed ${length - done} more bytes`, path)
      buffer.fill(0, bufferOffset + done, bufferOffset + length)
      return
    }
    done += bytesRead
  }
}

export async function writeFull(
  fh: FileHandle,
  buffer: Uint8Array,
  bufferOffset: number,
  length: number,
  position: number,
): Promise<void> {
  let done = 0
  while (done < length) {
    const { bytesWritten } = await fh.write(buffer, bufferOffset + done, length - done, position + done)
    done += bytesWritten
  }
}

/** Turns errno errors of opening a file into one line naming the file and the problem. */
export function describeOpenError(err: unknown, path: string): Error {
  const code = (err as NodeJS.ErrnoException)?.code
  const why: Record<string, string> = {
    ENOENT: 'no such file',
    EACCES: 'permission denied',
    EISDIR: 'is a directory',
    EEXIST: 'already exists',
    ENOTDIR: 'a path component is not a directory',
  }
  if (code && why[code]) return new DiskError(why[code], path)
  return err instanceof Error ? err : new Error(String(err))
}

/** True when every byte is zero (word-wise for speed on large buffers). */
export function isZero(buf: Uint8Array, start = 0, end = buf.length): boolean {
  let i = start
  while (i < end && (buf.byteOffset + i) % 8 !== 0) if (buf[i++] !== 0) return false
  const words = Math.floor((end - i) / 8)
  if (words > 0) {
    const view = new BigUint64Array(buf.buffer, buf.byteOffset + i, words)
    for (let w = 0; w < words; w++) if (view[w] !== 0n) return false
    i += words * 8
  }
  while (i < end) if (buf[i++] !== 0) return false
  return true
}

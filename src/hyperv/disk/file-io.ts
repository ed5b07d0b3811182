// Positional file I/O that never accepts a short read or write as done. Shared by raw and VHD.
import type { FileHandle } from 'node:fs/promises'
import { DiskError } from './errors.js'

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
    const { bytesRead } = await fh.read(buffer, bufferOffset + done, length - done, position + done)
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

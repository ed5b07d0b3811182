// All file access of the store's pack files goes through StoreFs, so tests can wrap it with
// fault injection (fail the nth write, corrupt a read) the way Syncthing's lib/fs does. The
// LevelDB index opens its own directory: its crash safety is LevelDB's.
import { open as fsOpen, mkdir, readdir, rm, stat } from 'node:fs/promises'
import { openDirectAppender, writevAll } from './direct-file.js'

export interface StoreFile {
  /** Reads exactly `length` bytes at `position` into buffer[offset..]; short reads are errors. */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>
  /** Writes all buffers back to back at `position`. */
  writev(buffers: Uint8Array[], position: number): Promise<void>
  /** fdatasync: data written so far is durable. */
  sync(): Promise<void>
  truncate(length: number): Promise<void>
  size(): Promise<number>
  close(): Promise<void>
}

export interface StoreFs {
  /**
   * 'r' read only, 'r+' read/write an existing file, 'wx' create a new file (fails if present).
   * `direct`: a pack writer's file, written past the page cache where the platform allows
   * (direct-file.ts); it cannot read.
   */
  open(path: string, flags: 'r' | 'r+' | 'wx', options?: { direct?: boolean }): Promise<StoreFile>
  mkdir(path: string): Promise<void>
  /** Names in a directory ([] when it does not exist). */
  list(path: string): Promise<string[]>
  remove(path: string): Promise<void>
  exists(path: string): Promise<boolean>
  /** fsync of a directory, so created and removed names are durable. */
  syncDir(path: string): Promise<void>
}

/** The real file system. */
export const nodeStoreFs: StoreFs = {
  async open(path, flags, options) {
    if (options?.direct && flags !== 'r') {
      if (flags === 'wx') await (await fsOpen(path, 'wx')).close()
      const direct = await openDirectAppender(path)
      if (direct) return direct
      flags = 'r+'
    }
    const handle = await fsOpen(path, flags)
    return {
      async read(buffer, offset, length, position) {
        let done = 0
        while (done < length) {
          const { bytesRead } = await handle.read(buffer, offset + done, length - done, position + done)
          if (bytesRead === 0) break
          done += bytesRead
        }
        return done
      },
      writev: (buffers, position) => writevAll(handle, buffers, position, path),
      sync: () => handle.datasync(),
      truncate: (length) => handle.truncate(length),
      size: async () => (await handle.stat()).size,
      close: () => handle.close(),
    }
  },
  async mkdir(path) {
    await mkdir(path, { recursive: true })
  },
  async list(path) {
    try {
      return await readdir(path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
  },
  remove: (path) => rm(path, { force: true }),
  async exists(path) {
    try {
      await stat(path)
      return true
    } catch {
      return false
    }
  },
  async syncDir(path) {
    // Windows cannot open a directory for fsync; NTFS journals names itself.
    if (process.platform === 'win32') return
    const handle = await fsOpen(path, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  },
}

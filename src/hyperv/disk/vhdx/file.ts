// File access under the VHDX code: positional reads that see a log replayed in memory (an
// overlay of 4 KiB pages, MS-VHDX §2.3.3) without ever writing the source, and writes for the
// writable case. Reads past the physical end of the file return zeros when a replayed log
// extended the file (LastFileOffset), as the replay would have.
import type { FileHandle } from 'node:fs/promises'
import { readAt } from '../file-io.js'
import { LOG_SECTOR_SIZE } from './constants.js'

export class VhdxFile {
  /** 4 KiB pages replayed from the log, by page index (file offset / 4096). */
  private overlay: Map<number, Buffer> | null = null
  /** Byte ranges the log zeroed, older than every page of `overlay`. */
  private zeroRanges: [number, number][] = []
  private logicalSize: number

  constructor(
    readonly path: string,
    readonly handle: FileHandle,
    private physicalSize: number,
  ) {
    this.logicalSize = physicalSize
  }

  /** Size of the file as the reader sees it (after an in-memory log replay). */
  get size(): number {
    return this.logicalSize
  }

  setOverlay(pages: Map<number, Buffer>, zeroRanges: [number, number][], minSize: number): void {
    this.overlay = pages.size > 0 ? pages : null
    this.zeroRanges = zeroRanges
    this.logicalSize = Math.max(this.physicalSize, minSize)
  }

  /** Reads exactly `length` bytes at `fileOffset` into `buffer` at `bufferOffset`. */
  async read(buffer: Uint8Array, bufferOffset: number, length: number, fileOffset: number): Promise<void> {
    let done = 0
    while (done < length) {
      const at = fileOffset + done
      if (at >= this.physicalSize) break
      const want = Math.min(length - done, this.physicalSize - at)
      const bytesRead = await readAt(this.handle, buffer, bufferOffset + done, want, at)
      if (bytesRead === 0) break
      done += bytesRead
    }
    if (done < length) buffer.fill(0, bufferOffset + done, bufferOffset + length)
    for (const [start, end] of this.zeroRanges) {
      const from = Math.max(start, fileOffset)
      const to = Math.min(end, fileOffset + length)
      if (to > from) buffer.fill(0, bufferOffset + (from - fileOffset), bufferOffset + (to - fileOffset))
    }
    if (this.overlay) this.applyOverlay(buffer, bufferOffset, length, fileOffset)
  }

  async readBytes(fileOffset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length)
    await this.read(buf, 0, length, fileOffset)
    return buf
  }

  private applyOverlay(buffer: Uint8Array, bufferOffset: number, length: number, fileOffset: number): void {
    const overlay = this.overlay as Map<number, Buffer>
    const first = Math.floor(fileOffset / LOG_SECTOR_SIZE)
    const last = Math.floor((fileOffset + length - 1) / LOG_SECTOR_SIZE)
    if (last - first + 1 > overlay.size) {
      for (const [page, data] of overlay) {
        if (page >= first && page <= last) this.copyPage(buffer, bufferOffset, length, fileOffset, page, data)
      }
      return
    }
    for (let page = first; page <= last; page++) {
      const data = overlay.get(page)
      if (data) this.copyPage(buffer, bufferOffset, length, fileOffset, page, data)
    }
  }

  private copyPage(
    buffer: Uint8Array,
    bufferOffset: number,
    length: number,
    fileOffset: number,
    page: number,
    data: Buffer,
  ): void {
    const pageStart = page * LOG_SECTOR_SIZE
    const from = Math.max(pageStart, fileOffset)
    const to = Math.min(pageStart + LOG_SECTOR_SIZE, fileOffset + length)
    buffer.set(data.subarray(from - pageStart, to - pageStart), bufferOffset + (from - fileOffset))
  }

  async write(data: Uint8Array, fileOffset: number): Promise<void> {
    let done = 0
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, fileOffset + done)
      done += bytesWritten
    }
    this.grow(fileOffset + data.length)
  }

  /** Extends (or cuts) the file; new space reads as zeros and takes no disk space. */
  async truncate(size: number): Promise<void> {
    await this.handle.truncate(size)
    this.physicalSize = size
    this.logicalSize = size
  }

  private grow(end: number): void {
    if (end > this.physicalSize) this.physicalSize = end
    if (end > this.logicalSize) this.logicalSize = end
  }

  async sync(): Promise<void> {
    await this.handle.datasync()
  }

  async close(): Promise<void> {
    await this.handle.close()
  }
}

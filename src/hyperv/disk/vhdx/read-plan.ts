// Coalescing of the pieces one read turns into: consecutive file ranges that are contiguous
// both in the file and in the caller's buffer become one positional read; the same for ranges
// of the parent disk. A 4 MiB read over contiguous blocks is one syscall, not thousands.
import type { VirtualDisk } from '../types.js'
import type { VhdxFile } from './file.js'

interface Pending {
  kind: 'file' | 'parent'
  /** File offset (file) or virtual offset (parent). */
  source: number
  length: number
  at: number
}

export class ReadPlan {
  private pending: Pending | null = null

  constructor(
    private readonly vhdxFile: VhdxFile,
    private readonly parentDisk: VirtualDisk | null,
    private readonly buffer: Uint8Array,
  ) {}

  async file(fileOffset: number, length: number, at: number): Promise<void> {
    await this.add('file', fileOffset, length, at)
  }

  async parent(virtualOffset: number, length: number, at: number): Promise<void> {
    await this.add('parent', virtualOffset, length, at)
  }

  zero(at: number, length: number): void {
    this.buffer.fill(0, at, at + length)
  }

  private async add(kind: Pending['kind'], source: number, length: number, at: number): Promise<void> {
    const p = this.pending
    if (p && p.kind === kind && p.source + p.length === source && p.at + p.length === at) {
      p.length += length
      return
    }
    await this.finish()
    this.pending = { kind, source, length, at }
  }

  async finish(): Promise<void> {
    const p = this.pending
    if (!p) return
    this.pending = null
    if (p.kind === 'file') await this.vhdxFile.read(this.buffer, p.at, p.length, p.source)
    else if (this.parentDisk) await this.parentDisk.read(this.buffer, p.source, p.length, p.at)
    else this.buffer.fill(0, p.at, p.at + p.length)
  }
}

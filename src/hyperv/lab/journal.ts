// The copy-on-write journal of a frozen point. While the replicator reads a point, the guest's
// writes are appended here instead of reaching the disks; releasing the point replays them in
// order. A guest that dies while frozen leaves the journal behind, and the next start replays
// every complete entry (a torn tail entry fails its checksum and ends the replay): no write the
// guest completed is lost.
import { type FileHandle, open, rm } from 'node:fs/promises'
import { crc32 } from 'node:zlib'

const ENTRY_MAGIC = 0x314a4d52 // "RMJ1"
const ENTRY_HEADER_BYTES = 32

export interface JournalEntry {
  disk: number
  offset: number
  data: Buffer
}

export class Journal {
  private size = 0
  private entryCount = 0

  private constructor(
    readonly file: string,
    private readonly fh: FileHandle,
  ) {}

  /** Creates (or empties) the journal file. */
  static async create(file: string): Promise<Journal> {
    return new Journal(file, await open(file, 'w+'))
  }

  get bytes(): number {
    return this.size
  }

  get entries(): number {
    return this.entryCount
  }

  async append(disk: number, offset: number, data: Uint8Array): Promise<void> {
    const header = Buffer.alloc(ENTRY_HEADER_BYTES)
    header.writeUInt32LE(ENTRY_MAGIC, 0)
    header.writeUInt32LE(disk, 4)
    header.writeBigUInt64LE(BigInt(offset), 8)
    header.writeUInt32LE(data.length, 16)
    header.writeUInt32LE(crc32(data), 20)
    header.writeUInt32LE(crc32(header.subarray(0, 24)), 24)
    await this.fh.writev([header, data], this.size)
    this.size += ENTRY_HEADER_BYTES + data.length
    this.entryCount++
  }

  /** The complete entries, in the order they were written. */
  replay(): AsyncGenerator<JournalEntry> {
    return readEntries(this.fh)
  }

  /** Empties the journal after a replay. */
  async reset(): Promise<void> {
    await this.fh.truncate(0)
    this.size = 0
    this.entryCount = 0
  }

  async close(removeFile: boolean): Promise<void> {
    await this.fh.close()
    if (removeFile) await rm(this.file, { force: true })
  }
}

/** Entries of a journal left by an earlier run (none when the file does not exist). */
export async function* readJournalFile(file: string): AsyncGenerator<JournalEntry> {
  let fh: FileHandle
  try {
    fh = await open(file, 'r')
  } catch {
    return
  }
  try {
    yield* readEntries(fh)
  } finally {
    await fh.close()
  }
}

async function* readEntries(fh: FileHandle): AsyncGenerator<JournalEntry> {
  const header = Buffer.alloc(ENTRY_HEADER_BYTES)
  let pos = 0
  for (;;) {
    const { bytesRead } = await fh.read(header, 0, ENTRY_HEADER_BYTES, pos)
    if (bytesRead < ENTRY_HEADER_BYTES) return
    if (header.readUInt32LE(0) !== ENTRY_MAGIC || header.readUInt32LE(24) !== crc32(header.subarray(0, 24)))
      return
    const length = header.readUInt32LE(16)
    const data = Buffer.alloc(length)
    const got = await fh.read(data, 0, length, pos + ENTRY_HEADER_BYTES)
    if (got.bytesRead < length || crc32(data) !== header.readUInt32LE(20)) return
    yield { disk: header.readUInt32LE(4), offset: Number(header.readBigUInt64LE(8)), data }
    pos += ENTRY_HEADER_BYTES + length
  }
}

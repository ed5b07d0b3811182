// Builds a VHDX whose log holds updates that were never applied: what a crash between writing
// the log and applying it leaves behind (MS-VHDX §2.3). Used by tests as a fixture: the
// updates are written as log entries, the header gets a new LogGuid, and nothing else changes.
import { open } from 'node:fs/promises'
import { HEADER_OFFSETS, LOG_SECTOR_SIZE } from './constants.js'
import { VhdxFile } from './file.js'
import { serializeHeader } from './format.js'
import { newGuid } from './guid.js'
import { readCurrentHeader } from './layout.js'
import { type LogUpdate, serializeLogEntry } from './log.js'

export interface DirtyLogOptions {
  /** Split the updates over this many consecutive entries (default 1). */
  entries?: number
  /** First entry's sequence number (default 1000). */
  firstSequence?: bigint
  /** Where in the log ring the first entry goes (a multiple of 4 KiB, default 0). */
  startPosition?: number
  /** LastFileOffset of the entries (default: the file's size, or the end of the last update past it). */
  lastFileOffset?: number
}

export async function writeVhdxDirtyLog(
  path: string,
  updates: LogUpdate[],
  options: DirtyLogOptions = {},
): Promise<void> {
  const handle = await open(path, 'r+')
  try {
    const file = new VhdxFile(path, handle, (await handle.stat()).size)
    const current = await readCurrentHeader(file)
    const { logOffset, logLength } = current.header
    const logGuid = newGuid()
    const count = Math.max(1, Math.min(options.entries ?? 1, updates.length || 1))
    const per = Math.ceil(updates.length / count)
    const start = options.startPosition ?? 0
    let position = start
    let sequence = options.firstSequence ?? 1000n
    let used = 0
    const lastFileOffset =
      options.lastFileOffset ??
      Math.max(
        file.size,
        ...updates.map((u) => u.fileOffset + (u.data ? LOG_SECTOR_SIZE : (u.zeroLength ?? 0))),
      )
    for (let i = 0; i < count; i++) {
      const entry = serializeLogEntry(
        { logGuid, sequence, tail: start, flushedFileOffset: file.size, lastFileOffset },
        updates.slice(i * per, (i + 1) * per),
      )
      used += entry.length
      if (used > logLength) throw new RangeError(`the updates need more than the log's ${logLength} bytes`)
      // The log is a ring: an entry may wrap past its end.
      const first = Math.min(entry.length, logLength - position)
      await file.write(entry.subarray(0, first), logOffset + position)
      if (first < entry.length) await file.write(entry.subarray(first), logOffset)
      position = (position + entry.length) % logLength
      sequence++
    }
    await file.sync()
    const header = { ...current.header, logGuid, sequenceNumber: current.header.sequenceNumber + 1n }
    await file.write(serializeHeader(header), HEADER_OFFSETS[1 - current.slot])
    await file.sync()
  } finally {
    await handle.close()
  }
}

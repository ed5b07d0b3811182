// VHDX (MS-VHDX): reader, writer, log replay, differencing. The front door of the format;
// the dispatcher (../open.ts) calls openVhdx and createVhdx.
//
// Files: constants.ts, guid.ts, crc32c.ts, format.ts (structures), layout.ts (opening them
// in order, header updates), file.ts (positional I/O with the in-memory log overlay), log.ts
// (the metadata log), bat.ts and bitmap.ts (allocation), read-plan.ts (coalesced reads),
// disk.ts (the VirtualDisk), open.ts (opening, parent lookup), create.ts, dirty-log.ts
// (fixtures: a log written but not applied).
import type { CreateOptions, VirtualDisk } from '../types.js'
import { createVhdxDisk } from './create.js'
import { type OpenParent, openVhdxDisk } from './open.js'

export { crc32c } from './crc32c.js'
export { type DirtyLogOptions, writeVhdxDirtyLog } from './dirty-log.js'
export type { LogUpdate } from './log.js'
export type { OpenParent } from './open.js'

export interface VhdxOpenOptions {
  readOnly: boolean
  /** Opens a differencing disk's parent (any format the dispatcher knows; VHDX in practice). */
  openParent: OpenParent
  /** Reads on the calling thread (OpenOptions.blockingReads). */
  blockingReads?: boolean
}

/**
 * Opens a VHDX. Read-only never writes the file (a dirty log is replayed in memory); writable
 * replays a dirty log into the file and clears it. A differencing disk's parent is found
 * through its parent locator and must carry the DataWriteGuid the child names.
 */
export async function openVhdx(path: string, options: VhdxOpenOptions): Promise<VirtualDisk> {
  return openVhdxDisk(path, options.readOnly, options.openParent, options.blockingReads)
}

/**
 * Creates a VHDX (refusing to overwrite an existing file) and returns it open for writing.
 * Defaults: dynamic, 32 MiB blocks, 512-byte logical and 4096-byte physical sectors. With
 * `parent`, a differencing disk of the parent's size and logical sector size.
 */
export async function createVhdx(
  path: string,
  options: CreateOptions,
  openParent: OpenParent,
): Promise<VirtualDisk> {
  return createVhdxDisk(path, options, openParent)
}

// Opening a VHDX: structures (layout.ts), log replay, BAT, and the parent of a differencing
// disk, found through the parent locator and checked against its DataWriteGuid.
import { access, open } from 'node:fs/promises'
import { basename, dirname, isAbsolute, resolve } from 'node:path'
import { CorruptDiskError, ParentMismatchError } from '../errors.js'
import { readOnCallingThread } from '../file-io.js'
import type { VirtualDisk } from '../types.js'
import { Bat } from './bat.js'
import { FILE_IDENTIFIER_SIGNATURE, LOG_SECTOR_SIZE, MiB } from './constants.js'
import { VhdxDisk } from './disk.js'
import { VhdxFile } from './file.js'
import { ZERO_GUID } from './guid.js'
import { readCurrentHeader, readLayout, readLog, updateHeader, type VhdxLayout } from './layout.js'
import type { LogReplay } from './log.js'

export type OpenParent = (parentPath: string) => Promise<VirtualDisk>

export async function openVhdxDisk(
  path: string,
  readOnly: boolean,
  openParent: OpenParent,
  blockingReads = false,
): Promise<VhdxDisk> {
  const handle = await open(path, readOnly ? 'r' : 'r+')
  if (blockingReads) readOnCallingThread(handle)
  let parent: VirtualDisk | null = null
  try {
    const file = new VhdxFile(path, handle, (await handle.stat()).size)
    const ident = await file.readBytes(0, 8)
    if (file.size < 8 || ident.toString('latin1') !== FILE_IDENTIFIER_SIGNATURE) {
      throw new CorruptDiskError(path, 'file identifier: signature is not "vhdxfile"', 0)
    }
    let current = await readCurrentHeader(file)
    const replay = await readLog(file, current.header)
    if (replay && readOnly) {
      file.setOverlay(replay.pages, replay.zeroRanges, replay.lastFileOffset)
    } else if (replay) {
      await replayIntoFile(file, replay)
    }
    if (!readOnly && !current.header.logGuid.equals(ZERO_GUID)) {
      current = await updateHeader(file, current, { logGuid: ZERO_GUID })
    }
    const layout = await readLayout(file, current)
    const g = layout.geometry
    const bat = new Bat(await file.readBytes(layout.batOffset, g.entryCount * 8), g)
    const allocationEnd = bat.validate(path, layout.batOffset, file.size)
    let parentPath: string | null = null
    if (layout.hasParent) {
      parentPath = await findParent(path, layout)
      parent = await openParent(parentPath)
      checkParent(path, parentPath, layout, parent)
    }
    return new VhdxDisk({ file, layout, bat, readOnly, parent, parentPath, allocationEnd })
  } catch (err) {
    await parent?.close()
    await handle.close()
    throw err
  }
}

/** MS-VHDX §2.3.3: apply the entries, extend the file and flush; the caller then clears LogGuid. */
async function replayIntoFile(file: VhdxFile, replay: LogReplay): Promise<void> {
  const zeros = Buffer.alloc(MiB)
  for (const [start, end] of replay.zeroRanges) {
    for (let at = start; at < end; at += zeros.length) {
      await file.write(zeros.subarray(0, Math.min(zeros.length, end - at)), at)
    }
  }
  // Pages after zero ranges: every surviving page is newer than the zeros under it.
  for (const [page, data] of [...replay.pages].sort((a, b) => a[0] - b[0])) {
    await file.write(data, page * LOG_SECTOR_SIZE)
  }
  if (replay.lastFileOffset > file.size) await file.truncate(replay.lastFileOffset)
  await file.sync()
}

/** MS-VHDX §2.6.2.6.3: relative_path, then volume_path, then absolute_win32_path. */
async function findParent(path: string, layout: VhdxLayout): Promise<string> {
  const locator = layout.parentLocator as Map<string, string>
  const dir = dirname(path)
  const candidates: string[] = []
  const rel = locator.get('relative_path')
  if (rel) candidates.push(resolve(dir, rel.replace(/\\/g, '/')))
  for (const key of ['volume_path', 'absolute_win32_path']) {
    const v = locator.get(key)
    if (v && isAbsolute(v)) candidates.push(v)
  }
  // A chain copied from Windows keeps its files together: try the parent's name beside the child.
  for (const key of ['relative_path', 'absolute_win32_path', 'volume_path']) {
    const v = locator.get(key)
    if (v) candidates.push(resolve(dir, basename(v.replace(/\\/g, '/'))))
  }
  for (const c of candidates) {
    try {
      await access(c)
      return c
    } catch {
      // try the next one
    }
  }
  throw new ParentMismatchError(
    `parent not found (tried ${[...new Set(candidates)].join(', ') || 'nothing'})`,
    path,
  )
}

function checkParent(path: string, parentPath: string, layout: VhdxLayout, parent: VirtualDisk): void {
  const locator = layout.parentLocator as Map<string, string>
  const linkage = locator.get('parent_linkage')
  if (!linkage)
    throw new CorruptDiskError(path, 'metadata Parent Locator: no parent_linkage', layout.metadataOffset)
  const guid = (parent as { vhdxDataWriteGuid?: string }).vhdxDataWriteGuid
  if (!guid) throw new ParentMismatchError(`parent ${parentPath} is not a VHDX`, path)
  const accepted = [linkage, locator.get('parent_linkage2')]
    .filter(Boolean)
    .map((s) => (s as string).toLowerCase())
  if (!accepted.includes(guid.toLowerCase())) {
    throw new ParentMismatchError(
      `parent ${parentPath} has DataWriteGuid ${guid}, but the child was made from ${linkage} (the parent changed)`,
      path,
    )
  }
  if (parent.virtualSize !== layout.virtualSize || parent.logicalSectorSize !== layout.logicalSectorSize) {
    throw new ParentMismatchError(
      `parent ${parentPath} is ${parent.virtualSize} bytes with ${parent.logicalSectorSize}-byte sectors; the child is ${layout.virtualSize} with ${layout.logicalSectorSize}`,
      path,
    )
  }
}

// Opening a VHDX file's structures, in the order MS-VHDX §2.2–2.6 requires: file identifier,
// the current header, the log (replayed: in memory when read-only, into the file when
// writable), the region table, the metadata, the BAT. Every failure names the structure and
// its file offset.
import { CorruptDiskError, UnsupportedDiskError } from '../errors.js'
import {
  BAT_REGION_GUID,
  FILE_PARAM_HAS_PARENT,
  FILE_PARAM_LEAVE_BLOCKS_ALLOCATED,
  HEADER_OFFSETS,
  HEADER_SECTION_SIZE,
  HEADER_SIZE,
  LOG_SECTOR_SIZE,
  MAX_BLOCK_SIZE,
  MAX_LOG_LENGTH,
  MAX_METADATA_ITEM_SIZE,
  MAX_VIRTUAL_SIZE,
  META_FILE_PARAMETERS,
  META_LOGICAL_SECTOR_SIZE,
  META_PAGE83,
  META_PARENT_LOCATOR,
  META_PHYSICAL_SECTOR_SIZE,
  META_VIRTUAL_DISK_SIZE,
  METADATA_REGION_GUID,
  METADATA_TABLE_SIZE,
  MIN_BLOCK_SIZE,
  MiB,
  REGION_TABLE_OFFSETS,
  REGION_TABLE_SIZE,
} from './constants.js'
import type { VhdxFile } from './file.js'
import {
  BatGeometry,
  parseHeader,
  parseMetadataTable,
  parseParentLocator,
  parseRegionTable,
  serializeHeader,
  type VhdxHeader,
} from './format.js'
import { guidEquals, isZeroGuid } from './guid.js'
import { findActiveLog, type LogReplay } from './log.js'

export interface CurrentHeader {
  header: VhdxHeader
  /** 0 or 1: which of the two header slots holds it. */
  slot: number
}

export interface VhdxLayout {
  current: CurrentHeader
  batOffset: number
  batLength: number
  metadataOffset: number
  blockSize: number
  hasParent: boolean
  leaveBlocksAllocated: boolean
  virtualSize: number
  logicalSectorSize: number
  physicalSectorSize: number
  parentLocator: Map<string, string> | null
  geometry: BatGeometry
}

export async function readCurrentHeader(file: VhdxFile): Promise<CurrentHeader> {
  const results: (VhdxHeader | string)[] = []
  for (const at of HEADER_OFFSETS) results.push(parseHeader(await file.readBytes(at, HEADER_SIZE)))
  const [a, b] = results
  let current: CurrentHeader
  if (typeof a === 'string' && typeof b === 'string') {
    throw new CorruptDiskError(
      file.path,
      `header: both copies are invalid (1: ${a}; 2: ${b})`,
      HEADER_OFFSETS[0],
    )
  } else if (typeof a === 'string') {
    current = { header: b as VhdxHeader, slot: 1 }
  } else if (typeof b === 'string') {
    current = { header: a, slot: 0 }
  } else {
    current = b.sequenceNumber > a.sequenceNumber ? { header: b, slot: 1 } : { header: a, slot: 0 }
  }
  const h = current.header
  const at = HEADER_OFFSETS[current.slot]
  if (h.version !== 1)
    throw new UnsupportedDiskError(`header version ${h.version} (only 1 is known)`, file.path)
  if (h.logVersion !== 0)
    throw new UnsupportedDiskError(`log version ${h.logVersion} (only 0 is known)`, file.path)
  if (h.logLength % MiB || h.logOffset % MiB || (h.logLength > 0 && h.logOffset < MiB)) {
    throw new CorruptDiskError(
      file.path,
      `header: log at ${h.logOffset} of ${h.logLength} bytes is not 1 MiB aligned`,
      at,
    )
  }
  return current
}

/** Finds and replays a non-empty log: returns the replay for the caller to apply, or null. */
export async function readLog(file: VhdxFile, header: VhdxHeader) {
  if (isZeroGuid(header.logGuid) || header.logLength === 0) return null
  if (header.logOffset + header.logLength > file.size) {
    throw new CorruptDiskError(
      file.path,
      `log region extends past the end of the file (${file.size} bytes)`,
      header.logOffset,
    )
  }
  if (header.logLength > MAX_LOG_LENGTH) {
    throw new UnsupportedDiskError(
      `a log of ${header.logLength} bytes (we replay logs up to ${MAX_LOG_LENGTH})`,
      file.path,
    )
  }
  const ring = await file.readBytes(header.logOffset, header.logLength)
  const replay = findActiveLog(ring, header.logGuid, file.path, header.logOffset)
  if (replay) checkReplayBounds(file, header, replay)
  return replay
}

/** The log may grow the file (LastFileOffset) but never write past what it says it grows to. */
function checkReplayBounds(file: VhdxFile, header: VhdxHeader, replay: LogReplay): void {
  const limit = Math.max(file.size, replay.lastFileOffset)
  if (replay.lastFileOffset > 2 * MAX_VIRTUAL_SIZE) {
    throw new CorruptDiskError(
      file.path,
      `log: LastFileOffset ${replay.lastFileOffset} is beyond any VHDX`,
      header.logOffset,
    )
  }
  let end = 0
  for (const [, b] of replay.zeroRanges) end = Math.max(end, b)
  for (const page of replay.pages.keys()) end = Math.max(end, (page + 1) * LOG_SECTOR_SIZE)
  if (end > limit) {
    throw new CorruptDiskError(
      file.path,
      `log: an entry writes up to ${end}, past LastFileOffset ${replay.lastFileOffset}`,
      header.logOffset,
    )
  }
  if (replay.flushedFileOffset > file.size) {
    throw new CorruptDiskError(
      file.path,
      `log: file is ${file.size} bytes but the log says it was flushed to ${replay.flushedFileOffset} (cut short)`,
      header.logOffset,
    )
  }
}

export async function readLayout(file: VhdxFile, current: CurrentHeader): Promise<VhdxLayout> {
  const path = file.path
  const regions = await readRegionTable(file)
  const bat = regions.find((r) => guidEquals(r.guid, BAT_REGION_GUID))
  const meta = regions.find((r) => guidEquals(r.guid, METADATA_REGION_GUID))
  for (const r of regions) {
    if (r !== bat && r !== meta && r.required) {
      throw new UnsupportedDiskError(`region table: unknown required region at ${r.fileOffset}`, path)
    }
  }
  if (!bat) throw new CorruptDiskError(path, 'region table: no BAT region', REGION_TABLE_OFFSETS[0])
  if (!meta) throw new CorruptDiskError(path, 'region table: no metadata region', REGION_TABLE_OFFSETS[0])
  for (const [name, r] of [
    ['BAT', bat],
    ['metadata', meta],
  ] as const) {
    if (r.fileOffset < HEADER_SECTION_SIZE || r.fileOffset % MiB || r.length % MiB || r.length === 0) {
      throw new CorruptDiskError(
        path,
        `region table: ${name} region at ${r.fileOffset} of ${r.length} bytes is not 1 MiB aligned`,
        REGION_TABLE_OFFSETS[0],
      )
    }
    if (r.fileOffset + r.length > file.size) {
      throw new CorruptDiskError(
        path,
        `${name} region extends past the end of the file (${file.size} bytes)`,
        r.fileOffset,
      )
    }
  }
  const m = await readMetadata(file, meta.fileOffset, meta.length)
  const geometry = new BatGeometry(m.virtualSize, m.blockSize, m.logicalSectorSize, m.hasParent)
  if (geometry.entryCount * 8 > bat.length) {
    throw new CorruptDiskError(
      path,
      `BAT: region of ${bat.length} bytes is too small for ${geometry.entryCount} entries`,
      bat.fileOffset,
    )
  }
  return {
    current,
    batOffset: bat.fileOffset,
    batLength: bat.length,
    metadataOffset: meta.fileOffset,
    ...m,
    geometry,
  }
}

async function readRegionTable(file: VhdxFile) {
  const reasons: string[] = []
  for (const at of REGION_TABLE_OFFSETS) {
    const r = parseRegionTable(await file.readBytes(at, REGION_TABLE_SIZE))
    if (typeof r !== 'string') return r
    reasons.push(r)
  }
  throw new CorruptDiskError(
    file.path,
    `region table: both copies are invalid (1: ${reasons[0]}; 2: ${reasons[1]})`,
    REGION_TABLE_OFFSETS[0],
  )
}

async function readMetadata(file: VhdxFile, regionOffset: number, regionLength: number) {
  const path = file.path
  const table = parseMetadataTable(await file.readBytes(regionOffset, METADATA_TABLE_SIZE))
  if (typeof table === 'string') throw new CorruptDiskError(path, `metadata table: ${table}`, regionOffset)
  const items = new Map<string, Buffer>()
  const known = [
    META_FILE_PARAMETERS,
    META_VIRTUAL_DISK_SIZE,
    META_PAGE83,
    META_LOGICAL_SECTOR_SIZE,
    META_PHYSICAL_SECTOR_SIZE,
    META_PARENT_LOCATOR,
  ]
  for (const e of table) {
    const isKnown = !e.isUser && known.some((k) => guidEquals(k, e.itemId))
    if (!isKnown) {
      if (e.isRequired) throw new UnsupportedDiskError('metadata: unknown required item', path)
      continue
    }
    if (e.length > MAX_METADATA_ITEM_SIZE) {
      throw new CorruptDiskError(path, `metadata: item of ${e.length} bytes exceeds 1 MiB`, regionOffset)
    }
    if (e.length > 0 && (e.offset < METADATA_TABLE_SIZE || e.offset + e.length > regionLength)) {
      throw new CorruptDiskError(
        path,
        `metadata: item at ${e.offset} of ${e.length} bytes lies outside the region`,
        regionOffset,
      )
    }
    items.set(e.itemId.toString('hex'), await file.readBytes(regionOffset + e.offset, e.length))
  }
  const item = (id: Buffer, name: string, minLength: number): Buffer => {
    const b = items.get(id.toString('hex'))
    if (!b || b.length < minLength)
      throw new CorruptDiskError(path, `metadata: ${name} item is missing or too short`, regionOffset)
    return b
  }
  const fp = item(META_FILE_PARAMETERS, 'File Parameters', 8)
  const blockSize = fp.readUInt32LE(0)
  const flags = fp.readUInt32LE(4)
  if (blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw new CorruptDiskError(
      path,
      `metadata File Parameters: block size ${blockSize} is not a power of two from 1 MiB to 256 MiB`,
      regionOffset,
    )
  }
  const logicalSectorSize = item(META_LOGICAL_SECTOR_SIZE, 'Logical Sector Size', 4).readUInt32LE(0)
  const physicalSectorSize = item(META_PHYSICAL_SECTOR_SIZE, 'Physical Sector Size', 4).readUInt32LE(0)
  for (const [name, v] of [
    ['Logical', logicalSectorSize],
    ['Physical', physicalSectorSize],
  ] as const) {
    if (v !== 512 && v !== 4096)
      throw new CorruptDiskError(
        path,
        `metadata: ${name} Sector Size ${v} is neither 512 nor 4096`,
        regionOffset,
      )
  }
  const virtualSize = Number(item(META_VIRTUAL_DISK_SIZE, 'Virtual Disk Size', 8).readBigUInt64LE(0))
  if (virtualSize === 0 || virtualSize > MAX_VIRTUAL_SIZE || virtualSize % logicalSectorSize) {
    throw new CorruptDiskError(
      path,
      `metadata: Virtual Disk Size ${virtualSize} is not a multiple of the sector size up to 64 TiB`,
      regionOffset,
    )
  }
  const hasParent = (flags & FILE_PARAM_HAS_PARENT) !== 0
  let parentLocator: Map<string, string> | null = null
  if (hasParent) {
    const parsed = parseParentLocator(item(META_PARENT_LOCATOR, 'Parent Locator', 20))
    if (typeof parsed === 'string')
      throw new CorruptDiskError(path, `metadata Parent Locator: ${parsed}`, regionOffset)
    parentLocator = parsed
  }
  return {
    blockSize,
    hasParent,
    leaveBlocksAllocated: !hasParent && (flags & FILE_PARAM_LEAVE_BLOCKS_ALLOCATED) !== 0,
    virtualSize,
    logicalSectorSize,
    physicalSectorSize,
    parentLocator,
  }
}

/**
 * MS-VHDX §2.2.2.1: a header update writes the non-current slot with the next sequence number
 * and flushes it, so one valid header survives a crash at any instant. We then do the same to
 * the other slot so both copies agree (as qemu does). Returns the new current header.
 */
export async function updateHeader(
  file: VhdxFile,
  current: CurrentHeader,
  changes: Partial<Pick<VhdxHeader, 'fileWriteGuid' | 'dataWriteGuid' | 'logGuid'>>,
): Promise<CurrentHeader> {
  let cur = current
  for (let i = 0; i < 2; i++) {
    const header: VhdxHeader = { ...cur.header, ...changes, sequenceNumber: cur.header.sequenceNumber + 1n }
    const slot = 1 - cur.slot
    await file.write(serializeHeader(header), HEADER_OFFSETS[slot])
    await file.sync()
    cur = { header, slot }
  }
  return cur
}

// Creating a VHDX file (MS-VHDX §2): header section, a 1 MiB log, the metadata region, the BAT,
// and for a fixed disk every payload block allocated (sparse on the host file system).
//
//   0        file identifier, headers, region tables (1 MiB)
//   1 MiB    log (1 MiB, empty)
//   2 MiB    metadata (1 MiB): table, then items from +64 KiB
//   3 MiB    BAT (rounded up to 1 MiB)
//   after    payload blocks (fixed: all of them, in order; dynamic/differencing: on demand)
import { open } from 'node:fs/promises'
import { dirname, relative, resolve } from 'node:path'
import { UnsupportedDiskError } from '../errors.js'
import type { CreateOptions, VirtualDisk } from '../types.js'
import { Bat } from './bat.js'
import {
  BAT_REGION_GUID,
  DEFAULT_BLOCK_SIZE,
  DEFAULT_LOG_SIZE,
  FILE_IDENTIFIER_SIGNATURE,
  FILE_PARAM_HAS_PARENT,
  FILE_PARAM_LEAVE_BLOCKS_ALLOCATED,
  HEADER_OFFSETS,
  MAX_BLOCK_SIZE,
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
  PAYLOAD_BLOCK_FULLY_PRESENT,
  REGION_TABLE_OFFSETS,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
} from './constants.js'
import type { VhdxDisk } from './disk.js'
import {
  BatGeometry,
  type MetadataEntry,
  serializeHeader,
  serializeMetadataTable,
  serializeParentLocator,
  serializeRegionTable,
} from './format.js'
import { newGuid, ZERO_GUID } from './guid.js'
import { type OpenParent, openVhdxDisk } from './open.js'

const CREATOR = 'replimesh'

interface ParentFacts {
  path: string
  dataWriteGuid: string
  virtualSize: number
  logicalSectorSize: number
}

async function parentFacts(
  childPath: string,
  parentPath: string,
  openParent: OpenParent,
): Promise<ParentFacts> {
  const parent: VirtualDisk = await openParent(parentPath)
  try {
    const guid = (parent as { vhdxDataWriteGuid?: string }).vhdxDataWriteGuid
    if (!guid)
      throw new UnsupportedDiskError(
        `parent ${parentPath} is not a VHDX; a VHDX child needs a VHDX parent`,
        childPath,
      )
    return {
      path: parentPath,
      dataWriteGuid: guid,
      virtualSize: parent.virtualSize,
      logicalSectorSize: parent.logicalSectorSize,
    }
  } finally {
    await parent.close()
  }
}

function check(path: string, ok: boolean, what: string): void {
  if (!ok) throw new UnsupportedDiskError(what, path)
}

export async function createVhdxDisk(
  path: string,
  options: CreateOptions,
  openParent: OpenParent,
): Promise<VhdxDisk> {
  const parent = options.parent ? await parentFacts(path, options.parent, openParent) : null
  const virtualSize = parent ? parent.virtualSize : (options.virtualSize ?? 0)
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE
  const logicalSectorSize = parent ? parent.logicalSectorSize : (options.logicalSectorSize ?? 512)
  const physicalSectorSize = options.physicalSectorSize ?? 4096
  const fixed = !parent && options.subformat === 'fixed'
  check(
    path,
    !parent || options.virtualSize === undefined || options.virtualSize === virtualSize,
    "a child has its parent's size",
  )
  check(
    path,
    !parent || options.logicalSectorSize === undefined || options.logicalSectorSize === logicalSectorSize,
    "a child has its parent's sector size",
  )
  check(
    path,
    blockSize >= MIN_BLOCK_SIZE && blockSize <= MAX_BLOCK_SIZE && (blockSize & (blockSize - 1)) === 0,
    `VHDX block size ${blockSize} must be a power of two from 1 MiB to 256 MiB`,
  )
  check(
    path,
    logicalSectorSize === 512 || logicalSectorSize === 4096,
    `logical sector size ${logicalSectorSize} must be 512 or 4096`,
  )
  check(
    path,
    physicalSectorSize === 512 || physicalSectorSize === 4096,
    `physical sector size ${physicalSectorSize} must be 512 or 4096`,
  )
  check(
    path,
    Number.isSafeInteger(virtualSize) && virtualSize > 0 && virtualSize <= MAX_VIRTUAL_SIZE,
    `virtual size ${virtualSize} must be from 1 byte to 64 TiB`,
  )
  check(
    path,
    virtualSize % logicalSectorSize === 0,
    `virtual size ${virtualSize} is not a multiple of the ${logicalSectorSize}-byte sector`,
  )

  const geometry = new BatGeometry(virtualSize, blockSize, logicalSectorSize, parent !== null)
  const logOffset = MiB
  const metadataOffset = logOffset + DEFAULT_LOG_SIZE
  const metadataLength = MiB
  const batOffset = metadataOffset + metadataLength
  const batLength = Math.ceil((geometry.entryCount * 8) / MiB) * MiB
  const dataOffset = batOffset + batLength

  const bat = new Bat(Buffer.alloc(geometry.entryCount * 8), geometry)
  let fileSize = dataOffset
  if (fixed) {
    for (let b = 0; b < geometry.payloadBlocks; b++) {
      bat.set(geometry.payloadIndex(b), PAYLOAD_BLOCK_FULLY_PRESENT, dataOffset + b * blockSize)
    }
    fileSize = dataOffset + geometry.payloadBlocks * blockSize
  }
  if (parent) {
    // Every sector bitmap block is allocated (zero, sparse) up front: libvhdi 20210425 reads a
    // chunk's bitmap even when its BAT entry is NOT_PRESENT (from file offset 0), and a
    // Hyper-V-made differencing disk is never read that way by anyone.
    for (let chunk = 0; chunk < geometry.sectorBitmapBlocks; chunk++) {
      bat.set(geometry.bitmapIndex(chunk), SB_BLOCK_PRESENT, dataOffset + chunk * SECTOR_BITMAP_BLOCK_SIZE)
    }
    fileSize = dataOffset + geometry.sectorBitmapBlocks * SECTOR_BITMAP_BLOCK_SIZE
  }

  const identifier = Buffer.alloc(8 + 512)
  identifier.write(FILE_IDENTIFIER_SIGNATURE, 0, 'latin1')
  identifier.write(CREATOR, 8, 'utf16le')
  const header = {
    sequenceNumber: 0n,
    fileWriteGuid: newGuid(),
    dataWriteGuid: newGuid(),
    logGuid: ZERO_GUID,
    logVersion: 0,
    version: 1,
    logLength: DEFAULT_LOG_SIZE,
    logOffset,
  }
  const regions = serializeRegionTable([
    { guid: BAT_REGION_GUID, fileOffset: batOffset, length: batLength, required: true },
    { guid: METADATA_REGION_GUID, fileOffset: metadataOffset, length: metadataLength, required: true },
  ])
  const metadata = buildMetadata(path, {
    blockSize,
    flags: parent ? FILE_PARAM_HAS_PARENT : fixed ? FILE_PARAM_LEAVE_BLOCKS_ALLOCATED : 0,
    virtualSize,
    logicalSectorSize,
    physicalSectorSize,
    parent,
  })

  const handle = await open(path, 'wx')
  try {
    const write = async (buf: Buffer, at: number) => {
      await handle.write(buf, 0, buf.length, at)
    }
    await handle.truncate(fileSize)
    await write(identifier, 0)
    await write(regions, REGION_TABLE_OFFSETS[0])
    await write(regions, REGION_TABLE_OFFSETS[1])
    await write(metadata, metadataOffset)
    await write(bat.table, batOffset)
    await handle.datasync()
    // Headers last: until they are durable the file is not a VHDX at all.
    await write(serializeHeader(header), HEADER_OFFSETS[0])
    await write(serializeHeader({ ...header, sequenceNumber: 1n }), HEADER_OFFSETS[1])
    await handle.datasync()
  } finally {
    await handle.close()
  }
  return openVhdxDisk(path, false, openParent)
}

interface MetadataFacts {
  blockSize: number
  flags: number
  virtualSize: number
  logicalSectorSize: number
  physicalSectorSize: number
  parent: ParentFacts | null
}

function buildMetadata(path: string, m: MetadataFacts): Buffer {
  const u32 = (v: number) => {
    const b = Buffer.alloc(4)
    b.writeUInt32LE(v)
    return b
  }
  const fileParameters = Buffer.concat([u32(m.blockSize), u32(m.flags)])
  const size = Buffer.alloc(8)
  size.writeBigUInt64LE(BigInt(m.virtualSize))
  const items: { id: Buffer; data: Buffer; isVirtualDisk: boolean }[] = [
    { id: META_FILE_PARAMETERS, data: fileParameters, isVirtualDisk: false },
    { id: META_VIRTUAL_DISK_SIZE, data: size, isVirtualDisk: true },
    { id: META_PAGE83, data: newGuid(), isVirtualDisk: true },
    { id: META_LOGICAL_SECTOR_SIZE, data: u32(m.logicalSectorSize), isVirtualDisk: true },
    { id: META_PHYSICAL_SECTOR_SIZE, data: u32(m.physicalSectorSize), isVirtualDisk: true },
  ]
  if (m.parent) {
    const childDir = dirname(resolve(path))
    const parentAbs = resolve(m.parent.path)
    let rel = relative(childDir, parentAbs)
    if (!rel.startsWith('..')) rel = `./${rel}`
    const pairs = new Map([
      ['parent_linkage', m.parent.dataWriteGuid],
      ['relative_path', rel.replace(/\//g, '\\')],
      ['absolute_win32_path', parentAbs],
    ])
    items.push({ id: META_PARENT_LOCATOR, data: serializeParentLocator(pairs), isVirtualDisk: false })
  }
  const entries: MetadataEntry[] = []
  const parts: Buffer[] = []
  let at = METADATA_TABLE_SIZE
  for (const item of items) {
    entries.push({
      itemId: item.id,
      offset: at,
      length: item.data.length,
      isUser: false,
      isVirtualDisk: item.isVirtualDisk,
      isRequired: true,
    })
    parts.push(item.data)
    at += item.data.length
  }
  return Buffer.concat([serializeMetadataTable(entries), ...parts])
}

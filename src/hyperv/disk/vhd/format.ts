// VHD on-disk structures (Virtual Hard Disk Image Format Specification; qemu block/vpc.c;
// libvhdi's VHD format notes). Every integer is big-endian. Pure functions: parse and
// serialise the 512-byte footer and the 1024-byte dynamic header, checksums, CHS geometry.

export const FOOTER_SIZE = 512
export const HEADER_SIZE = 1024
export const SECTOR_SIZE = 512
export const UNALLOCATED = 0xffffffff
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024
/** qemu's VHD_MAX_SECTORS: the largest disk the format's 32-bit BAT sector numbers address well. */
export const MAX_VIRTUAL_SIZE = 0xff000000 * SECTOR_SIZE
/** The largest CHS geometry; a footer with it means "use CurrentSize" (qemu VHD_MAX_GEOMETRY). */
export const MAX_GEOMETRY_SECTORS = 65535 * 16 * 255
const FIXED_DATA_OFFSET = 0xffffffffffffffffn
/** Seconds from the Unix epoch to 2000-01-01T00:00:00Z, the VHD timestamp epoch. */
const VHD_EPOCH_SECONDS = 946_684_800

export const DiskType = { fixed: 2, dynamic: 3, differencing: 4 } as const

/** Creators whose CurrentSize is the disk size; others (Virtual PC, old qemu) mean CHS. */
const CURRENT_SIZE_CREATORS = new Set(['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'])

export interface Geometry {
  cylinders: number
  heads: number
  sectorsPerTrack: number
}

export interface Footer {
  features: number
  version: number
  /** Offset of the dynamic header; null for a fixed disk. */
  dataOffset: number | null
  timestamp: number
  creatorApp: string
  creatorVersion: number
  creatorOs: string
  originalSize: number
  currentSize: number
  geometry: Geometry
  diskType: number
  checksum: number
  uniqueId: Buffer
  savedState: number
}

export interface ParentLocator {
  /** 'W2ku' absolute Windows path, 'W2ru' relative, others ignored. */
  code: string
  dataSpace: number
  dataLength: number
  dataOffset: number
}

export interface DynamicHeader {
  tableOffset: number
  version: number
  maxTableEntries: number
  blockSize: number
  checksum: number
  parentUniqueId: Buffer
  parentTimestamp: number
  parentName: string
  locators: ParentLocator[]
}

/** One's complement of the byte sum, with the 4-byte checksum field read as zero. */
export function vhdChecksum(buf: Uint8Array, checksumOffset: number): number {
  let sum = 0
  for (let i = 0; i < buf.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue
    sum += buf[i]
  }
  return ~sum >>> 0
}

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64BE(at)
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v)
}

/** Returns the parsed footer, or a reason it is not a valid one. */
export function parseFooter(buf: Buffer): Footer | string {
  if (buf.toString('latin1', 0, 8) !== 'conectix') return 'no "conectix" footer cookie'
  const checksum = buf.readUInt32BE(64)
  const expected = vhdChecksum(buf.subarray(0, FOOTER_SIZE), 64)
  if (checksum !== expected)
    return `footer checksum is 0x${checksum.toString(16)}, expected 0x${expected.toString(16)}`
  const raw = buf.readBigUInt64BE(16)
  return {
    features: buf.readUInt32BE(8),
    version: buf.readUInt32BE(12),
    dataOffset: raw === FIXED_DATA_OFFSET ? null : u64(buf, 16),
    timestamp: buf.readUInt32BE(24),
    creatorApp: buf.toString('latin1', 28, 32),
    creatorVersion: buf.readUInt32BE(32),
    creatorOs: buf.toString('latin1', 36, 40),
    originalSize: u64(buf, 40),
    currentSize: u64(buf, 48),
    geometry: {
      cylinders: buf.readUInt16BE(56),
      heads: buf.readUInt8(58),
      sectorsPerTrack: buf.readUInt8(59),
    },
    diskType: buf.readUInt32BE(60),
    checksum,
    uniqueId: Buffer.from(buf.subarray(68, 84)),
    savedState: buf.readUInt8(84),
  }
}

export function serializeFooter(f: Footer): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE)
  buf.write('conectix', 0, 'latin1')
  buf.writeUInt32BE(f.features, 8)
  buf.writeUInt32BE(f.version, 12)
  buf.writeBigUInt64BE(f.dataOffset === null ? FIXED_DATA_OFFSET : BigInt(f.dataOffset), 16)
  buf.writeUInt32BE(f.timestamp, 24)
  buf.write(f.creatorApp.padEnd(4, ' ').slice(0, 4), 28, 'latin1')
  buf.writeUInt32BE(f.creatorVersion, 32)
  buf.write(f.creatorOs.padEnd(4, ' ').slice(0, 4), 36, 'latin1')
  buf.writeBigUInt64BE(BigInt(f.originalSize), 40)
  buf.writeBigUInt64BE(BigInt(f.currentSize), 48)
  buf.writeUInt16BE(f.geometry.cylinders, 56)
  buf.writeUInt8(f.geometry.heads, 58)
  buf.writeUInt8(f.geometry.sectorsPerTrack, 59)
  buf.writeUInt32BE(f.diskType, 60)
  f.uniqueId.copy(buf, 68, 0, 16)
  buf.writeUInt8(f.savedState, 84)
  buf.writeUInt32BE(vhdChecksum(buf, 64), 64)
  return buf
}

export function parseDynamicHeader(buf: Buffer): DynamicHeader | string {
  if (buf.toString('latin1', 0, 8) !== 'cxsparse') return 'no "cxsparse" dynamic header cookie'
  const checksum = buf.readUInt32BE(36)
  const expected = vhdChecksum(buf.subarray(0, HEADER_SIZE), 36)
  if (checksum !== expected)
    return `dynamic header checksum is 0x${checksum.toString(16)}, expected 0x${expected.toString(16)}`
  const locators: ParentLocator[] = []
  for (let i = 0; i < 8; i++) {
    const at = 576 + i * 24
    const code = buf.toString('latin1', at, at + 4)
    if (buf.readUInt32BE(at) === 0) continue
    locators.push({
      code,
      dataSpace: buf.readUInt32BE(at + 4),
      dataLength: buf.readUInt32BE(at + 8),
      dataOffset: u64(buf, at + 16),
    })
  }
  return {
    tableOffset: u64(buf, 16),
    version: buf.readUInt32BE(24),
    maxTableEntries: buf.readUInt32BE(28),
    blockSize: buf.readUInt32BE(32),
    checksum,
    parentUniqueId: Buffer.from(buf.subarray(40, 56)),
    parentTimestamp: buf.readUInt32BE(56),
    parentName: decodeUtf16be(buf.subarray(64, 576)),
    locators,
  }
}

export function serializeDynamicHeader(h: DynamicHeader): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE)
  buf.write('cxsparse', 0, 'latin1')
  buf.writeBigUInt64BE(FIXED_DATA_OFFSET, 8)
  buf.writeBigUInt64BE(BigInt(h.tableOffset), 16)
  buf.writeUInt32BE(h.version, 24)
  buf.writeUInt32BE(h.maxTableEntries, 28)
  buf.writeUInt32BE(h.blockSize, 32)
  h.parentUniqueId.copy(buf, 40, 0, 16)
  buf.writeUInt32BE(h.parentTimestamp, 56)
  encodeUtf16be(h.parentName).copy(buf, 64, 0, 512)
  h.locators.slice(0, 8).forEach((loc, i) => {
    const at = 576 + i * 24
    buf.write(loc.code, at, 'latin1')
    buf.writeUInt32BE(loc.dataSpace, at + 4)
    buf.writeUInt32BE(loc.dataLength, at + 8)
    buf.writeBigUInt64BE(BigInt(loc.dataOffset), at + 16)
  })
  buf.writeUInt32BE(vhdChecksum(buf, 36), 36)
  return buf
}

export function decodeUtf16be(buf: Uint8Array): string {
  const swapped = Buffer.from(buf)
  swapped.swap16()
  const text = swapped.toString('utf16le')
  const nul = text.indexOf('\0')
  return nul >= 0 ? text.slice(0, nul) : text
}

export function encodeUtf16be(text: string): Buffer {
  const buf = Buffer.from(text, 'utf16le')
  return buf.swap16()
}

/**
 * The disk size a footer means: CurrentSize for creators that size disks exactly (Hyper-V,
 * qemu with force_size, Disk2VHD, XenServer) or when the geometry is at its maximum, else
 * cylinders × heads × sectors × 512 as Virtual PC does (qemu block/vpc.c vpc_open).
 */
export function virtualSizeOf(footer: Footer): number {
  const { cylinders, heads, sectorsPerTrack } = footer.geometry
  const chsSectors = cylinders * heads * sectorsPerTrack
  if (CURRENT_SIZE_CREATORS.has(footer.creatorApp) || chsSectors === MAX_GEOMETRY_SECTORS)
    return footer.currentSize
  return chsSectors * SECTOR_SIZE
}

/** The CHS geometry for a size, as the VHD specification's appendix computes it. */
export function geometryFor(sizeBytes: number): Geometry {
  let totalSectors = Math.floor(sizeBytes / SECTOR_SIZE)
  if (totalSectors > MAX_GEOMETRY_SECTORS) totalSectors = MAX_GEOMETRY_SECTORS
  let sectorsPerTrack: number
  let heads: number
  let cylinderTimesHeads: number
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255
    heads = 16
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
  } else {
    sectorsPerTrack = 17
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
    heads = Math.max(4, Math.floor((cylinderTimesHeads + 1023) / 1024))
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31
      heads = 16
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63
      heads = 16
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack }
}

export function vhdTimestamp(date = new Date()): number {
  return Math.max(0, Math.floor(date.getTime() / 1000) - VHD_EPOCH_SECONDS) >>> 0
}

/** Bytes of a block's sector bitmap: one bit per sector, padded to a whole sector. */
export function bitmapSizeFor(blockSize: number): number {
  return Math.ceil(blockSize / SECTOR_SIZE / 8 / SECTOR_SIZE) * SECTOR_SIZE
}

/** MSB-first: sector 0 of a block is bit 7 of byte 0 (unlike VHDX). */
export function bitmapTest(bitmap: Uint8Array, sector: number): boolean {
  return (bitmap[sector >> 3] & (0x80 >> (sector & 7))) !== 0
}

export function bitmapSet(bitmap: Uint8Array, sector: number): void {
  bitmap[sector >> 3] |= 0x80 >> (sector & 7)
}

// Parsing and serializing the fixed structures of MS-VHDX: headers (§2.2.2), region table
// (§2.2.3), metadata table and items (§2.6), parent locator (§2.6.2.6), BAT geometry (§2.5).
// Pure functions over buffers; the callers say where the bytes came from for errors.
import {
  HEADER_SIGNATURE,
  HEADER_SIZE,
  METADATA_SIGNATURE,
  METADATA_TABLE_SIZE,
  PARENT_LOCATOR_TYPE_VHDX,
  REGION_TABLE_SIGNATURE,
  REGION_TABLE_SIZE,
  SECTORS_PER_BITMAP_BLOCK,
} from './constants.js'
import { crc32c, crc32cWithZeroField } from './crc32c.js'

export interface VhdxHeader {
  sequenceNumber: bigint
  fileWriteGuid: Buffer
  dataWriteGuid: Buffer
  logGuid: Buffer
  logVersion: number
  version: number
  logLength: number
  logOffset: number
}

/** Returns the header, or a reason it is not valid (signature or checksum). */
export function parseHeader(buf: Buffer): VhdxHeader | string {
  if (buf.toString('latin1', 0, 4) !== HEADER_SIGNATURE) return 'bad signature'
  const stored = buf.readUInt32LE(4)
  if (crc32cWithZeroField(buf.subarray(0, HEADER_SIZE), 4) !== stored) return 'bad checksum'
  return {
    sequenceNumber: buf.readBigUInt64LE(8),
    fileWriteGuid: Buffer.from(buf.subarray(16, 32)),
    dataWriteGuid: Buffer.from(buf.subarray(32, 48)),
    logGuid: Buffer.from(buf.subarray(48, 64)),
    logVersion: buf.readUInt16LE(64),
    version: buf.readUInt16LE(66),
    logLength: buf.readUInt32LE(68),
    logOffset: Number(buf.readBigUInt64LE(72)),
  }
}

export function serializeHeader(h: VhdxHeader): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE)
  buf.write(HEADER_SIGNATURE, 0, 'latin1')
  buf.writeBigUInt64LE(h.sequenceNumber, 8)
  h.fileWriteGuid.copy(buf, 16)
  h.dataWriteGuid.copy(buf, 32)
  h.logGuid.copy(buf, 48)
  buf.writeUInt16LE(h.logVersion, 64)
  buf.writeUInt16LE(h.version, 66)
  buf.writeUInt32LE(h.logLength, 68)
  buf.writeBigUInt64LE(BigInt(h.logOffset), 72)
  buf.writeUInt32LE(crc32c(buf), 4)
  return buf
}

export interface RegionEntry {
  guid: Buffer
  fileOffset: number
  length: number
  required: boolean
}

/** Returns the entries, or a reason the table is not valid. */
export function parseRegionTable(buf: Buffer): RegionEntry[] | string {
  if (buf.toString('latin1', 0, 4) !== REGION_TABLE_SIGNATURE) return 'bad signature'
  if (crc32cWithZeroField(buf.subarray(0, REGION_TABLE_SIZE), 4) !== buf.readUInt32LE(4))
    return 'bad checksum'
  const count = buf.readUInt32LE(8)
  if (count > 2047) return `entry count ${count} exceeds 2047`
  const entries: RegionEntry[] = []
  for (let i = 0; i < count; i++) {
    const o = 16 + i * 32
    entries.push({
      guid: Buffer.from(buf.subarray(o, o + 16)),
      fileOffset: Number(buf.readBigUInt64LE(o + 16)),
      length: buf.readUInt32LE(o + 24),
      required: (buf.readUInt32LE(o + 28) & 1) === 1,
    })
  }
  return entries
}

export function serializeRegionTable(entries: RegionEntry[]): Buffer {
  const buf = Buffer.alloc(REGION_TABLE_SIZE)
  buf.write(REGION_TABLE_SIGNATURE, 0, 'latin1')
  buf.writeUInt32LE(entries.length, 8)
  entries.forEach((e, i) => {
    const o = 16 + i * 32
    e.guid.copy(buf, o)
    buf.writeBigUInt64LE(BigInt(e.fileOffset), o + 16)
    buf.writeUInt32LE(e.length, o + 24)
    buf.writeUInt32LE(e.required ? 1 : 0, o + 28)
  })
  buf.writeUInt32LE(crc32c(buf), 4)
  return buf
}

export interface MetadataEntry {
  itemId: Buffer
  /** Relative to the metadata region's start. */
  offset: number
  length: number
  isUser: boolean
  isVirtualDisk: boolean
  isRequired: boolean
}

export function parseMetadataTable(buf: Buffer): MetadataEntry[] | string {
  if (buf.toString('latin1', 0, 8) !== METADATA_SIGNATURE) return 'bad signature'
  const count = buf.readUInt16LE(10)
  if (count > 2047) return `entry count ${count} exceeds 2047`
  const entries: MetadataEntry[] = []
  for (let i = 0; i < count; i++) {
    const o = 32 + i * 32
    const flags = buf.readUInt32LE(o + 24)
    entries.push({
      itemId: Buffer.from(buf.subarray(o, o + 16)),
      offset: buf.readUInt32LE(o + 16),
      length: buf.readUInt32LE(o + 20),
      isUser: (flags & 1) !== 0,
      isVirtualDisk: (flags & 2) !== 0,
      isRequired: (flags & 4) !== 0,
    })
  }
  return entries
}

export function serializeMetadataTable(entries: MetadataEntry[]): Buffer {
  const buf = Buffer.alloc(METADATA_TABLE_SIZE)
  buf.write(METADATA_SIGNATURE, 0, 'latin1')
  buf.writeUInt16LE(entries.length, 10)
  entries.forEach((e, i) => {
    const o = 32 + i * 32
    e.itemId.copy(buf, o)
    buf.writeUInt32LE(e.offset, o + 16)
    buf.writeUInt32LE(e.length, o + 20)
    buf.writeUInt32LE((e.isUser ? 1 : 0) | (e.isVirtualDisk ? 2 : 0) | (e.isRequired ? 4 : 0), o + 24)
  })
  return buf
}

/** §2.6.2.6: key/value pairs in UTF-16LE. Returns the pairs or a reason they are malformed. */
export function parseParentLocator(buf: Buffer): Map<string, string> | string {
  if (buf.length < 20) return 'shorter than its header'
  if (Buffer.compare(buf.subarray(0, 16), PARENT_LOCATOR_TYPE_VHDX) !== 0) return 'unknown locator type'
  const count = buf.readUInt16LE(18)
  if (20 + count * 12 > buf.length) return `${count} entries do not fit`
  const pairs = new Map<string, string>()
  for (let i = 0; i < count; i++) {
    const o = 20 + i * 12
    const ko = buf.readUInt32LE(o)
    const vo = buf.readUInt32LE(o + 4)
    const kl = buf.readUInt16LE(o + 8)
    const vl = buf.readUInt16LE(o + 10)
    if (ko + kl > buf.length || vo + vl > buf.length) return `entry ${i} points outside the locator`
    pairs.set(buf.toString('utf16le', ko, ko + kl), buf.toString('utf16le', vo, vo + vl))
  }
  return pairs
}

export function serializeParentLocator(pairs: Map<string, string>): Buffer {
  const keys = [...pairs.keys()]
  const head = Buffer.alloc(20 + keys.length * 12)
  PARENT_LOCATOR_TYPE_VHDX.copy(head, 0)
  head.writeUInt16LE(keys.length, 18)
  const parts: Buffer[] = [head]
  let at = head.length
  keys.forEach((k, i) => {
    const kb = Buffer.from(k, 'utf16le')
    const vb = Buffer.from(pairs.get(k) ?? '', 'utf16le')
    const o = 20 + i * 12
    head.writeUInt32LE(at, o)
    head.writeUInt32LE(at + kb.length, o + 4)
    head.writeUInt16LE(kb.length, o + 8)
    head.writeUInt16LE(vb.length, o + 10)
    parts.push(kb, vb)
    at += kb.length + vb.length
  })
  return Buffer.concat(parts)
}

/** §2.5 BAT geometry for one disk. */
export class BatGeometry {
  readonly chunkRatio: number
  readonly payloadBlocks: number
  readonly sectorBitmapBlocks: number
  readonly entryCount: number

  constructor(
    readonly virtualSize: number,
    readonly blockSize: number,
    readonly logicalSectorSize: number,
    readonly hasParent: boolean,
  ) {
    this.chunkRatio = (SECTORS_PER_BITMAP_BLOCK * logicalSectorSize) / blockSize
    this.payloadBlocks = Math.ceil(virtualSize / blockSize)
    this.sectorBitmapBlocks = Math.ceil(this.payloadBlocks / this.chunkRatio)
    this.entryCount = hasParent
      ? this.sectorBitmapBlocks * (this.chunkRatio + 1)
      : this.payloadBlocks + Math.floor((this.payloadBlocks - 1) / this.chunkRatio)
  }

  payloadIndex(block: number): number {
    return block + Math.floor(block / this.chunkRatio)
  }

  bitmapIndex(chunk: number): number {
    return chunk * (this.chunkRatio + 1) + this.chunkRatio
  }

  isBitmapIndex(index: number): boolean {
    return index % (this.chunkRatio + 1) === this.chunkRatio
  }

  /** Sectors per payload block. */
  get sectorsPerBlock(): number {
    return this.blockSize / this.logicalSectorSize
  }
}

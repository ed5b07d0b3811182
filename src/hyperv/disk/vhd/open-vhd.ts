// Opening a VHD: find and check the footer (a fixed disk has it only at the end; dynamic and
// differencing disks also at 0), the dynamic header and BAT, and the parent by its UniqueId.
import { type FileHandle, open } from 'node:fs/promises'
import { CorruptDiskError, ParentMismatchError, UnsupportedDiskError } from '../errors.js'
import { describeOpenError, readFull, readOnCallingThread } from '../file-io.js'
import type { VirtualDisk } from '../types.js'
import {
  bitmapSizeFor,
  DiskType,
  type DynamicHeader,
  FOOTER_SIZE,
  type Footer,
  HEADER_SIZE,
  MAX_VIRTUAL_SIZE,
  parseDynamicHeader,
  parseFooter,
  SECTOR_SIZE,
  UNALLOCATED,
  virtualSizeOf,
} from './format.js'
import { firstExisting, parentCandidates } from './parent.js'
import { VhdDisk } from './vhd-disk.js'

export type OpenParent = (parentPath: string) => Promise<VirtualDisk>

export interface VhdOpenOptions {
  readOnly: boolean
  /** Opens a differencing disk's parent (read-only) through the format dispatcher. */
  openParent: OpenParent
  /** Reads on the calling thread (OpenOptions.blockingReads). */
  blockingReads?: boolean
}

/** Largest block size we accept (the format allows any power of two; Hyper-V uses 2 MiB). */
const MAX_BLOCK_SIZE = 256 * 1024 * 1024

export async function openVhd(path: string, options: VhdOpenOptions): Promise<VhdDisk> {
  let fh: FileHandle
  try {
    fh = await open(path, options.readOnly ? 'r' : 'r+')
  } catch (err) {
    throw describeOpenError(err, path)
  }
  if (options.blockingReads) readOnCallingThread(fh)
  try {
    return await openHandle(fh, path, options)
  } catch (err) {
    await fh.close()
    throw err
  }
}

async function openHandle(fh: FileHandle, path: string, options: VhdOpenOptions): Promise<VhdDisk> {
  const fileSize = (await fh.stat()).size
  if (fileSize < FOOTER_SIZE)
    throw new CorruptDiskError(path, `file of ${fileSize} bytes is too short for a VHD`)
  const buf = Buffer.alloc(FOOTER_SIZE)
  await readFull(fh, path, buf, 0, FOOTER_SIZE, fileSize - FOOTER_SIZE)
  const tail = parseFooter(buf)
  let head: Footer | string = 'no footer copy at 0'
  if (fileSize >= 2 * FOOTER_SIZE) {
    await readFull(fh, path, buf, 0, FOOTER_SIZE, 0)
    head = parseFooter(buf)
  }
  // Dynamic disks carry two copies; either valid one will do (the one at 0 first, as qemu).
  const footer = typeof head !== 'string' && head.diskType !== DiskType.fixed ? head : tail
  if (typeof footer === 'string') {
    // Name the copy that looked like a footer: a bad checksum says more than a missing cookie.
    const headLooked = typeof head === 'string' && !head.startsWith('no ')
    throw new CorruptDiskError(
      path,
      `not a valid VHD: ${headLooked ? head : footer}`,
      headLooked ? 0 : fileSize - FOOTER_SIZE,
    )
  }
  if (footer.version >>> 16 !== 1)
    throw new UnsupportedDiskError(`VHD version 0x${footer.version.toString(16)} is not 1.x`, path)
  const virtualSize = Math.floor(virtualSizeOf(footer) / SECTOR_SIZE) * SECTOR_SIZE
  if (virtualSize > MAX_VIRTUAL_SIZE)
    throw new CorruptDiskError(path, `virtual size ${virtualSize} is larger than a VHD can be`)
  const tailOk = typeof tail !== 'string'
  if (footer.diskType === DiskType.fixed) {
    if (!tailOk) throw new CorruptDiskError(path, `fixed VHD footer: ${tail}`, fileSize - FOOTER_SIZE)
    return new VhdDisk({
      path,
      fh,
      readOnly: options.readOnly,
      footer,
      virtualSize,
      header: null,
      bat: null,
      footerOffset: fileSize - FOOTER_SIZE,
      parent: null,
      parentPath: null,
    })
  }
  if (footer.diskType !== DiskType.dynamic && footer.diskType !== DiskType.differencing)
    throw new UnsupportedDiskError(`unknown VHD disk type ${footer.diskType}`, path)
  const header = await readHeader(fh, path, footer, fileSize)
  const bat = await readBat(fh, path, header, virtualSize, fileSize)
  const bitmapSize = bitmapSizeFor(header.blockSize)
  let dataEnd = header.tableOffset + bat.length * 4
  for (let i = 0; i < bat.length; i++) {
    if (bat[i] === UNALLOCATED) continue
    const end = bat[i] * SECTOR_SIZE + bitmapSize + header.blockSize
    if (end > fileSize)
      throw new CorruptDiskError(
        path,
        `BAT entry ${i} points past the end of the file`,
        header.tableOffset + i * 4,
      )
    dataEnd = Math.max(dataEnd, end)
  }
  for (const loc of header.locators) dataEnd = Math.max(dataEnd, loc.dataOffset + loc.dataLength)
  // New blocks go where the trailing footer is, or past everything if it is missing.
  let footerOffset = tailOk ? fileSize - FOOTER_SIZE : fileSize
  footerOffset = Math.ceil(Math.max(footerOffset, dataEnd) / SECTOR_SIZE) * SECTOR_SIZE
  let parent: VirtualDisk | null = null
  let parentPath: string | null = null
  if (footer.diskType === DiskType.differencing) {
    parentPath = await findParent(fh, path, header, fileSize)
    parent = await openVhdParent(path, parentPath, header, options.openParent)
  }
  return new VhdDisk({
    path,
    fh,
    readOnly: options.readOnly,
    footer,
    virtualSize,
    header,
    bat,
    footerOffset,
    parent,
    parentPath,
  })
}

async function readHeader(
  fh: FileHandle,
  path: string,
  footer: Footer,
  fileSize: number,
): Promise<DynamicHeader> {
  const at = footer.dataOffset
  if (at === null || at + HEADER_SIZE > fileSize)
    throw new CorruptDiskError(path, 'dynamic header offset points past the end of the file', 16)
  const buf = Buffer.alloc(HEADER_SIZE)
  await readFull(fh, path, buf, 0, HEADER_SIZE, at)
  const header = parseDynamicHeader(buf)
  if (typeof header === 'string') throw new CorruptDiskError(path, header, at)
  const bs = header.blockSize
  if (bs < SECTOR_SIZE || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0)
    throw new CorruptDiskError(path, `block size ${bs} is not a power of two from 512 to 256 MiB`, at + 32)
  return header
}

async function readBat(
  fh: FileHandle,
  path: string,
  header: DynamicHeader,
  virtualSize: number,
  fileSize: number,
): Promise<Uint32Array> {
  const entries = header.maxTableEntries
  if (entries * header.blockSize < virtualSize)
    throw new CorruptDiskError(path, `BAT of ${entries} entries is too small for the disk size`, 0)
  const needed = Math.ceil(virtualSize / header.blockSize)
  if (header.tableOffset + needed * 4 > fileSize)
    throw new CorruptDiskError(path, 'BAT runs past the end of the file', header.tableOffset)
  const raw = Buffer.alloc(needed * 4)
  await readFull(fh, path, raw, 0, raw.length, header.tableOffset)
  const bat = new Uint32Array(needed)
  for (let i = 0; i < needed; i++) bat[i] = raw.readUInt32BE(i * 4)
  return bat
}

async function findParent(
  fh: FileHandle,
  path: string,
  header: DynamicHeader,
  fileSize: number,
): Promise<string> {
  const candidates = await parentCandidates(fh, path, header, fileSize)
  const found = await firstExisting(candidates)
  if (!found)
    throw new ParentMismatchError(
      `parent ${header.parentName ? `'${header.parentName}' ` : ''}not found (looked for ${candidates.join(', ') || 'no locator'})`,
      path,
    )
  return found
}

async function openVhdParent(
  path: string,
  parentPath: string,
  header: DynamicHeader,
  openParent: OpenParent,
): Promise<VirtualDisk> {
  const parent = await openParent(parentPath)
  const ok = parent instanceof VhdDisk && parent.uniqueId.equals(header.parentUniqueId)
  if (ok) return parent
  await parent.close()
  const why =
    parent instanceof VhdDisk
      ? `has UniqueId ${parent.uniqueId.toString('hex')}, the child expects ${header.parentUniqueId.toString('hex')}`
      : `is ${parent.format}, not a VHD`
  throw new ParentMismatchError(`parent ${parentPath} ${why}`, path)
}

// Writing new VHDs. Our files say CreatorApp "win " so every reader (Hyper-V, qemu, libvhdi)
// takes CurrentSize as the exact size instead of rounding to the CHS geometry.
//
// Dynamic/differencing layout: footer copy (0), dynamic header (512), BAT (1536, padded to a
// sector), parent locator data (differencing), then blocks appended at the end, then the footer.
import { randomBytes } from 'node:crypto'
import { type FileHandle, open, unlink } from 'node:fs/promises'
import { resolve } from 'node:path'
import { DiskError, DiskRangeError, UnsupportedDiskError } from '../errors.js'
import { describeOpenError, writeFull } from '../file-io.js'
import type { CreateOptions } from '../types.js'
import {
  DEFAULT_BLOCK_SIZE,
  DiskType,
  type DynamicHeader,
  FOOTER_SIZE,
  type Footer,
  geometryFor,
  HEADER_SIZE,
  MAX_VIRTUAL_SIZE,
  type ParentLocator,
  SECTOR_SIZE,
  serializeDynamicHeader,
  serializeFooter,
  vhdTimestamp,
} from './format.js'
import { type OpenParent, openVhd } from './open-vhd.js'
import { locatorSpace, relativeLocator } from './parent.js'
import { VhdDisk } from './vhd-disk.js'

const CREATOR_APP = 'win '
const CREATOR_VERSION = 0x000a0000
const CREATOR_OS = 'Wi2k'

function newFooter(virtualSize: number, diskType: number): Footer {
  return {
    features: 2,
    version: 0x00010000,
    dataOffset: diskType === DiskType.fixed ? null : FOOTER_SIZE,
    timestamp: vhdTimestamp(),
    creatorApp: CREATOR_APP,
    creatorVersion: CREATOR_VERSION,
    creatorOs: CREATOR_OS,
    originalSize: virtualSize,
    currentSize: virtualSize,
    geometry: geometryFor(virtualSize),
    diskType,
    checksum: 0,
    uniqueId: randomBytes(16),
    savedState: 0,
  }
}

function checkOptions(path: string, options: CreateOptions, virtualSize: number | undefined): number {
  if (virtualSize === undefined || !Number.isSafeInteger(virtualSize) || virtualSize <= 0)
    throw new DiskRangeError(`a VHD needs a positive size in bytes, got ${virtualSize}`, path)
  if (virtualSize % SECTOR_SIZE !== 0)
    throw new DiskRangeError(`VHD size ${virtualSize} is not a multiple of ${SECTOR_SIZE} bytes`, path)
  if (virtualSize > MAX_VIRTUAL_SIZE)
    throw new DiskRangeError(
      `VHD size ${virtualSize} is over the format's limit of ${MAX_VIRTUAL_SIZE}`,
      path,
    )
  if (options.logicalSectorSize !== undefined && options.logicalSectorSize !== SECTOR_SIZE)
    throw new UnsupportedDiskError(`VHD has 512-byte sectors only, not ${options.logicalSectorSize}`, path)
  const bs = options.blockSize ?? DEFAULT_BLOCK_SIZE
  if (bs < SECTOR_SIZE * 8 || bs > 256 * 1024 * 1024 || (bs & (bs - 1)) !== 0)
    throw new DiskRangeError(`VHD block size ${bs} is not a power of two from 4 KiB to 256 MiB`, path)
  return bs
}

/** Creates a VHD (fixed, dynamic, or differencing with `parent`), opened writable. */
export async function createVhd(
  path: string,
  options: CreateOptions,
  openParent: OpenParent,
): Promise<VhdDisk> {
  let parent: VhdDisk | null = null
  let virtualSize = options.virtualSize
  if (options.parent) {
    const opened = await openParent(options.parent)
    if (!(opened instanceof VhdDisk)) {
      await opened.close()
      throw new UnsupportedDiskError(
        `parent ${options.parent} is ${opened.format}; a VHD's parent must be a VHD`,
        path,
      )
    }
    parent = opened
    if (virtualSize !== undefined && virtualSize !== parent.virtualSize) {
      await parent.close()
      throw new DiskRangeError(`size ${virtualSize} differs from the parent's ${parent.virtualSize}`, path)
    }
    virtualSize = parent.virtualSize
  }
  let fh: FileHandle | undefined
  try {
    const blockSize = checkOptions(path, options, virtualSize)
    try {
      fh = await open(path, 'wx+')
    } catch (err) {
      throw describeOpenError(err, path)
    }
    if (!parent && options.subformat === 'fixed') await writeFixed(fh, virtualSize!)
    else await writeSparse(fh, path, virtualSize!, blockSize, parent, options.parent)
    await fh.datasync()
    await fh.close()
    fh = undefined
    await parent?.close()
    parent = null
    return await openVhd(path, { readOnly: false, openParent })
  } catch (err) {
    await parent?.close()
    if (fh) {
      await fh.close()
      await unlink(path).catch(() => {})
    }
    throw err
  }
}

async function writeFixed(fh: FileHandle, virtualSize: number): Promise<void> {
  await fh.truncate(virtualSize)
  await writeFull(fh, serializeFooter(newFooter(virtualSize, DiskType.fixed)), 0, FOOTER_SIZE, virtualSize)
}

async function writeSparse(
  fh: FileHandle,
  path: string,
  virtualSize: number,
  blockSize: number,
  parent: VhdDisk | null,
  parentArg: string | undefined,
): Promise<void> {
  const entries = Math.ceil(virtualSize / blockSize)
  const tableOffset = FOOTER_SIZE + HEADER_SIZE
  const batBytes = Math.ceil((entries * 4) / SECTOR_SIZE) * SECTOR_SIZE
  let next = tableOffset + batBytes
  const locators: ParentLocator[] = []
  const locatorData: Array<{ at: number; bytes: Buffer }> = []
  let parentName = ''
  if (parent && parentArg) {
    const abs = resolve(parentArg)
    parentName = abs.length <= 255 ? abs : abs.slice(-255)
    for (const [code, text] of [
      ['W2ru', relativeLocator(path, abs)],
      ['W2ku', abs],
    ] as const) {
      const bytes = Buffer.from(text, 'utf16le')
      const space = locatorSpace(bytes.length)
      // DataSpace in bytes, as Hyper-V writes it (libvhdi documents sectors; readers ignore it).
      locators.push({ code, dataSpace: space, dataLength: bytes.length, dataOffset: next })
      locatorData.push({ at: next, bytes })
      next += space
    }
  }
  const footer = newFooter(virtualSize, parent ? DiskType.differencing : DiskType.dynamic)
  const header: DynamicHeader = {
    tableOffset,
    version: 0x00010000,
    maxTableEntries: entries,
    blockSize,
    checksum: 0,
    parentUniqueId: parent ? Buffer.from(parent.uniqueId) : Buffer.alloc(16),
    parentTimestamp: parent ? parent.footer.timestamp : 0,
    parentName,
    locators,
  }
  const footerBytes = serializeFooter(footer)
  await writeFull(fh, footerBytes, 0, FOOTER_SIZE, 0)
  await writeFull(fh, serializeDynamicHeader(header), 0, HEADER_SIZE, FOOTER_SIZE)
  await writeFull(fh, Buffer.alloc(batBytes, 0xff), 0, batBytes, tableOffset)
  for (const { at, bytes } of locatorData) await writeFull(fh, bytes, 0, bytes.length, at)
  await writeFull(fh, footerBytes, 0, FOOTER_SIZE, next)
  if (next % SECTOR_SIZE !== 0) throw new DiskError('internal: unaligned VHD layout', path)
}

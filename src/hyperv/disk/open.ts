// Detection and dispatch: which format a file is, and which reader or writer handles it.
// VHDX lives in ./vhdx, VHD in ./vhd, raw in ./raw. Parents of differencing disks are opened
// through the same dispatcher, read-only, with a depth limit so a loop of files cannot hang us.
import { open } from 'node:fs/promises'
import { CorruptDiskError, DiskError, UnsupportedDiskError } from './errors.js'
import { describeOpenError, readFull } from './file-io.js'
import { RawDisk } from './raw.js'
import type { CreateOptions, DiskFormat, OpenOptions, VirtualDisk } from './types.js'
import { createVhd, openVhd } from './vhd/index.js'

/** Longest differencing chain we follow; deeper is taken as a loop. */
export const MAX_CHAIN_DEPTH = 64

const VHDX_SIGNATURE = 'vhdxfile'
const VHD_COOKIE = 'conectix'
const VHD_FOOTER_SIZE = 512

/**
 * VHDX: "vhdxfile" at 0. VHD: the "conectix" footer at 0 (dynamic/differencing copy) or in the
 * last 512 bytes (a fixed VHD has it only there). Anything else is raw.
 */
export async function detectFormat(path: string): Promise<DiskFormat> {
  let fh: Awaited<ReturnType<typeof open>>
  try {
    fh = await open(path, 'r')
  } catch (err) {
    throw describeOpenError(err, path)
  }
  try {
    const st = await fh.stat()
    const size = st.size
    if (!st.isFile()) throw new DiskError('not a regular file', path)
    const head = Buffer.alloc(8)
    if (size >= 8) {
      await readFull(fh, path, head, 0, 8, 0)
      const magic = head.toString('latin1')
      if (magic === VHDX_SIGNATURE) return 'vhdx'
      if (magic === VHD_COOKIE) return 'vhd'
    }
    if (size >= VHD_FOOTER_SIZE) {
      await readFull(fh, path, head, 0, 8, size - VHD_FOOTER_SIZE)
      if (head.toString('latin1') === VHD_COOKIE) return 'vhd'
    }
    return 'raw'
  } finally {
    await fh.close()
  }
}

/** Opens any supported image; read-only unless `readOnly: false`. Parents always read-only. */
export async function openDisk(path: string, options: OpenOptions = {}): Promise<VirtualDisk> {
  return openAtDepth(path, options.readOnly ?? true, options.format, 0, options.blockingReads ?? false)
}

async function openAtDepth(
  path: string,
  readOnly: boolean,
  format: DiskFormat | undefined,
  depth: number,
  blockingReads = false,
): Promise<VirtualDisk> {
  if (depth > MAX_CHAIN_DEPTH)
    throw new CorruptDiskError(path, `differencing chain deeper than ${MAX_CHAIN_DEPTH} (a loop?)`)
  const fmt = format ?? (await detectFormat(path))
  const openParent = (parentPath: string) =>
    openAtDepth(parentPath, true, undefined, depth + 1, blockingReads)
  switch (fmt) {
    case 'raw':
      return RawDisk.open(path, readOnly, blockingReads)
    case 'vhd':
      return openVhd(path, { readOnly, openParent, blockingReads })
    case 'vhdx': {
      // Loaded on demand: raw and VHD users never pay for (or depend on) the VHDX module.
      const { openVhdx } = await import('./vhdx/index.js')
      return openVhdx(path, { readOnly, openParent, blockingReads })
    }
    default:
      throw new UnsupportedDiskError(`unknown format '${String(fmt)}'`, path)
  }
}

/**
 * Creates an image opened writable. With `parent`, a differencing disk of the same format as
 * `options.format` (the parent may be any format the child format accepts).
 */
export async function createDisk(path: string, options: CreateOptions): Promise<VirtualDisk> {
  const openParent = (parentPath: string) => openAtDepth(parentPath, true, undefined, 1)
  switch (options.format) {
    case 'raw':
      if (options.parent) throw new UnsupportedDiskError('a raw disk cannot have a parent', path)
      return RawDisk.create(path, options)
    case 'vhd':
      return createVhd(path, options, openParent)
    case 'vhdx': {
      const { createVhdx } = await import('./vhdx/index.js')
      return createVhdx(path, options, openParent)
    }
    default:
      throw new UnsupportedDiskError(`unknown format '${String(options.format)}'`, path)
  }
}

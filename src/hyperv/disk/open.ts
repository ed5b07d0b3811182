// Detection and dispatch. Owned by the disk-format work: VHDX in ./vhdx, VHD in ./vhd, raw in ./raw.

import { UnsupportedDiskError } from './errors.js'
import type { CreateOptions, DiskFormat, OpenOptions, VirtualDisk } from './types.js'

export async function detectFormat(_path: string): Promise<DiskFormat> {
  throw new UnsupportedDiskError('format detection not implemented yet')
}

export async function openDisk(path: string, _options: OpenOptions = {}): Promise<VirtualDisk> {
  throw new UnsupportedDiskError('not implemented yet', path)
}

export async function createDisk(path: string, _options: CreateOptions): Promise<VirtualDisk> {
  throw new UnsupportedDiskError('not implemented yet', path)
}

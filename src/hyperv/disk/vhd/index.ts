// VHD (legacy Virtual PC / Hyper-V v1 format): fixed, dynamic and differencing.
import { UnsupportedDiskError } from '../errors.js'
import type { CreateOptions, VirtualDisk } from '../types.js'

export type OpenParent = (parentPath: string) => Promise<VirtualDisk>

export interface VhdOpenOptions {
  readOnly: boolean
  openParent: OpenParent
}

export async function openVhd(path: string, _options: VhdOpenOptions): Promise<VirtualDisk> {
  throw new UnsupportedDiskError('VHD not implemented yet', path)
}

export async function createVhd(
  path: string,
  _options: CreateOptions,
  _openParent: OpenParent,
): Promise<VirtualDisk> {
  throw new UnsupportedDiskError('VHD not implemented yet', path)
}

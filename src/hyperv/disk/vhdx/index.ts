// VHDX (MS-VHDX): reader, writer, log replay, differencing. Stub until the format work lands.
import { UnsupportedDiskError } from '../errors.js'
import type { CreateOptions, VirtualDisk } from '../types.js'

export type OpenParent = (parentPath: string) => Promise<VirtualDisk>

export interface VhdxOpenOptions {
  readOnly: boolean
  /** Opens a differencing disk's parent (any format the dispatcher knows; VHDX in practice). */
  openParent: OpenParent
}

export async function openVhdx(path: string, _options: VhdxOpenOptions): Promise<VirtualDisk> {
  throw new UnsupportedDiskError('VHDX not implemented yet', path)
}

export async function createVhdx(path: string, _options: CreateOptions, _openParent: OpenParent): Promise<VirtualDisk> {
  throw new UnsupportedDiskError('VHDX not implemented yet', path)
}

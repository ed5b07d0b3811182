// Front door of the disk layer: open any image by detection, create one of any format.

export {
  CONVERT_BUFFER_BYTES,
  type ConvertOptions,
  type ConvertResult,
  convertDisk,
  copyExtents,
} from './convert.js'
export * from './errors.js'
export { createDisk, detectFormat, openDisk } from './open.js'
export type {
  CreateOptions,
  DiskFormat,
  DiskInfo,
  DiskSubformat,
  Extent,
  ExtentState,
  MapOptions,
  OpenOptions,
  VirtualDisk,
} from './types.js'

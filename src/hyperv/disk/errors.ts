// Named errors of the disk layer. Each carries what an operator needs: the file and where.

export class DiskError extends Error {
  override name = 'DiskError'
  constructor(
    message: string,
    readonly path?: string,
  ) {
    super(path ? `${path}: ${message}` : message)
  }
}

/** The file is not a valid image of its format: says which structure and at which file offset. */
export class CorruptDiskError extends DiskError {
  override name = 'CorruptDiskError'
  constructor(
    path: string,
    message: string,
    readonly fileOffset?: number,
  ) {
    super(fileOffset === undefined ? message : `${message} (at file offset ${fileOffset})`, path)
  }
}

/** Valid, but uses something we do not implement (an unknown required region, say). */
export class UnsupportedDiskError extends DiskError {
  override name = 'UnsupportedDiskError'
}

/** The parent of a differencing disk is missing or is not the one the child was made from. */
export class ParentMismatchError extends DiskError {
  override name = 'ParentMismatchError'
}

/** A read or write outside [0, virtualSize), or a write to a read-only disk. */
export class DiskRangeError extends DiskError {
  override name = 'DiskRangeError'
}

export class ReadOnlyDiskError extends DiskError {
  override name = 'ReadOnlyDiskError'
}

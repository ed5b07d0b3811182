// Named errors of the chunk store, each with the facts an operator needs (STYLE.md practice 6).

export class ChunkStoreError extends Error {
  override name = 'ChunkStoreError'
}

/** Bytes read for a chunk do not hash to its id (or cannot be decoded): the store is damaged. */
export class ChunkVerifyError extends ChunkStoreError {
  override name = 'ChunkVerifyError'
  constructor(
    readonly chunkId: string,
    readonly pack?: string,
    readonly offset?: number,
    detail = 'content does not match its hash',
  ) {
    super(
      `chunk ${chunkId}${pack ? ` in ${pack}${offset === undefined ? '' : ` at offset ${offset}`}` : ''}: ${detail}`,
    )
  }
}

/** A chunk the caller named is not in the store. */
export class MissingChunkError extends ChunkStoreError {
  override name = 'MissingChunkError'
  constructor(readonly chunkId: string) {
    super(`chunk ${chunkId} is not in the store`)
  }
}

/** putChunk was given bytes whose hash is not the id it was told. */
export class ChunkHashMismatchError extends ChunkStoreError {
  override name = 'ChunkHashMismatchError'
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`chunk bytes hash to ${actual}, not ${expected}`)
  }
}

/** commitPoint refused: chunks the point names are missing. */
export class IncompletePointError extends ChunkStoreError {
  override name = 'IncompletePointError'
  constructor(
    readonly point: string,
    readonly missing: string[],
  ) {
    super(`point ${point} names ${missing.length} chunk(s) the store lacks (first: ${missing[0]})`)
  }
}

export class PointNotFoundError extends ChunkStoreError {
  override name = 'PointNotFoundError'
  constructor(readonly point: string) {
    super(`no recovery point ${point}`)
  }
}

/** A point a lease pins (a restore reading it) cannot be deleted until the lease is released. */
export class PointPinnedError extends ChunkStoreError {
  override name = 'PointPinnedError'
  constructor(readonly point: string) {
    super(`point ${point} is being read (a restore pins it); it can be deleted once that is done`)
  }
}

export class PointExistsError extends ChunkStoreError {
  override name = 'PointExistsError'
  constructor(readonly point: string) {
    super(`recovery point ${point} already exists`)
  }
}

/** A point, manifest or argument that does not make sense (bad name, sizes that do not match). */
export class InvalidPointError extends ChunkStoreError {
  override name = 'InvalidPointError'
}

/** The store directory is damaged beyond what open-time repair may fix, or held by another process. */
export class StoreOpenError extends ChunkStoreError {
  override name = 'StoreOpenError'
  constructor(
    readonly dir: string,
    message: string,
  ) {
    super(`${dir}: ${message}`)
  }
}

// Named errors of the replication layer, carrying the facts an operator needs (STYLE.md §6).

export class ReplicationError extends Error {
  override name = 'ReplicationError'
}

/** A frame that is malformed, too large or fails validation: the stream carrying it is closed. */
export class FrameError extends ReplicationError {
  override name = 'FrameError'
  constructor(
    message: string,
    readonly protocol?: string,
    readonly peer?: string,
  ) {
    super(message)
  }
}

/** A chunk whose bytes do not hash to the id it was sent under. */
export class ChunkHashMismatchError extends ReplicationError {
  override name = 'ChunkHashMismatchError'
  constructor(
    readonly expected: string,
    readonly actual: string,
    readonly peer?: string,
  ) {
    super(
      `chunk ${expected.slice(0, 16)}… failed verification (hashes to ${actual.slice(0, 16)}…)` +
        (peer ? `, sent by ${peer}` : ''),
    )
  }
}

/** A sub-chunk delta names a base chunk the receiver does not hold. */
export class DeltaBaseMissingError extends ReplicationError {
  override name = 'DeltaBaseMissingError'
  constructor(readonly base: string) {
    super(`delta base chunk ${base.slice(0, 16)}… is not in the store`)
  }
}

/** No set of targets satisfies the protection request. */
export class TargetSelectionError extends ReplicationError {
  override name = 'TargetSelectionError'
}

/** A VM this node neither protects nor holds a replica of. */
export class NotProtectedError extends ReplicationError {
  override name = 'NotProtectedError'
  constructor(readonly vm: string) {
    super(`no protection or replica of VM '${vm}' on this node`)
  }
}

/**
 * No such point. `where` says where it was looked for: this node only (default), one peer
 * (`peer`, which answered a fetch with a nack), or this node and `peersAsked` holders (restore).
 */
export class PointNotFoundError extends ReplicationError {
  override name = 'PointNotFoundError'
  constructor(
    readonly vm: string,
    readonly seq: number | null,
    readonly where: { peer?: string; peersAsked?: number } = {},
  ) {
    const what = seq === null ? `no recovery point of VM '${vm}'` : `no recovery point ${seq} of VM '${vm}'`
    const n = where.peersAsked
    super(
      where.peer !== undefined
        ? `${what} on peer ${where.peer}`
        : n === undefined
          ? `${what} on this node`
          : n === 0
            ? `${what}: looked for on this node and on 0 peers (no peer holds ${seq === null ? 'a point' : 'that point'} of it)`
            : `${what}: looked for on this node and on ${n} peer${n === 1 ? '' : 's'}`,
    )
  }
}

/** The target refused or could not commit a point. */
export class CommitRefusedError extends ReplicationError {
  override name = 'CommitRefusedError'
  constructor(
    message: string,
    readonly peer: string,
    readonly reason: string,
  ) {
    super(message)
  }
}

/** A recovery point's signature is missing, does not verify, or does not cover what it claims. */
export class PointSignatureError extends ReplicationError {
  override name = 'PointSignatureError'
  constructor(
    message: string,
    readonly point: string,
    readonly source: string,
  ) {
    super(message)
  }
}

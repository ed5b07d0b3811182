// Named errors of the mesh layer, carrying the facts an operator needs (STYLE.md §6).

export class MeshError extends Error {
  override name = 'MeshError'
}

/** A join token that cannot be used: malformed, tampered with, or expired. */
export class InvalidTokenError extends MeshError {
  override name = 'InvalidTokenError'
}

export class TokenExpiredError extends InvalidTokenError {
  override name = 'TokenExpiredError'
  constructor(readonly expiresAt: number) {
    super(
      `the join token expired at ${new Date(expiresAt).toISOString()}; ask a member for a new one (replimesh mesh token)`,
    )
  }
}

/** A certificate that does not prove membership of this mesh. */
export class NotMemberError extends MeshError {
  override name = 'NotMemberError'
  constructor(
    readonly peer: string,
    readonly reason: string,
  ) {
    super(`peer ${peer} is not a member of this mesh: ${reason}`)
  }
}

/** Redeeming a join token failed at the member that was asked. */
export class RedeemError extends MeshError {
  override name = 'RedeemError'
}

/** A frame that breaks the wire rules: too large, truncated, or not the expected shape. */
export class FrameError extends MeshError {
  override name = 'FrameError'
  constructor(
    message: string,
    readonly protocol?: string,
  ) {
    super(message)
  }
}

export class FrameTooLargeError extends FrameError {
  override name = 'FrameTooLargeError'
  constructor(
    readonly sizeBytes: number,
    readonly limitBytes: number,
    protocol?: string,
  ) {
    super(`frame of ${sizeBytes} bytes exceeds the limit of ${limitBytes}`, protocol)
  }
}

/** The remote ended the stream in the middle of a frame. */
export class TruncatedFrameError extends FrameError {
  override name = 'TruncatedFrameError'
}

/** A signature over a node state, certificate or revocation list did not verify. */
export class SignatureError extends MeshError {
  override name = 'SignatureError'
}

export class MeshConfigError extends MeshError {
  override name = 'MeshConfigError'
}

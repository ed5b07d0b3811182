// Join tokens (DESIGN.md §4): the mesh id and public key, bootstrap addresses, an expiry and a
// one-time secret, signed by the mesh key. Text form: `rmj1.<base64url payload>.<base64url sig>`.
// A token is checked completely (shape, key ↔ mesh id, signature, expiry) before anything uses it.
import { createHash, randomBytes } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { toString as bytesToString, fromString } from 'uint8arrays'
import { z } from 'zod'
import { MAX_TOKEN_TTL_MS } from './constants.js'
import { InvalidTokenError, TokenExpiredError } from './errors.js'
import { decodePublicKey, encodePublicKey, meshIdOf, openEnvelope, signEnvelope } from './signed.js'

const PREFIX = 'rmj1'
const KIND = 'join-token'

export const joinTokenSchema = z.object({
  v: z.literal(1),
  meshId: z.string().min(1).max(128),
  meshKey: z.string().min(1).max(512),
  bootstrap: z.array(z.string().min(1).max(512)).min(1).max(16),
  expiresAt: z.number().int().positive(),
  /** base64url of 32 random bytes; the issuer keeps only its hash. */
  secret: z.string().min(32).max(64),
})
export type JoinToken = z.infer<typeof joinTokenSchema>

export interface IssuedToken {
  text: string
  token: JoinToken
  /** What the issuer stores to recognise the secret when it is redeemed. */
  secretHash: string
}

export const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex')

export async function issueJoinToken(
  meshKey: PrivateKey,
  bootstrap: string[],
  ttlMs: number,
  now = Date.now(),
): Promise<IssuedToken> {
  if (!(ttlMs > 0 && ttlMs <= MAX_TOKEN_TTL_MS))
    throw new RangeError(
      `a token's time to live must be between 1 ms and ${MAX_TOKEN_TTL_MS / 86_400_000} days`,
    )
  if (bootstrap.length === 0) throw new RangeError('a join token needs at least one bootstrap address')
  const token: JoinToken = {
    v: 1,
    meshId: meshIdOf(meshKey.publicKey),
    meshKey: encodePublicKey(meshKey.publicKey),
    bootstrap,
    expiresAt: now + ttlMs,
    secret: bytesToString(randomBytes(32), 'base64url'),
  }
  const env = await signEnvelope(KIND, token, meshKey)
  const text = `${PREFIX}.${bytesToString(new TextEncoder().encode(env.payload), 'base64url')}.${env.signature}`
  return { text, token, secretHash: hashSecret(token.secret) }
}

/** Parses and verifies a join token's text; throws InvalidTokenError / TokenExpiredError. */
export async function verifyJoinToken(text: string, now = Date.now()): Promise<JoinToken> {
  const parts = text.trim().split('.')
  if (parts.length !== 3 || parts[0] !== PREFIX)
    throw new InvalidTokenError(`not a replimesh join token (expected ${PREFIX}.<payload>.<signature>)`)
  let payload: string
  try {
    payload = new TextDecoder('utf-8', { fatal: true }).decode(fromString(parts[1], 'base64url'))
  } catch {
    throw new InvalidTokenError('the join token is damaged (payload is not base64url text)')
  }
  let claimed: JoinToken
  try {
    const parsed = joinTokenSchema.safeParse(JSON.parse(payload))
    if (!parsed.success) throw new Error()
    claimed = parsed.data
  } catch {
    throw new InvalidTokenError('the join token is damaged (payload has the wrong shape)')
  }
  let key: ReturnType<typeof decodePublicKey>
  try {
    key = decodePublicKey(claimed.meshKey)
  } catch {
    throw new InvalidTokenError('the join token is damaged (bad mesh key)')
  }
  if (meshIdOf(key) !== claimed.meshId)
    throw new InvalidTokenError('the join token is damaged (mesh id ≠ key)')
  try {
    await openEnvelope(KIND, { payload, signature: parts[2] }, key, joinTokenSchema)
  } catch {
    throw new InvalidTokenError('the join token has been altered: its signature does not verify')
  }
  if (claimed.expiresAt <= now) throw new TokenExpiredError(claimed.expiresAt)
  return claimed
}

// Signed envelopes: the exact JSON text that was signed travels with its signature, so a
// verifier checks the bytes it received, never a re-serialisation (key order cannot matter).
import { publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey, PublicKey } from '@libp2p/interface'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import { toString as bytesToString, fromString } from 'uint8arrays'
import { z } from 'zod'
import { SignatureError } from './errors.js'

export const signedEnvelopeSchema = z.object({
  payload: z.string().max(64 * 1024),
  signature: z.string().max(256),
})
export type SignedEnvelope = z.infer<typeof signedEnvelopeSchema>

const encoder = new TextEncoder()

/** Domain-separates what is signed, so a certificate can never pass as a node state. */
const signingBytes = (kind: string, payload: string) => encoder.encode(`replimesh:${kind}:${payload}`)

export async function signEnvelope(kind: string, value: unknown, key: PrivateKey): Promise<SignedEnvelope> {
  const payload = JSON.stringify(value)
  const signature = await key.sign(signingBytes(kind, payload))
  return { payload, signature: bytesToString(signature, 'base64url') }
}

/** Verifies signature by `key` and parses the payload with `schema`; throws SignatureError. */
export async function openEnvelope<T>(
  kind: string,
  envelope: SignedEnvelope,
  key: PublicKey,
  schema: z.ZodType<T>,
): Promise<T> {
  let signature: Uint8Array
  try {
    signature = fromString(envelope.signature, 'base64url')
  } catch {
    throw new SignatureError(`${kind}: the signature is not base64url`)
  }
  if (!(await key.verify(signingBytes(kind, envelope.payload), signature)))
    throw new SignatureError(`${kind}: the signature does not verify`)
  let value: unknown
  try {
    value = JSON.parse(envelope.payload)
  } catch {
    throw new SignatureError(`${kind}: the signed payload is not JSON`)
  }
  const parsed = schema.safeParse(value)
  if (!parsed.success) throw new SignatureError(`${kind}: the signed payload has the wrong shape`)
  return parsed.data
}

export const encodePublicKey = (key: PublicKey): string =>
  bytesToString(publicKeyToProtobuf(key), 'base64url')

export function decodePublicKey(text: string): PublicKey {
  try {
    return publicKeyFromProtobuf(fromString(text, 'base64url'))
  } catch {
    throw new SignatureError('not an encoded public key')
  }
}

/** The mesh id is the peer-id form of the mesh public key: short, printable, bound to the key. */
export const meshIdOf = (key: PublicKey): string => peerIdFromPublicKey(key).toString()

/** A node's public key, from its (Ed25519) peer id. */
export function publicKeyOfPeer(peerId: string): PublicKey {
  const key = peerIdFromString(peerId).publicKey
  if (!key) throw new SignatureError(`peer id ${peerId} does not embed its public key`)
  return key
}

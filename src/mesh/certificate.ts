// Membership certificates and the revocation list, both signed by the mesh key (DESIGN.md §4).
// Only the holder of the mesh key issues certificates: in practice the node that ran
// `mesh create` redeems every join token. Delegating that authority is not implemented.
import type { PrivateKey, PublicKey } from '@libp2p/interface'
import { z } from 'zod'
import { NotMemberError } from './errors.js'
import { meshIdOf, openEnvelope, type SignedEnvelope, signEnvelope, signedEnvelopeSchema } from './signed.js'

const CERT_KIND = 'membership-certificate'
const REVOCATION_KIND = 'revocation-list'

export const siteSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a site is letters, digits, dot, dash, underscore')

export const certificateSchema = z.object({
  v: z.literal(1),
  meshId: z.string().min(1).max(128),
  peerId: z.string().min(1).max(128),
  site: siteSchema,
  issuedAt: z.number().int().nonnegative(),
})
export type MembershipCertificate = z.infer<typeof certificateSchema>

export const revocationListSchema = z.object({
  v: z.literal(1),
  meshId: z.string().min(1).max(128),
  /** Rises with each new list; a node keeps the highest it has verified. */
  seq: z.number().int().nonnegative(),
  issuedAt: z.number().int().nonnegative(),
  revoked: z.array(z.string().min(1).max(128)).max(10_000),
})
export type RevocationList = z.infer<typeof revocationListSchema>

export { type SignedEnvelope, signedEnvelopeSchema }

export async function issueCertificate(
  meshKey: PrivateKey,
  peerId: string,
  site: string,
  now = Date.now(),
): Promise<SignedEnvelope> {
  const cert: MembershipCertificate = {
    v: 1,
    meshId: meshIdOf(meshKey.publicKey),
    peerId,
    site,
    issuedAt: now,
  }
  return signEnvelope(CERT_KIND, cert, meshKey)
}

/**
 * Checks that `envelope` proves `peerId` is a member: signed by the mesh key, for this mesh,
 * for this peer, not revoked. Throws NotMemberError with the reason.
 */
export async function verifyCertificate(
  envelope: SignedEnvelope,
  meshKey: PublicKey,
  peerId: string,
  revoked: ReadonlySet<string> = new Set(),
): Promise<MembershipCertificate> {
  let cert: MembershipCertificate
  try {
    cert = await openEnvelope(CERT_KIND, envelope, meshKey, certificateSchema)
  } catch (err) {
    throw new NotMemberError(peerId, (err as Error).message)
  }
  if (cert.meshId !== meshIdOf(meshKey))
    throw new NotMemberError(peerId, `certificate is for mesh ${cert.meshId}`)
  if (cert.peerId !== peerId)
    throw new NotMemberError(peerId, `certificate names another peer (${cert.peerId})`)
  if (revoked.has(peerId)) throw new NotMemberError(peerId, 'its certificate has been revoked')
  return cert
}

export async function signRevocationList(
  meshKey: PrivateKey,
  revoked: string[],
  seq: number,
  now = Date.now(),
): Promise<SignedEnvelope> {
  const list: RevocationList = { v: 1, meshId: meshIdOf(meshKey.publicKey), seq, issuedAt: now, revoked }
  return signEnvelope(REVOCATION_KIND, list, meshKey)
}

export async function verifyRevocationList(
  envelope: SignedEnvelope,
  meshKey: PublicKey,
): Promise<RevocationList> {
  const list = await openEnvelope(REVOCATION_KIND, envelope, meshKey, revocationListSchema)
  if (list.meshId !== meshIdOf(meshKey)) throw new NotMemberError('-', 'revocation list of another mesh')
  return list
}

// Signed recovery points (DESIGN.md §3: a point is "signed by the producing node's key").
//
// The producing node (the VM's owner, whose protector takes the point) signs the point's header
// fields with its libp2p key, in the mesh's signed envelope (mesh/signed.ts: the exact JSON text
// travels with its signature, domain-separated by kind). What is signed:
//
//   {v, vm, vmId, seq, epoch, time, consistency, alg, source,
//    disks: [{index, virtualSize, chunkSize, root}], configDigest}
//
// `root` is each disk's Merkle manifest root, so the signature covers every chunk of the point;
// `configDigest` is the SHA-256 of the configuration's canonical JSON (sorted keys). The envelope
// rides in the point frame, is stored with the committed point, and is forwarded unchanged by a
// chain hop (the hop does not sign: the owner did). A receiver checks, before it commits, that
// the declared source is a current mesh member, that the signature verifies with that member's
// key, and that every signed field equals what it is about to commit.
import { createHash } from 'node:crypto'
import type { PublicKey } from '@libp2p/interface'
import { z } from 'zod'
import {
  type HashAlgorithm,
  hashFunction,
  MERKLE_FANOUT,
  type PointSignature,
  type RecoveryPoint,
  TreeBuilder,
  treeShape,
  ZERO_HEX,
} from '../chunkstore/index.js'
import { openEnvelope, publicKeyOfPeer, SignatureError } from '../mesh/index.js'
import { MAX_DISKS_PER_POINT } from './constants.js'
import { PointSignatureError } from './errors.js'
import type { ChunkId } from './ids.js'
import type { PointHeader } from './messages.js'
import { idBytesAt, type PackedManifest } from './packed-manifest.js'

export const POINT_SIGNATURE_KIND = 'recovery-point'

const hex64 = z.string().regex(/^[0-9a-f]{64}$/)

export const signedPointSchema = z
  .object({
    v: z.literal(1),
    vm: z.string().min(1).max(128),
    vmId: z.string().max(256),
    seq: z.number().int().nonnegative(),
    epoch: z.number().int().nonnegative(),
    time: z.number().int().nonnegative(),
    consistency: z.enum(['crash', 'application']),
    alg: z.string().min(1).max(32),
    source: z.string().min(1).max(128),
    disks: z
      .array(
        z
          .object({
            index: z.number().int().nonnegative(),
            virtualSize: z.number().int().nonnegative(),
            chunkSize: z.number().int().positive(),
            root: hex64,
          })
          .strict(),
      )
      .min(1)
      .max(MAX_DISKS_PER_POINT),
    configDigest: hex64,
  })
  .strict()
export type SignedPointFields = z.infer<typeof signedPointSchema>

/** Signs `value` as `kind` with this node's private key (the mesh node's `sign`). */
export type PointSigner = (kind: string, value: unknown) => Promise<PointSignature>
/** The public key of `peerId` when it is a current member of the mesh, else null. */
export type MemberKeys = (peerId: string) => Promise<PublicKey | null>

/** JSON with object keys sorted at every level (undefined dropped, as JSON.stringify does). */
export function canonicalJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort)
    if (v !== null && typeof v === 'object')
      return Object.fromEntries(
        Object.keys(v as object)
          .sort()
          .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
      )
    return v
  }
  return JSON.stringify(sort(JSON.parse(JSON.stringify(value ?? null))))
}

export const configDigest = (config: unknown): string =>
  createHash('sha256').update(canonicalJson(config)).digest('hex')

/**
 * The Merkle root of a manifest given as ids in disk order (null: zero chunk), computed without a
 * store: the same tree the receiver builds in its store, so the roots can be compared.
 */
export async function manifestRoot(
  virtualSize: number,
  chunkSize: number,
  ids: ReadonlyArray<ChunkId | null> | PackedManifest,
  alg: HashAlgorithm,
): Promise<string> {
  const shape = treeShape(virtualSize, chunkSize, MERKLE_FANOUT)
  const builder = new TreeBuilder(shape, hashFunction(alg), async () => {})
  const zero = Buffer.from(ZERO_HEX, 'hex')
  const at = idBytesAt(ids)
  for (let i = 0; i < shape.chunkCount; i++) await builder.push(at(i) ?? zero)
  return (await builder.finish()).toString('hex')
}

/** What the producing node signs for a point, from its header and its disks' manifest roots. */
export function signedFields(
  header: Pick<
    PointHeader,
    'vm' | 'vmId' | 'seq' | 'epoch' | 'time' | 'consistency' | 'alg' | 'source' | 'config'
  >,
  disks: Array<{ virtualSize: number; chunkSize: number; root: string }>,
): SignedPointFields {
  return {
    v: 1,
    vm: header.vm,
    vmId: header.vmId,
    seq: header.seq,
    epoch: header.epoch,
    time: header.time,
    consistency: header.consistency,
    alg: header.alg,
    source: header.source,
    disks: disks.map((d, index) => ({
      index,
      virtualSize: d.virtualSize,
      chunkSize: d.chunkSize,
      root: d.root,
    })),
    configDigest: configDigest(header.config),
  }
}

export function signPoint(fields: SignedPointFields, sign: PointSigner): Promise<PointSignature> {
  return sign(POINT_SIGNATURE_KIND, fields)
}

/**
 * Checks a received point header's signature: present, by a current member that is the point's
 * declared source, and over exactly this header (vm, seq, epoch, time, consistency, alg, source,
 * disk geometry, configuration). Returns the signed fields; the caller compares their roots with
 * the manifests it built (checkSignedRoots). Throws PointSignatureError with the reason.
 */
export async function verifyPointHeader(
  header: PointHeader,
  memberKey: MemberKeys,
): Promise<SignedPointFields> {
  const name = `${header.vm}@${header.seq}`
  const fail = (reason: string): never => {
    throw new PointSignatureError(`point ${name}: ${reason}`, name, header.source)
  }
  if (!header.signed) fail(`it is not signed by its source ${header.source}`)
  const key = await memberKey(header.source)
  if (!key) fail(`its source ${header.source} is not a current member of the mesh`)
  let fields: SignedPointFields
  try {
    fields = await openEnvelope(
      POINT_SIGNATURE_KIND,
      header.signed as PointSignature,
      key as PublicKey,
      signedPointSchema,
    )
  } catch (err) {
    if (!(err instanceof SignatureError)) throw err
    return fail(`the signature is not by its source ${header.source} (${err.message})`)
  }
  const mismatch = differences(fields, header)
  if (mismatch.length > 0) fail(`the signed header differs in ${mismatch.join(', ')}`)
  return fields
}

/** The signed roots must be the roots of the manifests about to be committed. */
export function checkSignedRoots(fields: SignedPointFields, roots: string[], header: PointHeader): void {
  const name = `${header.vm}@${header.seq}`
  const bad = roots.flatMap((root, i) => (fields.disks[i]?.root === root ? [] : [i]))
  if (bad.length > 0 || roots.length !== fields.disks.length)
    throw new PointSignatureError(
      `point ${name}: the manifest of disk ${bad.join(', ') || '?'} does not have the signed root`,
      name,
      header.source,
    )
}

function differences(fields: SignedPointFields, header: PointHeader): string[] {
  const out: string[] = []
  for (const k of ['vm', 'vmId', 'seq', 'epoch', 'time', 'consistency', 'alg', 'source'] as const)
    if (fields[k] !== header[k]) out.push(k)
  if (
    fields.disks.length !== header.disks.length ||
    fields.disks.some(
      (d, i) =>
        d.index !== header.disks[i].index ||
        d.virtualSize !== header.disks[i].virtualSize ||
        d.chunkSize !== header.disks[i].chunkSize,
    )
  )
    out.push('disks')
  if (fields.configDigest !== configDigest(header.config)) out.push('config')
  return out
}

/** What `points` shows of a stored point's signature. */
export interface PointSignatureStatus {
  /** Peer id the signature claims (the point's producing node); null: unsigned. */
  signer: string | null
  /** It verifies with the signer's key (from its peer id) over this point's fields and roots. */
  verified: boolean
  /** Why not, when it does not. */
  reason?: string
}

/** Re-checks a committed point's stored signature against the point as the store holds it. */
export async function describePointSignature(point: RecoveryPoint): Promise<PointSignatureStatus> {
  if (!point.signed)
    return { signer: null, verified: false, reason: 'unsigned (committed before points were signed)' }
  let claimed: string | null = null
  try {
    const parsed = JSON.parse(point.signed.payload) as { source?: unknown }
    if (typeof parsed.source === 'string') claimed = parsed.source
  } catch {
    // reported below: the envelope does not open
  }
  if (!claimed) return { signer: null, verified: false, reason: 'the signed payload names no source' }
  let key: PublicKey
  try {
    key = publicKeyOfPeer(claimed)
  } catch {
    return { signer: claimed, verified: false, reason: `${claimed} is not a peer id that embeds its key` }
  }
  try {
    const fields = await openEnvelope(POINT_SIGNATURE_KIND, point.signed, key, signedPointSchema)
    const bad: string[] = []
    for (const k of ['vm', 'seq', 'epoch', 'time', 'consistency', 'source'] as const)
      if (fields[k] !== point[k]) bad.push(k)
    if (
      fields.disks.length !== point.disks.length ||
      fields.disks.some(
        (d, i) =>
          d.root !== point.disks[i].root ||
          d.virtualSize !== point.disks[i].virtualSize ||
          d.chunkSize !== point.disks[i].chunkSize,
      )
    )
      bad.push('disks')
    if (fields.configDigest !== configDigest(point.config)) bad.push('config')
    if (bad.length > 0)
      return { signer: claimed, verified: false, reason: `the signed fields differ in ${bad.join(', ')}` }
    return { signer: claimed, verified: true }
  } catch (err) {
    if (!(err instanceof SignatureError)) throw err
    return { signer: claimed, verified: false, reason: err.message }
  }
}

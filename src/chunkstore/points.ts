// Recovery points (DESIGN.md §3) and their names. A point is named `<vm>@<seq>`: the VM's name
// and its sequence number, which only rises per VM on the node that produces its points.
import { z } from 'zod'
import { InvalidPointError } from './errors.js'
import { HASH_ALGORITHMS, type HashAlgorithm, ID_BYTES } from './hash.js'

export const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

export type Consistency = 'crash' | 'application'

/** One disk of a point: the manifest root and what is needed to read the tree. */
export interface ManifestRef {
  virtualSize: number
  chunkSize: number
  /** Merkle root, 64 hex digits (all zeros: the disk reads as zeros). */
  root: string
  hash: HashAlgorithm
}

export interface PointDisk extends ManifestRef {
  /** The disk's name within the VM (its file name, or an index). */
  disk: string
}

export interface RecoveryPoint {
  vm: string
  seq: number
  epoch: number
  /** Milliseconds since the Unix epoch. */
  time: number
  consistency: Consistency
  disks: PointDisk[]
  /** The VM's configuration as the hypervisor reported it; opaque to the store. */
  config: unknown
  /** Peer id (or name) of the node that produced the point. */
  source: string
  /**
   * The producing node's signature (DESIGN.md §3): the exact signed text and its signature, as
   * the replication layer made and checked them. The store keeps it and never checks it; points
   * committed before points were signed have none.
   */
  signed?: PointSignature
}

/** A signed envelope of the point's header fields (replication/point-signature.ts). */
export interface PointSignature {
  /** The JSON text that was signed. */
  payload: string
  /** Its signature, base64url. */
  signature: string
}

const hex = z.string().regex(new RegExp(`^[0-9a-f]{${ID_BYTES * 2}}$`))
const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0

export const pointSchema = z.object({
  vm: z.string().regex(VM_NAME),
  seq: z.number().int().nonnegative(),
  epoch: z.number().int().nonnegative(),
  time: z.number().int().nonnegative(),
  consistency: z.enum(['crash', 'application']),
  disks: z
    .array(
      z.object({
        disk: z.string().min(1).max(256),
        virtualSize: z.number().int().nonnegative(),
        chunkSize: z.number().int().refine(pow2, 'chunkSize must be a power of two'),
        root: hex,
        hash: z.enum(HASH_ALGORITHMS as [HashAlgorithm, ...HashAlgorithm[]]),
      }),
    )
    .min(1),
  config: z.unknown(),
  source: z.string(),
  signed: z
    .object({ payload: z.string().max(64 * 1024), signature: z.string().max(256) })
    .strict()
    .optional(),
})

export function validatePoint(value: unknown): RecoveryPoint {
  const r = pointSchema.safeParse(value)
  if (!r.success)
    throw new InvalidPointError(`bad recovery point: ${r.error.issues[0]?.message ?? 'invalid'}`)
  return r.data as RecoveryPoint
}

export function pointName(p: { vm: string; seq: number }): string {
  return `${p.vm}@${p.seq}`
}

export function parsePointName(name: string): { vm: string; seq: number } {
  const at = name.lastIndexOf('@')
  const vm = name.slice(0, at)
  const seqText = name.slice(at + 1)
  if (at <= 0 || !VM_NAME.test(vm) || !/^\d{1,15}$/.test(seqText))
    throw new InvalidPointError(`'${name}' is not a point name (expected <vm>@<seq>, e.g. web01@12)`)
  return { vm, seq: Number(seqText) }
}

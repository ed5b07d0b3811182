// Reference ids and changed ranges: pure helpers of the change-tracking cycle.
//
// A reference id is what releasePoint returns and createPoint's sinceReference takes back. Ours is
// "hvref1." + base64url(JSON) holding the VM id, the Msvm_VirtualSystemReferencePoint InstanceID
// and, per disk index, the RCT id that GetVirtualDiskChanges takes as LimitId next cycle.
import { type ChangedRange, coalesceRanges } from '../hypervisor.js'
import { HyperVReferenceError } from './errors.js'

const PREFIX = 'hvref1.'

export interface ReferenceDisk {
  index: number
  /** RCT id, or null: that disk has no baseline (read it all next time). */
  rctId: string | null
}

export interface HyperVReference {
  vmId: string
  /** Msvm_VirtualSystemReferencePoint InstanceID; null when tracking is unavailable. */
  referencePointId: string | null
  disks: ReferenceDisk[]
}

export function encodeReference(ref: HyperVReference): string {
  return PREFIX + Buffer.from(JSON.stringify(ref), 'utf8').toString('base64url')
}

export function decodeReference(id: string): HyperVReference {
  if (!id.startsWith(PREFIX))
    throw new HyperVReferenceError(`'${id.slice(0, 40)}' is not a Hyper-V reference id`)
  let v: unknown
  try {
    v = JSON.parse(Buffer.from(id.slice(PREFIX.length), 'base64url').toString('utf8'))
  } catch {
    throw new HyperVReferenceError('damaged Hyper-V reference id (not JSON)')
  }
  const r = v as Partial<HyperVReference>
  if (
    typeof r?.vmId !== 'string' ||
    !(r.referencePointId === null || typeof r.referencePointId === 'string') ||
    !Array.isArray(r.disks) ||
    !r.disks.every((d) => Number.isInteger(d?.index) && (d.rctId === null || typeof d.rctId === 'string'))
  )
    throw new HyperVReferenceError('damaged Hyper-V reference id (bad fields)')
  return { vmId: r.vmId, referencePointId: r.referencePointId, disks: r.disks }
}

/** "{ABC-…}" / "abc-…" → "abc-…": disk identifiers compare without braces or case. */
export const normalizeGuid = (g: string) => g.replace(/[{}]/g, '').toLowerCase()

/**
 * Msvm_VirtualSystemReferencePoint lists VirtualDiskIdentifiers and
 * ResilientChangeTrackingIdentifiers side by side. Match them to our disks by identifier; when
 * none match but the counts agree, by position ([UNCONFIRMED] which identifier Hyper-V lists).
 */
export function rctIdsByDisk(
  diskIdentifiers: Array<string | null>,
  refDiskIds: string[],
  refRctIds: string[],
): ReferenceDisk[] {
  const byId = new Map<string, string>()
  refDiskIds.forEach((d, i) => {
    if (refRctIds[i]) byId.set(normalizeGuid(d), refRctIds[i])
  })
  const matched = diskIdentifiers.map((d) => (d ? (byId.get(normalizeGuid(d)) ?? null) : null))
  if (matched.every((m) => m === null) && refRctIds.length === diskIdentifiers.length)
    return diskIdentifiers.map((_, index) => ({ index, rctId: refRctIds[index] || null }))
  return matched.map((rctId, index) => ({ index, rctId }))
}

/** Sorted, clipped to [0, size), overlapping and touching ranges merged. */
export function normalizeRanges(ranges: ChangedRange[], size: number): ChangedRange[] {
  return coalesceRanges(ranges, size)
}

// The one interface the node uses to talk to a hypervisor (DESIGN.md §5). Two implementations:
// the lab hypervisor (./lab, Linux/macOS/CI) and Hyper-V through PowerShell (./hyperv-ps).
import type { DiskFormat, VirtualDisk } from './disk/index.js'

export type HypervisorKind = 'lab' | 'hyperv'
export type VmState = 'running' | 'stopped' | 'paused' | 'starting' | 'stopping' | 'unknown'
export type Consistency = 'crash' | 'application'

export interface VmDisk {
  path: string
  format: DiskFormat
  virtualSize: number
  /** Differencing chain, nearest parent first; empty for a base disk. */
  parents: string[]
  /** Controller location, e.g. "SCSI 0:1"; informational. */
  location?: string
}

export interface VmNic {
  name: string
  switch: string | null
  mac: string
  /** Guest addresses in CIDR form, e.g. "10.1.0.15/24". */
  addresses: string[]
  gateway?: string | null
  dns?: string[]
}

/** A VM's catalogue entry: everything needed to register it elsewhere. */
export interface VmInfo {
  id: string
  name: string
  generation: 1 | 2
  state: VmState
  cpus: number
  memoryBytes: number
  disks: VmDisk[]
  nics: VmNic[]
  notes: string
  tags: string[]
  /** Where the hypervisor keeps its configuration (vm.json, .vmcx), or null. */
  configPath: string | null
  /**
   * Settings only the same kind of hypervisor understands, carried with a replica so a failed-over
   * VM behaves as before (the lab's workload and record stream). Opaque to every other layer.
   */
  settings?: Record<string, unknown>
}

export interface ChangedRange {
  offset: number
  length: number
}

/** Sorted, clipped to [0, limit), overlapping and touching ranges merged. */
export function coalesceRanges(
  ranges: Iterable<ChangedRange>,
  limit = Number.POSITIVE_INFINITY,
): ChangedRange[] {
  const sorted = [...ranges]
    .map((r) => ({ offset: Math.max(0, r.offset), end: Math.min(limit, r.offset + r.length) }))
    .filter((r) => r.end > r.offset)
    .sort((a, b) => a.offset - b.offset)
  const out: ChangedRange[] = []
  for (const r of sorted) {
    const last = out[out.length - 1]
    if (last && r.offset <= last.offset + last.length)
      last.length = Math.max(last.length, r.end - last.offset)
    else out.push({ offset: r.offset, length: r.end - r.offset })
  }
  return out
}

/**
 * One instant of all a VM's disks, frozen (a recovery checkpoint on Hyper-V, a copy-on-write
 * freeze in the lab). Read it with openPointDisk, then release it.
 */
export interface ConsistencyPoint {
  id: string
  vmId: string
  /** ms since the epoch, when the barrier was taken. */
  time: number
  consistency: Consistency
  disks: Array<{
    index: number
    virtualSize: number
    /** Ranges changed since the reference asked for; null when unknown (read everything). */
    changed: ChangedRange[] | null
  }>
}

export interface CreatePointOptions {
  consistency?: Consistency
  /** Reference id returned by an earlier releasePoint; null or absent for a full point. */
  sinceReference?: string | null
  signal?: AbortSignal
}

/** IP settings for one NIC when the VM runs at another site (re-IP). */
export interface NicMapping {
  nic: string
  addresses: string[]
  gateway?: string | null
  dns?: string[]
  /** Connect to this switch instead (or null to disconnect: isolated test failover). */
  switch?: string | null
}

export interface HostEvent {
  level: 'info' | 'warning' | 'error'
  /** Stable numeric id per kind of event (Event Log EventId). */
  eventId: number
  message: string
}

export interface RegisterOptions {
  /** Give the VM a new id (a test-failover copy) instead of keeping the replicated one. */
  newId?: boolean
  /** Name to register under (test failover uses a suffix). */
  name?: string
}

export interface StartVmOptions {
  /**
   * Awaited before the VM runs (its first instruction, its first write): a failover passes the
   * wait for the failed owner's lease here, so a hypervisor may prepare the start meanwhile (the
   * lab forks and loads its guest) but must not let the VM run before it resolves. When it
   * rejects, the VM is left stopped and startVm rejects with its error.
   */
  gate?: () => Promise<void>
}

export interface Hypervisor {
  readonly kind: HypervisorKind
  start(): Promise<void>
  stop(): Promise<void>

  listVms(options?: { signal?: AbortSignal }): Promise<VmInfo[]>
  /** By id or name; throws VmNotFoundError. */
  getVm(vm: string): Promise<VmInfo>

  createPoint(vm: string, options?: CreatePointOptions): Promise<ConsistencyPoint>
  /** A read-only view of one disk of a frozen point. Close it before releasePoint. */
  openPointDisk(point: ConsistencyPoint, diskIndex: number): Promise<VirtualDisk>
  /** Ends the freeze; returns the reference id to pass as sinceReference next time. */
  releasePoint(point: ConsistencyPoint): Promise<string>

  /** Registers a VM from replicated configuration and disk paths on this host. */
  registerVm(config: VmInfo, diskPaths: string[], options?: RegisterOptions): Promise<VmInfo>
  unregisterVm(vm: string): Promise<void>
  startVm(vm: string, options?: StartVmOptions): Promise<void>
  stopVm(vm: string, options?: { force?: boolean }): Promise<void>
  applyNetworkMapping(vm: string, mappings: NicMapping[]): Promise<void>
  writeEvent(event: HostEvent): Promise<void>
}

export class VmNotFoundError extends Error {
  override name = 'VmNotFoundError'
  constructor(readonly vm: string) {
    super(`no VM named or with id '${vm}' on this host`)
  }
}

export class HypervisorError extends Error {
  override name = 'HypervisorError'
}

/** The VM is in the wrong state for the operation (a second start, unregistering a running VM). */
export class VmStateError extends HypervisorError {
  override name = 'VmStateError'
  constructor(
    readonly vm: string,
    readonly state: VmState,
    message: string,
  ) {
    super(`VM '${vm}' is ${state}: ${message}`)
  }
}

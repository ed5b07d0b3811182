import { openDisk as defaultOpenDisk, type OpenOptions, type VirtualDisk } from '../disk/index.js'
import type {
  ChangedRange,
  ConsistencyPoint,
  CreatePointOptions,
  HostEvent,
  Hypervisor,
  NicMapping,
  RegisterOptions,
  StartVmOptions,
  VmInfo,
} from '../hypervisor.js'
import { VmNotFoundError } from '../hypervisor.js'
import {
  CONSISTENCY_APPLICATION,
  CONSISTENCY_CRASH,
  DEFAULT_EVENT_LOG,
  DEFAULT_EVENT_SOURCE,
  DEFAULT_JOB_TIMEOUT_SECONDS,
  MAX_CHANGE_QUERY_ROUNDS,
  MAX_EVENT_MESSAGE_BYTES,
  POINT_MARKER,
} from './constants.js'
import { HyperVError, HyperVOutputError } from './errors.js'
import { planFailover } from './network.js'
import * as ops from './ops.js'
import { asArray, asNumber, asString, parseDate, toVmRecord } from './parse.js'
import {
  decodeReference,
  encodeReference,
  type HyperVReference,
  normalizeRanges,
  rctIdsByDisk,
} from './reference.js'
import { createVmParams, importVmParams } from './register.js'
import { PowerShellRunner, type RunnerInit } from './runner.js'

/** The logging calls the adapter makes (a pino logger fits). */
export interface HyperVLogger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
}
const silent: HyperVLogger = { info() {}, warn() {} }

export interface HyperVInit extends RunnerInit {
  /** Event Log source registered once and used by writeEvent; default 'replimesh'. */
  eventSource?: string
  /** Default 'Application'. */
  eventLog?: string
  /** Source switch name → switch on this host, applied when registering a replica. */
  switchMap?: Record<string, string>
  /** Where `newId` (test failover) copies go; default a 'replimesh-copy-<name>' folder beside the disks. */
  copyRoot?: string | null
  /** WMI job wait inside a script; default 150 s. */
  jobTimeoutSeconds?: number
  logger?: HyperVLogger
  /** Opens a frozen disk file (default: our disk readers). */
  openDisk?: (path: string, options: OpenOptions) => Promise<VirtualDisk>
}

interface OpenPoint {
  vmId: string
  snapshotId: string
  rct: boolean
  frozenPaths: Array<string | null>
  diskIdentifiers: Array<string | null>
  /** Reference point the changes were read from; kept when older ones are pruned. */
  baseReferencePointId: string | null
  views: Set<VirtualDisk>
}

type Obj = Record<string, unknown>

/** At most `maxBytes` of UTF-8, cut at a character boundary, marked with an ellipsis. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text
  let out = ''
  let bytes = 0
  for (const ch of text) {
    const n = Buffer.byteLength(ch, 'utf8')
    if (bytes + n > maxBytes - 3) break
    out += ch
    bytes += n
  }
  return `${out}…`
}
const obj = (v: unknown): Obj => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : {})

export class HyperVHypervisor implements Hypervisor {
  readonly kind = 'hyperv' as const
  readonly runner: PowerShellRunner
  private readonly log: HyperVLogger
  private readonly points = new Map<string, OpenPoint>()
  private lifetime = new AbortController()
  private sourceRegistered = false

  constructor(private readonly init: HyperVInit = {}) {
    this.runner = new PowerShellRunner(init)
    this.log = init.logger ?? silent
  }

  /** Checks that PowerShell runs and the Hyper-V module is present. */
  async start(): Promise<void> {
    this.lifetime = new AbortController()
    const [probe] = await this.runner.run('probe', ops.PROBE, {}, { signal: this.lifetime.signal })
    const p = obj(probe)
    if (p.HyperV !== true)
      throw new HyperVError('the Hyper-V PowerShell module is not installed on this host')
    this.log.info({ psVersion: p.PSVersion }, 'hyper-v adapter started')
    await this.removeStalePoints()
  }

  /** Checkpoints an earlier run left (it crashed mid-point): the VMs would write to AVHDXs forever. */
  private async removeStalePoints(): Promise<void> {
    try {
      const rows = await this.run('cleanup-points', ops.CLEANUP_POINTS, { marker: POINT_MARKER })
      for (const r of rows.map(obj))
        this.log.warn(
          { vmId: r.VirtualSystemIdentifier, checkpoint: r.InstanceID },
          'removed a checkpoint left by an earlier run',
        )
    } catch (err) {
      this.log.warn({ err: String(err) }, 'could not look for checkpoints left by an earlier run')
    }
  }

  /** Kills scripts in flight. Checkpoints of unreleased points stay until the next start() removes them. */
  async stop(): Promise<void> {
    this.lifetime.abort(new HyperVError('Hyper-V adapter stopped'))
    this.runner.killAll()
    for (const p of this.points.values()) for (const v of p.views) await v.close().catch(() => {})
    this.points.clear()
  }

  private signal(extra?: AbortSignal): AbortSignal {
    return extra ? AbortSignal.any([extra, this.lifetime.signal]) : this.lifetime.signal
  }

  private run(op: string, body: string, params: Obj, signal?: AbortSignal, helpers?: string) {
    return this.runner.run(
      op,
      body,
      { jobTimeoutSeconds: this.init.jobTimeoutSeconds ?? DEFAULT_JOB_TIMEOUT_SECONDS, ...params },
      { signal: this.signal(signal), helpers },
    )
  }

  async listVms(options: { signal?: AbortSignal } = {}): Promise<VmInfo[]> {
    const rows = await this.run('list-vms', ops.LIST_VMS, { vm: null }, options.signal, ops.VM_RECORD_HELPER)
    return rows.map((r) => toVmRecord(r).info)
  }

  async getVm(vm: string): Promise<VmInfo> {
    const rows = await this.run('list-vms', ops.LIST_VMS, { vm }, undefined, ops.VM_RECORD_HELPER)
    if (rows.length === 0) throw new VmNotFoundError(vm)
    return toVmRecord(rows[0]).info
  }

  async createPoint(vm: string, options: CreatePointOptions = {}): Promise<ConsistencyPoint> {
    const reference = this.readReference(options.sinceReference)
    const level = options.consistency === 'application' ? CONSISTENCY_APPLICATION : CONSISTENCY_CRASH
    const [raw] = await this.run(
      'create-point',
      ops.CREATE_POINT,
      { vm, consistency: level, marker: POINT_MARKER },
      options.signal,
    )
    const r = obj(raw)
    const snapshot = obj(r.Snapshot)
    const snapshotId = asString(snapshot.InstanceID)
    if (!snapshotId) throw new HyperVOutputError('create-point', 'no checkpoint id in the result')
    const vmId = (asString(r.VmId) ?? '').toLowerCase()
    const disks = asArray(r.Disks).map(obj)
    const open: OpenPoint = {
      vmId,
      snapshotId,
      rct: r.Rct === true,
      frozenPaths: disks.map((d) => asString(obj(d.Frozen).Path)),
      diskIdentifiers: disks.map((d) => asString(obj(d.Frozen).DiskIdentifier)),
      baseReferencePointId: reference?.vmId === vmId ? reference.referencePointId : null,
      views: new Set(),
    }
    const sizes = disks.map((d) => asNumber(obj(d.Frozen).Size, asNumber(obj(d.Live).Size)))
    const id = `hvpoint:${vmId}:${snapshotId}`
    this.points.set(id, open)
    try {
      const changed = await this.changedRanges(open, sizes, reference, options.signal)
      return {
        id,
        vmId,
        time: parseDate(snapshot.CreationTime) ?? Date.now(),
        consistency: asNumber(r.ConsistencyLevel) === CONSISTENCY_APPLICATION ? 'application' : 'crash',
        disks: sizes.map((virtualSize, index) => ({ index, virtualSize, changed: changed[index] })),
      }
    } catch (err) {
      // Never leave a checkpoint behind: the VM would keep writing to an AVHDX forever.
      this.points.delete(id)
      await this.run('release-point', ops.RELEASE_POINT, {
        vm: vmId,
        snapshotId,
        convert: false,
        keep: [],
      }).catch((e) => this.log.warn({ vm, snapshotId, err: String(e) }, 'could not remove a failed point'))
      throw err
    }
  }

  /** A reference we cannot use is not fatal: the disks are then compared in full. */
  private readReference(id: string | null | undefined): HyperVReference | null {
    if (!id) return null
    try {
      return decodeReference(id)
    } catch (err) {
      this.log.warn({ err: String(err) }, 'unusable reference; reading disks in full')
      return null
    }
  }

  /** GetVirtualDiskChanges, resumed at offset + ProcessedByteLength until each disk is covered. */
  private async changedRanges(
    open: OpenPoint,
    sizes: number[],
    reference: HyperVReference | null,
    signal?: AbortSignal,
  ): Promise<Array<ChangedRange[] | null>> {
    const result: Array<ChangedRange[] | null> = sizes.map(() => null)
    if (!open.rct || !reference || reference.vmId !== open.vmId) return result
    const pending = new Map<
      number,
      { path: string; limitId: string; offset: number; ranges: ChangedRange[] }
    >()
    for (const d of reference.disks) {
      const path = open.frozenPaths[d.index]
      if (d.rctId && path && sizes[d.index] > 0)
        pending.set(d.index, { path, limitId: d.rctId, offset: 0, ranges: [] })
    }
    for (let round = 0; pending.size > 0; round++) {
      if (round >= MAX_CHANGE_QUERY_ROUNDS) {
        this.log.warn({ vm: open.vmId, rounds: round }, 'change query did not finish; reading in full')
        break
      }
      const entries = [...pending.entries()]
      const requests = entries.map(([index, q]) => ({
        path: q.path,
        limitId: q.limitId,
        offset: q.offset,
        // The docs say ByteLength "must be less than the size of the Virtual Disk"; we read it
        // as offset + length <= size [UNCONFIRMED]. A host that refuses (32773) costs a full read.
        length: sizes[index] - q.offset,
      }))
      const rows = (await this.run('disk-changes', ops.DISK_CHANGES, { requests }, signal)).map(obj)
      entries.forEach(([index, q], i) => {
        const row = rows[i] ?? {}
        const processed = asNumber(row.ProcessedByteLength)
        const offsets = asArray(row.ChangedByteOffsets).map((v) => asNumber(v, Number.NaN))
        const lengths = asArray(row.ChangedByteLengths).map((v) => asNumber(v, Number.NaN))
        const bad = row.Error || processed <= 0 || offsets.length !== lengths.length
        if (bad || [...offsets, ...lengths].some((n) => Number.isNaN(n))) {
          this.log.warn(
            { vm: open.vmId, disk: index, error: row.Error ?? null, returnValue: row.ReturnValue ?? null },
            'changed ranges unavailable; this disk is read in full',
          )
          pending.delete(index)
          return
        }
        for (let k = 0; k < offsets.length; k++) q.ranges.push({ offset: offsets[k], length: lengths[k] })
        q.offset += processed
        if (q.offset >= sizes[index]) {
          result[index] = normalizeRanges(q.ranges, sizes[index])
          pending.delete(index)
        }
      })
    }
    return result
  }

  async openPointDisk(point: ConsistencyPoint, diskIndex: number): Promise<VirtualDisk> {
    const open = this.points.get(point.id)
    if (!open) throw new HyperVError(`point ${point.id} is not open on this adapter`)
    const path = open.frozenPaths[diskIndex]
    if (!path) throw new HyperVError(`point ${point.id} has no frozen file for disk ${diskIndex}`)
    // [UNCONFIRMED] Hyper-V keeps the AVHDX's parent open while the checkpoint exists; we rely on
    // it sharing read access, as backup products that read the parent do.
    const disk = await (this.init.openDisk ?? defaultOpenDisk)(path, { readOnly: true })
    open.views.add(disk)
    const close = disk.close.bind(disk)
    disk.close = async () => {
      open.views.delete(disk)
      await close()
    }
    return disk
  }

  async releasePoint(point: ConsistencyPoint): Promise<string> {
    const open = this.points.get(point.id)
    if (!open) throw new HyperVError(`point ${point.id} is not open on this adapter`)
    for (const v of [...open.views]) await v.close()
    const keep = open.baseReferencePointId ? [open.baseReferencePointId] : []
    const [raw] = await this.run('release-point', ops.RELEASE_POINT, {
      vm: open.vmId,
      snapshotId: open.snapshotId,
      convert: open.rct,
      keep,
    })
    this.points.delete(point.id)
    const ref = obj(obj(raw).ReferencePoint)
    const refId = asString(ref.InstanceID)
    const disks = refId
      ? rctIdsByDisk(
          open.diskIdentifiers,
          asArray(ref.VirtualDiskIdentifiers).map((v) => asString(v) ?? ''),
          asArray(ref.ResilientChangeTrackingIdentifiers).map((v) => asString(v) ?? ''),
        )
      : open.frozenPaths.map((_, index) => ({ index, rctId: null }))
    return encodeReference({ vmId: open.vmId, referencePointId: refId, disks })
  }

  /**
   * From a replicated .vmcx/.xml: Compare-VM + Import-VM (in place, or a copy with a new id).
   * Without one (a lab VM, or no configuration replicated): New-VM from the catalogue entry.
   */
  async registerVm(config: VmInfo, diskPaths: string[], options: RegisterOptions = {}): Promise<VmInfo> {
    const fromFile = config.configPath && /\.(vmcx|xml)$/i.test(config.configPath)
    const [op, body, params] = fromFile
      ? ['register-vm', ops.REGISTER_VM, importVmParams(config, diskPaths, options, this.init)]
      : ['create-vm', ops.CREATE_VM, createVmParams(config, diskPaths, options, this.init)]
    const rows = await this.run(op, body, params, undefined, ops.VM_RECORD_HELPER)
    if (rows.length === 0) throw new HyperVOutputError(op, 'no VM was registered')
    return toVmRecord(rows[0]).info
  }

  async unregisterVm(vm: string): Promise<void> {
    await this.run('unregister-vm', ops.UNREGISTER_VM, { vm })
  }

  async startVm(vm: string, options: StartVmOptions = {}): Promise<void> {
    await options.gate?.()
    await this.run('start-vm', ops.START_VM, { vm })
  }

  async stopVm(vm: string, options: { force?: boolean } = {}): Promise<void> {
    await this.run('stop-vm', ops.STOP_VM, { vm, force: options.force === true })
  }

  async applyNetworkMapping(vm: string, mappings: NicMapping[]): Promise<void> {
    // Runs even with no mappings: an unknown VM is still a VmNotFoundError.
    await this.run('apply-network', ops.APPLY_NETWORK, { vm, mappings: mappings.map(planFailover) })
  }

  async writeEvent(event: HostEvent): Promise<void> {
    if (!Number.isInteger(event.eventId) || event.eventId < 0 || event.eventId > 65535)
      throw new HyperVError(`event id ${event.eventId} is outside 0–65535`)
    const entryType =
      event.level === 'error' ? 'Error' : event.level === 'warning' ? 'Warning' : 'Information'
    await this.run('write-event', ops.WRITE_EVENT, {
      register: !this.sourceRegistered,
      source: this.init.eventSource ?? DEFAULT_EVENT_SOURCE,
      log: this.init.eventLog ?? DEFAULT_EVENT_LOG,
      eventId: event.eventId,
      entryType,
      message: truncateUtf8(event.message, MAX_EVENT_MESSAGE_BYTES),
    })
    this.sourceRegistered = true
  }
}

// The lab hypervisor: the Hypervisor interface over VM folders and guest processes (DESIGN.md §5).
// The node owns the guests it starts (a map by VM id); points are frozen in the guest and read
// here from the disk files (see guest-volume.ts for why that view is one instant).
import { randomUUID } from 'node:crypto'
import { appendFile, mkdir, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { openDisk } from '../disk/index.js'
import {
  type ConsistencyPoint,
  type CreatePointOptions,
  type HostEvent,
  type Hypervisor,
  HypervisorError,
  type NicMapping,
  type RegisterOptions,
  type StartVmOptions,
  type VmInfo,
  type VmState,
  VmStateError,
} from '../hypervisor.js'
import { type CreateLabVmOptions, LabCatalogue, type LabVmEntry } from './catalogue.js'
import { GUEST_PID_FILE, POINT_RELEASE_WAIT_MS } from './constants.js'
import { PointError } from './errors.js'
import { isGuestAlive } from './guest.js'
import { GuestProcess } from './guest-process.js'
import type { GuestPointResult, GuestStatus } from './guest-protocol.js'
import { PointDisk } from './point-disk.js'
import { openStoppedPoint, releaseStoppedPoint, type StoppedPointState } from './stopped-point.js'
import { toVmInfo, type WorkloadOptions, workloadSettings } from './vm-config.js'

/** The logging calls the lab hypervisor makes (a pino logger fits). */
export interface LabLogger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
}

const silent: LabLogger = { info() {}, warn() {} }

export interface LabHypervisorInit {
  /** Folder holding one sub-folder per VM (a node's `<dir>/vms`). */
  vmsDir: string
  logger?: LabLogger
  /** Host event log, one JSON object a line. Default: `<vmsDir>/../host-events.log`. */
  eventLogPath?: string
  /** The guest program (default: the built guest-main.js). */
  guestScript?: string
  /**
   * How long `vm stop` / `vm start` wait for an open consistency point (replication reading the
   * frozen disks) to be released before they give up. Default POINT_RELEASE_WAIT_MS (20 s).
   */
  pointReleaseWaitMs?: number
}

export interface StartLabVmOptions extends StartVmOptions {
  /** Overrides vm.json's workload settings for this run. */
  workload?: WorkloadOptions
  signal?: AbortSignal
}

interface OpenPoint {
  point: ConsistencyPoint
  entry: LabVmEntry
  guest: GuestProcess | null
  /** Set for a point of a stopped VM (no guest to freeze). */
  stopped: StoppedPointState | null
  views: Set<PointDisk>
}

/** The guest died while its point was open: the next point after it is a full one. */
const UNKNOWN_REFERENCE = 'lab1:unknown'

export class LabHypervisor implements Hypervisor {
  readonly kind = 'lab' as const
  readonly catalogue: LabCatalogue
  private readonly guests = new Map<string, GuestProcess>()
  private readonly starting = new Set<string>()
  /** VMs whose operator stop waits for a point to be released: no new point may open meanwhile. */
  private readonly stopping = new Set<string>()
  private readonly points = new Map<string, OpenPoint>()
  /** Woken whenever a point is released (stop and start wait on them). */
  private releaseWaiters = new Set<() => void>()
  private readonly log: LabLogger
  readonly eventLogPath: string

  constructor(private readonly init: LabHypervisorInit) {
    this.catalogue = new LabCatalogue(init.vmsDir)
    this.log = init.logger ?? silent
    this.eventLogPath = init.eventLogPath ?? join(dirname(init.vmsDir), 'host-events.log')
  }

  /** Makes vmsDir and stops guests an earlier run of this node left alive. */
  async start(): Promise<void> {
    await mkdir(this.init.vmsDir, { recursive: true })
    for (const entry of await this.catalogue.list()) {
      const pid = await this.catalogue.guestPid(entry)
      if (pid === null || this.isOurs(pid)) continue
      if (await isGuestAlive(pid)) {
        this.log.warn({ vm: entry.config.name, pid }, 'stopping a guest left by an earlier run of this node')
        await stopForeignGuest(pid)
      }
      await rm(join(entry.dir, GUEST_PID_FILE), { force: true })
    }
  }

  /** Releases open points and stops every guest cleanly. */
  async stop(): Promise<void> {
    for (const p of [...this.points.values()]) await this.releasePoint(p.point).catch(() => undefined)
    await Promise.all([...this.guests.values()].map((g) => g.stop()))
    this.guests.clear()
  }

  async listVms(): Promise<VmInfo[]> {
    const entries = await this.catalogue.list((err) =>
      this.log.warn({ err: err.message }, 'skipping a broken VM'),
    )
    return Promise.all(entries.map(async (e) => toVmInfo(e.dir, e.config, await this.stateOf(e))))
  }

  async getVm(vm: string): Promise<VmInfo> {
    const e = await this.catalogue.find(vm)
    return toVmInfo(e.dir, e.config, await this.stateOf(e))
  }

  createVm(name: string, options: CreateLabVmOptions): Promise<LabVmEntry> {
    return this.catalogue.create(name, options)
  }

  async startVm(vm: string, options: StartLabVmOptions = {}): Promise<void> {
    const entry = await this.catalogue.find(vm)
    const id = entry.config.id
    const state = await this.stateOf(entry)
    if (state !== 'stopped' || this.starting.has(id))
      throw new VmStateError(
        entry.config.name,
        this.starting.has(id) ? 'starting' : state,
        'it is already running',
      )
    this.starting.add(id)
    try {
      // Replication may be reading the stopped VM's disks: starting waits for that point (and no
      // new one opens while the VM is 'starting').
      await this.waitForRelease(entry, state, 'start', options.signal)
      const guest = await GuestProcess.spawn(entry.config.name, entry.dir, {
        config: entry.config,
        workload: options.workload,
        script: this.init.guestScript,
        // The guest forks and opens its disks while the gate (a failover's lease wait) runs.
        gate: options.gate,
        onExit: (code) => {
          if (this.guests.get(id)?.running === false) this.guests.delete(id)
          if (code === 0) this.log.info({ vm: entry.config.name }, 'guest exited')
          else
            this.log.warn(
              { vm: entry.config.name, code },
              'guest died: its disks are left as a crash leaves them',
            )
        },
      })
      this.guests.set(id, guest)
      this.log.info({ vm: entry.config.name, pid: guest.pid, startSeq: guest.ready.startSeq }, 'VM started')
    } finally {
      this.starting.delete(id)
    }
  }

  async stopVm(vm: string, options: { force?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    const entry = await this.catalogue.find(vm)
    const guest = this.guests.get(entry.config.id)
    if (!guest) {
      const pid = await this.catalogue.guestPid(entry)
      if (pid !== null && (await isGuestAlive(pid)))
        throw new VmStateError(
          entry.config.name,
          'running',
          `its guest (pid ${pid}) belongs to another node process`,
        )
      return
    }
    if (options.force) return guest.kill()
    const id = entry.config.id
    this.stopping.add(id)
    try {
      // An operator's stop is not refused for replication's point: it waits until the point is
      // released (a point is read in seconds), and no new one opens meanwhile.
      await this.waitForRelease(entry, 'running', 'stop', options.signal)
      await guest.stop()
    } finally {
      this.stopping.delete(id)
    }
  }

  /**
   * Resolves once `entry` has no open point; throws VmStateError naming the point after the
   * wait limit (a reader that never releases its point is a bug to report, not to hang on).
   */
  private async waitForRelease(
    entry: LabVmEntry,
    state: VmState,
    op: 'start' | 'stop',
    signal?: AbortSignal,
  ): Promise<void> {
    const limitMs = this.init.pointReleaseWaitMs ?? POINT_RELEASE_WAIT_MS
    const deadline = Date.now() + limitMs
    let open = this.pointOf(entry.config.id)
    if (open) this.log.info({ vm: entry.config.name, point: open.point.id }, `${op} waits for an open point`)
    while (open) {
      signal?.throwIfAborted()
      const left = deadline - Date.now()
      if (left <= 0)
        throw new VmStateError(
          entry.config.name,
          state,
          `cannot ${op} it: consistency point ${open.point.id} stayed open for ${limitMs} ms (replication did not release it)`,
        )
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', done)
          this.releaseWaiters.delete(done)
          resolve()
        }
        const timer = setTimeout(done, left)
        signal?.addEventListener('abort', done, { once: true })
        this.releaseWaiters.add(done)
      })
      open = this.pointOf(entry.config.id)
    }
  }

  /** `vm write`: bytes into a running VM's disk through the guest's layer. */
  async writeVm(vm: string, disk: number, offset: number, data: Uint8Array): Promise<void> {
    await this.runningGuest(vm).then((g) => g.request({ op: 'write', disk, offset, data }))
  }

  async vmStatus(vm: string): Promise<GuestStatus> {
    return (await this.runningGuest(vm)).request<GuestStatus>({ op: 'status' })
  }

  async setWorkload(vm: string, workload: WorkloadOptions): Promise<void> {
    const entry = await this.catalogue.find(vm)
    const settings = workloadSettings(entry.config, workload)
    await (await this.runningGuest(vm)).request({ op: 'workload', workload: settings })
  }

  /** The guest process of a VM this node runs (tests use its pid). */
  guestOf(vmId: string): GuestProcess | undefined {
    return this.guests.get(vmId)
  }

  async createPoint(vm: string, options: CreatePointOptions = {}): Promise<ConsistencyPoint> {
    options.signal?.throwIfAborted()
    const entry = await this.catalogue.find(vm)
    const id = entry.config.id
    if (this.pointOf(id))
      throw new PointError(`VM '${entry.config.name}' already has an open point; release it first`)
    if (this.stopping.has(id))
      throw new VmStateError(entry.config.name, 'stopping', 'try again once it stopped')
    const guest = this.guests.get(id) ?? null
    // The guest's only application is its own operations (records, workload, `vm write`), and
    // the barrier falls between them, never inside one: asked for, a point is application-
    // consistent for the lab guest. A stopped VM's disks are consistent either way.
    const consistency = options.consistency ?? 'crash'
    let point: ConsistencyPoint
    let stopped: StoppedPointState | null = null
    if (guest) {
      const r = await guest.request<GuestPointResult>({
        op: 'point',
        sinceReference: options.sinceReference ?? null,
      })
      point = {
        id: `${id}/${r.generation}/${randomUUID()}`,
        vmId: id,
        time: r.time,
        consistency,
        disks: r.disks,
      }
    } else {
      if (this.starting.has(id))
        throw new VmStateError(entry.config.name, 'starting', 'try again once it runs')
      if ((await this.stateOf(entry)) !== 'stopped')
        throw new VmStateError(entry.config.name, 'running', 'its guest belongs to another node process')
      stopped = await openStoppedPoint(entry.dir, entry.config, options.sinceReference ?? null)
      const disks = entry.config.disks.map((d, index) => ({
        index,
        virtualSize: d.virtualSize,
        changed: stopped?.changed[index] ?? null,
      }))
      point = { id: `${id}/stopped/${randomUUID()}`, vmId: id, time: Date.now(), consistency, disks }
    }
    this.points.set(point.id, { point, entry, guest, stopped, views: new Set() })
    return point
  }

  async openPointDisk(point: ConsistencyPoint, diskIndex: number): Promise<PointDisk> {
    const open = this.points.get(point.id)
    if (!open) throw new PointError(`point ${point.id} is not open (released already?)`)
    const disk = open.entry.config.disks[diskIndex]
    if (!disk) throw new PointError(`point ${point.id} has no disk ${diskIndex}`)
    const inner = await openDisk(
      toVmInfo(open.entry.dir, open.entry.config, 'unknown').disks[diskIndex].path,
      {
        readOnly: true,
        format: disk.format,
      },
    )
    const view = new PointDisk(inner, point.id, (v) => open.views.delete(v))
    open.views.add(view)
    return view
  }

  async releasePoint(point: ConsistencyPoint): Promise<string> {
    const open = this.points.get(point.id)
    if (!open) throw new PointError(`point ${point.id} is not open (released already?)`)
    if (open.views.size > 0) {
      this.log.warn(
        { point: point.id, views: open.views.size },
        'releasing a point with disk views still open',
      )
      await Promise.all([...open.views].map((v) => v.close()))
    }
    try {
      if (open.stopped) return await releaseStoppedPoint(open.entry.dir, open.entry.config, open.stopped)
      if (!open.guest) return UNKNOWN_REFERENCE
      if (!open.guest.running) {
        this.log.warn(
          { point: point.id },
          'the VM stopped while its point was open: the next point is a full one',
        )
        return UNKNOWN_REFERENCE
      }
      return await open.guest.request<string>({ op: 'release' })
    } finally {
      // Forgotten only once the guest merged its journal (or failed to): a stop waiting for
      // this point must not ask the guest to exit while it still answers the release.
      this.points.delete(point.id)
      for (const wake of [...this.releaseWaiters]) wake()
    }
  }

  async registerVm(config: VmInfo, diskPaths: string[], options?: RegisterOptions): Promise<VmInfo> {
    const e = await this.catalogue.register(config, diskPaths, options)
    return toVmInfo(e.dir, e.config, 'stopped')
  }

  async unregisterVm(vm: string): Promise<void> {
    const entry = await this.catalogue.find(vm)
    const state = await this.stateOf(entry)
    if (state !== 'stopped') throw new VmStateError(entry.config.name, state, 'stop it before unregistering')
    await this.catalogue.unregister(entry)
  }

  async applyNetworkMapping(vm: string, mappings: NicMapping[]): Promise<void> {
    await this.catalogue.applyNetworkMapping(await this.catalogue.find(vm), mappings)
  }

  async writeEvent(event: HostEvent): Promise<void> {
    if (!['info', 'warning', 'error'].includes(event.level) || !Number.isInteger(event.eventId))
      throw new HypervisorError(`not a host event: ${JSON.stringify(event)}`)
    const line = JSON.stringify({ time: new Date().toISOString(), source: 'replimesh', ...event })
    await mkdir(dirname(this.eventLogPath), { recursive: true })
    await appendFile(this.eventLogPath, line + '\n')
  }

  private pointOf(vmId: string): OpenPoint | undefined {
    for (const p of this.points.values()) if (p.point.vmId === vmId) return p
    return undefined
  }

  private async runningGuest(vm: string): Promise<GuestProcess> {
    const entry = await this.catalogue.find(vm)
    const guest = this.guests.get(entry.config.id)
    if (!guest?.running)
      throw new VmStateError(entry.config.name, await this.stateOf(entry), 'it is not running')
    return guest
  }

  private isOurs(pid: number): boolean {
    for (const g of this.guests.values()) if (g.pid === pid) return true
    return false
  }

  private async stateOf(entry: LabVmEntry): Promise<VmState> {
    if (this.starting.has(entry.config.id)) return 'starting'
    if (this.guests.get(entry.config.id)?.running) return 'running'
    const pid = await this.catalogue.guestPid(entry)
    return pid !== null && (await isGuestAlive(pid)) ? 'running' : 'stopped'
  }
}

/** SIGTERM (the guest saves its maps), then SIGKILL after a deadline. */
async function stopForeignGuest(pid: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  try {
    process.kill(pid, 'SIGTERM')
  } catch {
    return
  }
  while (Date.now() < deadline) {
    if (!(await isGuestAlive(pid))) return
    await new Promise((r) => setTimeout(r, 50))
  }
  try {
    process.kill(pid, 'SIGKILL')
  } catch {}
}

// A lab VM's guest: the process a node forks to "run" a VM. It owns the VM's disks through a
// GuestVolume, appends to the record stream every recordIntervalMs, writes the workload, and
// answers the node's requests. It dies with its node: when the IPC channel disconnects (the
// node exited, even by kill -9) it shuts down at once; it shares the node's process group.
// Start-up is on a failover's critical path (ten VMs of a failed host start at once): the node
// hands over vm.json and the workload already checked, so the guest loads no schema library
// (zod was three quarters of its start-up CPU); only an old-style launch reads vm.json itself.
import { randomFillSync } from 'node:crypto'
import { open, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import {
  GUEST_PID_FILE,
  MAX_JOURNAL_BYTES,
  MAX_WORKLOAD_BACKLOG,
  MAX_WORKLOAD_PENDING_OPS,
  WORKLOAD_TICK_MS,
} from './constants.js'
import type { GuestLaunch, GuestRequest, GuestStatus, GuestToNode, NodeToGuest } from './guest-protocol.js'
import { GuestVolume } from './guest-volume.js'
import { type StreamRecord, summarize } from './records.js'
import type { VmConfig, WorkloadOptions, WorkloadSettings } from './vm-config.js'
import { type PlannedWrite, WorkloadPlanner } from './workload.js'

const send = (m: GuestToNode) => {
  if (process.connected) process.send?.(m)
}
const log = (msg: string) =>
  process.stderr.write(`${new Date().toISOString()} guest[${process.pid}] ${msg}\n`)

/** Is `pid` a live lab guest process (best effort off Linux: just alive)? */
export async function isGuestAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8')
    return cmdline.includes('--replimesh-lab-guest')
  } catch {
    return process.platform !== 'linux'
  }
}

/** Claims the VM folder for this process: refuses when a live guest already holds it. */
async function claimPidFile(vmDir: string): Promise<string> {
  const file = join(vmDir, GUEST_PID_FILE)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx')
      await fh.writeFile(JSON.stringify({ pid: process.pid, ppid: process.ppid, startedAt: Date.now() }))
      await fh.close()
      return file
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const other = await readPid(file)
      if (other !== null && other !== process.pid && (await isGuestAlive(other)))
        throw new Error(`already running (guest process ${other})`)
      await rm(file, { force: true })
    }
  }
  throw new Error(`cannot claim ${file}`)
}

export async function readPid(file: string): Promise<number | null> {
  try {
    const pid = JSON.parse(await readFile(file, 'utf8')).pid
    return Number.isInteger(pid) ? pid : null
  } catch {
    return null
  }
}

class Guest {
  private seq = 0
  private startSeq = 0
  private startTime = 0
  private bytesWritten = 0
  private planner: WorkloadPlanner
  private timers: NodeJS.Timeout[] = []
  private lastTick = Date.now()
  private stopping: Promise<void> | null = null
  /** The newest record that reached the disks (or the journal of a frozen point). */
  private lastWritten: StreamRecord | null = null
  private backlog: PlannedWrite[] = []
  /** Lets a held start run (the node's 'go'). */
  private go: () => void = () => {}

  constructor(
    private readonly config: VmConfig,
    private readonly volume: GuestVolume,
    private readonly pidFile: string,
    workload: WorkloadSettings,
  ) {
    this.planner = this.makePlanner(workload)
  }

  /** With `hold`, the VM runs only once the node says 'go' (GuestLaunch.hold). */
  async run(hold = false): Promise<void> {
    const newest = await this.volume.readNewestRecord()
    this.startSeq = newest?.seq ?? 0
    this.startTime = newest?.timeMs ?? 0
    this.seq = this.startSeq
    this.lastWritten = newest
    const go = new Promise<void>((resolve) => {
      this.go = resolve
    })
    process.on('message', (m: NodeToGuest) => this.onMessage(m))
    process.on('disconnect', () => {
      log('node disconnected: shutting down')
      void this.shutdown(0)
    })
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => void this.shutdown(0))
    // The node may have gone while the disks were opening, before anyone listened for it.
    if (!process.connected) {
      log('node gone before the guest was ready: shutting down')
      void this.shutdown(0)
      return
    }
    if (hold) {
      send({ type: 'loaded', pid: process.pid })
      await go
      if (this.stopping) return
    }
    await this.appendRecord()
    this.timers.push(
      setInterval(() => this.appendRecord().catch((e) => this.fail(e)), this.config.recordIntervalMs),
    )
    this.timers.push(setInterval(() => this.workloadTick(), WORKLOAD_TICK_MS))
    send({
      type: 'ready',
      pid: process.pid,
      startSeq: this.startSeq,
      startTime: this.startTime,
      mapDistrust: this.volume.mapDistrust,
      journalEntriesReplayed: this.volume.journalReplayedAtOpen,
    })
    log(`running ${this.config.name}: stream continues after seq ${this.startSeq}`)
  }

  private makePlanner(settings: WorkloadSettings): WorkloadPlanner {
    const sizes = Array.from({ length: this.volume.diskCount }, (_, i) => this.volume.virtualSize(i))
    return new WorkloadPlanner(settings, sizes)
  }

  private async appendRecord(): Promise<void> {
    if (this.stopping) return
    const record = { seq: ++this.seq, timeMs: Date.now(), startSeq: this.startSeq, startTime: this.startTime }
    await this.volume.writeRecord(record)
    if (record.seq > (this.lastWritten?.seq ?? 0)) this.lastWritten = record
  }

  private workloadTick(): void {
    const now = Date.now()
    const elapsed = now - this.lastTick
    this.lastTick = now
    if (this.stopping) return
    // Writes the disks cannot take yet wait here, not in the volume's queue, where they would
    // delay a barrier; the planner owes at most a second of them.
    if (this.backlog.length < MAX_WORKLOAD_BACKLOG) this.backlog.push(...this.planner.due(elapsed))
    this.pump()
  }

  /** Keeps a few workload writes queued in the volume (never more: see MAX_WORKLOAD_PENDING_OPS). */
  private pump(): void {
    while (
      !this.stopping &&
      this.backlog.length > 0 &&
      this.volume.pending < MAX_WORKLOAD_PENDING_OPS &&
      this.volume.journalBytes < MAX_JOURNAL_BYTES
    ) {
      const w = this.backlog.shift() as PlannedWrite
      const data = Buffer.allocUnsafe(w.length)
      randomFillSync(data)
      this.volume.write(w.disk, w.offset, data).then(
        () => {
          this.bytesWritten += w.length
          this.pump()
        },
        (e) => this.fail(e),
      )
    }
  }

  private async handle(request: GuestRequest): Promise<unknown> {
    switch (request.op) {
      case 'point':
        return this.volume.freeze(request.sinceReference)
      case 'release':
        return this.volume.release()
      case 'write':
        await this.volume.write(request.disk, request.offset, request.data)
        return { bytes: request.data.length }
      case 'workload':
        this.planner = this.makePlanner(request.workload)
        this.backlog = []
        return this.planner.settings
      case 'status':
        return this.status()
      case 'stop':
        setImmediate(() => void this.shutdown(0))
        return { stopping: true }
    }
  }

  private status(): GuestStatus {
    return {
      pid: process.pid,
      frozen: this.volume.isFrozen,
      journalBytes: this.volume.journalBytes,
      pendingOps: this.volume.pending,
      seq: this.seq,
      bytesWritten: this.bytesWritten,
      records: summarize(this.lastWritten),
    }
  }

  private onMessage(m: NodeToGuest): void {
    if (m?.type === 'go') this.go()
    if (m?.type !== 'request') return
    this.handle(m.request).then(
      (result) => send({ type: 'response', id: m.id, ok: true, result }),
      (err: Error) =>
        send({ type: 'response', id: m.id, ok: false, error: { name: err.name, message: err.message } }),
    )
  }

  private fail(err: Error): void {
    if (this.stopping) return
    log(`write failed: ${err.message}`)
    send({ type: 'fatal', error: { name: err.name, message: err.message } })
    void this.shutdown(1)
  }

  /** Stops writing, merges a frozen journal, saves clean maps, and exits. */
  shutdown(code: number): Promise<void> {
    if (this.stopping) return this.stopping
    this.stopping = (async () => {
      for (const t of this.timers) clearInterval(t)
      try {
        await this.volume.close()
        await rm(this.pidFile, { force: true })
        log(`stopped cleanly at seq ${this.seq}`)
      } catch (err) {
        log(`unclean stop: ${(err as Error).message}`)
        code = code || 1
      }
      process.exit(code)
    })()
    return this.stopping
  }
}

/**
 * What to run: the node's launch (vm.json and workload settings it checked), or else, for a guest
 * started by hand with [workload options], vm.json read and checked here (that loads zod).
 */
async function launchOf(vmDir: string, json: string | undefined): Promise<Required<GuestLaunch>> {
  const arg = json ? (JSON.parse(json) as GuestLaunch | Record<string, unknown>) : {}
  if ('config' in arg && arg.config && 'workload' in arg && arg.workload)
    return { hold: false, ...arg } as Required<GuestLaunch>
  const { readVmConfig, workloadSettings } = await import('./vm-config.js')
  const config = await readVmConfig(vmDir)
  return { config, workload: workloadSettings(config, arg as WorkloadOptions), hold: false }
}

/** The guest's entry: argv = [vmDir, launch JSON?]. Never returns on error: reports and exits. */
export async function runGuest(vmDir: string, launchJson: string | undefined): Promise<void> {
  let pidFile: string | null = null
  try {
    const { config, workload, hold } = await launchOf(vmDir, launchJson)
    pidFile = await claimPidFile(vmDir)
    const volume = await GuestVolume.open(vmDir, config)
    await new Guest(config, volume, pidFile, workload).run(hold)
  } catch (err) {
    const e = err as Error
    log(`cannot start: ${e.message}`)
    send({ type: 'fatal', error: { name: e.name, message: e.message } })
    if (pidFile) await rm(pidFile, { force: true })
    process.exitCode = 1
    process.disconnect?.()
  }
}

// The node's side of one guest: forks it, waits until it is ready, sends requests with ids and
// deadlines, and notices when it exits. The fork shares the node's process group and has an IPC
// channel; both make the guest die with its node.
import { type ChildProcess, fork } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, existsSync, openSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  GUEST_LOG_FILE,
  GUEST_READY_TIMEOUT_MS,
  GUEST_REQUEST_TIMEOUT_MS,
  GUEST_STOP_TIMEOUT_MS,
} from './constants.js'
import { GuestError, GuestWriteError, PointError } from './errors.js'
import {
  GUEST_ARGV_MARKER,
  type GuestLaunch,
  type GuestRequest,
  type GuestToNode,
  type NodeToGuest,
} from './guest-protocol.js'
import { type VmConfig, type WorkloadOptions, workloadSettings } from './vm-config.js'

type Ready = Extract<GuestToNode, { type: 'ready' }>

/**
 * The compiled guest entry. Under the test runner this module is loaded from src/*.ts, which
 * Node 20 cannot run: use the build in dist/ then.
 */
export function defaultGuestScript(): string {
  const here = fileURLToPath(new URL('./guest-main.js', import.meta.url))
  if (existsSync(here)) return here
  const built = here.replace(/([\\/])src([\\/]hyperv[\\/]lab[\\/])/, '$1dist$1src$2')
  if (existsSync(built)) return built
  throw new GuestError('?', `the guest program is not built (${built} is missing; run: npx tsc -p .)`)
}

interface Pending {
  resolve: (v: unknown) => void
  reject: (e: Error) => void
  timer: NodeJS.Timeout
}

export class GuestProcess {
  private nextId = 1
  private readonly pending = new Map<number, Pending>()
  private exitCode: number | null | undefined = undefined
  private lastFatal: string | null = null
  readonly exited: Promise<number | null>
  ready!: Ready

  private constructor(
    readonly vm: string,
    private readonly child: ChildProcess,
    private readonly logFile: string,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitCode = code
        const why = this.lastFatal ?? (signal ? `killed by ${signal}` : `exited with code ${code}`)
        for (const p of this.pending.values()) {
          clearTimeout(p.timer)
          p.reject(new GuestError(vm, `the guest stopped (${why})`))
        }
        this.pending.clear()
        resolve(code)
      })
    })
    child.on('message', (m: GuestToNode) => this.onMessage(m))
    child.on('error', () => {}) // exit follows; a failed send surfaces as that request's error
  }

  get pid(): number {
    return this.child.pid ?? -1
  }

  get running(): boolean {
    return this.exitCode === undefined
  }

  /**
   * Forks the guest and resolves when it reports ready (rejects with its reason otherwise). With
   * `config` (vm.json as the node checked it) the guest skips reading and checking it again. With
   * `gate` (and `config`), the guest loads and opens its disks at once but runs only once the gate
   * resolved; if it rejects, the guest is stopped and spawn rejects with the gate's error.
   */
  static async spawn(
    vm: string,
    vmDir: string,
    options: {
      config?: VmConfig
      workload?: WorkloadOptions
      script?: string
      onExit?: (code: number | null) => void
      gate?: () => Promise<void>
    },
  ): Promise<GuestProcess> {
    const hold = !!options.gate && !!options.config
    const launch: GuestLaunch | WorkloadOptions | undefined = options.config
      ? {
          config: options.config,
          workload: workloadSettings(options.config, options.workload),
          ...(hold ? { hold } : {}),
        }
      : options.workload
    const logFd = openSync(join(vmDir, GUEST_LOG_FILE), 'a')
    let child: ChildProcess
    try {
      const args = [GUEST_ARGV_MARKER, vmDir, ...(launch ? [JSON.stringify(launch)] : [])]
      child = fork(options.script ?? defaultGuestScript(), args, {
        serialization: 'advanced',
        stdio: ['ignore', logFd, logFd, 'ipc'],
        execArgv: [],
      })
    } finally {
      closeSync(logFd)
    }
    const guest = new GuestProcess(vm, child, join(vmDir, GUEST_LOG_FILE))
    if (options.onExit) void guest.exited.then(options.onExit)
    if (hold && options.gate) {
      await guest.waitFor('loaded')
      try {
        await options.gate()
      } catch (err) {
        await guest.stop()
        throw err
      }
      child.send({ type: 'go' } satisfies NodeToGuest, () => {}) // a lost 'go' ends in 'exit' below
    }
    await guest.waitFor('ready')
    return guest
  }

  /** Resolves when the guest says `type` ('ready' is kept as `ready`); rejects if it exits first. */
  private waitFor(type: 'loaded' | 'ready'): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.kill()
        reject(
          new GuestError(
            this.vm,
            `the guest did not ${type === 'ready' ? 'become ready' : 'load'} within ${GUEST_READY_TIMEOUT_MS} ms`,
          ),
        )
      }, GUEST_READY_TIMEOUT_MS)
      const onMessage = (m: GuestToNode) => {
        if (m.type === type) {
          if (m.type === 'ready') this.ready = m
          done()
          resolve()
        }
      }
      const onExit = async (code: number | null, signal: string | null) => {
        done()
        // The exit can overtake the guest's last IPC messages; they arrive before 'disconnect'.
        if (this.child.connected)
          await Promise.race([once(this.child, 'disconnect'), new Promise((r) => setTimeout(r, 1000))])
        const reason = this.lastFatal ?? (await lastStartError(this.logFile))
        const how = signal ? `killed by ${signal}` : `exit code ${code}`
        reject(
          new GuestError(this.vm, reason ?? `the guest exited while starting (${how}; see ${this.logFile})`),
        )
      }
      const done = () => {
        clearTimeout(timer)
        this.child.off('message', onMessage)
        this.child.off('exit', onExit)
      }
      this.child.on('message', onMessage)
      this.child.once('exit', onExit)
      // It died while the node waited at the start's gate: its 'exit' has been and gone.
      if (!this.running) void onExit(this.exitCode ?? null, null)
    })
  }

  request<T>(request: GuestRequest, timeoutMs = GUEST_REQUEST_TIMEOUT_MS): Promise<T> {
    if (!this.running || !this.child.connected)
      return Promise.reject(new GuestError(this.vm, 'the guest is not running'))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new GuestError(this.vm, `no answer to '${request.op}' within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer })
      this.child.send({ type: 'request', id, request }, (err) => {
        if (!err) return
        const p = this.pending.get(id)
        if (!p) return
        this.pending.delete(id)
        clearTimeout(p.timer)
        reject(new GuestError(this.vm, `cannot reach the guest (${err.message})`))
      })
    })
  }

  /** Asks for a clean stop; kills the guest if it has not exited by the deadline. */
  async stop(timeoutMs = GUEST_STOP_TIMEOUT_MS): Promise<void> {
    if (!this.running) return
    await this.request({ op: 'stop' }, timeoutMs).catch(() => this.kill('SIGTERM'))
    const timer = setTimeout(() => this.kill(), timeoutMs)
    await this.exited
    clearTimeout(timer)
  }

  /** Turns the VM off like pulling the plug: the disks are left as a crash leaves them. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.running) this.child.kill(signal)
    await this.exited
  }

  private onMessage(m: GuestToNode): void {
    if (m.type === 'fatal') this.lastFatal = m.error.message
    if (m.type !== 'response') return
    const p = this.pending.get(m.id)
    if (!p) return
    this.pending.delete(m.id)
    clearTimeout(p.timer)
    if (m.ok) p.resolve(m.result)
    else {
      p.reject(guestError(this.vm, m.error))
    }
  }
}

/** Rebuilds the guest's named error on the node's side, so callers can tell them apart. */
function guestError(vm: string, e: { name: string; message: string }): Error {
  if (e.name === 'GuestWriteError') return new GuestWriteError(`VM '${vm}': ${e.message}`)
  if (e.name === 'PointError') return new PointError(e.message)
  return new GuestError(vm, e.message)
}

async function lastStartError(logFile: string): Promise<string | null> {
  const text = await readFile(logFile, 'utf8').catch(() => '')
  const lines = text.trimEnd().split('\n').slice(-20).reverse()
  const hit = lines.find((l) => l.includes(' cannot start: '))
  if (hit) return hit.slice(hit.indexOf(' cannot start: ') + ' cannot start: '.length)
  // Died before it could say why (a broken build, say): the last error line it printed.
  const error = lines.find((l) => /^\w*Error\b/.test(l))
  return error ? `the guest program failed: ${error}` : null
}

// A lab mesh of real node processes on this machine (what `replimesh demo` and `replimesh lab up`
// build): the first node creates the mesh, every other node joins with its own one-time token,
// all listen on 127.0.0.1 and run `replimesh start` as child processes. Each node runs in its own
// process group, with its stdout and stderr in <node dir>/stdio.log (never a pipe: a lab left
// running after its launcher exits must not die writing to a closed pipe), so a whole node (its
// daemon and the lab guests it forks) is stopped by its id. Every wait has a deadline.
import { type ChildProcess, spawn } from 'node:child_process'
import { open, readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { callDaemon } from './client.js'
import { nodePaths } from './paths.js'

// dist/src/node/lab-mesh.js → the checkout's bin/replimesh.js
export const LAB_BIN = fileURLToPath(new URL('../../../bin/replimesh.js', import.meta.url))

/** Liveness for a lab: short enough to watch failover, long enough for a loaded 2-core machine. */
export const LAB_TIMING = {
  pingIntervalMs: 1000,
  pingTimeoutMs: 3000,
  suspectAfterMs: 5000,
  downAfterMs: 10_000,
  gossipIntervalMs: 1000,
  stateTtlMs: 30_000,
  membershipTimeoutMs: 20_000,
}

const CLI_TIMEOUT_MS = 120_000
const NODE_START_TIMEOUT_MS = 90_000
const STOP_TIMEOUT_MS = 10_000
/** After SIGKILL: a process still there this long later is stuck (a zombie, a hung kernel call). */
const KILL_TIMEOUT_MS = 5_000
const FORMED_TIMEOUT_MS = 60_000

export class LabError extends Error {
  override name = 'LabError'
}

/** Whether a process (or, with a negative id, a process group) still exists. */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export class LabNode {
  proc: ChildProcess | null = null
  /** Set at teardown: a start racing with Ctrl-C must not leave a node behind. */
  closed = false
  peerId = ''
  /** Pid of the daemon (known also for a node this process did not start: see `adopt`). */
  pidOf = -1

  constructor(
    readonly name: string,
    readonly site: string,
    readonly dir: string,
  ) {}

  get pid(): number {
    return this.proc?.pid ?? this.pidOf
  }

  get stdioLog(): string {
    return join(this.dir, 'stdio.log')
  }

  /**
   * Starts `replimesh start` in its own process group and waits until its API answers.
   * `detach`: do not keep the launcher alive for it (it outlives this process).
   */
  async start(env: NodeJS.ProcessEnv, options: { bin?: string; detach?: boolean } = {}): Promise<void> {
    if (this.closed) throw new LabError('the lab is stopping')
    const out = await open(this.stdioLog, 'a')
    let child: ChildProcess
    try {
      child = spawn(process.execPath, [options.bin ?? LAB_BIN, 'start', '--dir', this.dir], {
        env,
        stdio: ['ignore', out.fd, out.fd],
        detached: true,
      })
    } finally {
      await out.close()
    }
    this.proc = child
    this.pidOf = child.pid ?? -1
    child.on('error', () => {}) // exit follows
    if (options.detach) child.unref()
    await waitFor(
      `node ${this.name} (site ${this.site}) to answer on its API`,
      NODE_START_TIMEOUT_MS,
      async () => {
        if (child.exitCode !== null || child.signalCode !== null)
          throw new LabError(`node ${this.name} exited while starting: ${await this.lastError()}`)
        const info = JSON.parse(await readFile(nodePaths(this.dir).api, 'utf8')) as { pid: number }
        return info.pid === child.pid
      },
    )
    this.peerId = (await callDaemon<{ peerId: string }>(this.dir, 'GET', '/status')).peerId
  }

  /** Sends a signal and waits for the exit: SIGKILL after the deadline, a LabError if even that fails. */
  async stop(signal: NodeJS.Signals): Promise<void> {
    const child = this.proc
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<true>((r) => child.once('exit', () => r(true)))
    child.kill(signal)
    if (!(await within(exited, STOP_TIMEOUT_MS))) {
      child.kill('SIGKILL')
      if (!(await within(exited, KILL_TIMEOUT_MS))) {
        killGroupLeftovers(child.pid)
        throw new LabError(
          `node ${this.name} (pid ${child.pid}) did not exit within ${KILL_TIMEOUT_MS / 1000} s of SIGKILL`,
        )
      }
    }
    killGroupLeftovers(child.pid)
  }

  private async lastError(): Promise<string> {
    const tail = (await readFile(this.stdioLog, 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .slice(-20)
    return tail.filter((l) => l.startsWith('replimesh:')).join(' | ') || tail.slice(-2).join(' | ')
  }
}

/** After a node's daemon exited: anything left in its process group (a guest) is killed. */
function killGroupLeftovers(pid: number | undefined): void {
  if (!pid || process.platform === 'win32' || !processExists(-pid)) return
  try {
    process.kill(-pid, 'SIGKILL')
  } catch {}
}

/** Whether `done` settles within `ms` (its timer cleared either way). */
async function within(done: Promise<true>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<false>((r) => {
    timer = setTimeout(() => r(false), ms)
  })
  try {
    return await Promise.race([done, late])
  } finally {
    clearTimeout(timer)
  }
}

/** Waits until `pid` is gone or `ms` have passed; true when it is gone. */
async function exitedWithin(pid: number, ms: number, intervalMs: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (processExists(pid)) {
    if (Date.now() >= deadline) return false
    await new Promise((r) => setTimeout(r, intervalMs))
  }
  return true
}

/**
 * Stops a node this process may not have started (a detached lab): SIGTERM to its daemon, wait
 * for it to go, SIGKILL after `timeoutMs`, then its process group's leftovers. A process still
 * there `killTimeoutMs` after SIGKILL is a LabError naming it (nothing more can be done from here).
 */
export async function stopPid(
  pid: number,
  timeoutMs = STOP_TIMEOUT_MS,
  killTimeoutMs = KILL_TIMEOUT_MS,
): Promise<'stopped' | 'killed' | 'gone'> {
  if (!processExists(pid)) {
    killGroupLeftovers(pid)
    return 'gone'
  }
  signal(pid, 'SIGTERM')
  const stopped = await exitedWithin(pid, timeoutMs, 100)
  if (!stopped) {
    signal(pid, 'SIGKILL')
    if (!(await exitedWithin(pid, killTimeoutMs, 50))) {
      killGroupLeftovers(pid)
      throw new LabError(
        `process ${pid} did not exit within ${timeoutMs / 1000} s of SIGTERM nor ${killTimeoutMs / 1000} s of SIGKILL (a zombie or a hung system call: see ps -o pid,stat,wchan,cmd -p ${pid})`,
      )
    }
  }
  killGroupLeftovers(pid)
  return stopped ? 'stopped' : 'killed'
}

/** Sends `sig` to `pid`; a process that went meanwhile (ESRCH) is not an error. */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
  }
}

/** The launcher's wait: a LabError from `check` ends it at once; the timeout is a LabError. */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  check: () => Promise<T | undefined | false>,
  intervalMs = 200,
): Promise<T> {
  const r = await poll(check, timeoutMs, intervalMs, (err) => err instanceof LabError)
  if ('value' in r) return r.value
  throw new LabError(`${what} did not happen within ${timeoutMs / 1000} s${lastErrorNote(r.lastError)}`)
}

/** What pollUntil calls: a truthy answer ends the wait; a throw is retried (named on timeout). */
export type PollCheck<T> = () => T | undefined | false | Promise<T | undefined | false>

/**
 * Calls `check` every `intervalMs` until it answers something truthy, which is returned; after
 * `timeoutMs` an Error naming `what` and the last error `check` threw.
 */
export async function pollUntil<T>(
  what: string,
  check: PollCheck<T>,
  timeoutMs = 15_000,
  intervalMs = 100,
): Promise<T> {
  const r = await poll(check, timeoutMs, intervalMs, () => false)
  if ('value' in r) return r.value
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErrorNote(r.lastError)}`)
}

/** Polls `check` until it answers (value) or the deadline passes (the last error it threw). */
async function poll<T>(
  check: PollCheck<T>,
  timeoutMs: number,
  intervalMs: number,
  fatal: (err: unknown) => boolean,
): Promise<{ value: T } | { lastError: unknown }> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    try {
      const value = await check()
      if (value) return { value }
    } catch (err) {
      if (fatal(err)) throw err
      lastError = err
    }
    if (Date.now() > deadline) return { lastError }
    await new Promise((r) => setTimeout(r, intervalMs))
  }
}

const lastErrorNote = (err: unknown) => (err ? ` (last error: ${(err as Error).message})` : '')

/**
 * Until disarm(): SIGINT or SIGTERM says so, runs `teardown`, then exits 130. `stopping` is that
 * teardown once a signal started it (a launcher waits for it instead of reporting the failure the
 * stopping nodes cause).
 */
export function exitOnSignal(
  teardown: () => Promise<void>,
  say: (line: string) => void,
): { readonly stopping: Promise<void> | null; disarm(): void } {
  let stopping: Promise<void> | null = null
  const onSignal = () => {
    say('\nstopping every node…')
    stopping = teardown().finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  return {
    get stopping() {
      return stopping
    },
    disarm() {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    },
  }
}

/** Resolves after the first SIGINT or SIGTERM, once `teardown` is done (it never rejects). */
export function untilSignal(teardown: () => Promise<void>, say: (line: string) => void): Promise<void> {
  return new Promise<void>((done) => {
    const stop = () => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      say('\nstopping every node…')
      void teardown().finally(done)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}

/** Runs one CLI command to completion; its stdout, or a LabError with its one-line error. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, bin = LAB_BIN): Promise<string> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS)
    child.on('error', (err) => reject(new LabError(`replimesh ${args[0]}: ${err.message}`)))
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      if (code === 0) return resolveRun(stdout)
      const why = signal
        ? `did not finish within ${CLI_TIMEOUT_MS / 1000} s`
        : (stderr.trim().split('\n').at(-1) ?? `exit code ${code}`).replace(/^replimesh: /, '')
      const end = args.findIndex((a) => a.startsWith('--'))
      reject(new LabError(`replimesh ${args.slice(0, end < 0 ? args.length : end).join(' ')} failed: ${why}`))
    })
  })
}

export interface BuildMeshOptions {
  env: NodeJS.ProcessEnv
  bin?: string
  /** Leave the nodes running when this process exits. */
  detach?: boolean
  /** Token lifetime for joining nodes. Default 10m. */
  tokenTtl?: string
  /** The environment of one node's daemon (default `env`): e.g. its simulated capacity. */
  envOf?: (node: LabNode) => NodeJS.ProcessEnv
  /** Runs on each node's initialised folder before it starts (settings a daemon reads at start). */
  beforeStart?: (node: LabNode) => Promise<void>
  /** Called as the mesh forms (the demo and the lab print it). */
  onEvent?: (event: { type: 'created' | 'joined' | 'started' | 'formed'; node?: LabNode }) => void
}

const LAB_PORT_MIN = 20_000

async function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, host, () => server.close(() => resolve(true)))
  })
}

/**
 * A listen address for a lab or test node with a concrete port BELOW the kernel's ephemeral range.
 * `init --listen …/tcp/0` picks a free port at init and the daemon binds it only at start; with a
 * port from the ephemeral range, any outgoing connection or tcp/0 listener of another process on
 * this machine could take it in between ("Some configured addresses failed to be listened on").
 * Below that range only explicit binds compete, and the port is drawn at random and probed.
 * `probeHost`: where to probe (a host not local to this process, e.g. in a network namespace,
 * is probed on 127.0.0.1).
 */
export async function labListenAddress(host = '127.0.0.1', probeHost = host): Promise<string> {
  const range = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').catch(() => '32768')
  const ephemeralLow = Number(range.trim().split(/\s+/)[0]) || 32_768
  const high = Math.max(LAB_PORT_MIN + 1000, Math.min(ephemeralLow, 65_536))
  for (let i = 0; i < 100; i++) {
    const port = LAB_PORT_MIN + Math.floor(Math.random() * (high - LAB_PORT_MIN))
    if (await portFree(probeHost, port)) return `/ip4/${host}/tcp/${port}`
  }
  throw new LabError(`no free port below ${high} on ${probeHost}`)
}

/**
 * Forms a mesh of `nodes` (folders not yet initialised): nodes[0] creates it and starts, every
 * other node joins with a one-time token from it, then they all start; resolves once every node
 * sees every other alive. On failure the caller stops the nodes (they may be partly started).
 */
export async function buildLabMesh(nodes: LabNode[], options: BuildMeshOptions): Promise<void> {
  const { env, bin } = options
  const [first, ...rest] = nodes
  const start = { bin, detach: options.detach }
  await runCli(
    ['mesh', 'create', '--dir', first.dir, '--site', first.site, '--listen', await labListenAddress()],
    env,
    bin,
  )
  options.onEvent?.({ type: 'created', node: first })
  await options.beforeStart?.(first)
  const envOf = options.envOf ?? (() => env)
  await first.start(envOf(first), start)
  for (const n of rest) {
    const token = (
      await runCli(['mesh', 'token', '--dir', first.dir, '--ttl', options.tokenTtl ?? '10m'], env, bin)
    )
      .trim()
      .split('\n')
      .at(-1)!
    await runCli(
      ['init', '--dir', n.dir, '--site', n.site, '--join', token, '--listen', await labListenAddress()],
      env,
      bin,
    )
    options.onEvent?.({ type: 'joined', node: n })
    await options.beforeStart?.(n)
  }
  await Promise.all(rest.map((n) => n.start(envOf(n), start)))
  for (const n of nodes) options.onEvent?.({ type: 'started', node: n })
  const others = nodes.length - 1
  await waitFor(
    `every node to see the ${others} others alive`,
    FORMED_TIMEOUT_MS + 5_000 * others,
    async () => {
      for (const n of nodes) {
        const peers = (await callDaemon<{ peers: Array<{ state: string }> }>(n.dir, 'GET', '/status')).peers
        if (peers.filter((p) => p.state === 'alive').length < others) return false
      }
      return true
    },
  )
  options.onEvent?.({ type: 'formed' })
}

// The mesh of real node processes bench/failover.bench.ts measures: `replimesh start` per node on
// 127.0.0.1, each in its own folder under the bench's tmpDir, running a private copy of dist/
// (other builds rewriting dist/ mid-run cannot break the nodes' lazy imports). Lab VMs are created
// offline in a node's folder before it starts. `killHost` is the failure: the node and every guest
// process it runs, SIGKILLed at the same instant. `teardown` kills every process it started (by
// pid, guests included) and removes the folders, whatever happened before.
import { type ChildProcess, spawn } from 'node:child_process'
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type PollCheck, pollUntil } from '../src/node/lab-mesh.js'

const HERE = dirname(fileURLToPath(import.meta.url))
// dist/bench/failover-mesh.js -> <checkout>
const CHECKOUT = resolve(HERE, '..', '..')

export interface NodeLogLine {
  time: number
  msg?: string
  [key: string]: unknown
}

export class BenchNode {
  proc: ChildProcess | null = null
  readonly logs: NodeLogLine[] = []
  url = ''
  token = ''
  peerId = ''

  constructor(
    readonly name: string,
    readonly dir: string,
    readonly site: string,
    private readonly mesh: BenchMesh,
  ) {}

  async start(timeoutMs = 120_000): Promise<void> {
    const child = spawn(process.execPath, [this.mesh.bin, 'start', '--dir', this.dir], {
      env: this.mesh.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.proc = child
    let partial = ''
    const onData = (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) {
        if (!line.startsWith('{')) continue
        try {
          this.logs.push(JSON.parse(line))
        } catch {}
      }
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    const api = await waitFor(
      `${this.name}'s API`,
      async () => {
        if (child.exitCode !== null) throw new Error(`${this.name} exited with ${child.exitCode}`)
        const info = JSON.parse(await readFile(join(this.dir, 'api.json'), 'utf8'))
        return info.pid === child.pid ? (info as { url: string }) : undefined
      },
      timeoutMs,
    )
    this.url = api.url
    this.token = (await readFile(join(this.dir, 'api.token'), 'utf8')).trim()
    this.peerId = (await this.call<{ peerId: string }>('GET', '/status')).peerId
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(new URL(path, this.url), {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000), // a loaded 2-core machine answers slowly
    })
    const value = (await res.json()) as { error?: string }
    if (!res.ok) throw new Error(`${this.name} ${method} ${path}: ${res.status} ${value?.error}`)
    return value as T
  }

  /** Pids of the lab guests this node's VMs run (from their guest.pid files). */
  async guestPids(): Promise<number[]> {
    const vms = join(this.dir, 'vms')
    const names = await readdir(vms).catch(() => [] as string[])
    const pids: number[] = []
    for (const vm of names) {
      try {
        const pid = JSON.parse(await readFile(join(vms, vm, 'guest.pid'), 'utf8')).pid
        if (Number.isInteger(pid) && pid > 0) pids.push(pid)
      } catch {}
    }
    return pids
  }

  /** SIGKILL of the node process; resolves when it has exited. */
  async kill(): Promise<void> {
    const child = this.proc
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((r) => child.once('exit', () => r()))
    child.kill('SIGKILL')
    await exited
  }
}

export interface BenchMeshOptions {
  root: string
  sites: string[]
  timing: Record<string, number>
  /** failover.json written into every node's folder before it starts. */
  failoverConfig?: unknown
}

export class BenchMesh {
  readonly nodes: BenchNode[] = []
  readonly env: NodeJS.ProcessEnv
  bin = ''
  private build = ''
  private readonly killedGuests = new Set<number>()

  constructor(private readonly options: BenchMeshOptions) {
    this.env = { ...process.env, REPLIMESH_TIMING: JSON.stringify(options.timing), REPLIMESH_MDNS: '0' }
  }

  /** Copies the build, creates the mesh (its first node runs) and joins one node per other site. */
  async init(): Promise<void> {
    await mkdir(join(CHECKOUT, '.tmp'), { recursive: true })
    this.build = await mkdtemp(join(CHECKOUT, '.tmp', 'bench-failover-'))
    await cp(join(CHECKOUT, 'dist'), join(this.build, 'dist'), { recursive: true })
    await cp(join(CHECKOUT, 'bin'), join(this.build, 'bin'), { recursive: true })
    this.bin = join(this.build, 'bin', 'replimesh.js')
    const [first, ...rest] = this.options.sites
    const listen = ['--listen', '/ip4/127.0.0.1/tcp/0']
    const n0 = this.addNode(first)
    await this.cli(['mesh', 'create', '--dir', n0.dir, '--site', first, ...listen])
    if (this.options.failoverConfig !== undefined)
      await writeFile(join(n0.dir, 'failover.json'), JSON.stringify(this.options.failoverConfig))
    await n0.start() // it redeems the others' tokens
    for (const site of rest) {
      const token = (await this.cli(['mesh', 'token', '--dir', n0.dir, '--ttl', '10m']))
        .trim()
        .split('\n')
        .at(-1)!
      const n = this.addNode(site)
      await this.cli(['init', '--dir', n.dir, '--site', site, '--join', token, ...listen])
    }
    if (this.options.failoverConfig !== undefined)
      for (const n of this.nodes.slice(1))
        await writeFile(join(n.dir, 'failover.json'), JSON.stringify(this.options.failoverConfig))
  }

  private addNode(site: string): BenchNode {
    const name = `n${this.nodes.length}-${site}`
    const node = new BenchNode(name, join(this.options.root, name), site, this)
    this.nodes.push(node)
    return node
  }

  /** Starts the joined nodes (the first runs since init). */
  async startAll(): Promise<void> {
    await Promise.all(this.nodes.slice(1).map((n) => n.start()))
  }

  /** Runs the CLI of the copied build to completion; stdout, or an error with stderr. */
  cli(args: string[], timeoutMs = 120_000): Promise<string> {
    return new Promise((resolveRun, reject) => {
      const child = spawn(process.execPath, [this.bin, ...args], {
        env: this.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (d) => (stdout += d))
      child.stderr.on('data', (d) => (stderr += d))
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
      child.on('error', reject)
      child.on('close', (code) => {
        clearTimeout(timer)
        if (code === 0) resolveRun(stdout)
        else reject(new Error(`replimesh ${args.slice(0, 2).join(' ')}: ${stderr.trim() || `exit ${code}`}`))
      })
    })
  }

  /**
   * The host fails: its node and all its guests are SIGKILLed together. Returns the instant of
   * the kill (ms since the epoch, taken just before the signals).
   */
  async killHost(node: BenchNode): Promise<number> {
    const guests = await node.guestPids()
    const at = Date.now()
    node.proc?.kill('SIGKILL')
    for (const pid of guests) {
      this.killedGuests.add(pid)
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
    await node.kill()
    return at
  }

  /** Kills every node and guest this mesh started, by pid, and removes its folders and build. */
  async teardown(): Promise<void> {
    const guests = (await Promise.all(this.nodes.map((n) => n.guestPids()))).flat()
    await Promise.all(this.nodes.map((n) => n.kill().catch(() => {})))
    for (const pid of guests)
      try {
        // Only a pid still running one of our guests (its cmdline names this mesh's folder).
        const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
        if (cmd.includes(this.options.root) || cmd.includes(this.build)) process.kill(pid, 'SIGKILL')
      } catch {}
    await rm(this.options.root, { recursive: true, force: true })
    if (this.build) await rm(this.build, { recursive: true, force: true })
  }
}

/** pollUntil with the bench's default of 30 s. */
export const waitFor = <T>(
  what: string,
  check: PollCheck<T>,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<T> => pollUntil(what, check, timeoutMs, intervalMs)

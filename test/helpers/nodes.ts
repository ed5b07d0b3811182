// A mesh of real node processes for end-to-end tests: each node runs `replimesh start` in its own
// temp folder, listening on 127.0.0.1 with a port chosen at init. Timers are short (REPLIMESH_TIMING)
// and mDNS is off (REPLIMESH_MDNS=0). Every wait has a deadline; teardown() kills every process it
// started (by pid) and deletes the folders. Run `npx tsc -p .` first: the nodes run dist/.
// With a `placement` (test/helpers/netns.ts) nodes and their CLI commands run elsewhere (in a
// site's network namespace, listening on its address) and the API is reached through a Unix socket.
import { type ChildProcess, spawn } from 'node:child_process'
import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import { LAB_TIMING, labListenAddress, pollUntil as waitFor } from '../../src/node/lab-mesh.js'

const CHECKOUT = resolve(import.meta.dirname, '..', '..')
export const BIN = join(CHECKOUT, 'bin', 'replimesh.js')

/**
 * Copies dist/ and bin/ to a private folder under .tmp/ (so packages still resolve from the
 * checkout's node_modules): other builds rewriting dist/ during a long test cannot break the
 * nodes' lazy imports. Returns the copy's bin/replimesh.js and a function removing it.
 */
export async function snapshotBuild(): Promise<{ bin: string; remove: () => Promise<void> }> {
  await mkdir(join(CHECKOUT, '.tmp'), { recursive: true })
  for (let attempt = 1; ; attempt++) {
    const dir = await mkdtemp(join(CHECKOUT, '.tmp', 'e2e-build-'))
    const remove = () => rm(dir, { recursive: true, force: true })
    await cp(join(CHECKOUT, 'dist'), join(dir, 'dist'), { recursive: true })
    await cp(join(CHECKOUT, 'bin'), join(dir, 'bin'), { recursive: true })
    // A build running elsewhere may have been half-written when copied: check every entry links.
    const check = await linkCheck(dir)
    if (check === null) return { bin: join(dir, 'bin', 'replimesh.js'), remove }
    await remove()
    if (attempt === 5) throw new Error(`dist/ does not load (run npx tsc -p .): ${check}`)
    await new Promise((r) => setTimeout(r, 3000))
  }
}

const ENTRY_POINTS = [
  'src/node/cli/main.js',
  'src/node/daemon.js',
  'src/node/join.js',
  'src/hyperv/index.js',
  'src/node/api/vm.js',
]

function linkCheck(dir: string): Promise<string | null> {
  const script = `
    import { existsSync } from 'node:fs'
    for (const f of ${JSON.stringify(ENTRY_POINTS.map((e) => join(dir, 'dist', e)))})
      if (existsSync(f)) await import(f)
  `
  return new Promise((resolveCheck) => {
    const child = spawn(
      process.execPath,
      ['--input-type=module', '-e', `import '${join(dir, 'dist/src/node/polyfill.js')}'; ${script}`],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    child.on('close', (code) =>
      resolveCheck(code === 0 ? null : stderr.trim().split('\n').slice(-1)[0] || `exit ${code}`),
    )
  })
}

/** Short timers so liveness tests take seconds on a busy 2-core machine. */
export const TEST_TIMING = { ...LAB_TIMING, membershipTimeoutMs: 10_000 }

/** Liveness fast enough to show failover in seconds; quorum keeps a slow machine from failing over. */
export const FAILOVER_TIMING = {
  pingIntervalMs: 500,
  pingTimeoutMs: 1500,
  suspectAfterMs: 2000,
  downAfterMs: 3000,
  gossipIntervalMs: 500,
  stateTtlMs: 30_000,
  membershipTimeoutMs: 10_000,
}

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

export interface TestNodeStatus {
  peerId: string
  site: string
  addrs: string[]
  peers: Array<{ peerId: string; site: string; state: 'alive' | 'suspect' | 'down' }>
  vms: unknown[]
}

/** Polls until `check` answers (15 s and 100 ms by default); see pollUntil. */
export { waitFor }

export function testEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, REPLIMESH_TIMING: JSON.stringify(TEST_TIMING), REPLIMESH_MDNS: '0', ...extra }
}

/** Runs one CLI command to completion (with a deadline). */
export function runCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; bin?: string; prefix?: string[] } = {},
): Promise<CliResult> {
  return new Promise((resolveRun, reject) => {
    const [command, ...rest] = [...(options.prefix ?? []), process.execPath, options.bin ?? BIN, ...args]
    const child = spawn(command, rest, {
      env: options.env ?? testEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(
        new Error(`replimesh ${args.join(' ')} did not finish within ${options.timeoutMs ?? 120_000} ms`),
      )
    }, options.timeoutMs ?? 120_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolveRun({ code: code ?? -1, stdout, stderr })
    })
  })
}

export class TestNode {
  proc: ChildProcess | null = null
  /** Every line the node printed, across restarts. */
  readonly logs: string[] = []
  url = ''
  token = ''
  peerId = ''

  constructor(
    readonly name: string,
    readonly dir: string,
    readonly site: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly bin = BIN,
    /** Where it runs when not on this host's loopback (see NodePlacement). */
    private readonly place: { prefix: string[]; apiSocket?: () => Promise<string> } = { prefix: [] },
  ) {}

  /** The Unix socket that reaches this node's API, when it runs in a placement that needs one. */
  apiSocket: string | null = null

  /** Runs a CLI command where this node runs (its namespace, if any). */
  cli(args: string[], timeoutMs?: number): Promise<CliResult> {
    return runCli(args, { env: this.env, bin: this.bin, timeoutMs, prefix: this.place.prefix })
  }

  /** Starts the daemon and waits until its API answers. */
  async start(timeoutMs = 90_000): Promise<void> {
    if (this.proc) throw new Error(`${this.name} is already running`)
    const [command, ...rest] = [...this.place.prefix, process.execPath, this.bin, 'start', '--dir', this.dir]
    const child = spawn(command, rest, {
      env: this.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.proc = child
    let partial = ''
    const onData = (d: Buffer) => {
      const text = partial + d.toString()
      const lines = text.split('\n')
      partial = lines.pop() ?? ''
      this.logs.push(...lines)
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    child.on('exit', () => {
      if (this.proc === child) this.proc = null
    })
    const api = await waitFor(
      `${this.name}'s API`,
      async () => {
        if (child.exitCode !== null) {
          const why =
            this.logs.filter((l) => l.startsWith('replimesh:')).join(' | ') || this.logs.slice(-2).join(' | ')
          throw new Error(`${this.name} exited with ${child.exitCode}: ${why}`)
        }
        const info = JSON.parse(await readFile(join(this.dir, 'api.json'), 'utf8'))
        return info.pid === child.pid ? (info as { url: string }) : undefined
      },
      timeoutMs,
    )
    this.url = api.url
    this.token = (await readFile(join(this.dir, 'api.token'), 'utf8')).trim()
    if (this.place.apiSocket && !this.apiSocket) this.apiSocket = await this.place.apiSocket()
    this.peerId = (await this.status()).peerId
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    if (this.apiSocket) return this.callThroughSocket(this.apiSocket, method, path, body)
    const res = await fetch(new URL(path, this.url), {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    })
    const value = await res.json()
    if (!res.ok) throw new Error(`${this.name} ${method} ${path}: ${res.status} ${value?.error}`)
    return value as T
  }

  private callThroughSocket<T>(socketPath: string, method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    return new Promise<T>((resolveCall, reject) => {
      const req = request(
        {
          socketPath,
          path,
          method,
          headers: {
            host: '127.0.0.1',
            authorization: `Bearer ${this.token}`,
            ...(payload === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
          },
          signal: AbortSignal.timeout(10_000),
        },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (d) => (text += d))
          res.on('error', reject)
          res.on('end', () => {
            try {
              const value = JSON.parse(text)
              if ((res.statusCode ?? 500) >= 400)
                reject(new Error(`${this.name} ${method} ${path}: ${res.statusCode} ${value?.error}`))
              else resolveCall(value as T)
            } catch (err) {
              reject(err)
            }
          })
        },
      )
      req.on('error', reject)
      req.end(payload)
    })
  }

  status(): Promise<TestNodeStatus> {
    return this.call('GET', '/status')
  }

  /** Sends a signal and waits for the process to exit (SIGKILL after the deadline). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<number | null> {
    const child = this.proc
    if (!child || child.exitCode !== null) return child?.exitCode ?? null
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
    child.kill(signal)
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    const code = await exited
    clearTimeout(timer)
    return code
  }

  kill(): Promise<number | null> {
    return this.stop('SIGKILL')
  }

  /** Log lines parsed as JSON (pino), skipping anything else. */
  jsonLogs(): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = []
    for (const line of this.logs) {
      if (!line.startsWith('{')) continue
      try {
        out.push(JSON.parse(line))
      } catch {}
    }
    return out
  }
}

export interface TestMesh {
  root: string
  nodes: TestNode[]
  env: NodeJS.ProcessEnv
  /** The private copy of the CLI this mesh runs (pass it to runCli as `bin`). */
  bin: string
  /** Runs a CLI command with this mesh's build and environment. */
  cli(args: string[], timeoutMs?: number): Promise<CliResult>
  /** Issues a join token on the first node (the mesh key holder). */
  token(ttl?: string): Promise<string>
  /** Joins and starts one more node. */
  addNode(site: string, start?: boolean): Promise<TestNode>
  teardown(): Promise<void>
}

const lastLine = (text: string) => text.trim().split('\n').at(-1) ?? ''

/**
 * Where nodes run when not all on this host's loopback (test/helpers/netns.ts makes one per site
 * namespace): the address a site's nodes listen on, the command prefix that runs a process there,
 * and, when the API cannot be reached from the test directly, a Unix socket that reaches it.
 */
export interface NodePlacement {
  listenHost(site: string): string
  prefix(site: string): string[]
  apiSocket?(site: string, dir: string, name: string): Promise<string>
}

/** Creates a mesh: the first site in `sites` creates it, one node per entry, all started. */
export async function createTestMesh(
  sites: string[],
  options: { env?: NodeJS.ProcessEnv; root?: string; placement?: NodePlacement } = {},
): Promise<TestMesh> {
  const placement = options.placement
  // A concrete port below the ephemeral range, not tcp/0: init picks the port and start binds it
  // later, and an ephemeral port could be taken by another process in between (labListenAddress).
  const listen = (site: string) => labListenAddress(placement?.listenHost(site) ?? '127.0.0.1', '127.0.0.1')
  const prefix = (site: string) => placement?.prefix(site) ?? []
  const testNode = (name: string, dir: string, site: string) =>
    new TestNode(name, dir, site, env, bin, {
      prefix: prefix(site),
      ...(placement?.apiSocket ? { apiSocket: () => placement.apiSocket!(site, dir, name) } : {}),
    })
  const root = options.root ?? (await mkdtemp(join(tmpdir(), 'replimesh-e2e-')))
  const env = options.env ?? testEnv()
  const build = await snapshotBuild()
  const bin = build.bin
  const nodes: TestNode[] = []
  const mesh: TestMesh = {
    root,
    nodes,
    env,
    bin,
    cli: (args, timeoutMs) => runCli(args, { env, bin, timeoutMs }),
    async token(ttl = '10m') {
      const r = await runCli(['mesh', 'token', '--dir', nodes[0].dir, '--ttl', ttl], { env, bin })
      if (r.code !== 0) throw new Error(`mesh token failed: ${r.stderr}`)
      return lastLine(r.stdout)
    },
    async addNode(site, start = true) {
      const name = `n${nodes.length}`
      const dir = join(root, name)
      const token = await mesh.token()
      const r = await runCli(
        ['init', '--dir', dir, '--site', site, '--join', token, '--listen', await listen(site)],
        {
          env,
          bin,
          prefix: prefix(site),
        },
      )
      if (r.code !== 0) throw new Error(`init ${name} failed: ${r.stderr}`)
      const node = testNode(name, dir, site)
      nodes.push(node)
      if (start) await node.start()
      return node
    },
    async teardown() {
      await Promise.all(nodes.map((n) => n.kill().catch(() => {})))
      await build.remove()
      if (process.env.REPLIMESH_KEEP_E2E) console.log(`kept ${root}`)
      else await rm(root, { recursive: true, force: true })
    },
  }
  try {
    const firstDir = join(root, 'n0')
    const r = await runCli(
      ['mesh', 'create', '--dir', firstDir, '--site', sites[0], '--listen', await listen(sites[0])],
      {
        env,
        bin,
        prefix: prefix(sites[0]),
      },
    )
    if (r.code !== 0) throw new Error(`mesh create failed: ${r.stderr}`)
    const first = testNode('n0', firstDir, sites[0])
    nodes.push(first)
    await first.start()
    for (const site of sites.slice(1)) await mesh.addNode(site, false)
    await Promise.all(nodes.slice(1).map((n) => n.start()))
  } catch (err) {
    await mesh.teardown()
    throw err
  }
  return mesh
}

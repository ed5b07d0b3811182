// Sites in network namespaces, for partition tests. Each site gets a namespace with one veth whose
// other end sits on a bridge in a hub namespace of its own (so the host's firewall never sees the
// traffic and nothing on the host's network changes):
//
//     [site A ns] vA (10.77.0.1) ─── vAh ┐
//     [site B ns] vB (10.77.0.2) ─── vBh ┼─ br0  [hub ns]
//     [site C ns] vC (10.77.0.3) ─── vCh ┘
//
// cut(site) takes the hub end of the site's veth down: the site hears nobody and nobody hears it,
// with no reset (like a dead WAN link); heal(site) brings it back. Node processes run inside their
// site with `ip netns exec`, and their API (on the namespace's 127.0.0.1) is reached from the test
// through a Unix socket: a small proxy inside the namespace forwards each connection to the port
// named in the node's current api.json (socket files are not network objects, so this path works
// whatever the cut). destroy() kills every process left in the namespaces (by pid, from
// `ip netns pids`), then deletes them: the veths and the bridge go with them.
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { NodePlacement } from './nodes.js'

const run = promisify(execFile)

const ip = async (...args: string[]) => {
  try {
    return (await run('ip', args, { timeout: 10_000 })).stdout
  } catch (err) {
    const e = err as Error & { stderr?: string }
    throw new Error(`ip ${args.join(' ')}: ${(e.stderr || e.message).trim()}`)
  }
}

/** Null when namespaces can be made here (root, iproute2), else why not. */
export async function netnsUnavailable(): Promise<string | null> {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'network namespaces need root (ip netns add)'
  try {
    await run('ip', ['-V'], { timeout: 5_000 })
  } catch {
    return "the 'ip' command (iproute2) is missing"
  }
  return null
}

export interface NetnsSite {
  site: string
  ns: string
  address: string
  /** The hub end of the site's veth: down = cut. */
  hubIf: string
}

/** The proxy run inside a namespace: Unix socket → 127.0.0.1:<port of <dir>/api.json>. */
const PROXY = `
const net = require('node:net'), fs = require('node:fs')
const [sock, dir] = process.argv.slice(1)
try { fs.unlinkSync(sock) } catch {}
net.createServer((c) => {
  let port
  try { port = Number(new URL(JSON.parse(fs.readFileSync(dir + '/api.json', 'utf8')).url).port) } catch { return c.destroy() }
  const s = net.connect(port, '127.0.0.1')
  c.pipe(s); s.pipe(c)
  c.on('error', () => s.destroy()); s.on('error', () => c.destroy())
}).listen(sock, () => process.stdout.write('ready\\n'))
`

export class NetnsLab {
  readonly sites = new Map<string, NetnsSite>()
  private readonly proxies: ChildProcess[] = []
  private readonly sockets: string[] = []
  private readonly hub: string
  private destroyed = false

  private constructor(
    readonly prefix: string,
    private readonly socketDir: string,
  ) {
    this.hub = `${prefix}h`
  }

  /**
   * Makes the hub and one namespace per site (10.77.0.<i+1>/24). Names carry the pid so parallel
   * runs do not meet. On failure, what was made is removed before the error is thrown.
   */
  static async create(sites: string[], socketDir: string): Promise<NetnsLab> {
    const lab = new NetnsLab(`rm${process.pid % 100_000}`, socketDir)
    try {
      await ip('netns', 'add', lab.hub)
      await ip('-n', lab.hub, 'link', 'set', 'lo', 'up')
      await ip('-n', lab.hub, 'link', 'add', 'br0', 'type', 'bridge')
      await ip('-n', lab.hub, 'link', 'set', 'br0', 'up')
      for (const [i, site] of sites.entries()) {
        const ns = `${lab.prefix}s${i}`
        const inner = `${lab.prefix}v${i}`
        const hubIf = `${lab.prefix}h${i}`
        const address = `10.77.0.${i + 1}`
        lab.sites.set(site, { site, ns, address, hubIf })
        await ip('netns', 'add', ns)
        await ip('link', 'add', inner, 'type', 'veth', 'peer', 'name', hubIf)
        await ip('link', 'set', inner, 'netns', ns)
        await ip('link', 'set', hubIf, 'netns', lab.hub)
        await ip('-n', lab.hub, 'link', 'set', hubIf, 'master', 'br0')
        await ip('-n', lab.hub, 'link', 'set', hubIf, 'up')
        await ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', inner)
        await ip('-n', ns, 'link', 'set', inner, 'up')
        await ip('-n', ns, 'link', 'set', 'lo', 'up')
      }
    } catch (err) {
      await lab.destroy()
      throw err
    }
    return lab
  }

  site(site: string): NetnsSite {
    const s = this.sites.get(site)
    if (!s) throw new Error(`no namespace for site ${site}`)
    return s
  }

  /** Cuts `site` off from every other site. */
  async cut(site: string): Promise<void> {
    await ip('-n', this.hub, 'link', 'set', this.site(site).hubIf, 'down')
  }

  async heal(site: string): Promise<void> {
    await ip('-n', this.hub, 'link', 'set', this.site(site).hubIf, 'up')
  }

  /** Starts the API proxy for a node of `site` whose folder is `dir`; resolves with its socket path. */
  async apiProxy(site: string, dir: string, name: string): Promise<string> {
    const socket = join(this.socketDir, `${name}.api.sock`)
    this.sockets.push(socket)
    const child = spawn(
      'ip',
      ['netns', 'exec', this.site(site).ns, process.execPath, '-e', PROXY, socket, dir],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    this.proxies.push(child)
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`API proxy of ${name} did not start`)), 15_000)
      let err = ''
      child.stderr!.on('data', (d) => (err += d))
      child.stdout!.once('data', () => {
        clearTimeout(timer)
        resolve()
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`API proxy of ${name} exited with ${code}: ${err.trim()}`))
      })
    })
    return socket
  }

  /** Where the harness runs node `index` of `site`: in the site's namespace, on its address. */
  placement(): NodePlacement {
    return {
      listenHost: (site) => this.site(site).address,
      prefix: (site) => ['ip', 'netns', 'exec', this.site(site).ns],
      apiSocket: (site, dir, name) => this.apiProxy(site, dir, name),
    }
  }

  /** Kills every process in the namespaces, deletes them (veths and bridge go with them). */
  async destroy(): Promise<void> {
    if (this.destroyed) return
    this.destroyed = true
    for (const p of this.proxies) if (p.exitCode === null) p.kill('SIGKILL')
    const names = [...[...this.sites.values()].map((s) => s.ns), this.hub]
    for (const ns of names) {
      const pids = await ip('netns', 'pids', ns).catch(() => '')
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL')
        } catch {}
      }
    }
    for (const ns of names) await ip('netns', 'del', ns).catch(() => {})
    for (const socket of this.sockets) await rm(socket, { force: true }).catch(() => {})
  }

  /** Namespaces with this lab's prefix still present (for the test's clean-up check). */
  async leftovers(): Promise<string[]> {
    const list = await ip('netns', 'list').catch(() => '')
    return list
      .split('\n')
      .map((l) => l.split(' ')[0])
      .filter((n) => n.startsWith(this.prefix))
  }
}

// `lab up` and `lab down` at work (the command line and the topology rules are in lab.ts). The mesh
// is formed by buildLabMesh, the same code the demo uses; VMs are made and protected through the
// CLI, as an operator would. lab.json in the lab folder records every node's pid as soon as it runs,
// so `lab down` (or a later `lab up` refusing the folder) finds them even if this process dies.
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { DEFAULT_TIERS } from '../../failover/index.js'
import { callDaemon } from '../client.js'
import {
  buildLabMesh,
  exitOnSignal,
  LAB_TIMING,
  LabError,
  LabNode,
  processExists,
  runCli,
  stopPid,
  untilSignal,
  waitFor,
} from '../lab-mesh.js'
import { type LabRecord, type LabUpOptions, siteName, targetSites } from './lab.js'
import { printJson } from './output.js'

const POINTS_TIMEOUT_MS = 180_000
function capacityOf(o: LabUpOptions): LabRecord['capacity'] {
  const c = {
    ...(o.hostMemory ? { hostMemoryBytes: o.hostMemory } : {}),
    ...(o.hubMemory ? { hubMemoryBytes: o.hubMemory } : {}),
    ...(o.hostCpus ? { hostCpus: o.hostCpus } : {}),
    ...(o.hostDisk ? { hostDiskBytes: o.hostDisk } : {}),
  }
  return Object.keys(c).length ? c : null
}

/** A node's environment: the lab's, with its simulated size when the lab sets one. */
function nodeEnv(o: LabUpOptions, env: NodeJS.ProcessEnv, atHub: boolean): NodeJS.ProcessEnv {
  const memory = atHub && o.topology === 'hub' ? (o.hubMemory ?? o.hostMemory) : o.hostMemory
  const simulated = {
    ...(memory ? { memoryTotalBytes: memory } : {}),
    ...(o.hostCpus ? { cpus: o.hostCpus } : {}),
    ...(o.hostDisk ? { diskTotalBytes: o.hostDisk } : {}),
  }
  return Object.keys(simulated).length ? { ...env, REPLIMESH_CAPACITY: JSON.stringify(simulated) } : env
}

/** Hosts whose VMs are created and protected at once. */
const SETUP_CONCURRENCY = 3

/**
 * failover.json of every lab node: the hub and its ratio (hub topology), and a `lab` tier with the
 * lab's RPO and RTO that every lab VM is in, so plans and failovers use what the VMs were given.
 */
function failoverSettings(o: LabUpOptions, vms: string[]) {
  return {
    tiers: { ...DEFAULT_TIERS, lab: { rpoMs: o.rpoMs, rtoMs: o.rtoMs, mode: 'automatic' } },
    vms: Object.fromEntries(vms.map((vm) => [vm, { tier: 'lab' }])),
    ...(o.topology === 'hub' ? { hubs: { [siteName(0)]: { maxOversubscription: o.hubRatio } } } : {}),
  }
}

const labFile = (dir: string) => join(dir, 'lab.json')

async function readRecord(dir: string): Promise<LabRecord | null> {
  try {
    return JSON.parse(await readFile(labFile(dir), 'utf8')) as LabRecord
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new LabError(`${labFile(dir)}: ${(err as Error).message}`)
  }
}

async function writeRecord(record: LabRecord): Promise<void> {
  const file = labFile(record.dir)
  await writeFile(`${file}.tmp`, `${JSON.stringify(record, null, 2)}\n`)
  await rename(`${file}.tmp`, file)
}

interface VmStatus {
  name: string
  role: 'primary' | 'replica'
  lastPoint: { seq: number; time: number } | null
}

export async function labUp(o: LabUpOptions): Promise<void> {
  const dir = resolve(o.dir)
  await mkdir(dir, { recursive: true })
  const existing = await readRecord(dir)
  if (
    existing &&
    existing.stoppedAt === null &&
    existing.nodes.some((n) => n.pid > 0 && processExists(n.pid))
  )
    throw new LabError(`a lab is running in ${dir}: stop it with replimesh lab down --dir ${dir}`)
  if ((await readdir(dir)).length > 0) throw new LabError(`${dir} is not empty: give an empty or new --dir`)
  const say = (line: string) => (o.json ? process.stderr : process.stdout).write(`${line}\n`)
  const env = {
    ...process.env,
    REPLIMESH_TIMING: process.env.REPLIMESH_TIMING ?? JSON.stringify(LAB_TIMING),
    REPLIMESH_MDNS: '0',
  }
  const grid: LabNode[][] = Array.from({ length: o.sites }, (_, i) =>
    Array.from({ length: o.hostsPerSite }, (_, j) => {
      const name = `${siteName(i)}-h${j + 1}`
      return new LabNode(name, siteName(i), join(dir, name))
    }),
  )
  const nodes = grid.flat()
  const record: LabRecord = {
    v: 1,
    topology: o.topology,
    sites: o.sites,
    hostsPerSite: o.hostsPerSite,
    vmsPerHost: o.vms,
    hubRatio: o.topology === 'hub' ? o.hubRatio : null,
    capacity: capacityOf(o),
    dir,
    createdAt: Date.now(),
    launcherPid: o.detach ? null : process.pid,
    detached: o.detach,
    nodes: [],
    vms: [],
    stoppedAt: null,
  }
  const recordNodes = () => {
    record.nodes = nodes
      .filter((n) => n.pid > 0)
      .map((n) => ({ name: n.name, site: n.site, dir: n.dir, pid: n.pid, peerId: n.peerId }))
    return writeRecord(record)
  }
  const teardown = async () => {
    for (const n of nodes) n.closed = true
    await Promise.all(nodes.map((n) => n.stop('SIGTERM').catch(() => {})))
    record.stoppedAt = Date.now()
    record.launcherPid = null
    await writeRecord(record).catch(() => {})
  }
  const interrupt = exitOnSignal(teardown, say)
  try {
    await build(o, grid, record, env, say, recordNodes)
  } catch (err) {
    interrupt.disarm()
    if (interrupt.stopping) await interrupt.stopping
    await teardown()
    throw err instanceof LabError ? err : new LabError((err as Error).message)
  }
  interrupt.disarm()
  if (interrupt.stopping) return interrupt.stopping
  await recordNodes()
  printSummary(record, o.json, say)
  if (o.detach) {
    say(`\ndetached: the nodes keep running; stop them with replimesh lab down --dir ${dir}`)
    return
  }
  say('\nPress Ctrl-C to stop every node (the lab folder is kept).')
  await untilSignal(teardown, say)
}

async function build(
  o: LabUpOptions,
  grid: LabNode[][],
  record: LabRecord,
  env: NodeJS.ProcessEnv,
  say: (line: string) => void,
  recordNodes: () => Promise<void>,
): Promise<void> {
  const t0 = Date.now()
  const elapsed = () => `+${((Date.now() - t0) / 1000).toFixed(1)}s`
  const nodes = grid.flat()
  say(
    `lab: ${o.topology} of ${o.sites} sites × ${o.hostsPerSite} hosts, ${o.vms} VMs per host, in ${record.dir}`,
  )
  const vmName = (node: LabNode, k: number) => `${node.name}-vm${k + 1}`
  const settings = failoverSettings(
    o,
    nodes.flatMap((n) => Array.from({ length: o.vms }, (_, k) => vmName(n, k))),
  )
  await buildLabMesh(nodes, {
    env,
    detach: o.detach,
    envOf: (n) => nodeEnv(o, env, n.site === siteName(0)),
    // The failover service reads its settings at start: each node knows the hub and the lab tier.
    beforeStart: (n) => writeFile(join(n.dir, 'failover.json'), `${JSON.stringify(settings, null, 2)}\n`),
    onEvent: (e) => {
      if (e.type === 'created') say(`${elapsed()} mesh created on ${e.node!.name}`)
      if (e.type === 'joined') say(`${elapsed()} ${e.node!.name} (${e.node!.site}) joined with a token`)
      if (e.type === 'started') void recordNodes().catch(() => {})
      if (e.type === 'formed')
        say(`${elapsed()} mesh formed: every node sees the ${nodes.length - 1} others alive`)
    },
  })
  await recordNodes()
  const setUp = async (i: number, j: number, node: LabNode) => {
    for (let k = 0; k < o.vms; k++) {
      const name = vmName(node, k)
      await runCli(['vm', 'create', '--dir', node.dir, name, '--size', String(o.vmSize)], env)
      await runCli(['vm', 'start', '--dir', node.dir, name], env)
      const targets = targetSites(o.topology, i, o.sites).map((t) => grid[t][j % grid[t].length])
      const chain = o.topology === 'chain' && targets.length > 1
      const to = targets.map((t) => t.peerId).join(',')
      await runCli(
        ['protect', '--dir', node.dir, name, '--rpo', `${o.rpoMs}ms`, '--rto', `${o.rtoMs}ms`, '--to', to]
          .concat(chain ? ['--chain'] : [])
          .concat('--no-wait'),
        env,
      )
      record.vms.push({
        name,
        node: node.name,
        site: node.site,
        chain,
        targets: targets.map((t) => ({ node: t.name, site: t.site, peerId: t.peerId })),
      })
      say(
        `${elapsed()} ${name} running on ${node.name}, protected to ${targets.map((t) => t.name).join(chain ? ' → ' : ', ')}`,
      )
    }
  }
  // A few hosts at a time: each step is a CLI process, and the machine may have two cores.
  const queue = grid.flatMap((site, i) => site.map((node, j) => () => setUp(i, j, node)))
  await Promise.all(
    Array.from({ length: Math.min(SETUP_CONCURRENCY, queue.length) }, async () => {
      for (let job = queue.shift(); job; job = queue.shift()) await job()
    }),
  )
  record.vms.sort((x, y) => x.name.localeCompare(y.name))
  const byName = new Map(nodes.map((n) => [n.name, n]))
  await waitFor(
    `a committed point of every VM on each of its targets`,
    POINTS_TIMEOUT_MS,
    async () => {
      for (const target of nodes) {
        const expected = record.vms
          .filter((v) => v.targets.some((t) => t.node === target.name))
          .map((v) => v.name)
        if (expected.length === 0) continue
        const { vms } = await callDaemon<{ vms: VmStatus[] }>(byName.get(target.name)!.dir, 'GET', '/status')
        const held = new Set(vms.filter((v) => v.role === 'replica' && v.lastPoint).map((v) => v.name))
        if (!expected.every((vm) => held.has(vm))) return false
      }
      return true
    },
    500,
  )
  say(`${elapsed()} every target holds a committed point of each VM it protects`)
}

function printSummary(record: LabRecord, json: boolean, say: (line: string) => void): void {
  if (json) {
    printJson(record)
    return
  }
  say(
    `\nLab ${record.dir}: ${record.topology}, ${record.sites} sites, ${record.nodes.length} nodes, ${record.vms.length} VMs`,
  )
  if (record.hubRatio) say(`hub: ${siteName(0)}, may promise ${record.hubRatio}× its memory`)
  say('Nodes')
  for (const n of record.nodes)
    say(`  ${n.name.padEnd(12)} site ${n.site.padEnd(8)} pid ${String(n.pid).padEnd(8)} --dir ${n.dir}`)
  say('VMs')
  for (const v of record.vms)
    say(
      `  ${v.name.padEnd(16)} on ${v.node.padEnd(12)} → ${v.targets.map((t) => `${t.node} (${t.site})`).join(v.chain ? ' → ' : ', ')}`,
    )
  const first = record.nodes[0]
  if (first) say(`Try: replimesh status --dir ${first.dir} --json; replimesh plan --dir ${first.dir}`)
}

/** Stops every node recorded in <dir>/lab.json by its pid; returns what happened to each. */
export async function labDown(
  dirArg: string,
): Promise<Array<{ name: string; pid: number; result: 'stopped' | 'killed' | 'gone' }>> {
  const dir = resolve(dirArg)
  const record = await readRecord(dir)
  if (!record) throw new LabError(`no lab in ${dir} (no lab.json): nothing to stop`)
  const results = await Promise.all(
    record.nodes.map(async (n) => ({ name: n.name, pid: n.pid, result: await stopOne(n) })),
  )
  record.stoppedAt = Date.now()
  record.launcherPid = null
  await writeRecord(record)
  return results
}

/** A pid is only signalled while it is still that node's daemon (pids are reused). */
async function stopOne(n: LabRecord['nodes'][number]): Promise<'stopped' | 'killed' | 'gone'> {
  if (n.pid <= 0) return 'gone'
  const cmdline = await readFile(`/proc/${n.pid}/cmdline`, 'utf8').catch(() => null)
  if (cmdline !== null && !cmdline.split('\0').includes(n.dir)) return 'gone'
  return stopPid(n.pid)
}

// `replimesh demo` (what `npm start` runs): a 3-site lab mesh on loopback with real node processes.
// A creates the mesh, B and C join with tokens; a lab VM runs on B, protected to C; once points are
// committed on C, B's node is killed (its guest dies with it), C detects it and runs the VM. The
// demo then measures what an operator cares about: RPO from the guest's record stream on both
// copies of the disk (the last record B wrote vs the last one C's copy holds) and RTO as the time
// from the kill to the VM running on C. Timers are shortened (DEMO_TIMING) so detection takes
// seconds. Every wait has a deadline; on any failure every child is killed and the lab removed.
// The survivors then serve their dashboards (addresses printed) until Ctrl-C.
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { callDaemon } from '../client.js'
import { nodeDashboardUrl } from '../dashboard/index.js'
import {
  LAB_BIN as BIN,
  buildLabMesh,
  runCli as cli,
  exitOnSignal,
  LabError,
  LabNode,
  untilSignal,
  waitFor,
} from '../lab-mesh.js'

export interface DemoOptions {
  /** Finish after the summary instead of leaving the surviving nodes running. */
  exit?: boolean
  /** Lab folder (created, must be empty); default a fresh temp folder. */
  dir?: string
  /** Keep the lab folder at the end. */
  keep?: boolean
}

/** Short but sane liveness timers: B is suspected after 2 s of silence, declared down after 3 s. */
const DEMO_TIMING = {
  pingIntervalMs: 500,
  pingTimeoutMs: 1500,
  suspectAfterMs: 2000,
  downAfterMs: 3000,
  gossipIntervalMs: 500,
  stateTtlMs: 30_000,
  membershipTimeoutMs: 20_000,
}
const VM = 'web1'
const RPO_MS = 5_000
const RTO_MS = 60_000
const POINTS_BEFORE_KILL = 3
const POINTS_TIMEOUT_MS = 120_000
/** After the VM runs on c: how long to wait to print that c sees b down (it must by then). */
const DOWN_SEEN_TIMEOUT_MS = 10_000

export class DemoError extends LabError {
  override name = 'DemoError'
}

interface Records {
  lastSeq: number
  lastTime: number
  startSeq: number
  startTime: number
}
interface PeerView {
  peerId: string
  site: string
  state: 'alive' | 'suspect' | 'down'
}

const say = (line: string) => process.stdout.write(`${line}\n`)
const elapsed = (from: number) => `+${((Date.now() - from) / 1000).toFixed(1)}s`

/** Builds the lab, runs the failover and prints the measures; nodes stay up until Ctrl-C or --exit. */
export async function runDemo(options: DemoOptions = {}): Promise<void> {
  const root = options.dir ? resolve(options.dir) : await mkdtemp(join(tmpdir(), 'replimesh-demo-'))
  if (options.dir) {
    await mkdir(root, { recursive: true })
    if ((await readdir(root)).length > 0)
      throw new DemoError(`${root} is not empty: give an empty or new --dir`)
  }
  const env = { ...process.env, REPLIMESH_TIMING: JSON.stringify(DEMO_TIMING), REPLIMESH_MDNS: '0' }
  const nodes = [
    new LabNode('a', 'A', join(root, 'a')),
    new LabNode('b', 'B', join(root, 'b')),
    new LabNode('c', 'C', join(root, 'c')),
  ]
  const teardown = async () => {
    for (const n of nodes) n.closed = true
    await Promise.all(nodes.map((n) => n.stop('SIGTERM').catch(() => {})))
    if (options.keep) say(`kept the lab folder ${root}`)
    else await rm(root, { recursive: true, force: true })
  }
  // Ctrl-C during the run: stop everything, then exit 130; the scenario's failure that the
  // stopping nodes cause is not reported (the process exits when the teardown is done).
  const interrupt = exitOnSignal(teardown, say)
  let failure: unknown = null
  try {
    await runScenario(nodes, env, root)
  } catch (err) {
    failure = err
  }
  interrupt.disarm()
  if (interrupt.stopping) await interrupt.stopping
  if (failure) {
    await teardown()
    throw failure instanceof DemoError ? failure : new DemoError((failure as Error).message)
  }
  if (options.exit) {
    say('\n--exit: stopping nodes a and c')
    await teardown()
    return
  }
  const [a, , c] = nodes
  say('\nThe surviving nodes keep running. In another terminal:')
  say(`  node ${BIN} status --dir ${a.dir} --json`)
  say(`  node ${BIN} status --dir ${c.dir} --json`)
  say(`  node ${BIN} points --dir ${c.dir} ${VM} --json`)
  say('The dashboard of each survivor (open in a browser on this host; the token after # stays in it):')
  for (const n of [a, c])
    say(
      `  node ${n.name}: ${await nodeDashboardUrl(n.dir).catch((err: Error) => `not available (${err.message})`)}`,
    )
  say('Press Ctrl-C to stop every node' + (options.keep ? '.' : ' and remove the lab folder.'))
  await untilSignal(teardown, say)
}

async function runScenario(nodes: LabNode[], env: NodeJS.ProcessEnv, root: string): Promise<void> {
  const [, b, c] = nodes
  const t0 = Date.now()
  say('replimesh demo: a 3-site lab mesh on 127.0.0.1, one VM protected from site B to site C,')
  say('B killed, the VM failed over to C, data loss (RPO) and downtime (RTO) measured.')
  say(`lab folder: ${root}`)
  say(
    `short liveness timers for the demo: ping every ${DEMO_TIMING.pingIntervalMs} ms, a silent peer is ` +
      `suspect after ${DEMO_TIMING.suspectAfterMs} ms and down after ${DEMO_TIMING.downAfterMs} ms ` +
      '(production defaults are longer)\n',
  )

  await buildLabMesh(nodes, {
    env,
    onEvent: (e) => {
      if (e.type === 'created') say(`${elapsed(t0)} mesh created on node a (site A)`)
      if (e.type === 'joined' && e.node)
        say(`${elapsed(t0)} node ${e.node.name} (site ${e.node.site}) joined with a one-time token from a`)
    },
  })
  for (const n of nodes) say(`  node ${n.name}  site ${n.site}  pid ${n.pid}  peer ${n.peerId}`)
  say(`${elapsed(t0)} mesh formed: every node sees the two others alive`)

  await cli(['vm', 'create', '--dir', b.dir, VM, '--size', '16M'], env)
  await cli(['vm', 'start', '--dir', b.dir, VM, '--no-workload'], env)
  say(`${elapsed(t0)} lab VM ${VM} running on b (site B); its guest appends a timestamped record every 50 ms`)
  await cli(
    [
      'protect',
      '--dir',
      b.dir,
      VM,
      '--rpo',
      `${RPO_MS / 1000}s`,
      '--rto',
      `${RTO_MS / 1000}s`,
      '--to',
      c.peerId,
    ],
    env,
  )
  say(`${elapsed(t0)} ${VM} protected to c (site C): RPO ${RPO_MS / 1000} s, RTO ${RTO_MS / 1000} s`)
  let seen = 0
  await waitFor(
    `${POINTS_BEFORE_KILL} recovery points of ${VM} committed on c`,
    POINTS_TIMEOUT_MS,
    async () => {
      const points = await callDaemon<Array<{ seq: number; time: number }>>(
        c.dir,
        'GET',
        `/replication/points/${encodeURIComponent(VM)}`,
      )
      for (const p of points.slice(seen))
        say(
          `${elapsed(t0)}   point ${p.seq} of ${VM} committed on c (taken ${new Date(p.time).toISOString()})`,
        )
      seen = Math.max(seen, points.length)
      return points.length >= POINTS_BEFORE_KILL
    },
  )

  const killedAt = Date.now()
  await b.stop('SIGKILL')
  say(`${elapsed(t0)} KILL: node b (pid ${b.pid}) killed with SIGKILL; its guest dies with it`)
  let lastSeen = 'alive'
  const noteState = async () => {
    const peers = (await callDaemon<{ peers: PeerView[] }>(c.dir, 'GET', '/status')).peers
    const state = peers.find((p) => p.peerId === b.peerId)?.state ?? 'gone'
    if (state !== lastSeen) {
      say(`${elapsed(t0)}   c sees b as ${state} (${Date.now() - killedAt} ms after the kill)`)
      lastSeen = state
    }
    return state
  }
  const runningAt = await waitFor(
    `${VM} running on c within its RTO`,
    RTO_MS,
    async () => {
      await noteState()
      const vm = await callDaemon<{ state: string }>(c.dir, 'GET', `/vms/${encodeURIComponent(VM)}`)
      return vm.state === 'running' ? Date.now() : undefined
    },
    100,
  )
  say(`${elapsed(t0)} FAILOVER: ${VM} is running on c (site C, peer ${c.peerId})`)
  // A busy machine can answer a poll late and skip a state: say the one c settles at.
  await waitFor('c to see b down', DOWN_SEEN_TIMEOUT_MS, async () => (await noteState()) === 'down').catch(
    () => say(`${elapsed(t0)}   c still sees b as ${lastSeen}`),
  )

  const records = async (n: LabNode) =>
    JSON.parse(await cli(['vm', 'records', '--dir', n.dir, VM, '--json'], env)) as Records
  const onB = await records(b)
  const onC = await records(c)
  const lostMs = Math.max(0, onB.lastTime - onC.startTime)
  const rtoMs = runningAt - killedAt
  say('\nSummary')
  say('  measure  measured    set        result')
  say(
    `  RPO      ${`${lostMs} ms`.padEnd(11)} ${`${RPO_MS} ms`.padEnd(10)} ${lostMs <= RPO_MS ? 'within' : 'EXCEEDED'}`,
  )
  say(
    `  RTO      ${`${rtoMs} ms`.padEnd(11)} ${`${RTO_MS} ms`.padEnd(10)} ${rtoMs <= RTO_MS ? 'within' : 'EXCEEDED'}`,
  )
  say(
    `  RPO: records ${onC.startSeq + 1}..${onB.lastSeq} written on b were lost (b's last record vs the ` +
      `newest one c's copy holds); RTO: kill of b to ${VM} running on c`,
  )
}

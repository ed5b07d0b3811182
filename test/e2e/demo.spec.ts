// `npm start`'s demo as a person runs it: real node processes, a host killed, failover measured.
// The summary's measured RPO and RTO must be within the ones set, and no node the demo started may
// survive it, whether it ends by --exit or by Ctrl-C (SIGINT) while the survivors serve.
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { snapshotBuild, waitFor } from '../helpers/nodes.js'
import { alive, processesUsing } from '../helpers/processes.js'

interface Run {
  child: ChildProcess
  stdout: () => string
  stderr: () => string
  exit: Promise<number | null>
}

function startDemo(bin: string, args: string[]): Run {
  const env = { ...process.env }
  delete env.REPLIMESH_TIMING // the demo's own timers, as npm start runs it
  const child = spawn(process.execPath, [bin, 'demo', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (d) => (stdout += d))
  child.stderr!.on('data', (d) => (stderr += d))
  const exit = new Promise<number | null>((r) => child.on('close', (code) => r(code)))
  return { child, stdout: () => stdout, stderr: () => stderr, exit }
}

async function finish(run: Run, timeoutMs: number): Promise<number | null> {
  const timer = setTimeout(() => run.child.kill('SIGKILL'), timeoutMs)
  const code = await run.exit
  clearTimeout(timer)
  return code
}

const nodePids = (stdout: string) =>
  [...stdout.matchAll(/^ {2}node ([abc]) {2}site [ABC] {2}pid (\d+) {2}peer \S+$/gm)].map((m) => Number(m[2]))

function measured(stdout: string, what: 'RPO' | 'RTO') {
  const m = stdout.match(new RegExp(`^ {2}${what} +(\\d+) ms +(\\d+) ms +(\\w+)$`, 'm'))
  if (!m) throw new Error(`no ${what} line in the summary:\n${stdout}`)
  return { measuredMs: Number(m[1]), setMs: Number(m[2]), verdict: m[3] }
}

describe('replimesh demo', () => {
  let build: { bin: string; remove: () => Promise<void> }
  let root: string
  const runs: Run[] = []
  const pids: number[] = []

  beforeAll(async () => {
    build = await snapshotBuild()
    root = await mkdtemp(join(tmpdir(), 'replimesh-demo-test-'))
  }, 60_000)

  afterAll(async () => {
    for (const run of runs) if (run.child.exitCode === null) run.child.kill('SIGKILL')
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL')
    await build?.remove()
    await rm(root, { recursive: true, force: true })
  }, 60_000)

  it('--exit: fails a VM over within its RPO and RTO and leaves no node running', {
    timeout: 240_000,
  }, async () => {
    const run = startDemo(build.bin, ['--exit'])
    runs.push(run)
    const code = await finish(run, 200_000)
    const out = run.stdout()
    pids.push(...nodePids(out))
    expect(code, `stdout:\n${out}\nstderr:\n${run.stderr()}`).toBe(0)
    expect(run.stderr()).toBe('')
    expect(nodePids(out)).toHaveLength(3)
    expect(out).toMatch(/KILL: node b \(pid \d+\) killed/)
    expect(out).toMatch(/c sees b as down/)
    expect(out).toMatch(/FAILOVER: web1 is running on c/)
    const rpo = measured(out, 'RPO')
    const rto = measured(out, 'RTO')
    expect(rpo.setMs).toBe(5000)
    expect(rpo.measuredMs).toBeLessThanOrEqual(rpo.setMs)
    expect(rto.setMs).toBe(60_000)
    expect(rto.measuredMs).toBeGreaterThan(0)
    expect(rto.measuredMs).toBeLessThanOrEqual(rto.setMs)
    for (const pid of nodePids(out)) expect(alive(pid), `node pid ${pid} still runs`).toBe(false)
    const lab = out.match(/^lab folder: (.+)$/m)?.[1]
    expect(lab).toBeTruthy()
    expect(existsSync(lab!)).toBe(false)
    expect(await processesUsing(lab!)).toEqual([])
  })

  it('without --exit: the survivors serve until Ctrl-C, which stops them and removes --dir', {
    timeout: 240_000,
  }, async () => {
    const dir = join(root, 'lab')
    const run = startDemo(build.bin, ['--dir', dir])
    runs.push(run)
    await waitFor('the demo to wait for Ctrl-C', () => run.stdout().includes('Press Ctrl-C'), 200_000, 200)
    const out = run.stdout()
    const [a, b, c] = nodePids(out)
    pids.push(a, b, c)
    expect(out).toContain(`status --dir ${join(dir, 'c')} --json`)
    expect(alive(a) && alive(c)).toBe(true)
    expect(alive(b)).toBe(false)
    // the demo, nodes a and c, and web1's guest on c: every process naming the lab folder
    const using = await processesUsing(dir)
    expect(using, using.join('\n')).toHaveLength(4)
    run.child.kill('SIGINT')
    expect(await finish(run, 30_000)).toBe(0)
    expect(alive(a) || alive(c)).toBe(false)
    expect(existsSync(dir)).toBe(false)
    expect(await processesUsing(dir)).toEqual([])
  })

  it('refuses a --dir that is not empty, with one line and exit 1', { timeout: 60_000 }, async () => {
    const dir = join(root, 'busy')
    await rm(dir, { recursive: true, force: true })
    await mkdir(dir)
    await writeFile(join(dir, 'something'), 'x')
    const run = startDemo(build.bin, ['--exit', '--dir', dir])
    runs.push(run)
    expect(await finish(run, 30_000)).toBe(1)
    expect(run.stderr()).toMatch(/^replimesh: .*is not empty.*\n$/)
    expect(run.stderr().trim().split('\n')).toHaveLength(1)
    expect(existsSync(join(dir, 'something'))).toBe(true)
  })
})

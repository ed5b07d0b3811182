// Shared by the replication end-to-end tests: the CLI with stdin, points, restore-and-read.
import { spawn } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { BIN, runCli, TEST_TIMING, type TestNode, testEnv } from '../helpers/nodes.js'

/** Relaxed timers: on a loaded 2-core machine a membership proof can take seconds. */
export const RELAXED_ENV = testEnv({
  REPLIMESH_TIMING: JSON.stringify({
    ...TEST_TIMING,
    pingTimeoutMs: 3000,
    suspectAfterMs: 8000,
    downAfterMs: 20_000,
    membershipTimeoutMs: 20_000,
  }),
})

export interface PointRow {
  seq: number
  time: number
  source: string
}

export async function cli(
  args: string[],
  input?: Buffer,
): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!input) return runCli(args, { timeoutMs: 90_000, env: RELAXED_ENV })
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: RELAXED_ENV,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? -1, stdout, stderr })
    })
    child.stdin.end(input)
  })
}

export async function points(node: TestNode, vm: string): Promise<PointRow[]> {
  const r = await cli(['points', '--dir', node.dir, vm, '--json'])
  if (r.code !== 0) throw new Error(`points failed: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/** Restores a point of `vm` on `node` to a raw file and returns `length` bytes at `offset`. */
export async function restoredBytes(
  node: TestNode,
  vm: string,
  seq: number,
  offset: number,
  length: number,
): Promise<Buffer> {
  const out = join(node.dir, `restore-${seq}-${Date.now()}.raw`)
  const r = await cli(['restore', '--dir', node.dir, vm, '--point', String(seq), '--out', out, '--to', 'raw'])
  if (r.code !== 0) throw new Error(`restore failed: ${r.stderr}`)
  const all = await readFile(out)
  await rm(out, { force: true })
  return all.subarray(offset, offset + length)
}

/** Creates and starts a lab VM on `node` (records only, no background workload). */
export async function runningVm(node: TestNode, name: string, size: string): Promise<void> {
  const created = await cli(['vm', 'create', '--dir', node.dir, name, '--size', size])
  if (created.code !== 0) throw new Error(`vm create failed: ${created.stderr}`)
  const started = await cli(['vm', 'start', '--dir', node.dir, name, '--no-workload'])
  if (started.code !== 0) throw new Error(`vm start failed: ${started.stderr}`)
}

export async function vmWrite(node: TestNode, name: string, offset: number, data: Buffer): Promise<void> {
  const w = await cli(['vm', 'write', '--dir', node.dir, name, '--offset', String(offset)], data)
  if (w.code !== 0) throw new Error(`vm write failed: ${w.stderr}`)
}

/** Warnings and replication lines of every node, for a failed test's message. */
export function replicationLogs(nodes: TestNode[], max = 12): string {
  return nodes
    .map((n) => {
      const lines = n
        .jsonLogs()
        .filter((l) => (l.level as number) >= 40 || l.module === 'replication')
        .slice(-max)
        .map(
          (l) =>
            `  ${l.msg} ${JSON.stringify({ ...l, msg: undefined, time: undefined, pid: undefined, level: undefined })}`,
        )
      return `${n.name}:\n${lines.join('\n')}`
    })
    .join('\n')
}

/**
 * Waits for the first point of `vm` on `node` frozen after the write returned, checks by restore that it
 * holds `data` at `offset`, and returns how long after the write that point was committed there
 * (from the node's own log line), which is what the RPO bounds.
 */
export async function writeCommittedAfterMs(
  node: TestNode,
  vm: string,
  write: { startedMs: number; doneMs: number },
  offset: number,
  data: Buffer,
): Promise<number> {
  // A point frozen after the write returned holds it; its lag is counted from when the write
  // began (conservative: the CLI's own start-up is included).
  const writtenMs = write.doneMs
  const { waitFor } = await import('../helpers/nodes.js')
  let seen: PointRow[] = []
  const first = await waitFor(
    `a point of ${vm} frozen after the write, on ${node.name}`,
    async () => {
      seen = await points(node, vm)
      return seen.find((p) => p.time >= writtenMs)
    },
    60_000,
    250,
  ).catch((err: Error) => {
    const last = seen.slice(-3).map((p) => `${p.seq}@${p.time}`)
    throw new Error(
      `${err.message} (write done at ${writtenMs}; ${seen.length} points, last ${last.join(', ')})`,
    )
  })
  const got = await restoredBytes(node, vm, first.seq, offset, data.length)
  if (!got.equals(data)) throw new Error(`point ${vm}@${first.seq} on ${node.name} does not hold the write`)
  const line = node.jsonLogs().find((l) => l.msg === `committed point ${vm}@${first.seq}`)
  if (!line) throw new Error(`${node.name} logged no commit of ${vm}@${first.seq}`)
  return (line.time as number) - write.startedMs
}

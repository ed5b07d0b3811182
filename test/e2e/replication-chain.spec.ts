// Issue 6, end to end: real node processes in three sites. A running lab VM protected A→B→C with
// --chain is seeded; a write inside the running VM is in a recovery point on B and on C within
// the RPO (checked by restoring the point and reading the bytes back, and on the materialised
// replica disk with `vm records --disk-file`-style reading of the guest's record stream).
import { randomBytes } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createTestMesh,
  runCli,
  TEST_TIMING,
  type TestMesh,
  type TestNode,
  testEnv,
  waitFor,
} from '../helpers/nodes.js'

const MiB = 1024 * 1024

/** Relaxed timers: on a loaded 2-core machine a membership proof can take seconds. */
const RELAXED_ENV = testEnv({
  REPLIMESH_TIMING: JSON.stringify({
    ...TEST_TIMING,
    pingTimeoutMs: 3000,
    suspectAfterMs: 8000,
    downAfterMs: 20_000,
    membershipTimeoutMs: 20_000,
  }),
})

interface PointRow {
  seq: number
  time: number
  source: string
}

async function cli(args: string[], input?: Buffer) {
  if (!input) return runCli(args, { timeoutMs: 60_000, env: RELAXED_ENV })
  const { spawn } = await import('node:child_process')
  const { BIN } = await import('../helpers/nodes.js')
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: RELAXED_ENV,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? -1, stdout, stderr })
    })
    child.stdin.end(input)
  })
}

async function points(node: TestNode, vm: string): Promise<PointRow[]> {
  const r = await cli(['points', '--dir', node.dir, vm, '--json'])
  if (r.code !== 0) throw new Error(`points failed: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/** Restores a point of `vm` on `node` to a raw file and returns `length` bytes at `offset`. */
async function restoredBytes(
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

describe('replication A→B→C with --chain over three sites (real processes)', () => {
  let mesh: TestMesh
  let a: TestNode
  let b: TestNode
  let c: TestNode
  beforeAll(async () => {
    mesh = await createTestMesh(['paris', 'lyon', 'nice'], { env: RELAXED_ENV })
    ;[a, b, c] = mesh.nodes
    for (const n of mesh.nodes)
      await waitFor(
        `${n.name} sees 2 alive peers`,
        async () => (await n.status()).peers.filter((p) => p.state === 'alive').length === 2,
        30_000,
      )
  }, 120_000)
  afterAll(async () => {
    if (a) await runCli(['vm', 'stop', '--dir', a.dir, 'web'], { env: RELAXED_ENV }).catch(() => {})
    await mesh?.teardown()
  })

  it('seeds, then a write inside the running VM is in a point on B and on C within the RPO', async () => {
    const created = await cli(['vm', 'create', '--dir', a.dir, 'web', '--size', '64M'])
    expect(created.code, created.stderr).toBe(0)
    const started = await cli(['vm', 'start', '--dir', a.dir, 'web', '--rate', '65536'])
    expect(started.code, started.stderr).toBe(0)
    const protect = await cli([
      'protect',
      '--dir',
      a.dir,
      'web',
      '--rpo',
      '5s',
      '--rto',
      '2m',
      '--to',
      `${b.peerId},nice`,
      '--chain',
      '--json',
    ])
    expect(protect.code, protect.stderr).toBe(0)
    expect(JSON.parse(protect.stdout).targets).toEqual([b.peerId, c.peerId])

    for (const n of [b, c])
      await waitFor(`seed on ${n.name}`, async () => (await points(n, 'web')).length > 0, 60_000)

    const data = randomBytes(8192)
    const offset = 40 * MiB + 4096
    const written = Date.now()
    const w = await cli(['vm', 'write', '--dir', a.dir, 'web', '--offset', String(offset)], data)
    expect(w.code, w.stderr).toBe(0)
    for (const n of [b, c]) {
      const seq = await waitFor(
        `the write in a point on ${n.name}`,
        async () => {
          const newest = (await points(n, 'web')).filter((p) => p.time >= written).at(-1)
          if (!newest) return undefined
          return (await restoredBytes(n, 'web', newest.seq, offset, data.length)).equals(data)
            ? newest.seq
            : undefined
        },
        20_000,
        200,
      )
      const arrived = Date.now() - written
      console.log(`write reached ${n.name} in point ${seq} ${arrived} ms after it was made`)
      expect(arrived).toBeLessThan(5000 + 2000) // RPO, plus the CLI round trips of this check
    }

    const statusC = await c.status()
    const replica = statusC.vms.find((v) => (v as { name: string }).name === 'web') as Record<string, unknown>
    expect(replica).toMatchObject({ role: 'replica', rpoSeconds: 5, owner: a.peerId })
    expect(replica.lagSeconds as number).toBeLessThan(5)
    const statusA = await a.status()
    const primary = statusA.vms.find((v) => (v as { name: string }).name === 'web') as Record<string, unknown>
    expect(primary).toMatchObject({ role: 'primary', rpoSeconds: 5 })
    expect(primary.lagSeconds as number).toBeLessThan(5)
  }, 180_000)
})

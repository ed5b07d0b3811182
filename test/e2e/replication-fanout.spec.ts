// Issue 6, end to end: fan-out to two sites named by site, and --copies 2 chosen by policy, with
// real node processes; a write inside each running VM reaches every target within the RPO.
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest'
import { createTestMesh, type TestMesh, type TestNode, waitFor } from '../helpers/nodes.js'
import {
  cli,
  points,
  RELAXED_ENV,
  replicationLogs,
  runningVm,
  vmWrite,
  writeCommittedAfterMs,
} from './replication-helpers.js'

const MiB = 1024 * 1024

async function writeReaches(source: TestNode, targets: TestNode[], vm: string): Promise<void> {
  const data = randomBytes(4096)
  const offset = 20 * MiB + 8192
  const written = Date.now()
  await vmWrite(source, vm, offset, data)
  const doneMs = Date.now()
  for (const n of targets) {
    const ms = await writeCommittedAfterMs(n, vm, { startedMs: written, doneMs }, offset, data)
    console.log(`${vm}: write committed on ${n.name} ${ms} ms after it was made (RPO 5000 ms)`)
    expect(ms).toBeLessThan(5000)
  }
}

describe('replication fan-out and policy (real processes)', () => {
  let mesh: TestMesh
  let a: TestNode
  let a2: TestNode
  let b: TestNode
  let c: TestNode
  beforeAll(async () => {
    mesh = await createTestMesh(['paris', 'paris', 'lyon', 'nice'], { env: RELAXED_ENV })
    ;[a, a2, b, c] = mesh.nodes
    await waitFor(
      'every node gossiped to the source',
      async () => (await a.status()).peers.filter((p) => p.state !== 'down').length === 3,
      60_000,
    )
    await runningVm(a, 'web', '32M')
    await runningVm(a, 'db', '32M')
  }, 180_000)
  afterAll(async () => {
    await mesh?.teardown()
  })

  it('fans out to two sites named by site', async () => {
    onTestFailed(() => console.log(replicationLogs(mesh.nodes)))
    const r = await cli([
      'protect',
      '--dir',
      a.dir,
      'web',
      '--rpo',
      '5s',
      '--rto',
      '2m',
      '--to',
      'lyon,nice',
      '--json',
    ])
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ targets: [b.peerId, c.peerId], chain: false })
    for (const n of [b, c])
      await waitFor(`web seeded on ${n.name}`, async () => (await points(n, 'web')).length > 0, 60_000)
    await writeReaches(a, [b, c], 'web')
    const progress = await a.call<{ targets: Array<{ peer: string; seq: number | null }> }>(
      'GET',
      '/replication/vms/web',
    )
    expect(progress.targets.map((t) => t.peer).sort()).toEqual([b.peerId, c.peerId].sort())
  }, 240_000)

  it('--copies 2 places one copy in each other site by policy, none at the same site', async () => {
    onTestFailed(() => console.log(replicationLogs(mesh.nodes)))
    const r = await cli([
      'protect',
      '--dir',
      a.dir,
      'db',
      '--rpo',
      '5s',
      '--rto',
      '2m',
      '--copies',
      '2',
      '--json',
    ])
    expect(r.code, r.stderr).toBe(0)
    const targets = JSON.parse(r.stdout).targets as string[]
    expect(targets.sort()).toEqual([b.peerId, c.peerId].sort())
    expect(targets).not.toContain(a2.peerId)
    for (const n of [b, c])
      await waitFor(`db seeded on ${n.name}`, async () => (await points(n, 'db')).length > 0, 60_000)
    await writeReaches(a, [b, c], 'db')
    expect(await points(a2, 'db')).toEqual([])
  }, 240_000)

  it('refuses an impossible request with one clear line', async () => {
    onTestFailed(() => console.log(replicationLogs(mesh.nodes)))
    const r = await cli(['protect', '--dir', a.dir, 'web', '--rpo', '5s', '--rto', '2m', '--copies', '9'])
    expect(r.code).toBe(1)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(/^replimesh: only 3 of 9 copies can be placed/)
  })
})

// Issue 6, end to end: real node processes in three sites. A running lab VM protected A→B→C with
// --chain is seeded; a write inside the running VM is in a recovery point on B and on C within
// the RPO (checked by restoring the point and reading the bytes back), and the materialised
// replica disk on C carries the guest's record stream (`vm records --disk-file`).
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
        `${n.name} sees its 2 peers`,
        async () => (await n.status()).peers.filter((p) => p.state !== 'down').length === 2,
        60_000,
      )
    await runningVm(a, 'web', '64M')
  }, 180_000)
  afterAll(async () => {
    await mesh?.teardown()
  })

  it('seeds, then a write inside the running VM is in a point on B and on C within the RPO', async () => {
    onTestFailed(() => console.log(replicationLogs(mesh.nodes)))
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
    expect(JSON.parse(protect.stdout)).toMatchObject({ targets: [b.peerId, c.peerId], chain: true })
    for (const n of [b, c])
      await waitFor(`seed on ${n.name}`, async () => (await points(n, 'web')).length > 0, 90_000, 250)

    const data = randomBytes(8192)
    const offset = 40 * MiB + 4096
    const written = Date.now()
    await vmWrite(a, 'web', offset, data)
    const doneMs = Date.now()
    for (const n of [b, c]) {
      const ms = await writeCommittedAfterMs(n, 'web', { startedMs: written, doneMs }, offset, data)
      console.log(`the write was committed on ${n.name} ${ms} ms after it was made (RPO 5000 ms)`)
      expect(ms).toBeLessThan(5000)
    }

    const statusC = await c.status()
    const replica = statusC.vms.find((v) => (v as { name: string }).name === 'web') as Record<string, unknown>
    expect(replica).toMatchObject({ role: 'replica', rpoSeconds: 5, owner: a.peerId })
    expect(replica.lagSeconds as number).toBeLessThan(5)
    const statusA = await a.status()
    const primary = statusA.vms.find((v) => (v as { name: string }).name === 'web') as Record<string, unknown>
    expect(primary).toMatchObject({ role: 'primary', rpoSeconds: 5 })
    expect(primary.lagSeconds as number).toBeLessThan(5)

    // The materialised replica VHDX on C carries the guest's record stream up to a recent record.
    const records = await waitFor(
      'the replica disk on C to be applied',
      async () => {
        const r = await cli(['vm', 'records', '--disk-file', `${c.dir}/replicas/web/disk0.vhdx`, '--json'])
        return r.code === 0 ? (JSON.parse(r.stdout) as { lastSeq: number; lastTime: number }) : undefined
      },
      30_000,
      500,
    )
    expect(records.lastSeq).toBeGreaterThan(0)
    expect(records.lastTime).toBeGreaterThan(written - 60_000)
  }, 300_000)
})

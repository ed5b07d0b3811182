// Failback with real processes. A protected lab VM with 12 MiB of data runs on A; A (node and
// guest) is killed; the VM runs on B within its RTO. A comes back fenced: its copy stays stopped
// and it is B's replica. B replicates back by delta: A's own disks are the baseline, so only chunks
// changed since the split cross the wire (measured, against the 12 MiB seed). `failback` then
// switches the VM home with a planned failover: it runs on A again, B is a stopped replica, and
// the guest's record stream shows no record lost in the switch back.
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { type TestNode, waitFor } from '../helpers/nodes.js'
import { failoverMesh } from './failover-helpers.js'

const MiB = 1024 * 1024
const DATA_BYTES = 12 * MiB
const RPO_MS = 5_000
const RTO_MS = 30_000

interface TargetProgress {
  peer: string
  seq: number | null
  payloadBytes: number
  wireBytes: number
}

describe('failback by delta', () => {
  const fm = failoverMesh()
  const { ok, records, row, cliRow, points } = fm
  const sentTo = async (from: TestNode, to: TestNode) =>
    (await from.call<{ targets: TargetProgress[] }>('GET', '/replication/vms/web1')).targets.find(
      (t) => t.peer === to.peerId,
    )

  it('fences the returning host, resyncs it by delta and brings the VM home', {
    timeout: 240_000,
  }, async () => {
    const [a, b] = fm.mesh.nodes
    await ok(['vm', 'create', '--dir', a.dir, 'web1', '--size', '32M'])
    await ok(['vm', 'start', '--dir', a.dir, 'web1'])
    for (let at = 0; at < DATA_BYTES; at += 4 * MiB)
      await a.call('POST', '/vms/web1/write', {
        disk: 0,
        offset: at,
        data: randomBytes(4 * MiB).toString('base64'),
      })
    await ok([
      'protect',
      '--dir',
      a.dir,
      'web1',
      '--rpo',
      `${RPO_MS / 1000}s`,
      '--rto',
      `${RTO_MS / 1000}s`,
      '--to',
      b.peerId,
    ])
    await waitFor('two points of web1 on B', async () => (await points(b)).length >= 2, 90_000, 250)
    const seed = (await sentTo(a, b))?.payloadBytes ?? 0
    expect(seed).toBeGreaterThanOrEqual(DATA_BYTES)

    // A (node and guest) dies: the VM runs on B within its RTO.
    const killedAt = Date.now()
    await a.kill()
    const runningAt = await waitFor(
      'web1 running on B',
      async () =>
        (await b.call<{ state: string }>('GET', '/vms/web1')).state === 'running' ? Date.now() : undefined,
      RTO_MS,
      100,
    )
    const lostOnA = await records(a)
    const startOnB = await records(b)
    console.log(
      `failover: web1 runs on B ${runningAt - killedAt} ms after the kill; lost records ` +
        `${startOnB.startSeq + 1}..${lostOnA.lastSeq} (${lostOnA.lastTime - startOnB.startTime} ms, RPO ${RPO_MS} ms)`,
    )
    expect(lostOnA.lastTime - startOnB.startTime).toBeLessThanOrEqual(RPO_MS)
    expect(await cliRow(b)).toMatchObject({ role: 'primary', state: 'running', owner: b.peerId, epoch: 1 })

    // A returns: fenced (its copy stays stopped), a replica of B's at epoch 1.
    await a.start()
    await waitFor(
      'A to be a stopped replica of B',
      async () => {
        const r = await row(a)
        return r?.role === 'replica' && r.state === 'stopped' && r.owner === b.peerId && r.epoch === 1
      },
      60_000,
      250,
    )
    // B replicates back to A by delta: A's own disks are the baseline.
    await waitFor(
      'a point of epoch 1 on A',
      async () => (await points(a)).some((p) => p.epoch === 1),
      60_000,
      250,
    )
    const back = await sentTo(b, a)
    // What A's store held before the resync (a missing baseline makes B send everything).
    const baseline = a
      .jsonLogs()
      .filter((l) => typeof l.msg === 'string' && /baseline|fenced|replica here/.test(l.msg))
      .map((l) => `${l.msg} ${JSON.stringify({ chunks: l.chunks, newBytes: l.newBytes, reason: l.reason })}`)
    console.log(`A while fenced:\n  ${baseline.join('\n  ')}`)
    console.log(
      `resync B→A: ${back?.payloadBytes} payload bytes, ${back?.wireBytes} bytes on the wire, for ` +
        `${DATA_BYTES} bytes of data (the seed A→B sent ${seed} payload bytes)`,
    )
    expect(back?.payloadBytes).toBeLessThan(DATA_BYTES / 10)
    expect(back?.wireBytes).toBeLessThan(DATA_BYTES / 10)

    // failback, asked on A: a planned switch home; no record lost.
    const home = JSON.parse(await ok(['failback', '--dir', a.dir, 'web1', '--json']))
    expect(home).toMatchObject({ vm: 'web1', on: a.peerId, epoch: 2, dataLossMs: 0 })
    const lastOnB = await records(b)
    const startOnA = await records(a)
    console.log(`failback: B wrote up to record ${lastOnB.lastSeq}; A's run began from ${startOnA.startSeq}`)
    expect(startOnA.startSeq).toBe(lastOnB.lastSeq)
    expect(await cliRow(a)).toMatchObject({ role: 'primary', state: 'running', owner: a.peerId, epoch: 2 })
    await waitFor(
      'B to be a stopped replica of A at epoch 2',
      async () => {
        const r = await row(b)
        return r?.role === 'replica' && r.state === 'stopped' && r.owner === a.peerId && r.epoch === 2
      },
      30_000,
      250,
    )
  })
})

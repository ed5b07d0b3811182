// Planned failover with real processes: a protected lab VM runs on A; `failover --planned --to B`
// stops it, commits one last point on B and starts it there at epoch 1. The guest's record stream
// proves nothing was lost: the last record A wrote is the record B's run began from. A is then a
// stopped replica of B's; a second planned failover (asked on C, which hands it to the owner) brings
// it back to A at epoch 2, again losing no record.
import { describe, expect, it } from 'vitest'
import { waitFor } from '../helpers/nodes.js'
import { failoverMesh } from './failover-helpers.js'

describe('planned failover', () => {
  const fm = failoverMesh()
  const { ok, records, row, cliRow, points } = fm
  it('loses no record, leaves the old owner a stopped replica, and goes back', {
    timeout: 180_000,
  }, async () => {
    const [a, b, c] = fm.mesh.nodes
    await ok(['vm', 'create', '--dir', a.dir, 'web1', '--size', '16M'])
    await ok(['vm', 'start', '--dir', a.dir, 'web1'])
    await ok(['protect', '--dir', a.dir, 'web1', '--rpo', '2s', '--rto', '60s', '--to', b.peerId])
    await waitFor('a point of web1 on B', async () => (await points(b)).length >= 1, 60_000, 250)

    const there = JSON.parse(
      await ok(['failover', '--dir', a.dir, 'web1', '--planned', '--to', b.peerId, '--json']),
    )
    expect(there).toMatchObject({ vm: 'web1', on: b.peerId, epoch: 1, dataLossMs: 0 })
    const onA = await records(a)
    const onB = await records(b)
    console.log(`planned A→B: A wrote up to record ${onA.lastSeq}; B's run began from ${onB.startSeq}`)
    expect(onB.startSeq).toBe(onA.lastSeq)
    expect(await cliRow(b)).toMatchObject({ role: 'primary', state: 'running', owner: b.peerId, epoch: 1 })
    await waitFor(
      'A to be a stopped replica of B at epoch 1',
      async () => {
        const r = await row(a)
        return r?.role === 'replica' && r.state === 'stopped' && r.owner === b.peerId && r.epoch === 1
      },
      30_000,
      250,
    )
    // B protects it back to A (its only other holder) with points of epoch 1.
    await waitFor(
      'a point of epoch 1 on A',
      async () => (await points(a)).some((p) => p.epoch === 1),
      60_000,
      250,
    )

    // Asked on C, which is neither owner nor target: the owner B hands it over to A.
    const back = JSON.parse(
      await ok(['failover', '--dir', c.dir, 'web1', '--planned', '--to', a.peerId, '--json']),
    )
    expect(back).toMatchObject({ vm: 'web1', on: a.peerId, epoch: 2, dataLossMs: 0 })
    const onB2 = await records(b)
    const onA2 = await records(a)
    console.log(`planned B→A: B wrote up to record ${onB2.lastSeq}; A's run began from ${onA2.startSeq}`)
    expect(onA2.startSeq).toBe(onB2.lastSeq)
    expect(onA2.startSeq).toBeGreaterThan(onA.lastSeq)
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
    const states = await a.call<Array<{ peerId: string; vms: Array<{ name: string; epoch: number }> }>>(
      'GET',
      '/mesh/states',
    )
    await waitFor(
      "A's gossip to publish web1 at epoch 2",
      async () =>
        (
          await a.call<Array<{ peerId: string; vms: Array<{ name: string; epoch: number }> }>>(
            'GET',
            '/mesh/states',
          )
        ).some((s) => s.peerId === a.peerId && s.vms.some((v) => v.name === 'web1' && v.epoch === 2)),
      10_000,
      250,
    )
    expect(states.length).toBeGreaterThan(0)
  })
})

// Hand-over in one process: real chunk stores, an in-memory network, one fake hypervisor whose VM
// both nodes can read (the VM "moves" from A to B without copying its disks, which is what the
// hypervisor side of a promotion does). Checks the replication half of failover: fencing on the
// wire, promotion, the fenced owner's resync by delta, final sync.
import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openDisk } from '../../src/hyperv/index.js'
import { ReplicationService } from '../../src/replication/index.js'
import { TestNodes, until } from './helpers/nodes.js'

const MiB = 1024 * 1024
const CHUNK = 256 * 1024

let cluster: TestNodes

const makeNode = (name: string, site: string) => cluster.node(name, { site, hypervisor: true })

async function diskBytes(path: string, offset: number, length: number): Promise<Buffer> {
  const d = await openDisk(path)
  try {
    const b = Buffer.alloc(length)
    await d.read(b, offset, length)
    return b
  } finally {
    await d.close()
  }
}

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-handover-')
})

afterEach(() => cluster.close())

describe('hand-over (in process)', () => {
  it('a replica refuses points of an epoch older than one it learned', async () => {
    const a = await makeNode('A', 's1')
    const b = await makeNode('B', 's2')
    await cluster.hv.createVm('web', [4 * MiB])
    await cluster.hv.write('web', 0, 0, randomBytes(MiB))
    await a.service.protect({
      vm: 'web',
      rpoSeconds: 1,
      rtoSeconds: 60,
      to: ['B'],
      chain: false,
      copies: null,
    })
    const first = await until('a point on B', async () => b.store.lastPoint('web'))
    expect(first.epoch).toBe(0)
    const record = await until('the replica record on B', async () => b.service.replicas.read('web'))
    expect(record).toMatchObject({ source: 'A', rpoSeconds: 1, rtoSeconds: 60, replicaSet: ['B'], epoch: 0 })

    // The race: a point of epoch 0 passed the epoch check on B, and B learns epoch 3 before the
    // point reaches the store. The store wrapper runs learnEpoch exactly there, inside the commit
    // (building the point's manifest is the only use of lookupProtected on a target), so the
    // ordering does not depend on timing. Once learnEpoch has returned, no point of epoch 0 may
    // land on B: the commit re-checks the epoch, fenced against learnEpoch, and A is refused.
    const store = b.store
    const lookup = store.lookupProtected.bind(store)
    let learned: Promise<number | undefined> | null = null
    store.lookupProtected = (ids, lease) => {
      learned ??= b.service
        .learnEpoch('web', 3, 'C')
        .then(() => store.lastPoint('web'))
        .then((p) => p?.seq)
      return learned.then(() => lookup(ids, lease))
    }
    await cluster.hv.write('web', 0, 2 * MiB, randomBytes(4096))
    await until('a commit on B to build its manifest', async () => learned !== null)
    // What B held when learnEpoch returned (A may have committed more points than the first
    // before the wrapper was in place: A takes points every few hundred ms).
    const held = await learned
    expect(held).toBeGreaterThanOrEqual(first.seq)
    await until('A to be refused', async () =>
      /epoch 0, but web is at epoch 3/.test(a.service.protection('web').targets[0]?.lastError ?? ''),
    )
    expect((await b.store.lastPoint('web'))?.seq, 'a point landed on B after learnEpoch returned').toBe(held)
    expect((await b.service.vmStatus()).find((r) => r.name === 'web')).toMatchObject({
      role: 'replica',
      owner: 'C',
      epoch: 3,
    })
  })

  it('promotes a replica, fences the old owner, resyncs it by delta, and syncs a final point', async () => {
    const a = await makeNode('A', 's1')
    const b = await makeNode('B', 's2')
    const info = await cluster.hv.createVm('web', [8 * MiB])
    const data = randomBytes(6 * MiB)
    await cluster.hv.write('web', 0, 0, data)
    await a.service.protect({
      vm: 'web',
      rpoSeconds: 1,
      rtoSeconds: 30,
      to: ['B'],
      chain: false,
      copies: null,
    })
    const seeded = await until('the seed on B', async () => b.store.lastPoint('web'))
    const seedBytes = a.service.protection('web').targets[0].payloadBytes
    expect(seedBytes).toBeGreaterThanOrEqual(data.length)

    // A dies.
    await a.service.stop()
    const aMesh = cluster.net.nodes.get('A')
    if (aMesh) aMesh.down = true

    // Promotion on B: the replica disks equal the newest point and are held (no more applies).
    const prep = await b.service.prepareReplica('web')
    expect(prep.point.seq).toBe((await b.store.lastPoint('web'))?.seq)
    expect(prep.config).toMatchObject({ id: info.id, name: 'web', state: 'stopped' })
    expect((await diskBytes(prep.diskPaths[0], 0, data.length)).equals(data)).toBe(true)
    expect(b.service.replicas.isHeld('web')).toBe(true)
    expect(seeded.seq).toBeLessThanOrEqual(prep.point.seq)

    // B owns it at epoch 1 and protects it to the old owner, which is down.
    await b.service.becomeOwner('web', 1)
    expect(b.service.protection('web').protection).toMatchObject({
      targets: ['A'],
      rpoSeconds: 1,
      rtoSeconds: 30,
    })
    expect(b.service.replicas.isHeld('web')).toBe(false)
    expect(await b.service.replicas.read('web')).toBeNull()

    // A comes back (a new process on its folder): it still protects web, so it takes no points.
    a.service = new ReplicationService({
      dir: a.dir,
      mesh: cluster.net.node('A', 's1'),
      store: a.store,
      hypervisor: cluster.hv.asHypervisor(),
      logger: { info() {}, warn() {} },
    })
    await a.service.start()
    await until('A to turn B away while it protects web', async () =>
      /protects web itself/.test(b.service.protection('web').targets[0]?.lastError ?? ''),
    )
    expect(await a.store.lastPoint('web')).toBeUndefined()

    // The VM changed a little on B since the split; A learns B's claim and becomes its replica.
    const change = randomBytes(8192)
    await cluster.hv.write('web', 0, 3 * MiB + 4096, change)
    info.state = 'stopped' // A's copy is fenced: stopped, its disks the baseline
    await a.service.becomeReplica('web', 'B', 1)
    info.state = 'running'
    const point = await until('an epoch-1 point on A', async () => {
      const p = await a.store.lastPoint('web')
      return p && p.epoch === 1 ? p : null
    })
    expect(point.seq).toBeGreaterThan(prep.point.seq)
    const back = b.service.protection('web').targets[0]
    expect(back.payloadBytes).toBeLessThanOrEqual(2 * CHUNK)
    expect(back.payloadBytes).toBeLessThan(seedBytes / 10)
    // B goes on taking points, and queued applies collapse into the newest: the disk may skip
    // point.seq. Wait for it at that point or a later one, with no apply under way.
    const replica = await until('the replica disk on A at that point or later', async () => {
      const r = await a.service.replicas.read('web')
      return r && r.appliedSeq !== null && r.appliedSeq >= point.seq && r.applyingSeq === null ? r : null
    })
    expect(replica).toMatchObject({ source: 'B', epoch: 1 })
    // The point actually applied: B's, of epoch 1 (the VM did not change since `change`).
    const applied = (await a.store.listPoints('web')).find((p) => p.seq === replica.appliedSeq)
    expect(applied).toMatchObject({ epoch: 1, source: 'B' })
    const onA = a.service.replicaDiskPath('web', 0)
    expect((await diskBytes(onA, 3 * MiB + 4096, change.length)).equals(change)).toBe(true)
    expect((await diskBytes(onA, 0, MiB)).equals(data.subarray(0, MiB))).toBe(true)
    expect((await a.service.vmStatus()).find((r) => r.name === 'web')).toMatchObject({
      role: 'replica',
      owner: 'B',
      epoch: 1,
    })
    expect((await b.service.vmStatus()).find((r) => r.name === 'web')).toMatchObject({
      role: 'primary',
      owner: 'B',
      epoch: 1,
    })

    // Planned failover back: a last write, then the final point is committed on A.
    const last = randomBytes(4096)
    await cluster.hv.write('web', 0, 5 * MiB, last)
    const final = await b.service.finalSync('web', { to: 'A' })
    expect((await a.store.lastPoint('web'))?.seq).toBe(final.seq)
    const prepA = await a.service.prepareReplica('web')
    expect(prepA.point.seq).toBe(final.seq)
    expect((await diskBytes(prepA.diskPaths[0], 5 * MiB, last.length)).equals(last)).toBe(true)
  })
})

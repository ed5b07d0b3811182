// Fencing races on a replica, each forced into one ordering by a store or fence wrapper (no
// timing): a point that passed its checks while the replica is being promoted, an epoch learned
// before the replica's first point, a point of the old owner while the new owner takes over.
import { createHash, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { RecoveryPoint } from '../../src/chunkstore/index.js'
import { openDisk } from '../../src/hyperv/index.js'
import { ReplicationService } from '../../src/replication/index.js'
import { type TestNode, TestNodes, until } from './helpers/nodes.js'

const MiB = 1024 * 1024

let cluster: TestNodes

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-fence-')
})

afterEach(() => cluster.close())

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

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

/**
 * A protects 'web' to B; returns once B holds a point of it. With `bHosts`, B has the hypervisor
 * too (it can own the VM after a promotion).
 */
async function protectedPair(bHosts = false): Promise<{ a: TestNode; b: TestNode }> {
  const a = await cluster.node('A', { site: 's1', hypervisor: true })
  const b = await cluster.node('B', { site: 's2', hypervisor: bHosts })
  await cluster.hv.createVm('web', [4 * MiB])
  await cluster.hv.write('web', 0, 0, randomBytes(MiB))
  await a.service.protect({ vm: 'web', rpoSeconds: 1, rtoSeconds: 60, to: ['B'], chain: false, copies: null })
  await until('a point on B', async () => b.store.lastPoint('web'))
  return { a, b }
}

/** The receiver's fence() of a node's service (private: the test watches who queues on it). */
function receiverOf(n: TestNode): { fence: <T>(vm: string, fn: () => Promise<T>) => Promise<T> } {
  return (
    n.service as unknown as { receiver: { fence: <T>(vm: string, fn: () => Promise<T>) => Promise<T> } }
  ).receiver
}

describe('replica fencing races', () => {
  it('a point past its checks when the replica is promoted is fully in before prepareReplica returns; later ones are refused', async () => {
    const { a, b } = await protectedPair()
    // The race: a point of 'web' passed every check on B and is being committed when B is told
    // to promote its replica. The store wrapper starts prepareReplica exactly inside that commit
    // and lets the commit go on only once prepare has returned (the race as it was) or waits to
    // enter the receiver's fence (it is ordered after the commit).
    const receiver = receiverOf(b)
    const fence = receiver.fence.bind(receiver)
    let prepareQueued: (() => void) | null = null
    const store = b.store
    const commitPoint = store.commitPoint.bind(store)
    let hooked: { seq: number; prepared: ReturnType<ReplicationService['prepareReplica']> } | null = null
    const data = randomBytes(4096)
    store.commitPoint = async (point: RecoveryPoint) => {
      if (hooked) return commitPoint(point)
      const queued = new Promise<void>((resolve) => {
        prepareQueued = resolve
      })
      receiver.fence = (vm, fn) => {
        prepareQueued?.()
        return fence(vm, fn)
      }
      const prepared = b.service.prepareReplica('web')
      hooked = { seq: point.seq, prepared }
      await Promise.race([prepared.catch(() => {}), queued])
      return commitPoint(point)
    }
    await cluster.hv.write('web', 0, 2 * MiB, data)
    const { seq, prepared } = await until('a commit on B with prepareReplica inside', async () => hooked)
    const p = await prepared
    expect(p.point.seq, 'prepareReplica returned before the point past its checks was in').toBe(seq)
    expect((await b.store.lastPoint('web'))?.seq).toBe(seq)
    expect(p.config.disks.map((d) => d.path)).toEqual(p.diskPaths)
    // The disk the VM is about to run from holds exactly point `seq` (restored from the store).
    const restored = join(cluster.root, 'restored.raw')
    await b.service.restore('web', { seq, out: restored, format: 'raw' })
    const expected = sha256(await readFile(restored))
    expect(sha256(await diskBytes(p.diskPaths[0], 0, 4 * MiB))).toBe(expected)
    const record = await b.service.replicas.read('web')
    expect(record).toMatchObject({ lastSeq: seq, appliedSeq: seq, applyingSeq: null })

    // Later points are refused with a reason, and nothing reaches the store or the disks.
    await cluster.hv.write('web', 0, 3 * MiB, randomBytes(4096))
    await until('A to be refused', async () =>
      /web is being promoted on this node/.test(a.service.protection('web').targets[0]?.lastError ?? ''),
    )
    await b.service.idle()
    expect((await b.store.lastPoint('web'))?.seq).toBe(seq)
    expect(await b.service.replicas.read('web')).toMatchObject({ lastSeq: seq, appliedSeq: seq })
    expect(sha256(await diskBytes(p.diskPaths[0], 0, 4 * MiB)), 'a refused point reached the disk').toBe(
      expected,
    )
  })

  it('an epoch learned before the first point is kept (durably) and refuses an older owner; no replica is listed', async () => {
    const a = await cluster.node('A', { site: 's1', hypervisor: true })
    const b = await cluster.node('B', { site: 's2' })
    await cluster.hv.createVm('web', [4 * MiB])
    await cluster.hv.write('web', 0, 0, randomBytes(MiB))
    // B holds nothing of 'web' yet and learns that C owns it at epoch 3.
    await b.service.learnEpoch('web', 3, 'C')
    expect(await b.service.knownEpoch('web')).toBe(3)
    expect(await b.service.replicas.list(), 'a learned epoch is no replica').toEqual([])
    expect(b.mesh.replicasPublished ?? [], 'B gossips no replica of web').toEqual([])

    await a.service.protect({
      vm: 'web',
      rpoSeconds: 1,
      rtoSeconds: 60,
      to: ['B'],
      chain: false,
      copies: null,
    })
    await until('A to be refused', async () =>
      /epoch 0, but web is at epoch 3/.test(a.service.protection('web').targets[0]?.lastError ?? ''),
    )
    await b.service.idle()
    expect(await b.store.lastPoint('web'), 'a point of the old owner landed on B').toBeUndefined()
    expect((await b.service.vmStatus()).find((r) => r.name === 'web')).toBeUndefined()

    // Durable: a service started again on B's folder knows the epoch.
    const again = new ReplicationService({
      dir: b.dir,
      mesh: b.mesh,
      store: b.store,
      hypervisor: null,
      logger: { info: () => {}, warn: () => {} },
    })
    expect(await again.knownEpoch('web')).toBe(3)
  })

  it('an epoch learned while the first point commits is kept in the replica record it creates', async () => {
    const a = await cluster.node('A', { site: 's1', hypervisor: true })
    const b = await cluster.node('B', { site: 's2' })
    await cluster.hv.createVm('web', [4 * MiB])
    await cluster.hv.write('web', 0, 0, randomBytes(MiB))
    const store = b.store
    const commitPoint = store.commitPoint.bind(store)
    let learned: { seq: number; done: Promise<void> } | null = null
    store.commitPoint = async (point: RecoveryPoint) => {
      await commitPoint(point)
      // The first point is in the store, its replica record not yet written: B learns epoch 3.
      learned ??= { seq: point.seq, done: b.service.learnEpoch('web', 3, 'C') }
    }
    await a.service.protect({
      vm: 'web',
      rpoSeconds: 1,
      rtoSeconds: 60,
      to: ['B'],
      chain: false,
      copies: null,
    })
    const { seq, done } = await until('the first commit on B', async () => learned)
    await done
    await until('A to be refused', async () =>
      /epoch 0, but web is at epoch 3/.test(a.service.protection('web').targets[0]?.lastError ?? ''),
    )
    await b.service.idle()
    expect(await b.service.replicas.read('web')).toMatchObject({ epoch: 3, source: 'C', lastSeq: seq })
  })
})

describe('replica fencing races (promotion)', () => {
  it("an old owner's point in the gap between the replica's release and the new owner's protector is refused", async () => {
    const { a, b } = await protectedPair(true)
    const prep = await b.service.prepareReplica('web')

    // The race: A (partitioned away, still running web at epoch 0) keeps sending points while B
    // takes web over at epoch 1. becomeOwner forgets B's replica record and lifts the hold, then
    // reads the point's manifests for the new protection: the store wrapper waits there until
    // B has answered A's next point (committed it, or refused it as the new owner).
    const store = b.store
    const readManifest = store.readManifest.bind(store)
    let owning = false
    let paused = false
    const aError = () => a.service.protection('web').targets[0]?.lastError ?? ''
    store.readManifest = (disk) => {
      if (!owning || paused) return readManifest(disk)
      paused = true
      return (async function* () {
        await until("B's answer to A's next point", async () => {
          const last = await store.lastPoint('web')
          return (last && last.seq > prep.point.seq) || /protects web itself/.test(aError())
        })
        yield* readManifest(disk)
      })()
    }
    owning = true
    await b.service.becomeOwner('web', 1)
    expect(paused, 'becomeOwner read no manifest: the hook never ran').toBe(true)
    await b.service.idle()
    expect((await b.store.lastPoint('web'))?.seq, "a point of A's old epoch landed on the new owner").toBe(
      prep.point.seq,
    )
    expect(await b.service.replicas.read('web'), 'the new owner holds a replica record again').toBeNull()
    expect(b.mesh.replicasPublished).toEqual([])
    expect(aError()).toMatch(/protects web itself/)
  })

  it("a restarting old owner takes no point of the new owner before its protectors run (failback's baseline)", async () => {
    const { a, b } = await protectedPair(true)
    // A (the owner) goes down; B takes web over at epoch 1 and protects it back to A.
    await a.service.stop()
    const prep = await b.service.prepareReplica('web')
    await b.service.becomeOwner('web', 1)
    const bError = () => b.service.protection('web').targets.find((t) => t.peer === 'A')?.lastError ?? ''
    // A starts again. The race: its handlers are up while it still reads what it protects; a
    // point of B's taken then skips the baseline of A's own disks (becomeReplica), and B's
    // resync copies everything. The wrapper holds A's start exactly there.
    const again = new ReplicationService({
      dir: a.dir,
      mesh: a.mesh,
      store: a.store,
      hypervisor: cluster.hv.asHypervisor(),
      logger: { info: () => {}, warn: () => {} },
    })
    const files = (again as unknown as { files: { list: () => Promise<unknown[]> } }).files
    const list = files.list.bind(files)
    let open: () => void = () => {}
    const gate = new Promise<void>((resolve) => {
      open = resolve
    })
    files.list = async () => {
      await gate
      return list()
    }
    const started = again.start()
    try {
      await until("A's refusal while it starts", async () => /is starting/.test(bError()))
      expect(await a.store.lastPoint('web'), "a point of B's landed on A while it started").toBeUndefined()
      open()
      await started
      await until('A to refuse as the owner it still thinks it is', async () =>
        /protects web itself/.test(bError()),
      )
      expect(await a.store.lastPoint('web')).toBeUndefined()
      expect(prep.point.seq).toBeGreaterThan(0)
    } finally {
      open()
      await started.catch(() => {})
      await again.stop()
    }
  })

  it('the same point arriving by two routes at once is committed once; the later one is answered as held', async () => {
    const { b } = await protectedPair()
    // The race: one point reaches B twice at once (a chain hop and a direct target): both pass
    // the checks before either commits. The wrapper delivers the next point twice, concurrently.
    type Commit = (header: { seq: number }, entries: unknown, peer: string) => Promise<unknown>
    type OnCommitted = (point: RecoveryPoint, ...rest: unknown[]) => void
    const receiver = (
      b.service as unknown as { receiver: { commit: Commit; c: { onCommitted: OnCommitted } } }
    ).receiver
    const commit = receiver.commit.bind(receiver)
    let doubled: { seq: number; results: Promise<unknown[]> } | null = null
    receiver.commit = (header, entries, peer) => {
      if (doubled) return commit(header, entries, peer)
      const results = Promise.all([commit(header, entries, peer), commit(header, entries, peer)])
      doubled = { seq: header.seq, results }
      return results.then(([first]) => first)
    }
    const onCommitted = receiver.c.onCommitted
    const committed: number[] = []
    receiver.c.onCommitted = (point: RecoveryPoint, ...rest: unknown[]) => {
      committed.push(point.seq)
      return onCommitted(point, ...rest)
    }
    await cluster.hv.write('web', 0, 0, randomBytes(4096))
    const { seq, results } = await until('a point delivered twice', async () => doubled)
    expect(await results, 'both deliveries are answered as committed').toEqual([null, null])
    expect(committed.filter((s) => s === seq)).toEqual([seq])
    expect((await b.store.lastPoint('web'))?.seq).toBeGreaterThanOrEqual(seq)
  })
})

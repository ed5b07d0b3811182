// A VM's point seqs only rise (DESIGN.md §3: a point is (vm, seq, epoch)): protected again after
// unprotect, after a restart, or with its state lost, the source never reuses a seq that a holder
// may hold with other content. Real chunk stores, a fake hypervisor, the in-memory network.
import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { LagTracker, ProtectionFiles, ReplicationService, VmProtector } from '../../src/replication/index.js'
import { SEQ_RESERVE_BLOCK, type SourceState } from '../../src/replication/settings.js'
import { type TestNode, TestNodes, until } from './helpers/nodes.js'

const MiB = 1024 * 1024

let cluster: TestNodes
const quiet = { info() {}, warn() {} }

const makeNode = (name: string, withHv: boolean) => cluster.node(name, { hypervisor: withHv })

/** Stops `n`'s service and starts a new one on the same folder, store and mesh node. */
async function restart(n: TestNode): Promise<void> {
  await n.service.stop()
  n.service = new ReplicationService({
    dir: n.dir,
    mesh: n.mesh,
    store: n.store,
    hypervisor: cluster.hv.asHypervisor(),
    logger: quiet,
  })
  await n.service.start()
}

const protect = (n: TestNode, to: string) =>
  n.service.protect({ vm: 'web', rpoSeconds: 1, rtoSeconds: 60, to: [to], chain: false, copies: null })

/** A protects web to B until B holds two points; then A unprotects it. B's newest seq. */
async function protectedOnceToB(a: TestNode, b: TestNode): Promise<number> {
  await cluster.hv.createVm('web', [4 * MiB])
  await cluster.hv.write('web', 0, 0, randomBytes(1 * MiB))
  await protect(a, 'B')
  await until('a first point on B', async () => (await b.store.lastPoint('web')) ?? null)
  await cluster.hv.write('web', 0, 2 * MiB, randomBytes(64 * 1024))
  const last = await until('a second point on B', async () => {
    const p = await b.store.lastPoint('web')
    return p && p.seq >= 2 ? p : null
  })
  await a.service.unprotect('web')
  const after = await b.store.lastPoint('web')
  expect(after?.seq).toBeGreaterThanOrEqual(last.seq)
  return after!.seq
}

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-seq-')
})

afterEach(() => cluster.close())

describe('point seqs only rise', () => {
  it('unprotected, the source restarted, protected again to another target: seqs go on above the old ones', async () => {
    const a = await makeNode('A', true)
    const b = await makeNode('B', false)
    const c = await makeNode('C', false)
    const onB = await protectedOnceToB(a, b)
    // B is gone from the mesh (no hello answer, no gossip): only A's own record can tell.
    cluster.net.nodes.delete('B')
    await restart(a)
    await protect(a, 'C')
    const first = await until('a point on C', async () => (await c.store.listPoints('web'))[0] ?? null)
    expect(first.seq).toBeGreaterThan(onB)
    expect(a.service.protection('web').lastSeq).toBeGreaterThan(onB)
  })

  it("a source that lost its state learns the VM's seq from a holder's gossip, even one that is down", async () => {
    const a = await makeNode('A', true)
    const b = await makeNode('B', false)
    const c = await makeNode('C', false)
    const onB = await protectedOnceToB(a, b)
    // A's replication folder is lost; B cannot be reached but its last gossip names seq onB.
    await a.service.stop()
    await rm(join(a.dir, 'replication'), { recursive: true, force: true })
    b.mesh.down = true
    expect(b.mesh.replicasPublished.find((r) => r.vm === 'web')?.lastPoint?.seq).toBe(onB)
    await restart(a)
    await protect(a, 'C')
    const first = await until('a point on C', async () => (await c.store.listPoints('web'))[0] ?? null)
    expect(first.seq).toBeGreaterThan(onB)
  })
})

/** ProtectionFiles that records every state it writes: the seq floor, and whether manifests came along. */
class RecordingFiles extends ProtectionFiles {
  readonly writes: Array<{ seqFloor: number | undefined; seq: number | null; reserve: boolean }> = []
  override async writeState(
    vm: string,
    state: SourceState,
    manifests: Parameters<ProtectionFiles['writeState']>[2],
  ): Promise<void> {
    await super.writeState(vm, state, manifests)
    this.writes.push({ seqFloor: state.seqFloor, seq: state.seq, reserve: manifests === null })
  }
}

describe('seqs are reserved in blocks', () => {
  it('one reserving state write per block of points; every seq sent is at or under the floor already on disk; a new protector goes on above the block', async () => {
    const b = await makeNode('B', false)
    const mesh = cluster.net.node('A', 'A')
    const info = await cluster.hv.createVm('web', [4 * MiB])
    await cluster.hv.write('web', 0, 0, randomBytes(1 * MiB))
    const dir = join(cluster.root, 'A', 'replication')
    const make = (files: ProtectionFiles) =>
      new VmProtector(
        {
          vm: 'web',
          vmId: info.id,
          rpoSeconds: 5,
          rtoSeconds: 60,
          to: ['B'],
          chain: false,
          copies: null,
          targets: ['B'],
          createdAt: Date.now(),
        },
        {
          network: mesh,
          hypervisor: cluster.hv.asHypervisor(),
          files,
          lag: new LagTracker(),
          logger: quiet,
          hashAlgorithm: 'blake3',
          sign: (kind, value) => mesh.sign(kind, value),
        },
      )
    const files = new RecordingFiles(dir)
    const p = make(files)
    await p.load()
    const seqs: number[] = []
    for (let i = 0; i < 5; i++) {
      await cluster.hv.write('web', 0, i * 256 * 1024, randomBytes(4096))
      expect(await p.cycle()).toBe(true)
      const seq = (await b.store.lastPoint('web'))!.seq
      // Reserved on disk before the point left: a target may commit it even if the node dies.
      expect(seq).toBeLessThanOrEqual(files.writes.filter((w) => w.reserve).at(-1)?.seqFloor ?? 0)
      seqs.push(seq)
    }
    expect(seqs).toEqual([1, 2, 3, 4, 5])
    const reserves = files.writes.filter((w) => w.reserve)
    expect(reserves).toEqual([{ seqFloor: SEQ_RESERVE_BLOCK, seq: null, reserve: true }])
    // The end-of-cycle writes keep the floor.
    expect(files.writes.every((w) => w.seqFloor === SEQ_RESERVE_BLOCK)).toBe(true)

    // A restarted protector cannot know how much of the block was used: it starts above it.
    const again = make(new RecordingFiles(dir))
    await again.load()
    await cluster.hv.write('web', 0, 3 * MiB, randomBytes(4096))
    expect(await again.cycle()).toBe(true)
    expect((await b.store.lastPoint('web'))!.seq).toBe(SEQ_RESERVE_BLOCK + 1)
    expect((await files.readState('web')).state.seqFloor).toBe(2 * SEQ_RESERVE_BLOCK)
  })
})

// The replication engine in one process: real chunk stores on disk, a fake hypervisor over raw
// files, an in-memory network. Chain, fan-out, policy, deltas, dedup, corruption, replica disks.
import { randomBytes } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openDisk } from '../../src/hyperv/index.js'
import { CHUNKS_PROTOCOL, ReplicationService } from '../../src/replication/index.js'
import { type TestNode, TestNodes, until } from './helpers/nodes.js'

const MiB = 1024 * 1024

let cluster: TestNodes

const makeNode = (name: string, site: string, withHv: boolean, corruptChunks = 0) =>
  cluster.node(name, { site, hypervisor: withHv, corruptChunks })

async function restoredBytes(
  n: TestNode,
  vm: string,
  offset: number,
  length: number,
  seq?: number,
): Promise<Buffer> {
  const out = join(n.dir, `restore-${Date.now()}-${Math.random()}.raw`)
  await n.service.restore(vm, { seq, out, format: 'raw' })
  const d = await openDisk(out, { format: 'raw' })
  const b = Buffer.alloc(length)
  await d.read(b, offset, length)
  await d.close()
  await rm(out)
  return b
}

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-repl-')
})

afterEach(() => cluster.close())

describe('replication pipeline (in process)', () => {
  it('chain A→B→C: seeds, then a 4 KiB write reaches B and C as a delta within the RPO', async () => {
    const a = await makeNode('A', 's1', true)
    const b = await makeNode('B', 's2', false)
    const c = await makeNode('C', 's3', false)
    await cluster.hv.createVm('web', [16 * MiB])
    const seed = randomBytes(3 * MiB)
    await cluster.hv.write('web', 0, 1 * MiB, seed)
    const p = await a.service.protect({
      vm: 'web',
      rpoSeconds: 2,
      rtoSeconds: 120,
      to: ['B', 'C'],
      chain: true,
      copies: null,
    })
    expect(p.targets).toEqual(['B', 'C'])
    await until('seed on C', async () => (await c.store.lastPoint('web')) ?? null)
    expect((await restoredBytes(c, 'web', 1 * MiB, seed.length)).equals(seed)).toBe(true)

    // The RPO is about the point, not about this process's speed: the write is carried to B and C
    // by a point frozen within the RPO of it. The first point on each that holds the write is
    // awaited with a deadline (how long shipping, restoring and comparing take here under machine
    // load is not what the RPO promises), then its freeze time is checked against the write's.
    const write = randomBytes(4096)
    const t0 = Date.now()
    await cluster.hv.write('web', 0, 9 * MiB + 8192, write)
    for (const n of [b, c]) {
      const checked = new Set<number>()
      const covering = await until(`a point on ${n.name} holding the write`, async () => {
        const since = (await n.store.listPoints('web')).filter((pt) => pt.time >= t0 && !checked.has(pt.seq))
        for (const pt of since.sort((x, y) => x.seq - y.seq)) {
          checked.add(pt.seq)
          if ((await restoredBytes(n, 'web', 9 * MiB + 8192, 4096, pt.seq)).equals(write)) return pt
        }
        return null
      })
      expect(covering.time - t0).toBeLessThanOrEqual(2000)
    }
    const progress = a.service.protection('web').targets.find((t) => t.peer === 'B')
    expect(progress?.deltasSent).toBeGreaterThan(0)
    // Chain: the source sends only to B; C is fed by B.
    expect(a.service.protection('web').targets.map((t) => t.peer)).toEqual(['B'])
    expect(b.logs.some((l) => /forwarded point web@/.test(l.msg ?? ''))).toBe(true)

    // The materialised replica VHDX on C holds the write.
    await c.service.idle()
    await until('replica disk on C', async () => {
      const rec = await c.service.replicas.read('web')
      const last = await c.store.lastPoint('web')
      return rec && last && rec.appliedSeq === last.seq
    })
    const disk = await openDisk(c.service.replicaDiskPath('web', 0))
    const got = Buffer.alloc(4096)
    await disk.read(got, 9 * MiB + 8192, 4096)
    await disk.close()
    expect(got.equals(write)).toBe(true)

    // C reports its lag from its newest point: at most the time since the one its record named
    // before the call (a point arriving meanwhile only lowers it), whatever the machine's load.
    const named = await c.service.replicas.read('web')
    const rows = await c.service.vmStatus()
    const asked = Date.now()
    expect(rows).toEqual([
      expect.objectContaining({ name: 'web', role: 'replica', rpoSeconds: 2, owner: 'A' }),
    ])
    expect(named?.lastPointTime).toBeGreaterThanOrEqual(t0)
    expect(rows[0].lagSeconds).toBeGreaterThanOrEqual(0)
    expect(rows[0].lagSeconds).toBeLessThanOrEqual((asked - (named?.lastPointTime ?? 0)) / 1000)
    expect(c.mesh.replicasPublished.map((r) => r.vm)).toEqual(['web'])
  })

  it('fan-out by policy: --copies 2 lands one copy in each other site, with little wire cost per 4 KiB write', async () => {
    const a = await makeNode('A', 's1', true)
    await makeNode('A2', 's1', false)
    const b = await makeNode('B', 's2', false)
    const c = await makeNode('C', 's3', false)
    await cluster.hv.createVm('db', [8 * MiB])
    await cluster.hv.write('db', 0, 0, randomBytes(8 * MiB))
    const p = await a.service.protect({
      vm: 'db',
      rpoSeconds: 5,
      rtoSeconds: 120,
      to: null,
      chain: false,
      copies: 2,
    })
    expect(new Set(p.targets)).toEqual(new Set(['B', 'C']))
    for (const n of [b, c])
      await until(`seed on ${n.name}`, async () => (await n.store.lastPoint('db')) ?? null)
    const before = a.service.protection('db').targets.map((t) => t.wireBytes)
    const seqBefore = (await b.store.lastPoint('db'))?.seq ?? 0
    for (let i = 0; i < 20; i++)
      await cluster.hv.write('db', 0, i * 397 * 1024 + 4096 * (i % 3), randomBytes(4096))
    await until('writes on B and C', async () => {
      const t = a.service.protection('db').targets
      return t.every((x) => (x.seq ?? 0) > seqBefore) && t
    })
    // Let one more cycle finish so every write is in a committed point.
    const target = a.service.protection('db').lastSeq ?? 0
    await until('one more point', async () =>
      a.service.protection('db').targets.every((x) => (x.seq ?? 0) > target),
    )
    const after = a.service.protection('db').targets.map((t) => t.wireBytes)
    const ratio = (after[0] - before[0]) / (20 * 4096)
    // Wire bytes include empty points' overhead; still far below a chunk per write (64x).
    expect(ratio).toBeLessThan(3)
  })

  /**
   * A protects an 8 MiB VM to B under 64 KiB change tracking, seeded; then each write of `writes`
   * (4 KiB, one chunk each) is committed. Returns the payload bytes the writes cost.
   */
  async function coarseWrites(b: TestNode, a: TestNode, writes: Array<[number, Buffer]>): Promise<number> {
    cluster.hv.trackingBlockBytes = 64 * 1024
    await cluster.hv.createVm('files', [8 * MiB])
    await cluster.hv.write('files', 0, 0, randomBytes(8 * MiB))
    // RPO 5 s: the point after the writes comes within about a second (RPO 60 s waited 9 s). Each
    // write is in a chunk of its own, so split across points they still add up to one delta each.
    await a.service.protect({
      vm: 'files',
      rpoSeconds: 5,
      rtoSeconds: 60,
      to: ['B'],
      chain: false,
      copies: null,
    })
    await until('seed', async () => a.service.protection('files').targets[0].seq !== null)
    const progress = () => a.service.protection('files').targets[0]
    const before = { ...progress() }
    for (const [offset, data] of writes) await cluster.hv.write('files', 0, offset, data)
    await until(
      'writes committed',
      async () =>
        (progress().seq ?? 0) > (before.seq ?? 0) &&
        progress().deltasSent - before.deltasSent >= writes.length,
    )
    expect(progress().lastError).toBeNull()
    const last = await b.store.lastPoint('files')
    for (const [offset, data] of writes)
      expect((await restoredBytes(b, 'files', offset, 4096, last?.seq)).equals(data)).toBe(true)
    return progress().payloadBytes - before.payloadBytes
  }

  const scattered = (n: number, stride: number): Array<[number, Buffer]> =>
    Array.from({ length: n }, (_, i) => [i * stride + 8192, randomBytes(4096)])

  it('with 64 KiB change tracking, a 4 KiB write still costs about 4 KiB on the wire (block fingerprints)', async () => {
    const a = await makeNode('A', 's1', true)
    const b = await makeNode('B', 's2', false)
    expect(await coarseWrites(b, a, scattered(10, 800 * 1024))).toBe(10 * 4096)
  })

  it('a target speaking only chunks 1.0.0 (an older node) is asked for no fingerprints: it gets the tracked ranges', async () => {
    const a = await makeNode('A', 's1', true)
    const b = await makeNode('B', 's2', false)
    await b.mesh.unhandle(CHUNKS_PROTOCOL)
    // Each delta is the tracked 64 KiB block, and nothing failed on the way.
    expect(await coarseWrites(b, a, scattered(4, MiB))).toBe(4 * 64 * 1024)
  })

  it('without change tracking, chunks whose blocks were released become zero on the target', async () => {
    const a = await makeNode('A', 's1', true)
    const b = await makeNode('B', 's2', false)
    await cluster.hv.createVm('thin', [8 * MiB])
    await cluster.hv.write('thin', 0, 1 * MiB, randomBytes(2 * MiB))
    await a.service.protect({
      vm: 'thin',
      rpoSeconds: 2,
      rtoSeconds: 120,
      to: ['B'],
      chain: false,
      copies: null,
    })
    const seeded = await until('seed on B', async () => (await b.store.lastPoint('thin')) ?? null)
    // The seed read the disk whole: its change-log entry says so instead of listing every chunk
    // (for a 1 TiB disk, 4 Mi numbers in state.json, rewritten at each of the next 64 points).
    // (The target holds the point before the source saves the state that names it.)
    const state = await until('the seed in the source state', async () => {
      const s = JSON.parse(await readFile(join(a.dir, 'replication', 'thin', 'state.json'), 'utf8'))
      return s.changeLog.length > 0 && s
    })
    expect(state.changeLog[0].indexes).toEqual([null])
    expect(state.changeLog.slice(1).every((e: { indexes: unknown[] }) => Array.isArray(e.indexes[0]))).toBe(
      true,
    )

    // The guest releases the blocks, and the hypervisor loses its change tracking: the next point
    // reads the disk's map, where those chunks are no data extent any more.
    await cluster.hv.deallocate('thin', 0)
    await cluster.hv.loseTracking('thin')
    const zeros = Buffer.alloc(2 * MiB)
    await until('a point on B without the released data', async () => {
      const last = await b.store.lastPoint('thin')
      return (
        last &&
        last.seq > seeded.seq &&
        (await restoredBytes(b, 'thin', 1 * MiB, 2 * MiB, last.seq)).equals(zeros)
      )
    })
  })

  it('a corrupted chunk is rejected by hash, sent again, and the sender is named in the log', async () => {
    const a = await makeNode('A', 's1', true, 2)
    const b = await makeNode('B', 's2', false)
    await cluster.hv.createVm('app', [4 * MiB])
    const data = randomBytes(4 * MiB)
    await cluster.hv.write('app', 0, 0, data)
    await a.service.protect({
      vm: 'app',
      rpoSeconds: 5,
      rtoSeconds: 60,
      to: ['s2'],
      chain: false,
      copies: null,
    })
    await until(
      'point on B, acknowledged to A',
      async () =>
        a.service.protection('app').targets[0].seq !== null &&
        a.service.protection('app').targets[0].resent > 0,
    )
    expect(b.service.receiverStats.rejected).toBe(2)
    expect(b.logs.filter((l) => l.obj.peer === 'A' && /failed verification/.test(l.msg ?? ''))).toHaveLength(
      2,
    )
    expect(a.service.protection('app').targets[0].resent).toBe(2)
    expect((await restoredBytes(b, 'app', 0, data.length)).equals(data)).toBe(true)
  })

  it('dedup across VMs: a second VM with the same content costs almost no chunk bytes', async () => {
    const a = await makeNode('A', 's1', true)
    const b = await makeNode('B', 's2', false)
    const data = randomBytes(6 * MiB)
    for (const vm of ['one', 'two']) {
      await cluster.hv.createVm(vm, [8 * MiB])
      await cluster.hv.write(vm, 0, 0, data)
    }
    await a.service.protect({
      vm: 'one',
      rpoSeconds: 5,
      rtoSeconds: 60,
      to: ['B'],
      chain: false,
      copies: null,
    })
    await until('one on B', async () => (await b.store.lastPoint('one')) ?? null)
    await a.service.protect({
      vm: 'two',
      rpoSeconds: 5,
      rtoSeconds: 60,
      to: ['B'],
      chain: false,
      copies: null,
    })
    await until('two on B', async () => (await b.store.lastPoint('two')) ?? null)
    const one = a.service.protection('one').targets[0]
    const two = a.service.protection('two').targets[0]
    expect(one.payloadBytes).toBeGreaterThanOrEqual(6 * MiB)
    expect(two.payloadBytes).toBe(0)
    expect((await restoredBytes(b, 'two', 0, data.length)).equals(data)).toBe(true)
  })

  it('protection survives a restart of the source and continues incrementally', async () => {
    const a = await makeNode('A', 's1', true)
    const b = await makeNode('B', 's2', false)
    await cluster.hv.createVm('web', [8 * MiB])
    await cluster.hv.write('web', 0, 0, randomBytes(8 * MiB))
    await a.service.protect({
      vm: 'web',
      rpoSeconds: 5,
      rtoSeconds: 60,
      to: ['B'],
      chain: false,
      copies: null,
    })
    await until('seed', async () => (await b.store.lastPoint('web')) ?? null)
    await a.service.stop()
    const restarted = new ReplicationService({
      dir: a.dir,
      mesh: a.mesh,
      store: a.store,
      hypervisor: cluster.hv.asHypervisor(),
      logger:
        a.service === undefined
          ? { info() {}, warn() {} }
          : {
              info: (o: object, m?: string) =>
                a.logs.push({ level: 'info', obj: o as Record<string, unknown>, msg: m }),
              warn: (o: object, m?: string) =>
                a.logs.push({ level: 'warn', obj: o as Record<string, unknown>, msg: m }),
            },
    })
    a.service = restarted
    await restarted.start()
    const w = randomBytes(4096)
    await cluster.hv.write('web', 0, 4 * MiB, w)
    const t0 = Date.now()
    await until('write after restart', async () => {
      const last = await b.store.lastPoint('web')
      return last && last.time >= t0 && (await restoredBytes(b, 'web', 4 * MiB, 4096, last.seq)).equals(w)
    }).catch((err) => {
      throw new Error(
        `${err.message}; A logged: ${a.logs
          .map((l) => `${l.msg} ${JSON.stringify(l.obj)}`)
          .slice(-6)
          .join(' | ')}`,
      )
    })
    // The restarted source read only what changed: no full chunk was resent for an unchanged disk.
    const t = restarted.protection('web').targets[0]
    expect(t.payloadBytes).toBeLessThan(1 * MiB)
  })
})

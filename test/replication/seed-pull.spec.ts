// Seeding and restore from several peers at once (issue 6): real chunk stores, a fake hypervisor,
// the in-memory network. A new copy pulls what the VM's existing replicas hold, from all of them at
// once, and the source pushes only the rest; a holder sending bad chunks is routed around; a node
// without the point restores it from the holders.
import { randomBytes } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { collectGarbage } from '../../src/chunkstore/index.js'
import {
  CHUNKS_PROTOCOL_1_0,
  type ChunksMessage,
  decodeChunksMessage,
  decodePointsMessage,
  encodeChunksMessage,
  encodeFrame,
  encodePointsMessage,
  FrameDecoder,
  FrameError,
  MessageChannel,
  POINTS_PROTOCOL,
} from '../../src/replication/index.js'
import type { MemoryNode } from './helpers/memory-network.js'
import { type TestNode, TestNodes, until } from './helpers/nodes.js'

const MiB = 1024 * 1024
const CHUNK = 256 * 1024

let cluster: TestNodes

const makeNode = (name: string, withHv = false) => cluster.node(name, { hypervisor: withHv })

/** A member that claims (in gossip) to hold `vm` and answers every get with garbage. */
function liar(name: string, vm: string): MemoryNode {
  const node = cluster.net.node(name, `site-${name}`)
  node.setReplicas([{ vm, lastPoint: { seq: 1, time: Date.now() + 60_000 }, epoch: 0 }])
  node.handle(CHUNKS_PROTOCOL_1_0, async (stream) => {
    const ch = new MessageChannel<ChunksMessage>(stream, encodeChunksMessage, decodeChunksMessage)
    for (;;) {
      const m = await ch.next()
      if (m === null) break
      if (m.type !== 'get') continue
      for (const id of m.ids) await ch.send({ type: 'chunk', id, bytes: randomBytes(CHUNK) })
      await ch.send({ type: 'missing', req: m.req, ids: [] })
    }
    await ch.end()
  })
  return node
}

const protect = (n: TestNode, to: string[]) =>
  n.service.protect({ vm: 'web', rpoSeconds: 2, rtoSeconds: 120, to, chain: false, copies: null })

/**
 * A protects web (16 MiB, 8 MiB of data) to `first`, which seed; then A protects it to C only,
 * while C is unreachable, and 2 MiB more are written: C's seed finds 8 MiB on the old replicas and
 * 2 MiB only on A.
 */
async function thirdCopy(
  first: TestNode[],
): Promise<{ a: TestNode; c: TestNode; old: Buffer; fresh: Buffer }> {
  const a = cluster.nodes.find((n) => n.name === 'A') as TestNode
  const c = await makeNode('C')
  await cluster.hv.createVm('web', [16 * MiB])
  const old = randomBytes(8 * MiB)
  await cluster.hv.write('web', 0, 0, old)
  await protect(
    a,
    first.map((n) => n.name),
  )
  for (const n of first) await until(`seed on ${n.name}`, async () => n.store.lastPoint('web'))
  // C answers no points stream until the write is done (A's first cycles to it fail, then retry).
  const points = c.mesh.handlers.get(POINTS_PROTOCOL)
  c.mesh.handlers.delete(POINTS_PROTOCOL)
  await protect(a, ['C'])
  const fresh = randomBytes(2 * MiB)
  await cluster.hv.write('web', 0, 12 * MiB, fresh)
  if (points) c.mesh.handle(POINTS_PROTOCOL, points)
  await until('seed on C', async () => c.store.lastPoint('web'), 30_000)
  return { a, c, old, fresh }
}

async function restoreFile(n: TestNode, out: string, batchIds?: number) {
  const r = await n.service.restore('web', { out, format: 'raw', batchIds })
  return { r, bytes: await readFile(out) }
}

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-seedpull-')
})

afterEach(() => cluster.close())

describe('seeding from several peers at once', () => {
  it('a third copy pulls from both existing replicas at once; the source pushes only the rest', async () => {
    await makeNode('A', true)
    const b = await makeNode('B')
    const d = await makeNode('D')
    const { a, c, old, fresh } = await thirdCopy([b, d])

    const [seed] = c.service.seedStats()
    console.log('seed of web on C:', JSON.stringify(seed))
    expect(seed).toMatchObject({ vm: 'web', source: 'A', committed: true })
    // 8 MiB = 32 chunks on B and D; the 2 MiB written later (8 chunks) only on A.
    expect(seed.pulled).toBe(32)
    expect(seed.byPeer.B.chunks).toBeGreaterThan(0)
    expect(seed.byPeer.D.chunks).toBeGreaterThan(0)
    expect(seed.byPeer.B.chunks + seed.byPeer.D.chunks).toBe(32)
    expect(seed.leftToSource).toBe(8)
    const toC = a.service.protection('web').targets.find((t) => t.peer === 'C')
    expect(toC?.chunksSent).toBe(8)

    // C holds the whole disk: restored, it equals the source's.
    const { bytes } = await restoreFile(c, join(cluster.root, 'c.raw'))
    expect(bytes.subarray(0, 8 * MiB).equals(old)).toBe(true)
    expect(bytes.subarray(12 * MiB, 14 * MiB).equals(fresh)).toBe(true)
    expect(bytes.equals(await cluster.hv.read('web', 0, 0, 16 * MiB))).toBe(true)
  }, 60_000)

  it('a holder sending bad chunks is charged and routed around; nothing bad is stored', async () => {
    await makeNode('A', true)
    const b = await makeNode('B')
    liar('L', 'web')
    const { a, c } = await thirdCopy([b])

    const [seed] = c.service.seedStats()
    console.log('seed of web on C with a liar:', JSON.stringify(seed))
    expect(seed.byPeer.L.chunks).toBe(0)
    expect(seed.byPeer.L.bad).toBeGreaterThan(0)
    // After its first bad chunks, the liar is asked nothing more in this seed.
    expect(seed.dropped).toEqual(['L'])
    expect(seed.byPeer.L.bad).toBeLessThanOrEqual(16)
    expect(seed.byPeer.B.chunks).toBe(32)
    expect(seed.leftToSource).toBe(8)
    expect(a.service.protection('web').targets.find((t) => t.peer === 'C')?.chunksSent).toBe(8)
    expect(c.logs.some((l) => /from L failed verification/.test(l.msg ?? ''))).toBe(true)
    const { bytes } = await restoreFile(c, join(cluster.root, 'c.raw'))
    expect(bytes.equals(await cluster.hv.read('web', 0, 0, 16 * MiB))).toBe(true)
  }, 60_000)
})

describe('points fetch frame', () => {
  const decode = (bytes: Uint8Array) => {
    const d = new FrameDecoder()
    d.push(bytes)
    const f = d.next()
    if (!f) throw new Error('no frame')
    return decodePointsMessage(f)
  }
  it('round-trips a fetch of a given point and of the newest', () => {
    for (const m of [
      { type: 'fetch' as const, vm: 'web', seq: 7 },
      { type: 'fetch' as const, vm: 'web', seq: null },
    ])
      expect(decode(encodePointsMessage(m))).toEqual(m)
  })
  it('refuses a fetch with a bad VM name or sequence number', () => {
    expect(() => decode(encodeFrame(8, { vm: '../etc', seq: 1 }))).toThrow(FrameError)
    expect(() => decode(encodeFrame(8, { vm: 'web', seq: -1 }))).toThrow(FrameError)
    expect(() => decode(encodeFrame(8, { vm: 'web', seq: 1, extra: true }))).toThrow(FrameError)
  })
})

describe('restore from peers', () => {
  it('a node without the point fetches it and its chunks from the holders, several at once', async () => {
    await makeNode('A', true)
    const b = await makeNode('B')
    const { a } = await thirdCopy([b])
    const e = await makeNode('E')
    expect(await e.store.lastPoint('web')).toBeUndefined()

    // 40 distinct data chunks, looked up and pulled 16 at a time: three rounds, counted as one.
    const { r, bytes } = await restoreFile(e, join(cluster.root, 'e.raw'), 16)
    console.log('restore on E:', JSON.stringify(r.pulled))
    expect(bytes.equals(await cluster.hv.read('web', 0, 0, 16 * MiB))).toBe(true)
    // The newest point is C's; B holds the 8 MiB of older data too and serves part of it.
    expect(r.pulled?.pointFrom).toBe('C')
    expect(r.pulled?.chunks).toBe(40)
    expect(r.pulled?.byPeer.B.chunks).toBeGreaterThan(0)
    expect(r.pulled?.byPeer.C.chunks).toBeGreaterThan(0)
    // E fetched for a restore only: it holds no point and publishes no replica.
    expect(await e.store.lastPoint('web')).toBeUndefined()
    expect(e.mesh.replicasPublished).toEqual([])

    // The source itself holds no point of its VM in its store: it restores from its replicas.
    const fromA = await restoreFile(a, join(cluster.root, 'a.raw'))
    expect(fromA.bytes.equals(bytes)).toBe(true)
    // An explicit older point is fetched from the holder that has it (B's first point).
    const older = await e.service.restore('web', { seq: 1, out: join(cluster.root, 'e1.raw'), format: 'raw' })
    expect(older.point.seq).toBe(1)

    // A fetched point must carry its source's signature: once A is no longer a member, no
    // holder's copy of A's points is used.
    a.mesh.revoked = true
    const refused = restoreFile(e, join(cluster.root, 'e2.raw')).then(() => 'restored')
    await expect(refused).rejects.toThrow(/not a current member/)
  }, 60_000)

  it('a held point is pinned while it is restored: retention running meanwhile keeps it', async () => {
    const a = await makeNode('A', true)
    const b = await makeNode('B')
    await cluster.hv.createVm('web', [16 * MiB])
    const old = randomBytes(8 * MiB)
    await cluster.hv.write('web', 0, 0, old)
    await protect(a, ['B'])
    await until('seed on B', async () => b.store.lastPoint('web'))
    // B's first point holds the old 8 MiB only; the next adds 2 MiB at 12 MiB.
    await cluster.hv.write('web', 0, 12 * MiB, randomBytes(2 * MiB))
    await until('a second point on B', async () => ((await b.store.lastPoint('web'))?.seq ?? 0) > 1)
    const expected = Buffer.concat([old, Buffer.alloc(8 * MiB)])
    const out = join(cluster.root, 'b1.raw')
    let done = false
    const restoring = b.service.restore('web', { seq: 1, out, format: 'raw', batchIds: 1 }).finally(() => {
      done = true
    })
    // Collections that ran wholly while the restore pinned the point must all pass it over. (The
    // pin is released before the restore resolves: a last run may then delete it, rightly.)
    let underPin = 0
    while (!done) {
      const pinnedBefore = b.store.isPointPinned('web@1')
      const gc = await collectGarbage(b.store, { policy: { keepLast: 1 } })
      if (!pinnedBefore || !b.store.isPointPinned('web@1')) continue
      underPin++
      expect(gc.deletedPoints).toEqual([])
    }
    const r = await restoring
    expect(r.pulled).toBeUndefined()
    expect((await readFile(out)).equals(expected)).toBe(true)
    expect(underPin).toBeGreaterThan(0)
    // Released, the point goes (in the loop's last run, or now).
    await collectGarbage(b.store, { policy: { keepLast: 1 } })
    expect((await b.store.listPoints('web')).map((p) => p.seq)).not.toContain(1)
  }, 60_000)

  it('a restore that fails on the way leaves no file', async () => {
    await makeNode('A', true)
    const b = await makeNode('B')
    await thirdCopy([b])
    const out = join(cluster.root, 'stopped.raw')
    const stop = new AbortController()
    stop.abort(new Error('stopped by the operator'))
    await expect(b.service.restore('web', { out, format: 'raw', signal: stop.signal })).rejects.toThrow(
      /stopped by the operator/,
    )
    await expect(stat(out)).rejects.toThrow(/ENOENT/)
  })

  it('names the VM when no peer holds it', async () => {
    const e = await makeNode('E')
    await makeNode('B')
    await expect(
      e.service.restore('web', { out: join(cluster.root, 'x.raw'), format: 'raw' }),
    ).rejects.toThrow(/no recovery point of VM 'web'/)
  })
})

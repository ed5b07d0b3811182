// A target's point continues the source's history only when it is the same point: same seq and
// same epoch. After a failover, the old owner's point N on a replica and the new owner's point N
// are different points; treating one as the base of the other would commit a wrong manifest (and
// now fails the signature check, which covers the roots). Protector cycles driven by hand, real
// stores, the in-memory network.
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type ChunkStore, materialise } from '../../src/chunkstore/index.js'
import { createDisk, openDisk } from '../../src/hyperv/index.js'
import { LagTracker, type Protection, ProtectionFiles, VmProtector } from '../../src/replication/index.js'
import type { MemoryNode } from './helpers/memory-network.js'
import { TestNodes } from './helpers/nodes.js'

const MiB = 1024 * 1024

type Log = { obj: Record<string, unknown>; msg?: string }

let cluster: TestNodes

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-epoch-')
})

afterEach(() => cluster.close())

const target = (name: string) => cluster.node(name, { site: name })

/** A protector of `web` from `mesh` to `targets`, its state in `dir` (shared by its instances). */
function protector(mesh: MemoryNode, dir: string, vmId: string, targets: string[], logs: Log[]) {
  const protection: Protection = {
    vm: 'web',
    vmId,
    rpoSeconds: 5,
    rtoSeconds: 60,
    to: targets,
    chain: false,
    copies: null,
    targets,
    createdAt: Date.now(),
  }
  const log = (obj: object, msg?: string) => logs.push({ obj: obj as Record<string, unknown>, msg })
  return new VmProtector(protection, {
    network: mesh,
    hypervisor: cluster.hv.asHypervisor(),
    files: new ProtectionFiles(dir),
    lag: new LagTracker(),
    logger: { info: log, warn: log },
    hashAlgorithm: 'blake3',
    sign: (kind, value) => mesh.sign(kind, value),
  })
}

async function cycle(p: VmProtector): Promise<boolean> {
  await p.load()
  return p.cycle()
}

const modeOf = (logs: Log[], peer: string, seq: number) =>
  logs.find((l) => l.obj.peer === peer && l.obj.seq === seq && 'mode' in l.obj)?.obj.mode

async function diskOf(store: ChunkStore, dir: string, seq: number, length: number): Promise<Buffer> {
  const out = join(dir, `restore-${seq}.raw`)
  const point = await store.getPoint(`web@${seq}`)
  const d = await createDisk(out, { format: 'raw', virtualSize: point.disks[0].virtualSize })
  await materialise(store, point, 0, d, { targetIsZero: true })
  await d.close()
  const r = await openDisk(out, { format: 'raw' })
  const b = Buffer.alloc(length)
  await r.read(b, 0, length)
  await r.close()
  return b
}

describe('protector: a continuation needs the same epoch, not only the same seq', () => {
  it("a target holding the old owner's point N gets a full offer from the new owner at its own point N, and ends up with the right data", async () => {
    const b = await target('B')
    const d = await target('D')
    const aMesh = cluster.net.node('A', 'A')
    const cMesh = cluster.net.node('C', 'C')
    const info = await cluster.hv.createVm('web', [4 * MiB])
    await cluster.hv.write('web', 0, 0, randomBytes(2 * MiB))

    // The old owner A (epoch 0) puts points 1 and 2 on B; point 2 holds write X.
    const aLogs: Log[] = []
    const aDir = join(cluster.root, 'A', 'replication')
    expect(await cycle(protector(aMesh, aDir, info.id, ['B'], aLogs))).toBe(true)
    await cluster.hv.write('web', 0, 2 * MiB + 8192, randomBytes(8192)) // X
    expect(await cycle(protector(aMesh, aDir, info.id, ['B'], aLogs))).toBe(true)
    // Each protector instance here is a restart: seqs go on above the block the last one reserved.
    const onBBefore = await b.store.lastPoint('web')
    expect(onBBefore).toMatchObject({ epoch: 0, source: 'A' })
    const n = onBBefore!.seq

    // The new owner C (epoch 1, B cut off meanwhile) writes Y and puts its own points on D, the
    // second under the same number N (its seqs follow the same schedule as A's).
    const cDir = join(cluster.root, 'C', 'replication')
    const files = new ProtectionFiles(cDir)
    const { state } = await files.readState('web')
    await files.writeState('web', { ...state, epoch: 1 }, null)
    const cLogs: Log[] = []
    await cluster.hv.write('web', 0, 3 * MiB, randomBytes(4096)) // Y
    expect(await cycle(protector(cMesh, cDir, info.id, ['D'], cLogs))).toBe(true)
    await cluster.hv.write('web', 0, 3 * MiB + 65536, randomBytes(4096)) // Y2
    expect(await cycle(protector(cMesh, cDir, info.id, ['D'], cLogs))).toBe(true)
    expect(await d.store.lastPoint('web')).toMatchObject({ seq: n, epoch: 1, source: 'C' })
    expect((await files.readState('web')).state).toMatchObject({ seq: n, epoch: 1, seqEpoch: 1 })

    // B is back. Both it and C are "at point N", but B's point N is A's (epoch 0): no delta.
    await cluster.hv.write('web', 0, MiB, randomBytes(4096)) // Z
    expect(await cycle(protector(cMesh, cDir, info.id, ['B'], cLogs))).toBe(true)
    const onB = await b.store.lastPoint('web')
    expect(onB).toMatchObject({ epoch: 1, source: 'C' })
    expect(onB!.seq).toBeGreaterThan(n)
    expect(modeOf(cLogs, 'B', onB!.seq)).toBe('full')
    const now = await cluster.hv.read('web', 0, 0, 4 * MiB)
    expect((await diskOf(b.store, join(cluster.root, 'B'), onB!.seq, 4 * MiB)).equals(now)).toBe(true)
    // Only what B lacked travelled: Y, Y2 and Z (a few chunks), not the disk.
    expect(
      Number(cLogs.find((l) => l.obj.peer === 'B' && l.obj.seq === onB!.seq && 'mode' in l.obj)?.obj.bytes),
    ).toBeLessThanOrEqual(4 * 256 * 1024)

    // D holds C's own point N (same epoch): a continuation, from the change log of the points
    // after N (their seqs skip numbers: the log names every point all the same).
    expect(await cycle(protector(cMesh, cDir, info.id, ['D'], cLogs))).toBe(true)
    const onD = await d.store.lastPoint('web')
    expect(onD!.seq).toBeGreaterThan(onB!.seq)
    expect(modeOf(cLogs, 'D', onD!.seq)).toBe('log')
    expect(b.logs.filter((l) => /refused point/.test(l.msg ?? ''))).toEqual([])
  })
})

// ReplicationService.stop() waits for the after-commit work of points it committed (the replica
// record and the replica disk apply): nothing writes to the node's folder or store once stop()
// returned, and no apply starts afterwards.
import { randomBytes } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { afterEach, beforeEach, expect, it } from 'vitest'
import type { RecoveryPoint } from '../../src/chunkstore/index.js'
import { TestNodes, until } from './helpers/nodes.js'

const MiB = 1024 * 1024

let cluster: TestNodes

const makeNode = (name: string, site: string) => cluster.node(name, { site, hypervisor: true })

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-stop-')
})

afterEach(() => cluster.close())

it('stop() returns only after the replica apply of a committed point is done, and starts none after', async () => {
  const a = await makeNode('A', 's1')
  const b = await makeNode('B', 's2')
  await cluster.hv.createVm('web', [8 * MiB])
  await cluster.hv.write('web', 0, 0, randomBytes(4 * MiB))

  // Hold B's after-commit work at the apply until released.
  let release!: () => void
  const gate = new Promise<void>((r) => {
    release = r
  })
  const entered: RecoveryPoint[] = []
  const apply = b.service.replicas.apply.bind(b.service.replicas)
  b.service.replicas.apply = async (point: RecoveryPoint) => {
    entered.push(point)
    await gate
    return apply(point)
  }

  await a.service.protect({ vm: 'web', rpoSeconds: 1, rtoSeconds: 30, to: ['B'], chain: false, copies: null })
  await until('a point committed on B, its apply pending', async () => entered.length > 0)
  await a.service.stop()

  let stopped = false
  const stopping = b.service.stop().then(() => {
    stopped = true
  })
  await new Promise((r) => setTimeout(r, 300))
  expect(stopped).toBe(false) // the apply is still to come

  release()
  await stopping
  const newest = Math.max(...entered.map((p) => p.seq))
  const record = await b.service.replicas.read('web')
  expect(record).toMatchObject({ appliedSeq: newest, applyingSeq: null })
  const disk = b.service.replicaDiskPath('web', 0)
  const before = await stat(disk)

  // After stop: an apply is refused, and nothing touches the disk or the record.
  await b.service.replicas.apply(entered[0])
  await new Promise((r) => setTimeout(r, 300))
  expect((await stat(disk)).mtimeMs).toBe(before.mtimeMs)
  expect(await b.service.replicas.read('web')).toEqual(record)
})

// Capacity in gossip (issue 7): a node's signed state carries the size of every VM it runs (CPUs,
// memory, disk bytes), so another node can place it when its host fails. Real node processes on
// loopback; the sizes seen on A are checked against B's own vm.json and `vm ls`.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTestMesh, type TestMesh, waitFor } from '../helpers/nodes.js'

interface GossipedVm {
  name: string
  state: string
  cpus?: number
  memoryBytes?: number
  diskBytes?: number
}

describe('node-state gossip carries VM sizes', () => {
  let mesh: TestMesh

  beforeAll(async () => {
    mesh = await createTestMesh(['A', 'B'])
  }, 180_000)

  afterAll(async () => {
    await mesh?.teardown()
  }, 60_000)

  it("shows B's VMs with CPUs, memory and disk bytes on A", { timeout: 120_000 }, async () => {
    const [a, b] = mesh.nodes
    const created = await mesh.cli(['vm', 'create', '--dir', b.dir, 'web1', '--size', '16M', '--disks', '2'])
    expect(created.code).toBe(0)
    const config = JSON.parse(await readFile(join(b.dir, 'vms', 'web1', 'vm.json'), 'utf8')) as {
      cpus?: number
      memoryBytes?: number
    }
    const ls = JSON.parse((await mesh.cli(['vm', 'ls', '--dir', b.dir, '--json'])).stdout) as Array<{
      name: string
      disks: Array<{ virtualSize: number }>
    }>
    const diskBytes = ls.find((v) => v.name === 'web1')!.disks.reduce((s, d) => s + d.virtualSize, 0)
    expect(diskBytes).toBe(2 * 16 * 2 ** 20)

    const seen = await waitFor(
      "web1's size in B's state on A",
      async () => {
        const states = await a.call<Array<{ peerId: string; vms: GossipedVm[] }>>('GET', '/mesh/states')
        return states.find((s) => s.peerId === b.peerId)?.vms.find((v) => v.name === 'web1' && v.diskBytes)
      },
      60_000,
      250,
    )
    expect(seen).toMatchObject({
      name: 'web1',
      state: 'stopped',
      cpus: config.cpus ?? 1,
      memoryBytes: config.memoryBytes ?? 512 * 2 ** 20,
      diskBytes,
    })
  })
})

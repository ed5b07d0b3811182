// Issue 5, end to end: six real node processes in three sites on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTestMesh, type TestMesh, type TestNode, waitFor } from '../helpers/nodes.js'

interface PeerRow {
  peerId: string
  site: string
  state: string
  nodeState: {
    site: string
    capacity: { cpus: number; diskFreeBytes: number; memoryTotalBytes: number }
  } | null
}

describe('mesh of 6 nodes in 3 sites', { timeout: 240_000 }, () => {
  let mesh: TestMesh
  beforeAll(async () => {
    mesh = await createTestMesh(['paris', 'paris', 'lyon', 'lyon', 'nice', 'nice'])
  }, 300_000)
  afterAll(async () => {
    await mesh?.teardown()
  })

  const allAlive = async (node: TestNode, expected: number) => {
    const s = await node.status()
    return s.peers.length === expected && s.peers.every((p) => p.state === 'alive')
  }

  it('all nodes see each other alive, with every node site and capacity gossiped everywhere', async () => {
    const started = Date.now()
    for (const node of mesh.nodes)
      await waitFor(`${node.name} sees 5 alive peers`, () => allAlive(node, 5), 60_000)
    const ids = new Map(mesh.nodes.map((n) => [n.peerId, n]))
    for (const node of mesh.nodes) {
      const peers = await waitFor(`${node.name} holds 5 gossiped states`, async () => {
        const rows = await node.call<PeerRow[]>('GET', '/mesh/peers')
        return rows.filter((r) => r.nodeState).length === 5 ? rows : undefined
      })
      for (const p of peers) {
        const other = ids.get(p.peerId)
        expect(other, `${node.name} lists an unknown peer ${p.peerId}`).toBeDefined()
        expect(p.site).toBe(other!.site)
        expect(p.nodeState!.site).toBe(other!.site)
        expect(p.nodeState!.capacity.cpus).toBeGreaterThan(0)
        expect(p.nodeState!.capacity.diskFreeBytes).toBeGreaterThan(0)
        expect(p.nodeState!.capacity.memoryTotalBytes).toBeGreaterThan(0)
      }
    }
    console.log(`6 nodes all alive with gossip everywhere ${Date.now() - started} ms after the last start`)
  })

  it('status --json has exactly the DESIGN.md §7 shape', async () => {
    const node = mesh.nodes[2]
    const r = await mesh.cli(['status', '--dir', node.dir, '--json'])
    expect(r.code).toBe(0)
    const s = JSON.parse(r.stdout)
    expect(Object.keys(s).sort()).toEqual(['addrs', 'peerId', 'peers', 'site', 'vms'])
    expect(s.site).toBe('lyon')
    expect(
      s.addrs.every((a: string) => a.startsWith('/ip4/127.0.0.1/tcp/') && a.endsWith(`/p2p/${s.peerId}`)),
    ).toBe(true)
    expect(s.peers).toHaveLength(5)
    for (const p of s.peers) expect(Object.keys(p).sort()).toEqual(['peerId', 'site', 'state'])
    expect(Array.isArray(s.vms)).toBe(true)
  })

  it('a second start on the same folder refuses with a clear error', async () => {
    const r = await mesh.cli(['start', '--dir', mesh.nodes[1].dir])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^replimesh: a node is already running on .* \(pid \d+\)/)
    expect((await mesh.nodes[1].status()).peers).toHaveLength(5)
  })

  it('a killed node is suspect then down on every other node, and alive again when it returns', async () => {
    const victim = mesh.nodes[3]
    const others = mesh.nodes.filter((n) => n !== victim)
    const killedAt = Date.now()
    await victim.kill()
    for (const node of others)
      await waitFor(
        `${node.name} reports ${victim.name} down`,
        async () => (await node.status()).peers.find((p) => p.peerId === victim.peerId)?.state === 'down',
        60_000,
      )
    const downMs = Date.now() - killedAt
    for (const node of others) {
      const changes = node
        .jsonLogs()
        .filter((l) => l.msg === 'peer state changed' && l.peer === victim.peerId)
        .map((l) => l.state)
      expect(changes.slice(-2), `${node.name} went suspect then down`).toEqual(['suspect', 'down'])
      const down = node.jsonLogs().findLast((l) => l.msg === 'peer state changed' && l.peer === victim.peerId)
      // The down verdict is confirmed by nodes of more than one site.
      expect((down!.downSites as string[]).length).toBeGreaterThanOrEqual(2)
    }
    const restartedAt = Date.now()
    await victim.start()
    for (const node of others)
      await waitFor(
        `${node.name} reports ${victim.name} alive again`,
        async () => (await node.status()).peers.find((p) => p.peerId === victim.peerId)?.state === 'alive',
        60_000,
      )
    await waitFor(`${victim.name} sees everyone alive`, () => allAlive(victim, 5), 60_000)
    console.log(
      `down everywhere ${downMs} ms after kill; alive everywhere ${Date.now() - restartedAt} ms after restart`,
    )
  })

  it('a node of another mesh is refused and never listed', async () => {
    const foreign = await createTestMesh(['mars'])
    try {
      const target = mesh.nodes[0]
      const address = (await target.status()).addrs[0]
      const r = await foreign.cli(['connect', '--dir', foreign.nodes[0].dir, address])
      expect(r.code).toBe(1)
      expect(r.stderr).toMatch(/^replimesh: could not connect to .*not a member/)
      await new Promise((res) => setTimeout(res, 3000))
      for (const node of mesh.nodes) {
        const s = await node.status()
        expect(s.peers.map((p) => p.peerId)).not.toContain(foreign.nodes[0].peerId)
      }
      expect((await foreign.nodes[0].status()).peers).toEqual([])
      expect(
        target
          .jsonLogs()
          .some((l) => l.peer === foreign.nodes[0].peerId && String(l.msg).startsWith('refused peer')),
      ).toBe(true)
      // The gater remembers it: a second attempt is refused too, and the mesh keeps serving.
      const again = await foreign.cli(['connect', '--dir', foreign.nodes[0].dir, address])
      expect(again.code).toBe(1)
      expect((await target.status()).peers).toHaveLength(5)
    } finally {
      await foreign.teardown()
    }
  })
})

import { generateKeyPair } from '@libp2p/crypto/keys'
import { afterEach, describe, expect, it } from 'vitest'
import { type MeshNode, NotMemberError, signRevocationList } from '../../src/mesh/index.js'
import { makeNode, waitFor } from './helpers.js'

describe('MeshNode (in process, real sockets on loopback)', () => {
  const nodes: MeshNode[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.stop()))
  })

  it('members prove membership, gossip state and see each other alive', async () => {
    const meshKey = await generateKeyPair('Ed25519')
    const a = await makeNode(meshKey, 'a')
    nodes.push(a)
    await a.start()
    const b = await makeNode(meshKey, 'b', { bootstrap: a.addrs() })
    const c = await makeNode(meshKey, 'c', { bootstrap: a.addrs() })
    nodes.push(b, c)
    await b.start()
    await c.start()
    for (const n of [a, b, c])
      await waitFor(`${n.site} sees 2 alive peers with state`, () => {
        const peers = n.peers()
        return (
          peers.length === 2 && peers.every((p) => p.state === 'alive' && p.nodeState?.capacity.cpus === 2)
        )
      })
    // b and c found each other through gossip of addresses, not only through a.
    await waitFor('b connected to c', () => b.peers().some((p) => p.peerId === c.peerId && p.connected))
  })

  it('a node of another mesh is refused and never listed', async () => {
    const meshKey = await generateKeyPair('Ed25519')
    const otherKey = await generateKeyPair('Ed25519')
    const a = await makeNode(meshKey, 'a')
    const x = await makeNode(otherKey, 'x')
    nodes.push(a, x)
    await a.start()
    await x.start()
    await expect(x.connect(a.addrs()[0])).rejects.toBeInstanceOf(NotMemberError)
    await new Promise((r) => setTimeout(r, 500))
    expect(a.peers()).toEqual([])
    expect(x.peers()).toEqual([])
  })

  it('mDNS finds a member on the LAN without bootstrap; another mesh on the LAN is not listed', async () => {
    const meshKey = await generateKeyPair('Ed25519')
    const lan = { mdns: true, listen: ['/ip4/0.0.0.0/tcp/0'] }
    const a = await makeNode(meshKey, 'a', lan)
    const b = await makeNode(meshKey, 'a', lan)
    const x = await makeNode(await generateKeyPair('Ed25519'), 'x', lan)
    nodes.push(a, b, x)
    await Promise.all([a.start(), b.start(), x.start()])
    await waitFor(
      'a finds b by mDNS',
      () => a.peers().some((p) => p.peerId === b.peerId && p.state === 'alive'),
      30_000,
    )
    expect(a.peers().map((p) => p.peerId)).not.toContain(x.peerId)
    expect(x.peers()).toEqual([])
  })

  it('a revoked member is dropped and refused everywhere once the signed list spreads', async () => {
    const meshKey = await generateKeyPair('Ed25519')
    const a = await makeNode(meshKey, 'a')
    nodes.push(a)
    await a.start()
    const b = await makeNode(meshKey, 'b', { bootstrap: a.addrs() })
    const c = await makeNode(meshKey, 'c', { bootstrap: a.addrs() })
    nodes.push(b, c)
    await Promise.all([b.start(), c.start()])
    await waitFor('b sees c alive', () => b.peers().some((p) => p.peerId === c.peerId && p.state === 'alive'))
    await a.revoke(await signRevocationList(meshKey, [c.peerId], 1))
    await waitFor('a and b forget c', () =>
      [a, b].every((n) => n.peers().every((p) => p.peerId !== c.peerId) && n.revocationSeq === 1),
    )
    await waitFor('b hangs up on c', () => !c.peers().find((p) => p.peerId === b.peerId)?.connected)
    await expect(c.connect(b.addrs()[0])).rejects.toThrow()
    await new Promise((r) => setTimeout(r, 500))
    expect(b.peers().map((p) => p.peerId)).not.toContain(c.peerId)
    // A forged list (not signed by the mesh key) is ignored.
    await expect(
      b.revoke(await signRevocationList(await generateKeyPair('Ed25519'), [a.peerId], 2)),
    ).rejects.toThrow()
    expect(b.peers().map((p) => p.peerId)).toContain(a.peerId)
  })
})

// The epoch protocol between coordinators: over an in-memory network with partitions (every
// interleaving we care about, fast), and over real mesh nodes on loopback (libp2p, Noise,
// membership proof) with the control protocol's real frames.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { afterEach, describe, expect, it } from 'vitest'
import {
  CONTROL_PROTOCOL,
  type EpochClaim,
  EpochCoordinator,
  EpochLedger,
  EpochQuorumError,
  type Member,
  meshControlTransport,
} from '../../src/failover/index.js'
import { encodeFrame, type MeshNode } from '../../src/mesh/index.js'
import { makeNode, waitFor } from '../mesh/helpers.js'
import { FakeNet } from './helpers.js'

function cluster(spec: Record<string, string>) {
  const net = new FakeNet()
  const all: Member[] = Object.entries(spec).map(([peerId, site]) => ({ peerId, site }))
  const saved = new Map<string, string>()
  const fenced: Array<[string, EpochClaim]> = []
  const nodes = new Map<string, EpochCoordinator>()
  for (const m of all) {
    net.sites.set(m.peerId, m.site)
    const c = new EpochCoordinator({
      self: m,
      transport: net.transport(m.peerId),
      members: () => all.filter((x) => x.peerId !== m.peerId),
      alive: () =>
        all.filter((x) => x.peerId !== m.peerId && !net.blocked(m.peerId, x.peerId)).map((x) => x.peerId),
      persist: async (state) => void saved.set(m.peerId, JSON.stringify(state)),
      onClaim: (claim) => void fenced.push([m.peerId, claim]),
    })
    c.start()
    nodes.set(m.peerId, c)
  }
  return { net, nodes, saved, fenced }
}

describe('EpochCoordinator (in-memory network)', () => {
  it('claims an epoch with a quorum, persists promises, and announces the owner', async () => {
    const { nodes, saved, fenced } = cluster({ a1: 'A', a2: 'A', b1: 'B', c1: 'C' })
    const r = await nodes.get('c1')!.claim('web1')
    expect(r.claim).toEqual({ vm: 'web1', epoch: 1, owner: 'c1' })
    expect(r.quorum.reached).toBe(true)
    expect(r.granted.sort()).toEqual(['a1', 'a2', 'b1', 'c1'])
    for (const id of ['a1', 'a2', 'b1', 'c1']) {
      expect(nodes.get(id)!.ledger.current('web1')).toEqual(r.claim)
      expect(new EpochLedger(JSON.parse(saved.get(id)!)).current('web1')).toEqual(r.claim)
    }
    expect(fenced.map(([id]) => id).sort()).toEqual(['a1', 'a2', 'b1', 'c1'])
  })

  it('the majority side of a partition can promote; the minority side cannot', async () => {
    const { net, nodes } = cluster({ a1: 'A', b1: 'B', c1: 'C', c2: 'C' })
    await nodes.get('b1')!.claim('db1')
    // Site B is cut from A and C.
    for (const x of ['a1', 'c1', 'c2']) net.cut.add(['b1', x].sort().join('|'))
    const won = await nodes.get('c1')!.claim('db1')
    expect(won.claim).toEqual({ vm: 'db1', epoch: 2, owner: 'c1' })
    const lost = nodes.get('b1')!.claim('db1')
    await expect(lost).rejects.toBeInstanceOf(EpochQuorumError)
    await expect(nodes.get('b1')!.claim('db1')).rejects.toThrow(
      /no quorum to make b1 the owner of db1 at epoch 3: 1 of 2 site votes; no answer from a1, c1, c2/,
    )
    // After healing, b1 learns the new owner when told and would fence itself.
    net.cut.clear()
    await nodes.get('c1')!.announce(won.claim, ['b1'])
    expect(nodes.get('b1')!.ledger.current('db1')).toEqual(won.claim)
  })

  it('racing promoters never both win an epoch (many random races)', async () => {
    for (let round = 0; round < 40; round++) {
      const { nodes } = cluster({ a1: 'A', a2: 'A', b1: 'B', c1: 'C', c2: 'C' })
      const racers = ['a1', 'b1', 'c2']
      const results = await Promise.allSettled(racers.map((id) => nodes.get(id)!.claim('w')))
      const winners = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.claim] : []))
      const byEpoch = new Map<number, Set<string>>()
      for (const w of winners) byEpoch.set(w.epoch, new Set([...(byEpoch.get(w.epoch) ?? []), w.owner]))
      for (const owners of byEpoch.values()) expect(owners.size).toBe(1)
      // Every node that learned an owner for epoch 1 learned the same one.
      const learned = new Set(
        [...nodes.values()]
          .map((n) => n.ledger.current('w'))
          .filter((c) => c?.epoch === 1)
          .map((c) => c!.owner),
      )
      expect(learned.size).toBeLessThanOrEqual(1)
    }
  })

  it('two sites need the witness to promote when one site is lost', async () => {
    const { net, nodes } = cluster({ a1: 'A', b1: 'B' })
    net.down.add('b1')
    await expect(nodes.get('a1')!.claim('w')).rejects.toBeInstanceOf(EpochQuorumError)
    // Now with a witness node (not a site member).
    const witnessNet = new FakeNet()
    const members: Member[] = [
      { peerId: 'a1', site: 'A' },
      { peerId: 'b1', site: 'B' },
    ]
    witnessNet.sites.set('a1', 'A').set('w1', 'W')
    witnessNet.down.add('b1')
    const witness = new EpochCoordinator({
      self: { peerId: 'w1', site: 'W' },
      transport: witnessNet.transport('w1'),
      members: () => members,
      alive: () => ['a1'],
      persist: async () => {},
    })
    witness.start()
    const a1 = new EpochCoordinator({
      self: members[0],
      transport: witnessNet.transport('a1'),
      members: () => [members[1]],
      alive: () => ['w1'],
      persist: async () => {},
      witness: { peerId: 'w1' },
    })
    a1.start()
    const r = await a1.claim('w')
    expect(r.quorum).toMatchObject({ reached: true, witnessCounted: true, agreeingSites: ['A'] })
  })
})

describe('control protocol over real mesh nodes', () => {
  const nodes: MeshNode[] = []
  const coordinators: EpochCoordinator[] = []
  afterEach(async () => {
    await Promise.all(coordinators.splice(0).map((c) => c.stop()))
    await Promise.all(nodes.splice(0).map((n) => n.stop()))
  })

  it('promotes with a quorum of three sites, then without the failed site', {
    timeout: 120_000,
  }, async () => {
    const meshKey = await generateKeyPair('Ed25519')
    const a = await makeNode(meshKey, 'A')
    nodes.push(a)
    await a.start()
    const b = await makeNode(meshKey, 'B', { bootstrap: a.addrs() })
    const c = await makeNode(meshKey, 'C', { bootstrap: a.addrs() })
    nodes.push(b, c)
    await Promise.all([b.start(), c.start()])
    for (const n of [a, b, c])
      await waitFor(
        `${n.site} sees two live peers`,
        () => n.peers().filter((p) => p.state === 'alive' && p.connected).length === 2,
        30_000,
      )
    const byId = new Map<string, EpochCoordinator>()
    for (const n of [a, b, c]) {
      const co = new EpochCoordinator({
        self: { peerId: n.peerId, site: n.site },
        transport: meshControlTransport(n),
        members: () => n.peers().map((p) => ({ peerId: p.peerId, site: p.site })),
        alive: () =>
          n
            .peers()
            .filter((p) => p.state !== 'down' && p.connected)
            .map((p) => p.peerId),
        persist: async () => {},
      })
      co.start()
      coordinators.push(co)
      byId.set(n.peerId, co)
    }
    expect(a.protocols()).toContain(CONTROL_PROTOCOL)

    const first = await byId.get(b.peerId)!.claim('web1')
    expect(first.claim).toEqual({ vm: 'web1', epoch: 1, owner: b.peerId })
    expect(first.granted.length).toBe(3)
    await waitFor(
      'announcement reached A and C',
      () =>
        byId.get(a.peerId)!.ledger.current('web1')?.owner === b.peerId &&
        byId.get(c.peerId)!.ledger.current('web1')?.owner === b.peerId,
      30_000,
    )

    // B fails; C promotes itself with A's promise (two of three sites).
    await byId.get(b.peerId)!.stop()
    await b.stop()
    nodes.splice(nodes.indexOf(b), 1)
    const second = await byId.get(c.peerId)!.claim('web1', { signal: AbortSignal.timeout(30_000) })
    expect(second.claim).toEqual({ vm: 'web1', epoch: 2, owner: c.peerId })
    expect(second.granted.sort()).toEqual([a.peerId, c.peerId].sort())
    expect(byId.get(a.peerId)!.ledger.current('web1')?.epoch).toBe(2)
  })

  it('a malformed control frame closes that stream, not the node', async () => {
    const meshKey = await generateKeyPair('Ed25519')
    const a = await makeNode(meshKey, 'A')
    nodes.push(a)
    await a.start()
    const b = await makeNode(meshKey, 'B', { bootstrap: a.addrs() })
    nodes.push(b)
    await b.start()
    await waitFor('b sees a', () => b.peers().some((p) => p.connected), 30_000)
    const co = new EpochCoordinator({
      self: { peerId: a.peerId, site: 'A' },
      transport: meshControlTransport(a),
      members: () => [],
      alive: () => [],
      persist: async () => {},
    })
    co.start()
    coordinators.push(co)
    const stream = await b.dialProtocol(a.peerId, CONTROL_PROTOCOL)
    stream.send(encodeFrame(new TextEncoder().encode('{"type":"promise","claim":{"vm":"x","epoch":-1}}')))
    await stream.close()
    const chunks: Uint8Array[] = []
    await expect(
      (async () => {
        for await (const chunk of stream) chunks.push(chunk instanceof Uint8Array ? chunk : chunk.subarray())
      })(),
    ).rejects.toThrow()
    // The node still answers a good request.
    const good = await meshControlTransport(b).request(a.peerId, { type: 'query', vm: 'x' })
    expect(good).toEqual({ type: 'known', highest: 0, current: null })
  })
})

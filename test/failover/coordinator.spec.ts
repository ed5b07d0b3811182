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
  EpochLostError,
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
    // Asked again, it raises from the owner it knows (epoch 1), not above its own failed promise.
    await expect(nodes.get('b1')!.claim('db1')).rejects.toThrow(
      /no quorum to make b1 the owner of db1 at epoch 2: 1 of 2 site votes; no answer from a1, c1, c2/,
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

  it('two promoters from the same stale view: exactly one wins epoch e+1, the other learns it lost', async () => {
    for (let round = 0; round < 40; round++) {
      const { nodes } = cluster({ a1: 'A', b1: 'B', c1: 'C' })
      await nodes.get('b1')!.claim('w') // b1 owns w at epoch 1, then fails (it stays a voter here)
      const results = await Promise.allSettled(
        ['a1', 'c1'].map((id) => nodes.get(id)!.claim('w', { previous: 'b1' })),
      )
      const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
      const lost = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []))
      expect(won).toHaveLength(1)
      expect(won[0].claim.epoch).toBe(2)
      expect(won[0].from).toBe(1)
      expect(lost).toHaveLength(1)
      expect(lost[0]).toBeInstanceOf(EpochLostError)
      const e = lost[0] as EpochLostError
      expect(e.winner).toMatchObject({ epoch: 2, owner: won[0].claim.owner })
      expect(e.message).toMatch(new RegExp(`lost w to ${won[0].claim.owner} \\(epoch 2`))
      // Nobody raised past the winner, and every node (the loser too) knows it.
      for (const n of nodes.values()) {
        expect(n.ledger.highest('w')).toBe(2)
        expect(n.ledger.current('w')).toEqual(won[0].claim)
      }
    }
  })

  // Three racers for epoch 2 over five nodes: votes split between them, and the ballots' retries
  // settle it. Exactly one owner is decided; a racer whose phase 1 saw it accepted completes it.
  it('racing exact-epoch claims across five nodes: exactly one winner, never a jump past the base', async () => {
    const winners = new Map<string, number>()
    let retried = 0
    for (let round = 0; round < 40; round++) {
      const { nodes } = cluster({ a1: 'A', a2: 'A', b1: 'B', c1: 'C', c2: 'C' })
      await nodes.get('b1')!.claim('w')
      const racers = ['a1', 'a2', 'c2']
      const results = await Promise.allSettled(
        racers.map((id) => nodes.get(id)!.claim('w', { previous: 'b1' })),
      )
      const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
      expect(won).toHaveLength(1)
      const winner = won[0].claim
      expect(winner.epoch).toBe(2)
      winners.set(winner.owner, (winners.get(winner.owner) ?? 0) + 1)
      if ((won[0].attempts ?? 1) > 1) retried++
      // Every loser names the winner, announced (it learned it, or completed it itself).
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') {
          expect(racers[i]).toBe(winner.owner)
          return
        }
        expect(r.reason, racers[i]).toBeInstanceOf(EpochLostError)
        expect((r.reason as EpochLostError).winner).toEqual({
          epoch: 2,
          owner: winner.owner,
          announced: true,
        })
      })
      for (const n of nodes.values()) {
        expect(n.ledger.highest('w')).toBe(2)
        expect(n.ledger.current('w')).toEqual(winner)
      }
    }
    // Any racer can win now (the one-phase vote only ever let c2 win, in 2 of 100 races).
    expect(winners.size).toBeGreaterThan(1)
    expect(retried).toBeGreaterThan(0)
  })

  // The split a one-phase race left for good: each racer's ballot accepted by two or one members,
  // no quorum anywhere. Retries, one after another, decide exactly one owner, and everyone else
  // learns that it lost to it (the one-phase protocol could never decide epoch 2 again).
  it('after a split of epoch e+1, a retry makes exactly one owner', async () => {
    const { nodes } = cluster({ a1: 'A', a2: 'A', b1: 'B', c1: 'C', c2: 'C' })
    await nodes.get('b1')!.claim('w')
    const from = (peerId: string) => ({ peerId, site: peerId[0].toUpperCase() })
    const base = { vm: 'w', epoch: 1, owner: 'b1' }
    const vote = async (voter: string, owner: string) => {
      const ballot = { round: 1, by: owner }
      const n = nodes.get(voter)!
      expect(
        await n.answer(from(owner), { type: 'prepare', vm: 'w', epoch: 2, from: 1, ballot, base }),
      ).toEqual({
        type: 'promised',
        ballot,
        accepted: null,
      })
      const claim = { vm: 'w', epoch: 2, owner }
      expect((await n.answer(from(owner), { type: 'accept', claim, from: 1, ballot, base })).type).toBe(
        'accepted',
      )
    }
    for (const [voter, owner] of [
      ['a1', 'a1'],
      ['a2', 'a2'],
      ['c2', 'c2'],
      ['b1', 'a1'],
      ['c1', 'a2'],
    ])
      await vote(voter, owner)
    // a1 retries at a higher ballot: the highest accepted ballot in its quorum's promises is
    // (1, c2), so c2 may have been chosen; a1 completes c2's win, announces it and reports the loss.
    const lost = await nodes
      .get('a1')!
      .claim('w', { previous: 'b1' })
      .catch((e: Error) => e)
    expect(lost).toBeInstanceOf(EpochLostError)
    expect((lost as EpochLostError).winner).toEqual({ epoch: 2, owner: 'c2', announced: true })
    expect((lost as Error).message).toMatch(
      /^a1 lost w to c2 \(epoch 2 is announced to it\): no quorum to make a1 the owner of w at epoch 2: 0 of 2 site votes/,
    )
    for (const n of nodes.values()) expect(n.ledger.current('w')).toEqual({ vm: 'w', epoch: 2, owner: 'c2' })
    // And the VM can be failed over again: c2 fails, a2 replaces it at epoch 3 in one ballot.
    const again = await nodes.get('a2')!.claim('w', { previous: 'c2' })
    expect(again.claim).toEqual({ vm: 'w', epoch: 3, owner: 'a2' })
    expect(again.attempts).toBe(1)
    for (const n of nodes.values()) expect(n.ledger.current('w')).toEqual(again.claim)
  })

  it('three sites, a1 and c1 claim at once: exactly one wins, the other loses naming it', async () => {
    const outcomes = new Map<string, number>()
    for (let round = 0; round < 40; round++) {
      const { nodes } = cluster({ a1: 'A', b1: 'B', c1: 'C' })
      await nodes.get('b1')!.claim('w')
      const results = await Promise.allSettled(
        ['a1', 'c1'].map((id) => nodes.get(id)!.claim('w', { previous: 'b1' })),
      )
      const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.claim] : []))
      const lost = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []))
      expect(won).toHaveLength(1)
      expect(lost).toHaveLength(1)
      expect(lost[0]).toBeInstanceOf(EpochLostError)
      expect((lost[0] as EpochLostError).winner).toEqual({ epoch: 2, owner: won[0].owner, announced: true })
      for (const n of nodes.values()) expect(n.ledger.current('w')).toEqual(won[0])
      outcomes.set(won[0].owner, (outcomes.get(won[0].owner) ?? 0) + 1)
    }
    expect([...outcomes.values()].reduce((a, b) => a + b)).toBe(40)
  })

  it('a member votes in instance e+1 only while it knows epoch e, and only above its promised ballot', async () => {
    const { nodes } = cluster({ a1: 'A', b1: 'B', c1: 'C' })
    await nodes.get('b1')!.claim('w') // everyone knows b1 at epoch 1
    const a1 = nodes.get('a1')!
    const x = { peerId: 'x', site: 'X' }
    const prepare = (epoch: number, from: number, round: number, by = 'x') =>
      a1.answer(x, { type: 'prepare', vm: 'w', epoch, from, ballot: { round, by } })
    const accept = (owner: string, round: number, by = 'x') =>
      a1.answer(x, { type: 'accept', claim: { vm: 'w', epoch: 2, owner }, from: 1, ballot: { round, by } })
    const b1At1 = { vm: 'w', epoch: 1, owner: 'b1' }
    // Not from the epoch it knows: refused, and told the owner it knows.
    expect(await prepare(3, 2, 1)).toEqual({
      type: 'refused',
      why: 'behind',
      current: b1At1,
      committed: b1At1,
    })
    // Not exactly one above its base: refused.
    expect(await prepare(3, 1, 1)).toMatchObject({ type: 'refused', why: 'behind' })
    expect(await prepare(2, 1, 2)).toEqual({
      type: 'promised',
      ballot: { round: 2, by: 'x' },
      accepted: null,
    })
    // The same ballot again, or a lower one: refused, naming the ballot promised.
    expect(await prepare(2, 1, 2)).toMatchObject({
      type: 'refused',
      why: 'ballot',
      promised: { round: 2, by: 'x' },
    })
    expect(await prepare(2, 1, 1, 'z')).toMatchObject({ type: 'refused', why: 'ballot' })
    // Equal rounds are ordered by the proposer's id.
    expect((await prepare(2, 1, 2, 'y')).type).toBe('promised')
    expect(await accept('c1', 2)).toMatchObject({
      type: 'refused',
      why: 'ballot',
      promised: { round: 2, by: 'y' },
    })
    expect(await accept('c1', 2, 'y')).toEqual({
      type: 'accepted',
      ballot: { round: 2, by: 'y' },
      claim: { vm: 'w', epoch: 2, owner: 'c1' },
    })
    // A higher ballot's phase 1 is told what was accepted; its refusals name it too.
    expect(await prepare(2, 1, 3)).toEqual({
      type: 'promised',
      ballot: { round: 3, by: 'x' },
      accepted: { ballot: { round: 2, by: 'y' }, owner: 'c1' },
    })
    expect(await accept('a1', 2, 'y')).toEqual({
      type: 'refused',
      why: 'ballot',
      current: { vm: 'w', epoch: 2, owner: 'c1' },
      committed: b1At1,
      promised: { round: 3, by: 'x' },
      accepted: { ballot: { round: 2, by: 'y' }, owner: 'c1' },
    })
    // Nor can a claim jump over the open instance.
    expect((await prepare(3, 2, 9)).type).toBe('refused')
    expect(a1.ledger.highest('w')).toBe(2)
    // Learning the owner of epoch 2 closes the instance: no more votes in it.
    await a1.answer(x, { type: 'announce', claim: { vm: 'w', epoch: 2, owner: 'c1' } })
    expect(a1.ledger.instance('w')).toBeUndefined()
    expect(await prepare(2, 1, 10)).toMatchObject({
      type: 'refused',
      why: 'decided',
      current: { vm: 'w', epoch: 2, owner: 'c1' },
    })
  })

  it('a ballot beaten by a higher one retries above it; an aborted claim gives up with EpochQuorumError', async () => {
    const { nodes } = cluster({ a1: 'A', b1: 'B', c1: 'C' })
    await nodes.get('b1')!.claim('w')
    // A proposer (long gone) prepared round 100 at a1 and c1.
    for (const id of ['a1', 'c1'])
      await nodes
        .get(id)!
        .answer(
          { peerId: 'zz', site: 'Z' },
          { type: 'prepare', vm: 'w', epoch: 2, from: 1, ballot: { round: 100, by: 'zz' } },
        )
    const aborted = await nodes
      .get('b1')!
      .claim('w', { previous: 'b1', signal: AbortSignal.abort() })
      .catch((e: Error) => e)
    expect(aborted).toBeInstanceOf(EpochQuorumError)
    expect(aborted).not.toBeInstanceOf(EpochLostError)
    const r = await nodes.get('b1')!.claim('w', { previous: 'b1' })
    expect(r.claim).toEqual({ vm: 'w', epoch: 2, owner: 'b1' })
    expect(r.attempts).toBe(2)
    expect(nodes.get('a1')!.ledger.current('w')).toEqual(r.claim)
  })

  it('a promoter that missed an announcement learns it from the refusals and claims from it', async () => {
    const { net, nodes } = cluster({ a1: 'A', b1: 'B', c1: 'C' })
    await nodes.get('b1')!.claim('w')
    net.cut.add('b1|c1')
    await nodes.get('b1')!.claim('w', { previous: 'b1' }) // epoch 2: c1 never heard of it
    net.cut.clear()
    expect(nodes.get('c1')!.ledger.current('w')?.epoch).toBe(1)
    // Replacing b1 (the owner c1 missed at epoch 2): it asks once more from epoch 2 and wins 3.
    const r = await nodes.get('c1')!.claim('w', { previous: 'b1' })
    expect(r.claim).toEqual({ vm: 'w', epoch: 3, owner: 'c1' })
    expect(r.from).toBe(2)
    for (const n of nodes.values()) expect(n.ledger.current('w')).toEqual(r.claim)
  })

  it('replacing an owner someone else already replaced loses, naming the new owner', async () => {
    const { net, nodes } = cluster({ a1: 'A', b1: 'B', c1: 'C' })
    await nodes.get('b1')!.claim('w')
    net.cut.add('a1|c1')
    await nodes.get('c1')!.claim('w', { previous: 'b1' }) // c1 took over at epoch 2; a1 missed it
    net.cut.clear()
    // a1 still sees b1 as the owner (stale gossip) and tries to replace it.
    const lost = await nodes
      .get('a1')!
      .claim('w', { previous: 'b1' })
      .catch((e) => e)
    expect(lost).toBeInstanceOf(EpochLostError)
    expect((lost as EpochLostError).winner).toEqual({ epoch: 2, owner: 'c1', announced: true })
    expect((lost as Error).message).toMatch(/^a1 lost w to c1 \(epoch 2 is announced to it\)/)
    // It learned the owner from the refusals, and nobody moved past epoch 2.
    expect(nodes.get('a1')!.ledger.current('w')).toEqual({ vm: 'w', epoch: 2, owner: 'c1' })
    for (const n of nodes.values()) expect(n.ledger.highest('w')).toBe(2)
  })

  it('a member that missed the owner learns it from the claim and grants from it', async () => {
    const { net, nodes, fenced } = cluster({ a1: 'A', b1: 'B', c1: 'C' })
    net.cut.add('a1|c1')
    await nodes.get('c1')!.claim('w') // a1 never heard: c1 owns w at epoch 1
    net.cut.clear()
    expect(nodes.get('a1')!.ledger.current('w')).toBeUndefined()
    const r = await nodes.get('b1')!.claim('w', { previous: 'c1' })
    expect(r.claim).toEqual({ vm: 'w', epoch: 2, owner: 'b1' })
    expect(r.granted.sort()).toEqual(['a1', 'b1', 'c1'])
    // a1 learned c1's epoch 1 (with fencing's callback) before it granted epoch 2.
    const a1Learned = fenced.filter(([id]) => id === 'a1').map(([, c]) => `${c.owner}@${c.epoch}`)
    expect(a1Learned).toEqual(['c1@1', 'b1@2'])
  })

  it('promises for many VMs at once share saves, and none is answered before a save holds it', async () => {
    const durable: Array<ReturnType<EpochLedger['toJSON']>> = []
    let saving = 0
    let overlapped = false
    const c = new EpochCoordinator({
      self: { peerId: 'a1', site: 'A' },
      transport: new FakeNet().transport('a1'),
      members: () => [],
      alive: () => [],
      persist: async (state) => {
        if (saving++ > 0) overlapped = true
        await new Promise((r) => setTimeout(r, 30))
        durable.push(JSON.parse(JSON.stringify(state)))
        saving--
      },
    })
    const from = { peerId: 'x', site: 'X' }
    const vms = Array.from({ length: 10 }, (_, i) => `vm${i}`)
    const replies = await Promise.all(
      vms.map(async (vm) => {
        const ballot = { round: 1, by: 'x' }
        const reply = await c.answer(from, { type: 'prepare', vm, epoch: 1, from: 0, ballot })
        // Answered only once a finished save holds this promise.
        expect(durable.some((d) => d.instances.some((p) => p.vm === vm && p.promised?.round === 1))).toBe(
          true,
        )
        return reply
      }),
    )
    expect(replies.every((r) => r.type === 'promised')).toBe(true)
    expect(overlapped).toBe(false)
    expect(durable.length).toBeLessThan(vms.length)
    expect(durable.at(-1)!.instances).toHaveLength(vms.length)
    await c.stop()
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
    stream.send(encodeFrame(new TextEncoder().encode('{"type":"prepare","vm":"x","epoch":-1}')))
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

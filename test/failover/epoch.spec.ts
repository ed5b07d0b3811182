// Epochs only rise, one owner per epoch, promotion needs a quorum of promises, and a node that
// sees a higher epoch for a VM it runs stops it (fencing).
import { describe, expect, it } from 'vitest'
import {
  type EpochClaim,
  EpochLedger,
  fenceDecision,
  hasQuorum,
  type Member,
  mayProducePoints,
  tallyPromises,
} from '../../src/failover/index.js'

const members: Member[] = [
  { peerId: 'a1', site: 'A' },
  { peerId: 'a2', site: 'A' },
  { peerId: 'b1', site: 'B' },
  { peerId: 'c1', site: 'C' },
  { peerId: 'c2', site: 'C' },
  { peerId: 'c3', site: 'C' },
]

describe('EpochLedger', () => {
  it('promises each epoch to one owner and never goes back', () => {
    const l = new EpochLedger()
    expect(l.vote({ vm: 'w', epoch: 2, owner: 'c1' })).toEqual({
      granted: true,
      claim: { vm: 'w', epoch: 2, owner: 'c1' },
    })
    expect(l.vote({ vm: 'w', epoch: 2, owner: 'c1' }).granted).toBe(true) // the same request again
    expect(l.vote({ vm: 'w', epoch: 2, owner: 'a1' })).toEqual({
      granted: false,
      current: { vm: 'w', epoch: 2, owner: 'c1' },
    })
    expect(l.vote({ vm: 'w', epoch: 1, owner: 'a1' }).granted).toBe(false)
    expect(l.vote({ vm: 'w', epoch: 3, owner: 'a1' }).granted).toBe(true)
    expect(l.vote({ vm: 'w', epoch: 2, owner: 'c1' }).granted).toBe(false)
    expect(l.highest('w')).toBe(3)
    expect(l.vote({ vm: 'other', epoch: 1, owner: 'b1' }).granted).toBe(true)
  })

  it('learns announced claims only upwards and reports conflicts', () => {
    const l = new EpochLedger()
    expect(l.learn({ vm: 'w', epoch: 1, owner: 'b1' })).toBe('newer')
    expect(l.learn({ vm: 'w', epoch: 1, owner: 'b1' })).toBe('same')
    expect(l.learn({ vm: 'w', epoch: 1, owner: 'c1' })).toBe('conflict')
    expect(l.current('w')).toEqual({ vm: 'w', epoch: 1, owner: 'b1' })
    expect(l.learn({ vm: 'w', epoch: 4, owner: 'c1' })).toBe('newer')
    expect(l.learn({ vm: 'w', epoch: 2, owner: 'b1' })).toBe('stale')
    expect(l.current('w')?.epoch).toBe(4)
    // A learned epoch also bounds what may be promised.
    expect(l.vote({ vm: 'w', epoch: 3, owner: 'a1' }).granted).toBe(false)
    expect(l.vote({ vm: 'w', epoch: 4, owner: 'c1' }).granted).toBe(true)
  })

  it('survives a restart through toJSON', () => {
    const l = new EpochLedger()
    l.vote({ vm: 'w', epoch: 5, owner: 'c1' })
    l.learn({ vm: 'w', epoch: 4, owner: 'b1' })
    const again = new EpochLedger(JSON.parse(JSON.stringify(l)))
    expect(again.vote({ vm: 'w', epoch: 5, owner: 'a1' }).granted).toBe(false)
    expect(again.current('w')).toEqual({ vm: 'w', epoch: 4, owner: 'b1' })
  })
})

describe('tallyPromises', () => {
  it.each([
    ['A and C majorities', ['a1', 'a2', 'c1', 'c2'], true],
    ['half of A is not A', ['a1', 'c1', 'c2'], false],
    ['B (its one dead host absent) is not needed', ['a1', 'a2', 'c2', 'c3'], true],
    ['minority of C', ['a1', 'a2', 'c1'], false],
    ['B and C', ['b1', 'c1', 'c3'], true],
    ['nobody', [], false],
  ] as const)('%s → %s', (_, granted, reached) => {
    expect(tallyPromises({ members, granted }).reached).toBe(reached)
  })

  it('two proposers for one epoch can never both reach quorum', () => {
    // Exhaustively: split every subset of voters between proposers P and Q (each voter promises
    // at most one of them, or none); never do both sides win.
    const ids = members.map((m) => m.peerId)
    for (let mask = 0; mask < 3 ** ids.length; mask++) {
      const p: string[] = []
      const q: string[] = []
      let x = mask
      for (const id of ids) {
        const digit = x % 3
        x = Math.floor(x / 3)
        if (digit === 1) p.push(id)
        if (digit === 2) q.push(id)
      }
      const both =
        tallyPromises({ members, granted: p }).reached && tallyPromises({ members, granted: q }).reached
      expect(both, `P=${p} Q=${q}`).toBe(false)
    }
  })

  it('two sites: a witness promise breaks the tie', () => {
    const two: Member[] = [
      { peerId: 'a1', site: 'A' },
      { peerId: 'b1', site: 'B' },
    ]
    expect(tallyPromises({ members: two, granted: ['a1'] }).reached).toBe(false)
    expect(
      tallyPromises({ members: two, granted: ['a1'], witnessConfigured: true, witnessGranted: true }).reached,
    ).toBe(true)
    expect(tallyPromises({ members: two, granted: ['a1', 'b1'] }).reached).toBe(true)
  })

  it('ledgers voting on competing proposals elect at most one owner', () => {
    const ledgers = new Map(members.map((m) => [m.peerId, new EpochLedger()]))
    const propose = (claim: EpochClaim, asked: string[]) =>
      tallyPromises({ members, granted: asked.filter((id) => ledgers.get(id)!.vote(claim).granted) }).reached
    // c1 and a1 race for epoch 2; the voters answer in different orders.
    const c1Wins = propose({ vm: 'w', epoch: 2, owner: 'c1' }, ['c1', 'c2', 'b1', 'a2'])
    const a1Wins = propose({ vm: 'w', epoch: 2, owner: 'a1' }, ['a1', 'a2', 'b1', 'c3', 'c2'])
    expect([c1Wins, a1Wins]).toEqual([true, false])
    // a1 retries at a higher epoch and may win it; epoch 2 stays c1's.
    expect(propose({ vm: 'w', epoch: 3, owner: 'a1' }, ['a1', 'a2', 'c2', 'c3'])).toBe(true)
  })
})

describe('fenceDecision', () => {
  const local = { self: 'b1', vm: 'w', epoch: 3, owner: 'b1', running: true }
  it.each([
    [
      'higher epoch, another owner, running here',
      local,
      { vm: 'w', epoch: 4, owner: 'c1' },
      'stop-and-become-replica',
    ],
    [
      'higher epoch, another owner, stopped here',
      { ...local, running: false },
      { vm: 'w', epoch: 4, owner: 'c1' },
      'follow',
    ],
    [
      'a replica learns of a new owner',
      { ...local, owner: 'a1', running: false },
      { vm: 'w', epoch: 4, owner: 'c1' },
      'follow',
    ],
    ['our own promotion echoed back', { ...local, epoch: 3 }, { vm: 'w', epoch: 4, owner: 'b1' }, 'none'],
    ['same epoch, same owner', local, { vm: 'w', epoch: 3, owner: 'b1' }, 'none'],
    ['older epoch is ignored', local, { vm: 'w', epoch: 2, owner: 'c1' }, 'none'],
    ['another VM', local, { vm: 'x', epoch: 9, owner: 'c1' }, 'none'],
    ['same epoch, other owner: conflict', local, { vm: 'w', epoch: 3, owner: 'c1' }, 'conflict'],
  ] as const)('%s → %s', (_, l, seen, action) => {
    expect(fenceDecision(l, seen).action).toBe(action)
  })
})

describe('mayProducePoints', () => {
  const all: Member[] = members.filter((m) => m.peerId !== 'b1')
  it.each([
    ['owner with quorum', 'b1', ['a1', 'c1'], true],
    ['owner cut off from both other sites', 'b1', [], false],
    ['owner that reaches one other site of three', 'b1', ['c2'], true],
    ['not the owner', 'a1', ['a1', 'c1'], false],
  ] as const)('%s → %s', (_, self, alive, allowed) => {
    const quorum = hasQuorum({ mySite: 'B', members: all, alivePeers: alive })
    const r = mayProducePoints({ self, claim: { vm: 'w', epoch: 3, owner: 'b1' }, quorum })
    expect(r.allowed).toBe(allowed)
  })
})

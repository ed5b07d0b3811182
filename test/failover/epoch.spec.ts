// Epochs only rise, one owner per epoch, promotion needs a quorum of promises, and a node that
// sees a higher epoch for a VM it runs stops it (fencing).
import { describe, expect, it } from 'vitest'
import {
  type EpochClaim,
  EpochLedger,
  EpochLedgerError,
  fenceDecision,
  hasQuorum,
  LOWEST_BALLOT,
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

describe('EpochLedger as a Paxos acceptor', () => {
  const b = (round: number, by: string) => ({ round, by })

  it('promises only rising ballots, accepts unless a higher one was promised, reports what it accepted', () => {
    const l = new EpochLedger()
    l.learn({ vm: 'w', epoch: 1, owner: 'b1' })
    expect(l.prepare('w', 2, 1, b(1, 'a1'))).toEqual({ ok: true, accepted: null })
    expect(l.highest('w')).toBe(2)
    expect(l.prepare('w', 2, 1, b(1, 'a1'))).toMatchObject({ ok: false, why: 'ballot' })
    expect(l.prepare('w', 2, 1, b(1, 'c1'))).toEqual({ ok: true, accepted: null }) // (1,c1) > (1,a1)
    expect(l.accept({ vm: 'w', epoch: 2, owner: 'a1' }, 1, b(1, 'a1'))).toMatchObject({
      ok: false,
      why: 'ballot',
      promised: b(1, 'c1'),
    })
    expect(l.accept({ vm: 'w', epoch: 2, owner: 'c1' }, 1, b(1, 'c1')).ok).toBe(true)
    // A higher ballot may accept without a prepare here (it had a quorum elsewhere).
    expect(l.accept({ vm: 'w', epoch: 2, owner: 'c1' }, 1, b(4, 'a2')).ok).toBe(true)
    expect(l.prepare('w', 2, 1, b(5, 'a1'))).toEqual({
      ok: true,
      accepted: { ballot: b(4, 'a2'), owner: 'c1' },
    })
    expect(l.promise('w')).toEqual({ vm: 'w', epoch: 2, owner: 'c1' })
    expect(l.current('w')).toEqual({ vm: 'w', epoch: 1, owner: 'b1' }) // accepted is not announced
  })

  it('votes only in the instance after the owner it knows (compare-and-set), closed by learning it', () => {
    const l = new EpochLedger()
    l.learn({ vm: 'w', epoch: 3, owner: 'b1' })
    expect(l.prepare('w', 3, 2, b(1, 'a1'))).toMatchObject({
      ok: false,
      why: 'decided',
      current: { epoch: 3 },
    })
    expect(l.prepare('w', 5, 4, b(1, 'a1'))).toMatchObject({ ok: false, why: 'behind' })
    expect(l.prepare('w', 5, 3, b(1, 'a1'))).toMatchObject({ ok: false, why: 'behind' })
    expect(l.prepare('w', 4, 3, b(1, 'a1')).ok).toBe(true)
    expect(l.accept({ vm: 'w', epoch: 4, owner: 'a1' }, 3, b(1, 'a1')).ok).toBe(true)
    expect(l.learn({ vm: 'w', epoch: 4, owner: 'a1' })).toBe('newer')
    expect(l.instance('w')).toBeUndefined()
    expect(l.highest('w')).toBe(4)
    expect(l.accept({ vm: 'w', epoch: 4, owner: 'c1' }, 3, b(9, 'c1'))).toMatchObject({
      ok: false,
      why: 'decided',
    })
  })

  it('never hands out one ballot twice, across a restart too', () => {
    const l = new EpochLedger()
    expect(l.nextRound('w', 1)).toBe(1)
    expect(l.nextRound('w', 1)).toBe(2) // two claims at once on one node: two ballots
    expect(l.nextRound('w', 1, 7)).toBe(8)
    l.prepare('w', 1, 0, b(11, 'x'))
    expect(l.nextRound('w', 1)).toBe(12)
    const again = new EpochLedger(JSON.parse(JSON.stringify(l)))
    expect(again.nextRound('w', 1)).toBe(13)
    expect(again.nextRound('w', 2)).toBe(1) // another instance
  })

  it('loads a one-phase ledger: an old promise is an owner accepted at the lowest ballot', () => {
    const old = {
      promised: [
        { vm: 'w', epoch: 2, owner: 'c1' },
        { vm: 'x', epoch: 1, owner: 'a1' }, // announced since: nothing open
      ],
      committed: [
        { vm: 'w', epoch: 1, owner: 'b1' },
        { vm: 'x', epoch: 1, owner: 'a1' },
      ],
      previous: [['w', 'a1']],
    }
    const l = new EpochLedger(JSON.parse(JSON.stringify(old)))
    expect(l.current('w')).toEqual({ vm: 'w', epoch: 1, owner: 'b1' })
    expect(l.previousOwner('w')).toBe('a1')
    expect(l.highest('w')).toBe(2)
    expect(l.instance('w')).toEqual({
      vm: 'w',
      epoch: 2,
      promised: LOWEST_BALLOT,
      accepted: { ballot: LOWEST_BALLOT, owner: 'c1' },
    })
    expect(l.instance('x')).toBeUndefined()
    // Any real ballot is above it, and learns the old promise (which a quorum may have given).
    expect(l.prepare('w', 2, 1, b(1, 'a1'))).toEqual({
      ok: true,
      accepted: { ballot: LOWEST_BALLOT, owner: 'c1' },
    })
    // Saved in the new format, read back the same.
    const again = new EpochLedger(JSON.parse(JSON.stringify(l.toJSON())))
    expect(again.instance('w')?.promised).toEqual(b(1, 'a1'))
    expect(again.toJSON()).toEqual(l.toJSON())
    // The shape every version wrote when nothing was ever claimed.
    expect(new EpochLedger({ promised: [], committed: [] }).claims()).toEqual([])
    expect(new EpochLedger(undefined).claims()).toEqual([])
  })

  it('refuses a ledger file it cannot read, naming the problem', () => {
    expect(() => new EpochLedger({ committed: [{ vm: 'w', epoch: 'two', owner: 'b1' }] })).toThrow(
      EpochLedgerError,
    )
    expect(() => new EpochLedger([1, 2])).toThrow(/unreadable epoch ledger/)
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

// Quorum of sites, failure confirmation and the isolated-node rule, as tables of cases.
import { describe, expect, it } from 'vitest'
import { confirmDown, hasQuorum, type Member, siteQuorum } from '../../src/failover/index.js'
import type { PeerLiveness, PeerView } from '../../src/mesh/index.js'

describe('siteQuorum', () => {
  it.each([
    // sites, witness, agreeing, witness agrees, reached, needed
    [['A', 'B', 'C'], false, ['A', 'C'], false, true, 2],
    [['A', 'B', 'C'], false, ['A'], false, false, 2],
    [['A', 'B', 'C'], true, ['A'], true, false, 2], // the witness only votes below three sites
    [['A', 'B', 'C', 'D'], false, ['A', 'B'], false, false, 3],
    [['A', 'B', 'C', 'D'], false, ['A', 'B', 'C'], false, true, 3],
    [['A', 'B', 'C', 'D', 'E'], false, ['A', 'B', 'C'], false, true, 3],
    [['A', 'B'], false, ['A'], false, false, 2], // two sites, no witness: both must agree
    [['A', 'B'], false, ['A', 'B'], false, true, 2],
    [['A', 'B'], true, ['A'], true, true, 2], // one site + witness
    [['A', 'B'], true, ['A'], false, false, 2],
    [['A', 'B'], true, ['A', 'B'], false, true, 2],
    [['A'], false, ['A'], false, true, 1],
    [['A'], false, [], false, false, 1],
    [['A', 'A', 'B', 'C'], false, ['A', 'A', 'X'], false, false, 2], // duplicates and strangers do not count
  ] as const)(
    '%j witness=%s agreeing=%j (+witness %s) → %s',
    (sites, witness, agreeing, wAgrees, reached, needed) => {
      const q = siteQuorum({ sites: [...sites], witness }, agreeing, wAgrees)
      expect(q.reached).toBe(reached)
      expect(q.needed).toBe(needed)
    },
  )
})

const members: Member[] = [
  { peerId: 'a1', site: 'A' },
  { peerId: 'a2', site: 'A' },
  { peerId: 'b1', site: 'B' },
  { peerId: 'c1', site: 'C' },
  { peerId: 'c2', site: 'C' },
]
const site = (id: string) => members.find((m) => m.peerId === id)?.site ?? 'W'
const views = (spec: Record<string, PeerLiveness | `${PeerLiveness}-dead`>): PeerView[] =>
  Object.entries(spec).map(([reporter, s]) => ({
    reporter,
    reporterSite: site(reporter),
    reporterAlive: !s.endsWith('-dead'),
    state: s.replace('-dead', '') as PeerLiveness,
  }))

describe('confirmDown', () => {
  it.each([
    ['every other site sees b1 down', 'b1', { a1: 'down', a2: 'down', c1: 'down', c2: 'down' }, 'down'],
    [
      'one site of three is not enough',
      'b1',
      { a1: 'down', a2: 'down', c1: 'alive', c2: 'alive' },
      'suspect',
    ],
    [
      'one broken link (a1→b1) never confirms',
      'b1',
      { a1: 'down', a2: 'alive', c1: 'alive', c2: 'alive' },
      'suspect',
    ],
    [
      'a site votes only when all its live observers agree',
      'b1',
      { a1: 'down', a2: 'suspect', c1: 'down', c2: 'down' },
      'suspect',
    ],
    [
      'a dead observer does not block its site',
      'b1',
      { a1: 'down', a2: 'alive-dead', c1: 'down', c2: 'down' },
      'down',
    ],
    [
      'dead observers do not vote',
      'b1',
      { a1: 'down-dead', a2: 'down-dead', c1: 'down', c2: 'down' },
      'suspect',
    ],
    [
      'the target does not vote about itself',
      'a1',
      { a1: 'down', a2: 'down', b1: 'alive', c1: 'alive' },
      'suspect',
    ],
    ['a1 down seen by A (a2) and C', 'a1', { a2: 'down', b1: 'alive', c1: 'down', c2: 'down' }, 'down'],
    ['nobody doubts it', 'b1', { a1: 'alive', a2: 'alive', c1: 'alive' }, 'alive'],
    [
      'suspect everywhere is not down',
      'b1',
      { a1: 'suspect', a2: 'suspect', c1: 'suspect', c2: 'suspect' },
      'suspect',
    ],
  ] as const)('%s', (_, target, spec, state) => {
    const d = confirmDown({ target, members, views: views(spec) })
    expect(d.state).toBe(state)
    expect(d.reason).toMatch(state === 'down' ? /^confirmed down by sites/ : /^not confirmed/)
  })

  it('names agreeing and dissenting sites', () => {
    const d = confirmDown({
      target: 'b1',
      members,
      views: views({ a1: 'down', a2: 'down', c1: 'down', c2: 'alive' }),
    })
    expect(d.quorum.agreeingSites).toEqual(['A'])
    expect(d.dissentingSites).toEqual(['C'])
    expect(d.reason).toBe('not confirmed: 1 of 2 votes; sites C still see it')
  })

  describe('two sites', () => {
    const two: Member[] = [
      { peerId: 'a1', site: 'A' },
      { peerId: 'a2', site: 'A' },
      { peerId: 'b1', site: 'B' },
    ]
    it.each([
      ['alone at its site, no witness: never automatic', { a1: 'down', a2: 'down' }, false, null, 'suspect'],
      [
        'alone at its site, witness agrees',
        { a1: 'down', a2: 'down' },
        true,
        { reachable: true, state: 'down' },
        'down',
      ],
      [
        'witness still sees it',
        { a1: 'down', a2: 'down' },
        true,
        { reachable: true, state: 'alive' },
        'suspect',
      ],
      [
        'witness unreachable (we may be the cut-off side)',
        { a1: 'down', a2: 'down' },
        true,
        { reachable: false, state: 'down' },
        'suspect',
      ],
    ] as const)('%s', (_, spec, witnessConfigured, witness, state) => {
      const d = confirmDown({ target: 'b1', members: two, views: views(spec), witnessConfigured, witness })
      expect(d.state).toBe(state)
    })

    it('a host whose own site and the other site agree is down without a witness', () => {
      const d = confirmDown({ target: 'a1', members: two, views: views({ a2: 'down', b1: 'down' }) })
      expect(d.state).toBe('down')
      expect(d.quorum.agreeingSites).toEqual(['A', 'B'])
    })
  })
})

describe('hasQuorum (isolated nodes stop)', () => {
  it.each([
    ['reaches every site', 'A', ['a2', 'b1', 'c1'], false, false, true],
    ['cut from B only', 'A', ['a2', 'c2'], false, false, true],
    ['cut from B and C', 'A', ['a2'], false, false, false],
    ['B alone (its only host)', 'B', [], false, false, false],
    ['B reaches C', 'B', ['c1'], false, false, true],
  ] as const)('%s', (_, mySite, alive, witnessConfigured, witnessReachable, reached) => {
    const others = members.filter((m) => m.site !== mySite || m.peerId !== `${mySite.toLowerCase()}1`)
    expect(
      hasQuorum({ mySite, members: others, alivePeers: alive, witnessConfigured, witnessReachable }).reached,
    ).toBe(reached)
  })

  it('two sites: both sides of a cut lose quorum without a witness; the witness side keeps it', () => {
    const m: Member[] = [
      { peerId: 'a2', site: 'A' },
      { peerId: 'b1', site: 'B' },
    ]
    expect(hasQuorum({ mySite: 'A', members: m, alivePeers: ['a2'] }).reached).toBe(false)
    expect(hasQuorum({ mySite: 'B', members: m, alivePeers: [] }).reached).toBe(false)
    expect(
      hasQuorum({
        mySite: 'A',
        members: m,
        alivePeers: ['a2'],
        witnessConfigured: true,
        witnessReachable: true,
      }).reached,
    ).toBe(true)
    expect(
      hasQuorum({ mySite: 'B', members: m, alivePeers: [], witnessConfigured: true, witnessReachable: false })
        .reached,
    ).toBe(false)
    expect(hasQuorum({ mySite: 'A', members: m, alivePeers: ['a2', 'b1'] }).reached).toBe(true)
  })
})

import { describe, expect, it } from 'vitest'
import { backoffMs, confirmedVerdict, localVerdict, type PeerView } from '../../src/mesh/index.js'

const timing = { suspectAfterMs: 1000, downAfterMs: 3000 }
const view = (
  reporter: string,
  reporterSite: string,
  state: PeerView['state'],
  reporterAlive = true,
): PeerView => ({
  reporter,
  reporterSite,
  reporterAlive,
  state,
})

describe('liveness', () => {
  it.each([
    [0, 'alive'],
    [999, 'alive'],
    [1000, 'suspect'],
    [2999, 'suspect'],
    [3000, 'down'],
  ] as const)('silent %i ms → %s', (silent, expected) => {
    expect(localVerdict(10_000 - silent, 10_000, timing)).toBe(expected)
  })

  it.each([
    ['no other site: down on our own', [view('b', 'a', 'alive')], 'down', ['a']],
    ['another live site disagrees: suspect', [view('c', 'b', 'alive')], 'suspect', ['a']],
    ['another site agrees: down', [view('c', 'b', 'down'), view('d', 'c', 'alive')], 'down', ['a', 'b']],
    [
      'only a same-site peer agrees: suspect',
      [view('b', 'a', 'down'), view('c', 'b', 'suspect')],
      'suspect',
      ['a'],
    ],
    ['the other site is dead itself: down', [view('c', 'b', 'alive', false)], 'down', ['a']],
    [
      'the target does not vote for itself',
      [view('x', 'b', 'down'), view('c', 'b', 'alive')],
      'suspect',
      ['a'],
    ],
  ] as const)('%s', (_name, views, state, downSites) => {
    const v = confirmedVerdict({ local: 'down', mySite: 'a', targetId: 'x', views: [...views] })
    expect(v).toEqual({ state, downSites })
  })

  it('reports local alive/suspect as is, with the sites that see it down', () => {
    expect(
      confirmedVerdict({ local: 'suspect', mySite: 'a', targetId: 'x', views: [view('c', 'b', 'down')] }),
    ).toEqual({
      state: 'suspect',
      downSites: ['b'],
    })
  })

  it('backs off exponentially with a cap', () => {
    expect([0, 1, 2, 3, 10].map((a) => backoffMs(a, 500, 30_000))).toEqual([500, 1000, 2000, 4000, 30_000])
  })
})

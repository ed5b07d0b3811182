import { describe, expect, it } from 'vitest'
import {
  type CandidateNode,
  nextHop,
  planRoutes,
  selectTargets,
  TargetSelectionError,
} from '../../src/replication/index.js'

const G = 1024 ** 3
const node = (
  peerId: string,
  site: string,
  freeGiB: number | null = 100,
  state: CandidateNode['state'] = 'alive',
): CandidateNode => ({
  peerId,
  site,
  state,
  freeBytes: freeGiB === null ? null : freeGiB * G,
})
const self = { peerId: 'A', site: 's1' }
const mesh = [
  node('A', 's1'),
  node('A2', 's1', 500),
  node('B', 's2', 50),
  node('B2', 's2', 80),
  node('C', 's3', 10),
  node('D', 's4', 20, 'down'),
]

describe('selectTargets', () => {
  it.each([
    ['default: one copy, off-site, most room', null, null, ['B2']],
    ['by peer', ['C'], null, ['C']],
    ['by site picks its roomiest peer', ['s2'], null, ['B2']],
    ['peers and sites keep the given order (chain order)', ['C', 's2'], null, ['C', 'B2']],
    ['the same site twice gives two of its peers', ['s2', 's2'], null, ['B2', 'B']],
    ['copies 2: distinct off-site sites first', null, 2, ['B2', 'C']],
    ['copies 3: then the roomiest remaining (same site is allowed)', null, 3, ['B2', 'C', 'A2']],
    ['--to then fill by policy', ['C'], 2, ['C', 'B2']],
    ['a same-site peer by name is fine without a policy', ['A2'], null, ['A2']],
    ['a same-site peer by name plus policy adds an off-site copy', ['A2'], 2, ['A2', 'B2']],
  ])('%s', (_n, to, copies, expected) => {
    expect(selectTargets(mesh, { self, to, copies, requiredBytes: 5 * G })).toEqual(expected)
  })

  it('skips peers without room', () => {
    expect(selectTargets(mesh, { self, to: null, copies: 2, requiredBytes: 60 * G })).toEqual(['B2', 'A2'])
  })

  it('a suspect peer is usable but ranked after alive ones', () => {
    const nodes = [node('X', 's2', 500, 'suspect'), node('Y', 's3', 1)]
    expect(selectTargets(nodes, { self, to: null, copies: 1, requiredBytes: 1 })).toEqual(['Y'])
    expect(selectTargets(nodes, { self, to: ['X'], copies: null, requiredBytes: 1 })).toEqual(['X'])
  })

  it('prefers known capacity over unknown', () => {
    const nodes = [node('X', 's2', null), node('Y', 's2', 1)]
    expect(selectTargets(nodes, { self, to: null, copies: 1, requiredBytes: 1 })).toEqual(['Y'])
  })

  it.each([
    ['an unknown name', ['nowhere'], null, 1, /no peer or site named 'nowhere'/],
    ['a down peer by name', ['D'], null, 1, /peer D is down/],
    ['a site with only down peers', ['s4'], null, 1, /no alive peer in site 's4'/],
    ['itself', ['A'], null, 1, /its own replica target/],
    ['a peer too small', ['C'], null, 50 * G, /bytes free/],
    ['more --to than --copies', ['B', 'C'], 1, 1, /asks for 1/],
    ['more copies than peers', null, 5, 1, /only 4 of 5 copies/],
    ['zero copies', null, 0, 1, /at least 1/],
  ])('refuses %s', (_n, to, copies, requiredBytes, message) => {
    expect(() => selectTargets(mesh, { self, to, copies, requiredBytes })).toThrow(message)
  })

  it('policy refuses when no other site is available', () => {
    const local = [node('A', 's1'), node('A2', 's1'), node('B', 's2', 100, 'down')]
    expect(() => selectTargets(local, { self, to: null, copies: 1, requiredBytes: 1 })).toThrow(
      TargetSelectionError,
    )
    expect(() => selectTargets(local, { self, to: null, copies: 1, requiredBytes: 1 })).toThrow(
      /another site/,
    )
  })
})

describe('planRoutes and nextHop', () => {
  it.each([
    ['chain of three', ['B', 'C', 'D'], true, [{ to: 'B', forward: ['C', 'D'] }]],
    [
      'fan-out',
      ['B', 'C'],
      false,
      [
        { to: 'B', forward: [] },
        { to: 'C', forward: [] },
      ],
    ],
    ['chain of one', ['B'], true, [{ to: 'B', forward: [] }]],
    ['nothing', [], true, []],
  ])('%s', (_n, targets, chain, expected) => {
    expect(planRoutes(targets, chain)).toEqual(expected)
  })

  it('walks a chain hop by hop', () => {
    expect(nextHop(['C', 'D'])).toEqual({ to: 'C', forward: ['D'] })
    expect(nextHop(['D'])).toEqual({ to: 'D', forward: [] })
    expect(nextHop([])).toBeNull()
  })
})

// Which sites a lab VM is protected to, per topology (lab.ts): worked out by hand for 4 sites.
import { describe, expect, it } from 'vitest'
import { siteName, targetSites } from '../../src/node/cli/lab.js'

describe('lab topologies', () => {
  it.each([
    ['chain', 0, [1, 2, 3]],
    ['chain', 2, [3, 0, 1]],
    ['mesh', 1, [2, 3, 0]],
    ['hub', 0, [1]],
    ['hub', 3, [0]],
  ] as const)('%s: a VM of site index %i goes to %j', (topology, site, expected) => {
    expect(targetSites(topology, site, 4)).toEqual(expected)
  })

  it('names sites from 1', () => {
    expect([0, 1, 15].map(siteName)).toEqual(['site1', 'site2', 'site16'])
  })
})

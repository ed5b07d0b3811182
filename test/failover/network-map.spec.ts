// Re-IP rules: per-site subnet rewrites keep the host part; per-NIC rules win; test failover
// isolates every NIC; bad rules give clear errors. Also the failover config schema.
import { availableParallelism } from 'node:os'
import { describe, expect, it } from 'vitest'
import {
  FailoverConfigError,
  NetworkMappingError,
  type NetworkRules,
  networkMapping,
  parseCidr,
  parseFailoverConfig,
} from '../../src/failover/index.js'
import type { VmNic } from '../../src/hyperv/index.js'

const nic = (name: string, addresses: string[], extra: Partial<VmNic> = {}): VmNic => ({
  name,
  switch: 'LAN',
  mac: '00:15:5d:00:00:01',
  addresses,
  gateway: '10.1.0.1',
  dns: ['10.1.0.53'],
  ...extra,
})

const rules: NetworkRules = {
  sites: {
    B: {
      subnets: [
        { from: '10.1.0.0/24', to: '10.2.0.0/24', dns: ['10.2.0.53'] },
        { from: '192.168.10.0/24', to: '172.16.4.0/22', gateway: '172.16.4.1' },
        { from: 'fd00:1::/64', to: 'fd00:2::/64' },
      ],
      switch: 'DR-LAN',
    },
    C: { subnets: [{ from: '10.1.0.0/16', to: '10.9.0.0/24' }] },
  },
  vms: { db1: { B: [{ nic: 'eth0', addresses: ['10.2.7.7/24'], gateway: '10.2.7.1', dns: ['10.2.0.53'] }] } },
}

describe('networkMapping', () => {
  it.each([
    [
      'rewrites a /24 to another /24 with the site DNS and switch',
      nic('eth0', ['10.1.0.15/24']),
      'B',
      [
        {
          nic: 'eth0',
          addresses: ['10.2.0.15/24'],
          gateway: '10.2.0.1',
          dns: ['10.2.0.53'],
          switch: 'DR-LAN',
        },
      ],
    ],
    [
      'into a larger subnet, with the rule gateway',
      nic('eth1', ['192.168.10.200/24'], { gateway: '192.168.10.1', dns: [] }),
      'B',
      [{ nic: 'eth1', addresses: ['172.16.4.200/22'], gateway: '172.16.4.1', dns: [], switch: 'DR-LAN' }],
    ],
    [
      'IPv6 keeps the interface id',
      nic('eth0', ['fd00:1::a:15/64'], { gateway: null, dns: undefined }),
      'B',
      [{ nic: 'eth0', addresses: ['fd00:2::a:15/64'], gateway: null, switch: 'DR-LAN' }],
    ],
    ['same site: nothing changes', nic('eth0', ['10.1.0.15/24']), 'A', []],
    ['a site without rules: nothing changes', nic('eth0', ['10.1.0.15/24']), 'Z', []],
  ] as const)('%s', (_, n, site, expected) => {
    expect(
      networkMapping({ vm: 'web1', nics: [n], homeSite: 'A', targetSite: site, rules }).mappings,
    ).toEqual(expected)
  })

  it('lists addresses no rule covers and keeps them', () => {
    const r = networkMapping({
      vm: 'web1',
      nics: [nic('eth0', ['10.1.0.15/24', '10.77.0.4/24'])],
      homeSite: 'A',
      targetSite: 'B',
      rules,
    })
    expect(r.mappings[0].addresses).toEqual(['10.2.0.15/24', '10.77.0.4/24'])
    expect(r.unchanged).toEqual(['eth0 10.77.0.4/24'])
  })

  it('uses per-NIC rules for a VM when they exist', () => {
    const r = networkMapping({
      vm: 'db1',
      nics: [nic('eth0', ['10.1.0.20/24'])],
      homeSite: 'A',
      targetSite: 'B',
      rules,
    })
    expect(r.mappings).toEqual(rules.vms.db1.B)
  })

  it('isolates every NIC for a test failover', () => {
    const r = networkMapping({
      vm: 'web1',
      nics: [nic('eth0', ['10.1.0.15/24']), nic('eth1', ['10.50.0.2/24'])],
      homeSite: 'A',
      targetSite: 'B',
      rules,
      isolate: true,
    })
    expect(r.mappings.map((m) => [m.nic, m.addresses, m.switch])).toEqual([
      ['eth0', ['10.2.0.15/24'], null],
      ['eth1', ['10.50.0.2/24'], null],
    ])
    const same = networkMapping({
      vm: 'web1',
      nics: [nic('eth0', ['10.1.0.15/24'])],
      homeSite: 'A',
      targetSite: 'A',
      rules,
      isolate: true,
    })
    expect(same.mappings).toEqual([{ nic: 'eth0', addresses: ['10.1.0.15/24'], switch: null }])
  })

  it.each([
    ['a host part that does not fit', nic('eth0', ['10.1.3.15/16']), 'C', /does not fit/],
    ['a network address in the target', nic('eth0', ['10.1.0.255/24'], { gateway: null }), 'B', /broadcast/],
    ['an address that is not CIDR', nic('eth0', ['10.1.0.15']), 'B', /not an address in CIDR form/],
  ] as const)('rejects %s', (_, n, site, message) => {
    expect(() => networkMapping({ vm: 'web1', nics: [n], homeSite: 'A', targetSite: site, rules })).toThrow(
      NetworkMappingError,
    )
    expect(() => networkMapping({ vm: 'web1', nics: [n], homeSite: 'A', targetSite: site, rules })).toThrow(
      message,
    )
  })

  it('rejects a per-NIC rule for a NIC the VM lacks', () => {
    expect(() =>
      networkMapping({
        vm: 'db1',
        nics: [nic('lan', ['10.1.0.2/24'])],
        homeSite: 'A',
        targetSite: 'B',
        rules,
      }),
    ).toThrow(/no NIC 'eth0'/)
  })

  it.each([
    ['10.1.0.0/24', true],
    ['10.1.0.1/24', false],
    ['10.1.0.0/33', false],
    ['256.1.0.0/8', false],
    ['fd00::/8', true],
    ['fd00::1/64', false],
    ['::/0', true],
    ['1:2:3:4:5:6:7:8/128', true],
    ['1::2::3/64', false],
  ] as const)('parseCidr(%s) network=%s', (text, ok) => {
    expect(parseCidr(text) !== null).toBe(ok)
  })
})

describe('failover config', () => {
  it('fills defaults', () => {
    const c = parseFailoverConfig({ vms: { web1: { tier: 'gold' } } })
    expect(c.tiers.gold).toEqual({ rpoMs: 5000, rtoMs: 120000, mode: 'automatic' })
    expect(c.tiers.bronze.mode).toBe('alert')
    expect(c.vms.web1).toEqual({ tier: 'gold', priority: 100 })
    expect(c).toMatchObject({
      witness: null,
      // Boot-storm cap: 8 starts per logical CPU of this host.
      maxStartsPerHost: Math.min(1024, 8 * availableParallelism()),
      isolationResponse: 'stop',
      hubs: {},
    })
    expect(c.notifications).toEqual({ webhooks: [] })
    expect(parseFailoverConfig({ hubs: { HQ: {} } }).hubs.HQ.maxOversubscription).toBe(1.5)
  })

  it.each([
    [{ vms: { w: { tier: 'platinum' } } }, /vms\.w\.tier: unknown tier 'platinum'/],
    [
      { network: { sites: { B: { subnets: [{ from: '10.1.0.1/24', to: '10.2.0.0/24' }] } } } },
      /network\.sites\.B\.subnets\.0\.from/,
    ],
    [{ network: { vms: { w: { B: [{ nic: 'e', addresses: ['10.0.0.1'] }] } } } }, /addresses/],
    [{ hubs: { HQ: { maxOversubscription: 0.5 } } }, /hubs\.HQ/],
    [{ notifications: { webhooks: [{ url: 'nope' }] } }, /notifications\.webhooks\.0\.url/],
  ])('rejects %j', (input, message) => {
    expect(() => parseFailoverConfig(input)).toThrow(FailoverConfigError)
    expect(() => parseFailoverConfig(input)).toThrow(message)
  })
})

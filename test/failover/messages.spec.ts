// Every notification answers what failed, what was done and what the operator decides, and
// names what it is about; the config schema fills documented defaults and names bad fields.
import { describe, expect, it } from 'vitest'
import {
  EVENT_IDS,
  messages,
  NOTIFICATION_KINDS,
  type Notification,
  NotifierConfigError,
  notificationText,
  parseNotifierConfig,
} from '../../src/failover/index.js'

const r = { node: 'hv1', site: 'A', time: 1_700_000_000_000, id: 'fixed' }
const cases: Array<[string, Notification, string[]]> = [
  ['hostSuspected', messages.hostSuspected(r, { peer: 'hv2', site: 'B', silentMs: 1500 }), ['hv2', '1.5 s']],
  [
    'hostDown',
    messages.hostDown(r, {
      peer: 'hv2',
      site: 'B',
      confirmedBySites: ['A', 'C'],
      vms: ['w', 'd'],
      automatic: ['w'],
    }),
    ['A, C', 'failover --host hv2', 'd'],
  ],
  [
    'siteDown',
    messages.siteDown(r, { site: 'B', hosts: ['hv2', 'hv3'], confirmedBySites: ['A', 'C'], vms: ['w'] }),
    ['hv2, hv3', 'failover --site B'],
  ],
  [
    'failoverStarted',
    messages.failoverStarted(r, { vm: 'w', from: 'hv2', to: 'hv3', mode: 'automatic', pointSeq: 9 }),
    ['hv3', 'point 9', 'automatic'],
  ],
  [
    'failoverCompleted',
    messages.failoverCompleted(r, {
      vm: 'w',
      from: 'hv2',
      to: 'hv3',
      epoch: 5,
      pointSeq: 9,
      dataLossMs: 1200,
      rpoMs: 5000,
      downtimeMs: 3000,
      rtoMs: 60000,
    }),
    ['epoch 5', '1.2 s', 'failback w'],
  ],
  [
    'failoverFailed',
    messages.failoverFailed(r, { vm: 'w', from: 'hv2', to: 'hv3', reason: 'disk full' }),
    ['disk full', '--to PEER'],
  ],
  [
    'awaitingOperator',
    messages.awaitingOperator(r, { vm: 'w', from: 'hv2', candidates: ['hv3'], dataLossMs: 4000 }),
    ['failover w --to hv3', '4.0 s'],
  ],
  [
    'fenced',
    messages.fenced(r, { vm: 'w', ownEpoch: 3, seenEpoch: 4, owner: 'hv3' }),
    ['epoch 4', 'replica'],
  ],
  [
    'quorumLost',
    messages.quorumLost(r, { reachableSites: ['A'], neededSites: 2, vms: ['w'] }),
    ['stopped producing', 'w'],
  ],
  [
    'rpoBreach',
    messages.rpoBreach(r, { vm: 'w', lagMs: 9000, rpoMs: 5000, target: 'hv3' }),
    ['9.0 s', 'hv3'],
  ],
  [
    'rpoRestored',
    messages.rpoRestored(r, { vm: 'w', lagMs: 800, rpoMs: 5000, target: 'hv3', breachedMs: 12_000 }),
    ['12.0 s', 'hv3', 'cleared'],
  ],
  [
    'overSubscribed',
    messages.overSubscribed(r, {
      peer: 'hub1',
      site: 'HQ',
      vms: ['a', 'b'],
      memoryNeededBytes: 8 * 2 ** 30,
      memoryFreeBytes: 2 * 2 ** 30,
    }),
    ['8.0 GiB', '2.0 GiB', 'hub'],
  ],
  [
    'testFailover',
    messages.testFailover(r, { vm: 'w', on: 'hv3', copy: 'w-test', pointSeq: 7 }),
    ['w-test', 'isolated'],
  ],
  [
    'failbackCompleted',
    messages.failbackCompleted(r, { vm: 'w', to: 'hv1', bytesMoved: 4096, epoch: 6 }),
    ['4096', 'epoch 6'],
  ],
]

describe('notification messages', () => {
  it.each(cases)('%s answers the three questions', (_, n, facts) => {
    expect(n.id).toBe('fixed')
    expect(n.node).toBe('hv1')
    expect(n.nodeSite).toBe('A')
    for (const field of [n.title, n.failed, n.done, n.decide]) expect(field.length).toBeGreaterThan(10)
    const text = notificationText(n)
    for (const fact of facts) expect(text).toContain(fact)
    expect(text).toMatch(/What failed: .+\nWhat was done: .+\nWhat to decide: .+/)
  })

  it('covers every kind, each with its own event id', () => {
    expect(new Set(cases.map(([, n]) => n.kind))).toEqual(new Set(NOTIFICATION_KINDS))
    expect(new Set(Object.values(EVENT_IDS)).size).toBe(NOTIFICATION_KINDS.length)
  })

  it('grades a failover outside its RPO or RTO as an error', () => {
    const base = { vm: 'w', from: 'a', to: 'b', epoch: 2, pointSeq: 1, rpoMs: 5000, rtoMs: 60000 }
    expect(messages.failoverCompleted(r, { ...base, dataLossMs: 1000, downtimeMs: 1000 }).severity).toBe(
      'warning',
    )
    expect(messages.failoverCompleted(r, { ...base, dataLossMs: 6000, downtimeMs: 1000 }).severity).toBe(
      'error',
    )
    expect(messages.failoverCompleted(r, { ...base, dataLossMs: 1000, downtimeMs: 61000 }).severity).toBe(
      'error',
    )
  })
})

describe('notifications config', () => {
  it('fills the documented defaults', () => {
    const c = parseNotifierConfig({
      syslog: {},
      snmp: { targets: [{ host: 'nms' }] },
      email: { host: 'smtp', from: 'a@b.c', to: ['o@b.c'] },
      webhooks: [{ url: 'https://hooks.example/x' }],
    })
    expect(c.syslog).toEqual({
      transport: 'udp',
      host: '127.0.0.1',
      port: 514,
      facility: 'daemon',
      appName: 'replimesh',
      minLevel: 'warning',
    })
    expect(c.snmp).toEqual({
      targets: [{ host: 'nms', port: 162, community: 'public' }],
      enterpriseOid: '1.3.6.1.4.1.32473.1',
      minLevel: 'warning',
    })
    expect(c.email).toMatchObject({
      port: 587,
      security: 'starttls',
      rejectUnauthorized: true,
      minLevel: 'error',
    })
    expect(c.webhooks[0]).toMatchObject({
      maxAttempts: 6,
      initialBackoffMs: 500,
      maxBackoffMs: 30000,
      queueLimit: 1000,
      timeoutMs: 5000,
    })
    expect(parseNotifierConfig({})).toEqual({ webhooks: [] })
  })

  it.each([
    [{ syslog: { transport: 'unix' } }, /needs a path/],
    [{ snmp: { targets: [] } }, /snmp\.targets/],
    [{ snmp: { targets: [{ host: 'x' }], enterpriseOid: 'abc' } }, /snmp\.enterpriseOid/],
    [{ email: { host: 'smtp', from: 'a@b.c', to: ['o@b.c'], security: 'ssl' } }, /email\.security/],
    [{ webhooks: [{ url: 'ftp://x/y' }] }, /webhooks\.0\.url/],
    [{ webhooks: [{ url: 'https://x/y', secret: 'short' }] }, /webhooks\.0\.secret/],
    [{ syslog: { minLevel: 'loud' } }, /syslog\.minLevel/],
  ])('rejects %j naming the field', (input, message) => {
    expect(() => parseNotifierConfig(input)).toThrow(NotifierConfigError)
    expect(() => parseNotifierConfig(input)).toThrow(message)
  })
})

// The dashboard's pure part: the VM table from status and gossip, RPO breaches, the token in the
// fragment, and the API request each button makes (the same bodies the CLI's failover sends).
import { describe, expect, it } from 'vitest'
import { failoverRequest } from '../../../src/node/cli/failover.js'
import {
  actionRequest,
  type DashboardAction,
  describeResult,
  formatAge,
  type MeshStateView,
  peerLabel,
  resultFailed,
  rpoBreached,
  type StatusView,
  sitesOf,
  tokenFromHash,
  vmViews,
} from '../../../src/node/dashboard/view.js'

const SELF = '12D3KooWSelfSelfSelfSelfSelfSelf'
const B = '12D3KooWBeeBeeBeeBeeBeeBeeBeeBee'
const C = '12D3KooWSeeSeeSeeSeeSeeSeeSeeSee'

const status: StatusView = {
  peerId: SELF,
  site: 'A',
  addrs: [],
  peers: [
    { peerId: B, site: 'B', state: 'alive' },
    { peerId: C, site: 'C', state: 'down' },
  ],
  vms: [
    {
      name: 'web1',
      id: 'i1',
      role: 'replica',
      state: 'stopped',
      owner: B,
      epoch: 2,
      lastPoint: { seq: 7, time: 1000 },
      lagSeconds: 9,
      rpoSeconds: 5,
    },
    {
      name: 'web1-test',
      id: 'i2',
      role: 'primary',
      state: 'running',
      owner: SELF,
      epoch: 0,
      lastPoint: null,
      lagSeconds: null,
      rpoSeconds: null,
    },
    {
      name: 'db',
      id: 'i3',
      role: 'primary',
      state: 'running',
      owner: SELF,
      epoch: 0,
      lastPoint: { seq: 3, time: 900 },
      lagSeconds: 1,
      rpoSeconds: 5,
    },
  ],
}

const state = (
  peerId: string,
  site: string,
  vms: MeshStateView['vms'],
  replicas: MeshStateView['replicas'],
) => ({ peerId, site, time: 0, vms, replicas }) satisfies MeshStateView

describe('vmViews', () => {
  it('shows this node’s rows, marks the RPO breach and the test copy, then VMs only gossip knows', () => {
    const rows = vmViews(status, [
      state(B, 'B', [{ name: 'web1', state: 'running', epoch: 2 }], []),
      state(
        C,
        'C',
        [{ name: 'mail', state: 'running', epoch: 1 }],
        [{ vm: 'mail', lastPoint: null, epoch: 1 }],
      ),
      state(
        B,
        'B',
        [{ name: 'mail', state: 'stopped', epoch: 0 }],
        [{ vm: 'mail', lastPoint: { seq: 4, time: 50 }, epoch: 0 }],
      ),
      state(SELF, 'A', [{ name: 'ghost', state: 'running', epoch: 0 }], []),
    ])
    expect(rows.map((r) => [r.name, r.role, r.rpoBreached, r.testOf])).toEqual([
      ['web1', 'replica', true, null],
      ['web1-test', 'test copy', false, 'web1'],
      ['db', 'primary', false, null],
      ['mail', 'elsewhere', false, null],
    ])
    // The highest epoch's owner wins; the newest point any holder has.
    expect(rows[3]).toMatchObject({ owner: C, epoch: 1, state: 'running', lastPoint: { seq: 4, time: 50 } })
  })

  it('a name ending in -test without its VM here is an ordinary VM', () => {
    const rows = vmViews({ ...status, vms: [status.vms[1]] }, [])
    expect(rows[0]).toMatchObject({ role: 'primary', testOf: null })
  })
})

describe('small readings', () => {
  it.each([
    [null, 5, false],
    [5, null, false],
    [5, 5, false],
    [5.1, 5, true],
  ] as const)('rpoBreached(%s, %s) = %s', (lag, rpo, breached) => {
    expect(rpoBreached(lag, rpo)).toBe(breached)
  })

  it('reads the token from the fragment only', () => {
    expect(tokenFromHash('#token=abc-_DEF')).toBe('abc-_DEF')
    expect(tokenFromHash('#x=1&token=t%2Bu')).toBe('t+u')
    expect(tokenFromHash('#token=')).toBeNull()
    expect(tokenFromHash('')).toBeNull()
  })

  it('labels peers by site, this node included', () => {
    expect(peerLabel(status, B)).toBe('B · 12D3KooW…eBee')
    expect(peerLabel(status, SELF)).toMatch(/^A · .* \(this node\)$/)
    expect(peerLabel(null, 'short')).toBe('short')
  })

  it('lists every site with its hosts, this node’s own marked', () => {
    expect(sitesOf(status)).toEqual([
      { site: 'A', hosts: [SELF], own: true },
      { site: 'B', hosts: [B], own: false },
      { site: 'C', hosts: [C], own: false },
    ])
  })

  it('formats ages', () => {
    expect(formatAge(-5)).toBe('just now')
    expect(formatAge(4_000)).toBe('4 s ago')
    expect(formatAge(600_000)).toBe('10 min ago')
    expect(formatAge(4 * 3_600_000)).toBe('4 h ago')
  })
})

describe('actionRequest', () => {
  // The CLI's failoverRequest is the reference: a button sends what the command line sends.
  it.each<[DashboardAction, string | undefined, Parameters<typeof failoverRequest>]>([
    [{ kind: 'failover', vm: 'web1' }, undefined, ['web1', { dir: 'd' }]],
    [{ kind: 'failover', vm: 'web1' }, C, ['web1', { dir: 'd', to: C }]],
    [{ kind: 'test', vm: 'web1' }, undefined, ['web1', { dir: 'd', test: true }]],
    [{ kind: 'planned', vm: 'web1' }, B, ['web1', { dir: 'd', planned: true, to: B }]],
    [{ kind: 'end-test', vm: 'web1' }, undefined, ['web1', { dir: 'd', endTest: true }]],
    [{ kind: 'host', peerId: B }, undefined, [undefined, { dir: 'd', host: B }]],
    [{ kind: 'site', site: 'B' }, undefined, [undefined, { dir: 'd', site: 'B' }]],
  ])('%o to %s is what the CLI sends', (action, to, cli) => {
    expect(actionRequest(action, to)).toEqual(failoverRequest(...cli))
  })

  it('failback goes to /failback, with a target when one is chosen', () => {
    expect(actionRequest({ kind: 'failback', vm: 'web1' })).toEqual({
      path: '/failback',
      body: { vm: 'web1' },
    })
    expect(actionRequest({ kind: 'failback', vm: 'web1' }, B).body).toEqual({ vm: 'web1', to: B })
  })
})

describe('describeResult', () => {
  it('says where the VM runs, at which epoch, from which point, and the data lost', () => {
    const line = describeResult(
      { kind: 'failover', vm: 'web1' },
      { vm: 'web1', on: B, name: 'web1', epoch: 3, pointSeq: 9, dataLossMs: 1200, tookMs: 2500 },
      status,
    )
    expect(line).toBe('web1 runs on B · 12D3KooW…eBee (epoch 3) from point 9; data loss 1.2 s; took 2.5 s')
  })

  it('lists each VM of a host failover and flags those not failed over', () => {
    const action: DashboardAction = { kind: 'host', peerId: C }
    const result = {
      hosts: [C],
      vms: [
        { vm: 'a', ok: true, on: B },
        { vm: 'b', ok: false, on: null, error: 'no holder has room' },
      ],
    }
    expect(describeResult(action, result, status)).toBe(
      'a runs on B · 12D3KooW…eBee; b NOT failed over: no holder has room',
    )
    expect(resultFailed(action, result)).toBe(true)
    expect(describeResult(action, { hosts: [C], vms: [] }, status)).toMatch(/no VM to fail over$/)
  })
})

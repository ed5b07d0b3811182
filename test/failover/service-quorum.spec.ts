// The isolated-node rule inside FailoverService: which peers count as reachable sites. A peer that
// is merely suspect (a missed ping or two: a busy peer, a loaded machine) still counts; only one
// this node sees down (silent past downAfterMs) or disconnected takes its site's vote away.
// Also: the RPO/RTO a failover notification reports are the VM's own (protect), not its tier's.
import { afterEach, describe, expect, it } from 'vitest'
import {
  EpochCoordinator,
  FailoverService,
  Notifier,
  parseFailoverConfig,
  type ReplicaSource,
} from '../../src/failover/index.js'
import type { PeerLiveness } from '../../src/mesh/index.js'
import { FakeHypervisor, FakeNet, RecordingChannel, vmInfo } from './helpers.js'

interface Peer {
  peerId: string
  site: string
  state: PeerLiveness
  connected: boolean
  lastSeenMs: number
}

const services: FailoverService[] = []
afterEach(async () => {
  await Promise.all(services.splice(0).map((s) => s.stop()))
})

function nodeA(peers: Peer[], objectives?: ReplicaSource['objectives']) {
  const net = new FakeNet()
  net.sites.set('a1', 'A')
  const channel = new RecordingChannel()
  const producing: boolean[] = []
  const mesh = {
    peerId: 'a1',
    site: 'A',
    timing: { downAfterMs: 3000 },
    peers: () => peers.map((p) => ({ ...p, nodeState: null })),
    nodeStates: () => [],
  }
  let service: FailoverService
  const coordinator = new EpochCoordinator({
    self: { peerId: 'a1', site: 'A' },
    transport: net.transport('a1'),
    members: () => peers.map((p) => ({ peerId: p.peerId, site: p.site })),
    alive: () => peers.filter((p) => p.connected).map((p) => p.peerId),
    persist: async () => {},
    onClaim: (claim) => service.onClaim(claim),
  })
  coordinator.start()
  const replicas: ReplicaSource = {
    releaseTest: async () => {},
    prepare: async (vm) => ({
      config: vmInfo(vm, '10.1.0.20/24'),
      diskPaths: [`/r/${vm}.vhdx`],
      point: { seq: 9, time: Date.now() - 1500 },
    }),
    objectives,
    setProducing: (allowed) => void producing.push(allowed),
    finalSync: async () => {
      throw new Error('not in this test')
    },
  }
  service = new FailoverService({
    mesh,
    coordinator,
    hypervisor: new FakeHypervisor(),
    replicas,
    notifier: new Notifier([{ channel, minLevel: 'info' }]),
    config: parseFailoverConfig({}),
  })
  services.push(service)
  return { service, channel, producing }
}

async function until(what: string, pred: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('FailoverService quorum of reachable sites', () => {
  it('keeps quorum when one site dies and another is only suspect (the demo: b killed, c busy)', async () => {
    const now = Date.now()
    const b: Peer = { peerId: 'b1', site: 'B', state: 'alive', connected: true, lastSeenMs: now }
    const c: Peer = { peerId: 'c1', site: 'C', state: 'alive', connected: true, lastSeenMs: now }
    const { service, channel, producing } = nodeA([b, c])
    await service.tick()
    expect(producing).toEqual([true])
    // b killed: its connection is gone at once. c, busy failing b's VM over, misses a ping or two.
    Object.assign(b, { connected: false, state: 'suspect', lastSeenMs: Date.now() - 2500 })
    Object.assign(c, { state: 'suspect', lastSeenMs: Date.now() - 2500 })
    await service.tick()
    expect(service.hasQuorum).toBe(true)
    expect(producing).toEqual([true])
    await new Promise((r) => setTimeout(r, 50))
    expect(channel.kinds()).not.toContain('quorum-lost')
  })

  it('a site with two hosts votes while one of them is reachable', async () => {
    const now = Date.now()
    const { service, producing } = nodeA([
      { peerId: 'b1', site: 'B', state: 'down', connected: false, lastSeenMs: now - 10_000 },
      { peerId: 'c1', site: 'C', state: 'down', connected: false, lastSeenMs: now - 10_000 },
      { peerId: 'c2', site: 'C', state: 'alive', connected: true, lastSeenMs: now },
    ])
    await service.tick()
    expect(service.hasQuorum).toBe(true)
    expect(producing).toEqual([true])
  })

  it('loses quorum once the other sites are silent past downAfterMs, and says no VMs run here', async () => {
    const now = Date.now()
    const b: Peer = { peerId: 'b1', site: 'B', state: 'alive', connected: true, lastSeenMs: now }
    const c: Peer = { peerId: 'c1', site: 'C', state: 'alive', connected: true, lastSeenMs: now }
    const { service, channel, producing } = nodeA([b, c])
    await service.tick()
    // A cut link sends no reset: the connections still look open, the peers are only silent.
    Object.assign(b, { state: 'suspect', lastSeenMs: Date.now() - 3500 })
    Object.assign(c, { state: 'suspect', lastSeenMs: Date.now() - 3500 })
    await service.tick()
    expect(service.hasQuorum).toBe(false)
    // (the owner lease may say so too: every call after the first is a stop)
    expect(producing[0]).toBe(true)
    expect(producing.length).toBeGreaterThan(1)
    expect(producing.slice(1).every((p) => !p)).toBe(true)
    await until('quorum-lost notification', () => channel.kinds().includes('quorum-lost'))
    const n = channel.got.find((x) => x.kind === 'quorum-lost')!
    expect(JSON.stringify(n)).toContain('no VMs run here')
    expect(JSON.stringify(n)).not.toContain('for none')
  })
})

describe('FailoverService objectives', () => {
  it('a failover notification gives the RPO/RTO set with protect, not the tier’s', async () => {
    const { service, channel } = nodeA([], async (vm) =>
      vm === 'web1' ? { rpoMs: 5000, rtoMs: 60_000 } : null,
    )
    await service.tick()
    await service.promote('web1', { mode: 'manual' })
    await until('failover notification', () => channel.got.some((n) => n.kind === 'failover-completed'))
    const n = JSON.stringify(channel.got.find((x) => x.kind === 'failover-completed'))
    expect(n).toMatch(/RPO 5(\.0)? s\)/)
    expect(n).toMatch(/RTO 60(\.0)? s\)|RTO 1 min/)
    expect(n).not.toMatch(/RPO 60|RPO 1 min|RTO 120/)
  })
})

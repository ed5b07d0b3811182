// The RPO alarm in one process: replication's real LagTracker (fed commits at chosen times) is
// the lag source, the FailoverService tick runs on a fake clock, and notifications go to a
// recording channel and a webhook served by a real HTTP server on loopback. Per VM and target a
// breach is one notification and one count of replimesh_rpo_breaches_total (read back through a
// real Prometheus text parser), however many ticks it lasts; its end is one rpo-restored, sent
// once the lag has stayed under 90 % of the RPO for a whole RPO (dampening: points committing at
// intervals close to the RPO are one breach, not a breach and a restore per point).
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import parsePrometheus from 'parse-prometheus-text-format'
import { afterEach, describe, expect, it } from 'vitest'
import {
  EpochCoordinator,
  EVENT_IDS,
  FailoverMetrics,
  FailoverService,
  type Notification,
  Notifier,
  notificationText,
  parseFailoverConfig,
  parseNotifierConfig,
  RpoWatch,
  WebhookChannel,
} from '../../src/failover/index.js'
import { LagTracker } from '../../src/replication/index.js'
import { FakeHypervisor, FakeNet, RecordingChannel } from './helpers.js'

interface Family {
  name: string
  metrics: Array<{ labels?: Record<string, string>; value?: string }>
}

async function breaches(m: FailoverMetrics, vm: string): Promise<number> {
  const families = parsePrometheus(await m.registry.metrics()) as Family[]
  const f = families.find((x) => x.name === 'replimesh_rpo_breaches_total')
  const row = f?.metrics.find((x) => x.labels?.vm === vm)
  return row ? Number(row.value) : 0
}

async function until(what: string, pred: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

let server: Server | null = null
const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c()
  server?.closeAllConnections()
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()))
  server = null
})

describe('RPO watch', () => {
  it('is edge-triggered per VM and target, says seeding, and counts each breach once', async () => {
    const sent: Notification[] = []
    const metrics = new FailoverMetrics()
    const watch = new RpoWatch({
      reporter: () => ({ node: 'hv1', site: 'A' }),
      notify: async (n) => void sent.push(n),
      metrics,
    })
    const row = (target: string, lagSeconds: number, seeding = false) => ({
      vm: 'web1',
      target,
      lagSeconds,
      rpoSeconds: 5,
      seeding,
    })
    expect(watch.check([row('hv2', 4.9, true), row('hv3', 1)], 1000)).toEqual([])
    const first = watch.check([row('hv2', 5.5, true), row('hv3', 1)], 2000)
    expect(first.map((n) => [n.kind, n.peer, n.severity])).toEqual([['rpo-breach', 'hv2', 'error']])
    expect(first[0].title).toContain('seeding')
    expect(notificationText(first[0])).toMatch(/seeding web1 on hv2 has run 5\.5 s .*RPO is 5\.0 s/)
    // Still breached, for many ticks: nothing more.
    for (let t = 3000; t < 20_000; t += 1000)
      expect(watch.check([row('hv2', 5 + t / 1000, true)], t)).toEqual([])
    expect(watch.breaches()).toEqual([{ vm: 'web1', target: 'hv2', sinceMs: 2000 }])
    // Back under the RPO: restored only once it stayed under 4.5 s (90 %) for 5 s (one RPO).
    expect(watch.check([row('hv2', 0.4), row('hv3', 1)], 21_000)).toEqual([])
    expect(watch.check([row('hv2', 4.6), row('hv3', 1)], 24_000)).toEqual([]) // above 4.5 s: again
    expect(watch.check([row('hv2', 0.3), row('hv3', 1)], 25_000)).toEqual([])
    expect(watch.check([row('hv2', 4.5), row('hv3', 1)], 29_999)).toEqual([])
    expect(watch.breaches()).toHaveLength(1)
    const back = watch.check([row('hv2', 0.4), row('hv3', 1)], 30_000)
    expect(back.map((n) => [n.kind, n.peer, n.severity])).toEqual([['rpo-restored', 'hv2', 'info']])
    expect(back[0].details).toMatchObject({ breachedMs: 28_000, lagMs: 400, rpoMs: 5000 })
    expect(watch.check([row('hv2', 0.4), row('hv3', 1)], 31_000)).toEqual([])
    // A second breach is a new one: notified and counted again, and not called seeding.
    const again = watch.check([row('hv2', 6), row('hv3', 1)], 32_000)
    expect(again.map((n) => n.kind)).toEqual(['rpo-breach'])
    expect(again[0].title).not.toContain('seeding')
    expect(again[0].failed).toContain('newest committed point of web1 on hv2 is 6.0 s old')
    // A target no longer listed (unprotected, fenced) is forgotten without a notification.
    expect(watch.check([row('hv3', 1)], 33_000)).toEqual([])
    expect(watch.breaches()).toEqual([])
    expect(sent.map((n) => n.kind)).toEqual(['rpo-breach', 'rpo-restored', 'rpo-breach'])
    expect(await breaches(metrics, 'web1')).toBe(2)
    expect(EVENT_IDS['rpo-restored']).toBe(1303)
  })

  it('points committing at intervals close to the RPO are one breach, not one per point', () => {
    // The lag of a target as a sawtooth: each point is frozen at `time` and commits `shipMs` later;
    // the watch samples it every 250 ms (the failover tick) while `interval(i)` says when the next
    // point is frozen. Without dampening each excursion past the RPO would be a breach and a restore.
    const simulate = (watch: RpoWatch, toMs: number, interval: (frozenMs: number, i: number) => number) => {
      const shipMs = 300
      const kinds: Array<[string, number]> = []
      let frozen = 0
      let committed = -1000
      const due: number[] = []
      for (let i = 0, t = 0; t <= toMs; t += 250) {
        while (frozen <= t) {
          due.push(frozen)
          frozen += interval(frozen, i++)
        }
        while (due.length && due[0] + shipMs <= t) committed = due.shift()!
        const lagSeconds = (t - committed) / 1000
        for (const n of watch.check(
          [{ vm: 'db', target: 'hv9', lagSeconds, rpoSeconds: 5, seeding: false }],
          t,
        ))
          kinds.push([n.kind, t])
      }
      return kinds
    }
    // A minute of a point every 5.2 s (past the RPO before every commit), a minute of jitter around
    // the RPO (4.7 s, 5.3 s, ...), a minute just under it (4.6 s: peaks of 4.9 s, above the 4.5 s
    // line), then a minute keeping up with room to spare (a point every 2 s).
    const phases = (frozenMs: number, i: number) =>
      frozenMs < 60_000 ? 5200 : frozenMs < 120_000 ? (i % 2 ? 5300 : 4700) : frozenMs < 180_000 ? 4600 : 2000
    const watch = new RpoWatch({ reporter: () => ({ node: 'hv1', site: 'A' }), notify: () => undefined })
    const sent = simulate(watch, 240_000, phases)
    expect(sent.map(([kind]) => kind)).toEqual(['rpo-breach', 'rpo-restored'])
    expect(sent[0][1]).toBeLessThan(6000)
    // Restored one RPO after the first check under the line in the last phase (lag ≤ 2.3 s there).
    const lastSlow = Math.ceil((180_000 + 300) / 250) * 250
    expect(sent[1][1]).toBeGreaterThanOrEqual(lastSlow + 5000)
    expect(sent[1][1]).toBeLessThan(lastSlow + 8000)
    // Undampened (hold 0, margin 0) the same minute of 5.2 s points is a breach and a restore per point.
    const flappy = new RpoWatch({
      reporter: () => ({ node: 'hv1', site: 'A' }),
      notify: () => undefined,
      restoreMargin: 0,
      restoreHoldRpos: 0,
    })
    expect(simulate(flappy, 60_000, () => 5200).length).toBeGreaterThan(10)
  })

  it('the failover tick alarms from replication lag once per breach and reaches a webhook', async () => {
    const hits: Array<{ kind: string; peer?: string; title: string }> = []
    server = createServer((req, res) => {
      const parts: Buffer[] = []
      req.on('data', (d) => parts.push(d))
      req.on('end', () => {
        hits.push(JSON.parse(Buffer.concat(parts).toString('utf8')))
        res.writeHead(204).end()
      })
    })
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
    const webhook = new WebhookChannel(parseNotifierConfig({ webhooks: [{ url }] }).webhooks[0])
    const channel = new RecordingChannel()
    const metrics = new FailoverMetrics()
    const notifier = new Notifier(
      [
        { channel, minLevel: 'info' },
        { channel: webhook, minLevel: 'info' },
      ],
      { metrics },
    )
    cleanups.push(() => notifier.stop({ signal: AbortSignal.timeout(2_000) }))

    const net = new FakeNet()
    net.sites.set('hv1', 'A')
    const coordinator = new EpochCoordinator({
      self: { peerId: 'hv1', site: 'A' },
      transport: net.transport('hv1'),
      members: () => [],
      alive: () => [],
      persist: async () => {},
    })
    coordinator.start()
    const lag = new LagTracker()
    const service = new FailoverService({
      mesh: { peerId: 'hv1', site: 'A', peers: () => [], nodeStates: () => [] },
      coordinator,
      hypervisor: new FakeHypervisor(),
      replicas: {
        prepare: async () => {
          throw new Error('not in this test')
        },
        targetLags: (now) => lag.targets(now),
      },
      notifier,
      metrics,
      config: parseFailoverConfig({}),
    })
    cleanups.push(async () => {
      await service.stop()
      await coordinator.stop()
    })

    const t0 = 1_700_000_000_000
    const rpo = () => channel.got.filter((n) => n.kind.startsWith('rpo-'))
    const said = () => rpo().map((n) => `${n.kind} ${n.peer}`)
    lag.track('web1', 'hv2', 5, t0) // a new target: seeding
    lag.track('web1', 'hv3', 5, t0, t0 - 1000) // holds a point already
    lag.committed('web1', 'hv3', t0 + 3500)
    await service.tick(t0 + 1000)
    await service.tick(t0 + 5500) // hv2: 5.5 s and still seeding; hv3: 2.0 s
    await until('the seeding breach', () => rpo().length === 1)
    expect(said()).toEqual(['rpo-breach hv2'])
    expect(rpo()[0].details).toMatchObject({ seeding: true, lagMs: 5500, rpoMs: 5000 })
    for (let t = t0 + 6000; t <= t0 + 8000; t += 250) await service.tick(t)
    expect(service.status().rpoBreaches).toEqual([{ vm: 'web1', target: 'hv2', sinceMs: t0 + 5500 }])
    lag.committed('web1', 'hv2', t0 + 8000) // the seed's first point
    await service.tick(t0 + 8500) // hv3: exactly 5.0 s, not past its RPO
    await service.tick(t0 + 8700) // hv3's newest point is 5.2 s old
    await until('the hv3 breach', () => rpo().length === 2)
    expect(said()).toEqual(['rpo-breach hv2', 'rpo-breach hv3'])
    // From here both targets get a point a second: each is restored once its lag stayed under
    // 4.5 s for 5 s (hv2 from its 8.5 s check, hv3 from its first check after a commit).
    for (let t = t0 + 9000; t <= t0 + 16_000; t += 250) {
      if ((t - t0) % 1000 === 0) {
        lag.committed('web1', 'hv2', t - 200)
        lag.committed('web1', 'hv3', t - 200)
      }
      await service.tick(t)
    }
    await until('both recoveries', () => rpo().length === 4)
    await new Promise((r) => setTimeout(r, 50))
    expect(said()).toEqual(['rpo-breach hv2', 'rpo-breach hv3', 'rpo-restored hv2', 'rpo-restored hv3'])
    expect(rpo()[2].details).toMatchObject({ breachedMs: 8000, lagMs: 700 }) // at 13.5 s
    expect(rpo()[3].details).toMatchObject({ breachedMs: 5300, lagMs: 200 }) // 14.0 s, calm from 9.0 s
    expect(rpo()[1].details).toMatchObject({ lagMs: 5200 })
    expect(rpo()[1].details?.seeding).toBeUndefined()
    expect(await breaches(metrics, 'web1')).toBe(2)

    await until('webhook deliveries', () => hits.filter((h) => h.kind.startsWith('rpo-')).length === 4)
    const delivered = hits.filter((h) => h.kind.startsWith('rpo-')).map((h) => `${h.kind} ${h.peer}`)
    expect(delivered.sort()).toEqual(said().sort())
    expect(hits.find((h) => h.kind === 'rpo-breach')?.title).toContain('seeding')
  })
})

// The node's /metrics route, served by a real fastify server, read back over HTTP and parsed by
// an independent Prometheus text-format parser (parse-prometheus-text-format).
import Fastify, { type FastifyInstance } from 'fastify'
import parsePrometheus from 'parse-prometheus-text-format'
import { afterEach, describe, expect, it } from 'vitest'
import { FailoverMetrics, type MetricsSnapshot } from '../../src/failover/index.js'
import { registerMetricsRoutes } from '../../src/node/api/metrics.js'

interface Family {
  name: string
  type: string
  metrics: Array<{
    labels?: Record<string, string>
    value?: string
    buckets?: Record<string, string>
    count?: string
  }>
}

let app: FastifyInstance | null = null
afterEach(async () => {
  await app?.close()
  app = null
})

async function scrape(
  metrics: FailoverMetrics,
): Promise<{ contentType: string; families: Map<string, Family> }> {
  app = Fastify()
  registerMetricsRoutes(app, { metrics })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })
  expect(res.status).toBe(200)
  const text = await res.text()
  const families = new Map((parsePrometheus(text) as Family[]).map((f) => [f.name, f]))
  await app.close()
  app = null
  return { contentType: res.headers.get('content-type') ?? '', families }
}

const value = (f: Family | undefined, labels: Record<string, string>) =>
  Number(f?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value)

describe('Prometheus metrics', () => {
  it('exports lag, RPO breaches, failovers, peers by state, bytes and points', async () => {
    let snapshot: MetricsSnapshot = {
      peers: [{ state: 'alive' }, { state: 'alive' }, { state: 'suspect' }, { state: 'down' }],
      vms: [
        { name: 'web1', role: 'primary', lagSeconds: 1.5, rpoSeconds: 5 },
        { name: 'db1', role: 'replica', lagSeconds: 12.25, rpoSeconds: 10 },
        { name: 'new', role: 'primary', lagSeconds: null, rpoSeconds: null },
      ],
    }
    const m = new FailoverMetrics({ snapshot: () => snapshot })
    m.rpoBreach('db1')
    m.rpoBreach('db1')
    m.failover('web1', 'automatic', 'ok')
    m.failover('db1', 'manual', 'failed')
    m.sent('hv2', 1_048_576)
    m.sent('hv2', 4096)
    m.received('hv3', 777)
    m.pointCommitted('web1')
    m.notification('snmp', 'sent')
    m.detected(1.2)
    m.promoted(0.4)

    const { contentType, families } = await scrape(m)
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/)
    const lag = families.get('replimesh_replication_lag_seconds')!
    expect(lag.type).toBe('GAUGE')
    expect(value(lag, { vm: 'web1', role: 'primary' })).toBe(1.5)
    expect(value(lag, { vm: 'db1', role: 'replica' })).toBe(12.25)
    expect(lag.metrics.some((x) => x.labels?.vm === 'new')).toBe(false)
    expect(value(families.get('replimesh_rpo_seconds'), { vm: 'db1' })).toBe(10)
    expect(families.get('replimesh_rpo_breaches_total')!.type).toBe('COUNTER')
    expect(value(families.get('replimesh_rpo_breaches_total'), { vm: 'db1' })).toBe(2)
    const failovers = families.get('replimesh_failovers_total')
    expect(value(failovers, { vm: 'web1', mode: 'automatic', result: 'ok' })).toBe(1)
    expect(value(failovers, { vm: 'db1', mode: 'manual', result: 'failed' })).toBe(1)
    const peers = families.get('replimesh_peers')
    expect([
      value(peers, { state: 'alive' }),
      value(peers, { state: 'suspect' }),
      value(peers, { state: 'down' }),
    ]).toEqual([2, 1, 1])
    expect(value(families.get('replimesh_bytes_sent_total'), { peer: 'hv2' })).toBe(1_052_672)
    expect(value(families.get('replimesh_bytes_received_total'), { peer: 'hv3' })).toBe(777)
    expect(value(families.get('replimesh_points_committed_total'), { vm: 'web1' })).toBe(1)
    expect(value(families.get('replimesh_notifications_total'), { channel: 'snmp', result: 'sent' })).toBe(1)
    const detection = families.get('replimesh_detection_seconds')!
    expect(detection.type).toBe('HISTOGRAM')
    expect(detection.metrics[0].count).toBe('1')
    expect(detection.metrics[0].buckets?.['2']).toBe('1')
    expect(detection.metrics[0].buckets?.['1']).toBe('0')

    // Gauges follow the present: a peer came back, a VM went away.
    snapshot = { peers: [{ state: 'alive' }, { state: 'alive' }, { state: 'alive' }], vms: [] }
    const again = await scrape(m)
    const peers2 = again.families.get('replimesh_peers')
    expect([value(peers2, { state: 'alive' }), value(peers2, { state: 'down' })]).toEqual([3, 0])
    expect(again.families.get('replimesh_replication_lag_seconds')?.metrics ?? []).toEqual([])
  })

  it('escapes label values so the parser reads them back intact', async () => {
    const m = new FailoverMetrics({
      snapshot: () => ({
        peers: [],
        vms: [{ name: 'odd "vm"\\name\nx', role: 'primary', lagSeconds: 3, rpoSeconds: 1 }],
      }),
    })
    const { families } = await scrape(m)
    expect(value(families.get('replimesh_replication_lag_seconds'), { vm: 'odd "vm"\\name\nx' })).toBe(3)
  })
})

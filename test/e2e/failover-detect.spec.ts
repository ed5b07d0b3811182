// Failover with real node processes on loopback: three sites, the failover service composed in
// every daemon, the control protocol on the real mesh. A host is killed (SIGKILL); the others
// confirm it down by a quorum of sites and report it; the time from the kill to the report is
// measured. /metrics parses with a Prometheus parser and counts the peers by state.
import parsePrometheus from 'parse-prometheus-text-format'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Notification } from '../../src/failover/index.js'
import { createTestMesh, FAILOVER_TIMING, type TestMesh, testEnv, waitFor } from '../helpers/nodes.js'

const FAST = FAILOVER_TIMING

interface FailoverStatus {
  peerId: string
  quorum: { reached: boolean; votes: number; needed: number } | null
  notifications: Notification[]
}

describe('failover detection with real nodes', () => {
  let mesh: TestMesh

  beforeAll(async () => {
    mesh = await createTestMesh(['A', 'B', 'C'], { env: testEnv({ REPLIMESH_TIMING: JSON.stringify(FAST) }) })
  }, 180_000)

  afterAll(async () => {
    await mesh?.teardown()
  }, 60_000)

  it('every node runs failover with quorum; a killed host is confirmed down and reported', {
    timeout: 180_000,
  }, async () => {
    const [a, b, c] = mesh.nodes
    for (const n of mesh.nodes)
      await waitFor(
        `${n.name} has quorum`,
        async () => (await n.call<FailoverStatus>('GET', '/failover')).quorum?.reached,
        60_000,
      )

    const res = await fetch(new URL('/metrics', a.url), { headers: { authorization: `Bearer ${a.token}` } })
    expect(res.status).toBe(200)
    const families = parsePrometheus(await res.text()) as Array<{
      name: string
      metrics: Array<{ labels?: Record<string, string>; value?: string }>
    }>
    const peers = families.find((f) => f.name === 'replimesh_peers')!
    expect(Number(peers.metrics.find((m) => m.labels?.state === 'alive')?.value)).toBe(2)

    const killedAt = Date.now()
    await b.kill()
    const report = await waitFor(
      'a host-down notification about the killed node',
      async () => {
        for (const n of [a, c]) {
          const s = await n.call<FailoverStatus>('GET', '/failover')
          const hit = s.notifications.find((x) => x.kind === 'host-down' && x.peer === b.peerId)
          if (hit) return { by: n.name, n: hit }
        }
        return undefined
      },
      60_000,
      100,
    )
    const detectionMs = report.n.time - killedAt
    console.log(
      `detection: host killed → confirmed down by a quorum of sites in ${detectionMs} ms (downAfterMs ${FAST.downAfterMs})`,
    )
    expect(report.n.failed).toMatch(/confirmed down by peers at sites A, C/)
    expect(detectionMs).toBeGreaterThan(0)
    expect(detectionMs).toBeLessThan(30_000)

    // The CLI refuses a failover of a VM nobody owns, in one line.
    const r = await mesh.cli(['failover', '--dir', a.dir, 'nosuchvm'])
    expect(r.code).toBe(1)
    expect(r.stderr).toBe('replimesh: cannot fail over nosuchvm: its owner is unknown here; give --to PEER\n')
  })
})

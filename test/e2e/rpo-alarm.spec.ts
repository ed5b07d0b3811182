// The RPO alarm with real processes: a lab VM on A is protected to B with a short RPO; A sends its
// notifications to a webhook server this test runs. B's node is stopped (replication cut), so the
// newest point on B ages past the RPO: the webhook gets exactly one rpo-breach naming the VM and B.
// When B is back and points commit again, exactly one rpo-restored follows (dampened: only after
// the lag stayed under 90 % of the RPO for a whole RPO), and nothing more while it keeps up.
// Every node and guest is stopped and every file removed at the end.
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTestMesh, type TestMesh, type TestNode, waitFor } from '../helpers/nodes.js'
import { processesUsing } from '../helpers/processes.js'
import { RELAXED_ENV } from './replication-helpers.js'

const RPO_S = 4
const VM = 'rpo1'

interface Hook {
  kind: string
  vm?: string
  peer?: string
  title: string
  details?: Record<string, unknown>
  receivedAt: number
}

describe('RPO alarm end to end', () => {
  let mesh: TestMesh | undefined
  let server: Server | undefined
  const hooks: Hook[] = []

  beforeAll(async () => {
    server = createServer((req, res) => {
      const parts: Buffer[] = []
      req.on('data', (d) => parts.push(d))
      req.on('end', () => {
        try {
          hooks.push({ ...JSON.parse(Buffer.concat(parts).toString('utf8')), receivedAt: Date.now() })
          res.writeHead(204).end()
        } catch {
          res.writeHead(400).end()
        }
      })
    })
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r))
  })

  afterAll(async () => {
    await mesh?.teardown()
    server?.closeAllConnections()
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()))
  }, 60_000)

  const ok = async (node: TestNode, args: string[]) => {
    const r = await node.cli(args, 120_000)
    if (r.code !== 0) throw new Error(`replimesh ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  const rpoHooks = () => hooks.filter((h) => h.kind.startsWith('rpo-') && h.vm === VM)
  const breaches = (a: TestNode) =>
    a
      .call<{ rpoBreaches: Array<{ vm: string; target: string }> }>('GET', '/failover')
      .then((s) => s.rpoBreaches)

  it('one rpo-breach when replication to B is cut, one rpo-restored once B keeps up again', {
    timeout: 420_000,
  }, async () => {
    // B creates the mesh, C joins; A joins last with its webhook in failover.json before it starts.
    mesh = await createTestMesh(['B', 'C'], { env: RELAXED_ENV })
    const [b] = mesh.nodes
    const a = await mesh.addNode('A', false)
    const url = `http://127.0.0.1:${(server!.address() as AddressInfo).port}/hook`
    await writeFile(
      join(a.dir, 'failover.json'),
      JSON.stringify({
        notifications: { webhooks: [{ url, minLevel: 'info', initialBackoffMs: 200, maxBackoffMs: 2000 }] },
      }),
    )
    await a.start()

    await ok(a, ['vm', 'create', '--dir', a.dir, VM, '--size', '16M'])
    await ok(a, ['vm', 'start', '--dir', a.dir, VM, '--no-workload'])
    await ok(a, ['protect', '--dir', a.dir, VM, '--rpo', `${RPO_S}s`, '--rto', '1m', '--to', b.peerId])
    // Seeded and keeping up: points on B, and no breach open on A (a slow seed may have had one,
    // cleared since).
    await waitFor(
      `two points of ${VM} on B and no open RPO breach on A`,
      async () => {
        const points = JSON.parse(await ok(b, ['points', '--dir', b.dir, VM, '--json'])) as unknown[]
        return points.length >= 2 && (await breaches(a)).length === 0
      },
      180_000,
      500,
    )
    const before = rpoHooks().length

    // Cut: B's node stops. Its newest point on B ages past the RPO within about RPO_S seconds.
    const cutAt = Date.now()
    await b.stop('SIGTERM')
    const breach = await waitFor(
      'an rpo-breach at the webhook',
      async () =>
        rpoHooks()
          .slice(before)
          .find((h) => h.kind === 'rpo-breach'),
      60_000,
      100,
    )
    expect(breach).toMatchObject({ vm: VM, peer: b.peerId })
    expect(breach.title).toContain(VM)
    expect(breach.details).toMatchObject({ rpoMs: RPO_S * 1000 })
    expect(breach.details?.seeding).toBeUndefined()
    expect(breach.receivedAt - cutAt).toBeGreaterThanOrEqual(0)
    expect(breach.receivedAt - cutAt).toBeLessThan(30_000)
    expect(await breaches(a)).toEqual([expect.objectContaining({ vm: VM, target: b.peerId })])
    // Still cut, a while longer: no second breach.
    await new Promise((r) => setTimeout(r, RPO_S * 1000))

    // B returns; replication resumes and the lag falls; the breach clears after one RPO of calm.
    const backAt = Date.now()
    await b.start()
    const restored = await waitFor(
      'an rpo-restored at the webhook',
      async () =>
        rpoHooks()
          .slice(before)
          .find((h) => h.kind === 'rpo-restored'),
      120_000,
      100,
    )
    expect(restored).toMatchObject({ vm: VM, peer: b.peerId })
    expect(restored.receivedAt - backAt).toBeGreaterThanOrEqual(RPO_S * 1000)
    expect(Number(restored.details?.lagMs)).toBeLessThanOrEqual(RPO_S * 900)
    // It lasted at least from the breach until B was back.
    expect(Number(restored.details?.breachedMs)).toBeGreaterThan(backAt - breach.receivedAt)
    expect(await breaches(a)).toEqual([])
    console.log(
      `rpo alarm: breach ${breach.receivedAt - cutAt} ms after B stopped (RPO ${RPO_S * 1000} ms); ` +
        `restored ${restored.receivedAt - backAt} ms after B was started again (breach lasted ${restored.details?.breachedMs} ms)`,
    )
    // Keeping up for two more RPOs: nothing more is sent.
    await new Promise((r) => setTimeout(r, 2 * RPO_S * 1000))
    expect(
      rpoHooks()
        .slice(before)
        .map((h) => `${h.kind} ${h.vm} ${h.peer}`),
    ).toEqual([`rpo-breach ${VM} ${b.peerId}`, `rpo-restored ${VM} ${b.peerId}`])

    // Clean up: every node and guest gone, every file removed.
    const root = mesh.root
    await mesh.teardown()
    mesh = undefined
    await waitFor(
      'no process naming the test folder',
      async () => (await processesUsing(root)).length === 0,
      15_000,
      200,
    )
    expect(existsSync(root)).toBe(false)
  })
})

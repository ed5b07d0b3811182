// The customer's case with real processes: a protected lab VM runs on host B; B (node and guest)
// is killed; the VM runs again on C, the only holder of its newest point, within its RTO; the data
// lost, read from the guest's record stream on both copies, is within its RPO; when B returns it
// learns the new owner and its copy stays stopped. Before that, a test failover runs an isolated
// copy while production and replication go on, and is removed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTestMesh, FAILOVER_TIMING, type TestMesh, testEnv, waitFor } from '../helpers/nodes.js'

const FAST = { ...FAILOVER_TIMING, membershipTimeoutMs: 20_000 }
const RPO_MS = 5_000
const RTO_MS = 60_000

interface Records {
  lastSeq: number
  lastTime: number
  startSeq: number
  startTime: number
}

describe('failover of a VM whose host dies', () => {
  let mesh: TestMesh

  beforeAll(async () => {
    mesh = await createTestMesh(['A', 'B', 'C'], { env: testEnv({ REPLIMESH_TIMING: JSON.stringify(FAST) }) })
  }, 240_000)

  afterAll(async () => {
    await mesh?.teardown()
  }, 60_000)

  const ok = async (args: string[]) => {
    const r = await mesh.cli(args, 120_000)
    if (r.code !== 0) throw new Error(`replimesh ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }

  it('runs on the replica within its RTO and loses at most its RPO', { timeout: 360_000 }, async () => {
    const [a, b, c] = mesh.nodes
    await ok(['vm', 'create', '--dir', b.dir, 'web1', '--size', '16M'])
    await ok(['vm', 'start', '--dir', b.dir, 'web1', '--no-workload'])
    await ok([
      'protect',
      '--dir',
      b.dir,
      'web1',
      '--rpo',
      `${RPO_MS / 1000}s`,
      '--rto',
      `${RTO_MS / 1000}s`,
      '--to',
      c.peerId,
    ])
    await waitFor(
      'three points of web1 on C',
      async () =>
        (JSON.parse(await ok(['points', '--dir', c.dir, 'web1', '--json'])) as unknown[]).length >= 3,
      120_000,
      500,
    )

    // A test failover first: an isolated copy on C from its own copy of the disks; B keeps running.
    const pointsBefore = (JSON.parse(await ok(['points', '--dir', c.dir, 'web1', '--json'])) as unknown[])
      .length
    const test = JSON.parse(await ok(['failover', '--dir', c.dir, 'web1', '--test', '--json']))
    expect(test).toMatchObject({ vm: 'web1', name: 'web1-test', on: c.peerId, epoch: null })
    expect((await c.call<{ state: string }>('GET', '/vms/web1-test')).state).toBe('running')
    expect((await b.call<{ state: string }>('GET', '/vms/web1')).state).toBe('running')
    await waitFor(
      'replication to go on during the test',
      async () =>
        (JSON.parse(await ok(['points', '--dir', c.dir, 'web1', '--json'])) as unknown[]).length >
        pointsBefore,
      60_000,
      500,
    )
    await ok(['failover', '--dir', c.dir, 'web1', '--end-test'])
    await expect(c.call('GET', '/vms/web1-test')).rejects.toThrow(/404/)

    const killedAt = Date.now()
    await b.kill()
    const runningAt = await (async () => {
      try {
        const runningAt = await waitFor(
          'web1 running on C',
          async () =>
            (await c.call<{ state: string }>('GET', '/vms/web1')).state === 'running'
              ? Date.now()
              : undefined,
          RTO_MS,
          100,
        )
        return runningAt
      } catch (err) {
        const views = async (n: typeof a) =>
          JSON.stringify(
            (
              await n.call<Array<{ peerId: string; site: string; time: number; views: unknown }>>(
                'GET',
                '/mesh/states',
              )
            ).map((x) => ({ site: x.site, time: x.time, views: x.views })),
          )
        const fo = async (n: typeof a) => JSON.stringify(await n.call('GET', '/failover'))
        throw new Error(
          `${(err as Error).message}\nA states: ${await views(a)}\nC states: ${await views(c)}\nA failover: ${await fo(a)}\nC failover: ${await fo(c)}`,
        )
      }
    })()
    const onB = JSON.parse(await ok(['vm', 'records', '--dir', b.dir, 'web1', '--json'])) as Records
    const onC = JSON.parse(await ok(['vm', 'records', '--dir', c.dir, 'web1', '--json'])) as Records
    const lossMs = onB.lastTime - onC.startTime
    console.log(
      `failover: running on C ${runningAt - killedAt} ms after the kill (RTO ${RTO_MS} ms); ` +
        `lost records ${onC.startSeq + 1}..${onB.lastSeq}, ${lossMs} ms of writes (RPO ${RPO_MS} ms)`,
    )
    expect(runningAt - killedAt).toBeLessThan(RTO_MS)
    expect(onC.startSeq).toBeGreaterThan(0)
    expect(onC.startSeq).toBeLessThanOrEqual(onB.lastSeq)
    expect(lossMs).toBeLessThanOrEqual(RPO_MS)

    const status = await c.call<{ owners: Array<{ vm: string; epoch: number; owner: string }> }>(
      'GET',
      '/failover',
    )
    expect(status.owners).toContainEqual({ vm: 'web1', epoch: 1, owner: c.peerId })

    // The old host comes back: it learns the new owner from its peers and keeps its copy stopped.
    await b.start()
    await waitFor(
      'B to learn that C owns web1',
      async () =>
        (
          await b.call<{ owners: Array<{ vm: string; epoch: number; owner: string }> }>('GET', '/failover')
        ).owners.some((o) => o.vm === 'web1' && o.epoch === 1 && o.owner === c.peerId),
      90_000,
      250,
    )
    expect((await b.call<{ state: string }>('GET', '/vms/web1')).state).toBe('stopped')
    expect((await c.call<{ state: string }>('GET', '/vms/web1')).state).toBe('running')
  })
})

// Shared set-up of the hand-over e2e files (planned failover, failback): a 3-node mesh with the
// failover timing profile, and the reads those tests make of one VM on a node.
import { afterAll, beforeAll } from 'vitest'
import { createTestMesh, FAILOVER_TIMING, type TestMesh, type TestNode, testEnv } from '../helpers/nodes.js'

export interface Records {
  lastSeq: number
  lastTime: number
  startSeq: number
  startTime: number
}

export interface VmRow {
  name: string
  role: 'primary' | 'replica'
  state: 'running' | 'stopped'
  owner: string
  epoch: number
}

/**
 * Registers beforeAll/afterAll for nodes A, B, C and returns readers of `vm`. Polling goes through
 * the API (a CLI process per poll loads a shared machine); `cliRow` checks the CLI's status --json.
 */
export function failoverMesh(vm = 'web1') {
  let mesh: TestMesh | undefined
  beforeAll(async () => {
    mesh = await createTestMesh(['A', 'B', 'C'], {
      env: testEnv({ REPLIMESH_TIMING: JSON.stringify({ ...FAILOVER_TIMING, membershipTimeoutMs: 20_000 }) }),
    })
  }, 120_000)
  afterAll(async () => {
    await mesh?.teardown()
  }, 60_000)

  const current = (): TestMesh => {
    if (!mesh) throw new Error('the mesh did not start')
    return mesh
  }
  const ok = async (args: string[]) => {
    const r = await current().cli(args, 120_000)
    if (r.code !== 0) throw new Error(`replimesh ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  return {
    get mesh() {
      return current()
    },
    ok,
    records: async (n: TestNode) =>
      JSON.parse(await ok(['vm', 'records', '--dir', n.dir, vm, '--json'])) as Records,
    row: async (n: TestNode) => ((await n.status()).vms as VmRow[]).find((v) => v.name === vm),
    cliRow: async (n: TestNode) => {
      const s = JSON.parse(await ok(['status', '--dir', n.dir, '--json'])) as { vms: VmRow[] }
      return s.vms.find((v) => v.name === vm)
    },
    points: (n: TestNode) =>
      n.call<Array<{ seq: number; epoch: number }>>('GET', `/replication/points/${vm}`),
  }
}

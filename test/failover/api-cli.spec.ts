// The failover API routes and the `failover`/`failback` commands: the real CLI binary talks to
// a real HTTP server carrying the daemon's failover routes (with a stand-in service), through
// api.json and api.token in a temporary node folder, as it would talk to a running node.
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FailoverError, type FailoverOutcome } from '../../src/failover/index.js'
import type { NodeComponents } from '../../src/node/api/components.js'
import { type FailoverApi, failoverRoutes } from '../../src/node/api/failover.js'
import { failoverRequest } from '../../src/node/cli/failover.js'
import { snapshotBuild } from '../helpers/nodes.js'

// A private copy of the build: other helpers rewrite dist/ while tests run.
let build: { bin: string; remove: () => Promise<void> }

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('node', [build.bin, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })
    })
  })
}

const calls: string[] = []
const outcome = (vm: string, on: string, epoch: number | null): FailoverOutcome => ({
  vm,
  on,
  name: epoch === null ? `${vm}-test` : vm,
  epoch,
  pointSeq: 42,
  dataLossMs: 2100,
  tookMs: 800,
})
const standIn: FailoverApi = {
  failover: async (vm, o) => {
    calls.push(`failover ${vm} ${o.mode} ${o.to ?? '-'}`)
    if (vm === 'broken') throw new FailoverError(vm, 'no live peer holds a committed point of it')
    return outcome(vm, o.to ?? 'peerC', o.mode === 'test' ? null : 3)
  },
  failoverHosts: async (hosts) => {
    calls.push(`hosts ${hosts.join(',')}`)
    return [
      { vm: 'db1', ok: true, on: 'peerC' },
      { vm: 'app', ok: false, on: null, error: 'tier bronze alerts and waits' },
    ]
  },
  hostsAt: (site) => (site === 'B' ? ['peerB1', 'peerB2'] : []),
  failback: async (vm, o = {}) => {
    calls.push(`failback ${vm} ${o.to ?? '-'}`)
    return outcome(vm, o.to ?? 'peerA', 4)
  },
  endTest: async (vm) => void calls.push(`end ${vm}`),
  status: () => ({
    peerId: 'peerC',
    site: 'C',
    quorum: null,
    lease: {
      leaseMs: null,
      promotionDelayMs: null,
      state: 'unarmed',
      expiresAtMs: null,
      heardSites: [],
      fenced: [],
      lastExpiry: null,
      lastRegain: null,
    },
    owners: [],
    rpoBreaches: [],
    notifications: [],
  }),
}

let dir: string
let emptyDir: string
let app: FastifyInstance
let url: string
beforeAll(async () => {
  build = await snapshotBuild()
  dir = await mkdtemp(join(tmpdir(), 'replimesh-failover-cli-'))
  emptyDir = await mkdtemp(join(tmpdir(), 'replimesh-failover-none-'))
  app = Fastify()
  app.addHook('onRequest', async (request, reply) => {
    if (request.headers.authorization !== 'Bearer t0ken') return reply.code(401).send({ error: 'bad token' })
  })
  await failoverRoutes(app, { failover: standIn } as unknown as NodeComponents & { failover: FailoverApi })
  url = await app.listen({ host: '127.0.0.1', port: 0 })
  await writeFile(join(dir, 'api.json'), JSON.stringify({ url }))
  await writeFile(join(dir, 'api.token'), 't0ken\n')
})
afterAll(async () => {
  await build?.remove()
  await app.close()
  await rm(dir, { recursive: true, force: true })
  await rm(emptyDir, { recursive: true, force: true })
})

describe('failover command line', () => {
  it.each([
    [[], /exactly one of/],
    [['web1', '--host', 'p'], /exactly one of/],
    [['--host', 'p', '--site', 'B'], /exactly one of/],
    [['web1', '--test', '--planned'], /cannot be combined/],
    [['--site', 'B', '--to', 'p'], /apply to one VM/],
    [['web1', '--end-test', '--to', 'p'], /--end-test takes only the VM/],
  ])('refuses %j with exit code 2', async (args, message) => {
    const r = await cli(['failover', '--dir', dir, ...args])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
  })

  it('maps options to API requests', () => {
    expect(failoverRequest('web1', { dir })).toEqual({
      path: '/failover',
      body: { vm: 'web1', mode: 'manual' },
    })
    expect(failoverRequest('web1', { dir, to: 'p', test: true })).toEqual({
      path: '/failover',
      body: { vm: 'web1', to: 'p', mode: 'test' },
    })
    expect(failoverRequest(undefined, { dir, site: 'B' })).toEqual({ path: '/failover', body: { site: 'B' } })
    expect(failoverRequest('web1', { dir, endTest: true })).toEqual({
      path: '/failover/test/end',
      body: { vm: 'web1' },
    })
  })

  it('fails over one VM through the node and prints what happened', async () => {
    const r = await cli(['failover', '--dir', dir, 'web1', '--to', 'peerD'])
    expect(r).toMatchObject({ code: 0, stderr: '' })
    expect(r.stdout).toBe('web1 runs on peerD (epoch 3) from point 42; data loss 2.1 s; took 0.8 s\n')
    const j = await cli(['failover', '--dir', dir, 'web1', '--test', '--json'])
    expect(JSON.parse(j.stdout)).toEqual(outcome('web1', 'peerC', null))
    expect(calls).toContain('failover web1 manual peerD')
    expect(calls).toContain('failover web1 test -')
  })

  it('fails over a site, exit 1 when a VM could not be', async () => {
    const r = await cli(['failover', '--dir', dir, '--site', 'B'])
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('db1: runs on peerC\napp: NOT failed over: tier bronze alerts and waits\n')
    expect(calls).toContain('hosts peerB1,peerB2')
    const none = await cli(['failover', '--dir', dir, '--site', 'Z'])
    expect(none).toMatchObject({ code: 1, stderr: 'replimesh: no host of site Z is known here\n' })
  })

  it('reports a refused failover and a missing node in one line; planned mode goes through', async () => {
    const r = await cli(['failover', '--dir', dir, 'broken'])
    expect(r).toMatchObject({
      code: 1,
      stderr: 'replimesh: cannot fail over broken: no live peer holds a committed point of it\n',
    })
    const planned = await cli(['failover', '--dir', dir, 'web1', '--planned', '--to', 'peerA'])
    expect(planned).toMatchObject({ code: 0, stderr: '' })
    expect(calls).toContain('failover web1 planned peerA')
    const none = await cli(['failover', '--dir', emptyDir, 'web1'])
    expect(none.code).toBe(1)
    expect(none.stderr).toMatch(/^replimesh: no node is running on /)
  })

  it('fails back and ends a test', async () => {
    const r = await cli(['failback', '--dir', dir, 'web1'])
    expect(r.stdout).toBe('web1 runs on peerA (epoch 4) from point 42; data loss 2.1 s; took 0.8 s\n')
    const end = await cli(['failover', '--dir', dir, 'web1', '--end-test'])
    expect(end).toMatchObject({ code: 0, stdout: 'test copy of web1 removed\n' })
    expect(calls).toEqual(expect.arrayContaining(['failback web1 -', 'end web1']))
  })

  it('answers 400 for a bad body and 503 without a service', async () => {
    const bad = await fetch(`${url}/failover`, {
      method: 'POST',
      headers: { authorization: 'Bearer t0ken', 'content-type': 'application/json' },
      body: JSON.stringify({ vm: 'w', mode: 'sideways' }),
    })
    expect(bad.status).toBe(400)
    const bare = Fastify()
    await failoverRoutes(bare, {} as NodeComponents)
    const res = await bare.inject({ method: 'GET', url: '/failover' })
    expect(res.statusCode).toBe(503)
    expect(res.json().error).toBe('failover is not running on this node (no hypervisor on this node)')
    await bare.close()
  })
})

// The daemon's VM routes (src/node/api/vm.ts) over a real lab hypervisor, through fastify's
// inject: statuses for the hypervisor's named errors, body validation, a write round trip.
import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { NodeComponents } from '../../../src/node/api/components.js'
import { vmRoutes } from '../../../src/node/api/vm.js'
import { type LabHost, MiB, makeLabHost, useBuildSnapshot } from './helpers.js'

describe('VM API routes', () => {
  const build = useBuildSnapshot()
  let host: LabHost
  let app: FastifyInstance
  beforeEach(async () => {
    host = await makeLabHost(build().guestScript)
    await host.hv.createVm('api1', { sizeBytes: 8 * MiB })
    app = Fastify()
    app.setErrorHandler((err: Error & { statusCode?: number }, _req, reply) =>
      reply.code(err.statusCode ?? 500).send({ error: err.message }),
    )
    await vmRoutes(app, { hypervisor: host.hv } as unknown as NodeComponents)
  })
  afterEach(async () => {
    await app.close()
    await host.cleanup()
  })

  it('lists, starts with a workload, writes, refuses a second start, stops', async () => {
    const list = await app.inject({ method: 'GET', url: '/vms' })
    expect(list.statusCode).toBe(200)
    expect(list.json()[0]).toMatchObject({ name: 'api1', state: 'stopped' })

    const start = await app.inject({
      method: 'POST',
      url: '/vms/api1/start',
      payload: { workload: { rateBytesPerSec: 65536, pattern: 'sequential' } },
    })
    expect(start.statusCode).toBe(200)
    expect(start.json().state).toBe('running')
    const again = await app.inject({ method: 'POST', url: '/vms/api1/start', payload: {} })
    expect(again.statusCode).toBe(409)
    expect(again.json().error).toMatch(/already running/)

    const data = Buffer.from('through the API')
    const write = await app.inject({
      method: 'POST',
      url: '/vms/api1/write',
      payload: { disk: 0, offset: 4096, data: data.toString('base64') },
    })
    expect(write.json()).toEqual({ vm: 'api1', disk: 0, offset: 4096, bytes: data.length })
    const guest = await app.inject({ method: 'GET', url: '/vms/api1/guest' })
    expect(guest.json().seq).toBeGreaterThan(0)

    const region = await app.inject({
      method: 'POST',
      url: '/vms/api1/write',
      payload: { disk: 0, offset: 8 * MiB - 512, data: data.toString('base64') },
    })
    expect(region.statusCode).toBe(400)
    const stop = await app.inject({ method: 'POST', url: '/vms/api1/stop', payload: {} })
    expect(stop.json().state).toBe('stopped')
    const notRunning = await app.inject({
      method: 'POST',
      url: '/vms/api1/write',
      payload: { offset: 0, data: 'AA==' },
    })
    expect(notRunning.statusCode).toBe(409)
  })

  it('answers 404 for an unknown VM and 400 for a bad body', async () => {
    expect((await app.inject({ method: 'GET', url: '/vms/nope' })).statusCode).toBe(404)
    expect((await app.inject({ method: 'POST', url: '/vms/nope/start', payload: {} })).statusCode).toBe(404)
    const bad = await app.inject({
      method: 'POST',
      url: '/vms/api1/start',
      payload: { workload: { rate: 5 } },
    })
    expect(bad.statusCode).toBe(400)
    expect(bad.json().error).toMatch(/bad request body/)
    const badWrite = await app.inject({
      method: 'POST',
      url: '/vms/api1/write',
      payload: { offset: -1, data: '' },
    })
    expect(badWrite.statusCode).toBe(400)
  })
})

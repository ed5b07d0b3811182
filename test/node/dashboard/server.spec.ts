// The dashboard on the daemon's API server: its page and style sheet answer without the token,
// with headers that forbid framing and inline code; every datum still needs the token.
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { NodeComponents } from '../../../src/node/api/components.js'
import { buildApiServer } from '../../../src/node/api/server.js'
import { dashboardUrl } from '../../../src/node/dashboard/index.js'

const TOKEN = 'tok_en-123'

describe('dashboard routes', () => {
  let app: FastifyInstance

  beforeAll(async () => {
    const mesh = { peerId: 'self', site: 'A', addrs: () => [], peers: () => [] }
    const components = {
      dir: '/nonexistent',
      logger: pino({ level: 'silent' }),
      mesh,
      hypervisor: null,
      vmStatus: async () => [],
    } as unknown as NodeComponents
    app = await buildApiServer({ components, token: TOKEN })
  })
  afterAll(async () => {
    await app?.close()
  })

  it('serves the page without the token, framing and inline code forbidden', async () => {
    const res = await app.inject({ method: 'GET', url: '/dashboard' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8')
    expect(res.headers['x-frame-options']).toBe('DENY')
    expect(res.headers['content-security-policy']).toContain("frame-ancestors 'none'")
    expect(res.headers['content-security-policy']).toContain("script-src 'self';")
    expect(res.body).toContain('<script type="module" src="/dashboard/app.js"></script>')
    expect(res.body).not.toMatch(/<script>|style="/)
    const css = await app.inject({ method: 'GET', url: '/dashboard/style.css' })
    expect(css.statusCode).toBe(200)
    expect(css.headers['content-type']).toBe('text/css; charset=utf-8')
    const root = await app.inject({ method: 'GET', url: '/' })
    expect(root.statusCode).toBe(302)
    expect(root.headers.location).toBe('/dashboard')
  })

  it('still needs the token for data and actions, and sends no CORS header', async () => {
    for (const [method, url] of [
      ['GET', '/status'],
      ['GET', '/dashboard/../status'],
      ['POST', '/dashboard'],
      ['GET', '/dashboard/nope.js'],
    ] as const) {
      const res = await app.inject({ method, url, headers: { origin: 'http://evil.example' } })
      expect(res.statusCode, `${method} ${url}`).toBe(401)
      expect(res.headers['access-control-allow-origin']).toBeUndefined()
    }
    const ok = await app.inject({
      method: 'GET',
      url: '/status',
      headers: { authorization: `Bearer ${TOKEN}` },
    })
    expect(ok.statusCode).toBe(200)
    expect(ok.json()).toMatchObject({ peerId: 'self', site: 'A', peers: [], vms: [] })
  })

  it('builds the address with the token in the fragment', () => {
    expect(dashboardUrl('http://127.0.0.1:4321', 'a+b')).toBe('http://127.0.0.1:4321/dashboard#token=a%2Bb')
  })
})

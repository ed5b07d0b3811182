// The dashboard's routes on the daemon's API server: the page, its style sheet and its two
// scripts, served WITHOUT the API token (route config `public`; they carry no data). Everything
// they show comes from the token-protected routes. The scripts are app.ts and view.ts compiled
// next to this module (dist/src/node/dashboard/), read once and kept.
import { readFile } from 'node:fs/promises'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { DASHBOARD_CSS, DASHBOARD_HTML } from './page.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Served without the API token: only the dashboard's page and scripts, which hold no data. */
    public?: boolean
  }
}

export const DASHBOARD_PATH = '/dashboard'

/** Scripts the page loads, by file name next to this module. */
const SCRIPTS = ['app.js', 'view.js'] as const

/**
 * No framing (a one-click failover must not be clickjacked), no inline script or style, requests
 * only to this origin, no referrer.
 */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
}

function send(reply: FastifyReply, type: string, body: string): FastifyReply {
  return reply.headers(SECURITY_HEADERS).type(type).send(body)
}

export async function dashboardRoutes(app: FastifyInstance): Promise<void> {
  const open = { config: { public: true } }
  const scripts = new Map<string, string>()
  app.get('/', open, (_request, reply) => reply.redirect(DASHBOARD_PATH))
  app.get(DASHBOARD_PATH, open, (_request, reply) => send(reply, 'text/html; charset=utf-8', DASHBOARD_HTML))
  app.get(`${DASHBOARD_PATH}/style.css`, open, (_request, reply) =>
    send(reply, 'text/css; charset=utf-8', DASHBOARD_CSS),
  )
  for (const name of SCRIPTS)
    app.get(`${DASHBOARD_PATH}/${name}`, open, async (_request, reply) => {
      let text = scripts.get(name)
      if (text === undefined) {
        try {
          text = await readFile(new URL(`./${name}`, import.meta.url), 'utf8')
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
          return reply.code(500).send({
            error: `the dashboard's ${name} is not built next to ${import.meta.url} (run npm run build)`,
          })
        }
        scripts.set(name, text)
      }
      return send(reply, 'text/javascript; charset=utf-8', text)
    })
}

// Webhooks from the Notifier against a real HTTP server on loopback: signed JSON, retries with
// backoff on 5xx, no retry on 4xx, a bounded queue that drops the oldest, and a flushing close.
import { createHmac } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import {
  messages,
  type Notification,
  parseNotifierConfig,
  verifyWebhookSignature,
  WebhookChannel,
  type WebhookConfig,
} from '../../src/failover/index.js'

interface Hit {
  at: number
  headers: IncomingMessage['headers']
  body: string
}

let server: Server | null = null
afterEach(async () => {
  server?.closeAllConnections()
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()))
  server = null
})

/** Starts a server whose answer to the i-th request (0-based) is chosen by `answer`. */
async function receiver(
  answer: (i: number, res: ServerResponse) => void,
): Promise<{ url: string; hits: Hit[] }> {
  const hits: Hit[] = []
  server = createServer((req, res) => {
    const parts: Buffer[] = []
    req.on('data', (d) => parts.push(d))
    req.on('end', () => {
      hits.push({ at: Date.now(), headers: req.headers, body: Buffer.concat(parts).toString('utf8') })
      answer(hits.length - 1, res)
    })
  })
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, hits }
}

function config(url: string, extra: Partial<WebhookConfig> = {}): WebhookConfig {
  return parseNotifierConfig({ webhooks: [{ url, initialBackoffMs: 40, maxBackoffMs: 400, ...extra }] })
    .webhooks[0]
}

function note(id: string): Notification {
  return messages.rpoBreach(
    { node: 'hv1', site: 'A', id, time: 1_700_000_000_000 },
    { vm: 'web1', lagMs: 9000, rpoMs: 5000 },
  )
}

async function until(pred: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error('deadline passed')
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('webhook channel', () => {
  it('POSTs the notification as JSON with an HMAC-SHA256 signature and a delivery id', async () => {
    const { url, hits } = await receiver((_, res) => res.writeHead(204).end())
    const secret = 'a-long-shared-webhook-secret'
    const delivered: string[] = []
    const ch = new WebhookChannel(config(url, { secret }), { delivered: (n) => delivered.push(n.id) })
    await ch.send(note('hook-1'))
    await until(() => delivered.length === 1)
    await ch.close()

    const [hit] = hits
    expect(hit.headers['content-type']).toBe('application/json')
    expect(hit.headers['x-replimesh-delivery']).toBe('hook-1')
    const body = JSON.parse(hit.body)
    expect(body).toMatchObject({ id: 'hook-1', kind: 'rpo-breach', vm: 'web1', severity: 'error' })
    expect(body.failed).toMatch(/9\.0 s old; its RPO is 5\.0 s/)
    expect(body.done).toBeTruthy()
    expect(body.decide).toBeTruthy()
    // Independent check of the signature with node:crypto, as a receiver would do it.
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(hit.headers['x-replimesh-signature']))!
    expect(m).not.toBeNull()
    expect(m[2]).toBe(createHmac('sha256', secret).update(`${m[1]}.${hit.body}`).digest('hex'))
    expect(Math.abs(Number(m[1]) - hit.at)).toBeLessThan(5_000)
    expect(verifyWebhookSignature(secret, String(hit.headers['x-replimesh-signature']), hit.body)).toBe(true)
    expect(verifyWebhookSignature(secret, String(hit.headers['x-replimesh-signature']), hit.body + ' ')).toBe(
      false,
    )
    expect(
      verifyWebhookSignature('another-secret-of-16', String(hit.headers['x-replimesh-signature']), hit.body),
    ).toBe(false)
  })

  it('retries 503 and 429 with growing delays, then delivers', async () => {
    const { url, hits } = await receiver((i, res) => {
      if (i === 0) res.writeHead(503).end()
      else if (i === 1) res.writeHead(429, { 'retry-after': '0' }).end()
      else if (i === 2) res.writeHead(500).end()
      else res.writeHead(200).end('ok')
    })
    let attempts = 0
    const ch = new WebhookChannel(config(url), { delivered: (_, a) => (attempts = a) }, () => 1)
    await ch.send(note('hook-2'))
    await until(() => attempts > 0)
    await ch.close()
    expect(attempts).toBe(4)
    expect(hits.map((h) => JSON.parse(h.body).id)).toEqual(['hook-2', 'hook-2', 'hook-2', 'hook-2'])
    // Delays with jitter pinned to its maximum: 40 ms, then Retry-After 0, then 160 ms.
    expect(hits[1].at - hits[0].at).toBeGreaterThanOrEqual(35)
    expect(hits[3].at - hits[2].at).toBeGreaterThanOrEqual(150)
  })

  it('gives up at once on 400 and after maxAttempts on 5xx', async () => {
    const { url, hits } = await receiver((i, res) => res.writeHead(i === 0 ? 400 : 502).end())
    const gaveUp: Array<[string, number, string]> = []
    const ch = new WebhookChannel(config(url, { maxAttempts: 3 }), {
      gaveUp: (n, a, r) => gaveUp.push([n.id, a, r]),
    })
    await ch.send(note('bad-request'))
    await ch.send(note('server-down'))
    await until(() => gaveUp.length === 2)
    await ch.close()
    expect(gaveUp[0]).toEqual(['bad-request', 1, `HTTP 400 from ${url}`])
    expect(gaveUp[1]).toEqual(['server-down', 3, `HTTP 502 from ${url}`])
    expect(hits.length).toBe(4)
  })

  it('keeps at most queueLimit notifications waiting and drops the oldest', async () => {
    const held: ServerResponse[] = []
    const { url, hits } = await receiver((_, res) => held.push(res))
    const dropped: string[] = []
    const delivered: string[] = []
    const ch = new WebhookChannel(config(url, { queueLimit: 2 }), {
      dropped: (n) => dropped.push(n.id),
      delivered: (n) => delivered.push(n.id),
    })
    for (const id of ['n1', 'n2', 'n3', 'n4', 'n5']) await ch.send(note(id))
    await until(() => held.length === 1)
    expect(ch.pending).toBe(3) // n1 in flight, n4 and n5 waiting
    expect(dropped).toEqual(['n2', 'n3'])
    const release = setInterval(() => {
      for (const r of held.splice(0)) r.writeHead(200).end()
    }, 5)
    await until(() => delivered.length === 3)
    clearInterval(release)
    await ch.close()
    expect(delivered).toEqual(['n1', 'n4', 'n5'])
    expect(hits.map((h) => JSON.parse(h.body).id)).toEqual(['n1', 'n4', 'n5'])
  })

  it('close() delivers what is queued, and abandons it when its signal aborts', async () => {
    const { url, hits } = await receiver((_, res) => res.writeHead(200).end())
    const ch = new WebhookChannel(config(url))
    for (const id of ['a', 'b', 'c']) await ch.send(note(id))
    await ch.close()
    expect(hits.map((h) => JSON.parse(h.body).id)).toEqual(['a', 'b', 'c'])
    await expect(ch.send(note('late'))).rejects.toThrow(/closed/)

    const gaveUp: string[] = []
    const dead = new WebhookChannel(
      config('http://127.0.0.1:9/unreachable', { maxAttempts: 50, initialBackoffMs: 1000 }),
      {
        gaveUp: (n) => gaveUp.push(n.id),
      },
    )
    await dead.send(note('x'))
    await dead.send(note('y'))
    const t0 = Date.now()
    await dead.close({ signal: AbortSignal.timeout(200) })
    expect(Date.now() - t0).toBeLessThan(2_000)
    expect(gaveUp.sort()).toEqual(['x', 'y'])
  })
})

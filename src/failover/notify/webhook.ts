// Webhook channel: each notification is POSTed as JSON, in order, from a bounded queue. A
// failed delivery (network error, timeout, 408/429/5xx) is retried with exponential backoff and
// jitter (Retry-After honoured, capped); other 4xx answers are final. When the queue is full the
// oldest notification is dropped and reported, so a dead receiver never grows memory.
//
// Signature (when a secret is set): `x-replimesh-signature: t=<ms>,v1=<hex>` where hex is
// HMAC-SHA256(secret, "<ms>.<body>"). Receivers recompute it and reject old timestamps (replays).
import { createHmac, timingSafeEqual } from 'node:crypto'
import { WEBHOOK_MAX_BODY_BYTES } from '../constants.js'
import type { WebhookConfig } from './config.js'
import type { Notification, NotificationChannel } from './types.js'

export const SIGNATURE_HEADER = 'x-replimesh-signature'
export const DELIVERY_HEADER = 'x-replimesh-delivery'

export function signWebhook(secret: string, timestampMs: number, body: string): string {
  const hex = createHmac('sha256', secret).update(`${timestampMs}.${body}`).digest('hex')
  return `t=${timestampMs},v1=${hex}`
}

/** For receivers (and our own API): true when `header` signs `body` and is at most `toleranceMs` old. */
export function verifyWebhookSignature(
  secret: string,
  header: string,
  body: string,
  options: { toleranceMs?: number; nowMs?: number } = {},
): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header)
  if (!m) return false
  const t = Number(m[1])
  if (Math.abs((options.nowMs ?? Date.now()) - t) > (options.toleranceMs ?? 300_000)) return false
  const want = Buffer.from(signWebhook(secret, t, body).slice(-64), 'hex')
  return timingSafeEqual(want, Buffer.from(m[2], 'hex'))
}

/** Delay before retry number `attempt` (1 = first retry), before jitter. */
export function backoffMs(attempt: number, initialMs: number, maxMs: number): number {
  return Math.min(maxMs, initialMs * 2 ** (attempt - 1))
}

export interface WebhookEvents {
  delivered?(n: Notification, attempts: number): void
  gaveUp?(n: Notification, attempts: number, reason: string): void
  dropped?(n: Notification): void
}

class RetryableError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number | null = null,
  ) {
    super(message)
  }
}

export class WebhookChannel implements NotificationChannel {
  readonly name: string
  /** Waiting notifications, oldest first; the one being delivered is `inFlight`. */
  private readonly queue: Notification[] = []
  private inFlight: Notification | null = null
  private pumping: Promise<void> | null = null
  private readonly stopping = new AbortController()
  private closed = false

  constructor(
    private readonly config: WebhookConfig,
    private readonly events: WebhookEvents = {},
    private readonly random: () => number = Math.random,
  ) {
    this.name = `webhook:${new URL(config.url).host}`
  }

  /** Queues the notification; resolves at once. Delivery results arrive through `events`. */
  async send(n: Notification): Promise<void> {
    if (this.closed) throw new Error('webhook channel is closed')
    this.queue.push(n)
    while (this.queue.length > this.config.queueLimit) {
      const dropped = this.queue.shift()!
      this.events.dropped?.(dropped)
    }
    this.pumping ??= this.pump().finally(() => {
      this.pumping = null
    })
  }

  /** Notifications not yet delivered or given up, the one in flight included. */
  get pending(): number {
    return this.queue.length + (this.inFlight ? 1 : 0)
  }

  private async pump(): Promise<void> {
    while (this.queue.length && !this.stopping.signal.aborted) {
      this.inFlight = this.queue.shift()!
      await this.deliver(this.inFlight)
      this.inFlight = null
    }
  }

  private async deliver(n: Notification): Promise<void> {
    const c = this.config
    let body = JSON.stringify(n)
    if (Buffer.byteLength(body) > WEBHOOK_MAX_BODY_BYTES) body = JSON.stringify({ ...n, details: undefined })
    for (let attempt = 1; ; attempt++) {
      try {
        await this.post(body, n.id)
        this.events.delivered?.(n, attempt)
        return
      } catch (err) {
        const reason = (err as Error).message
        if (!(err instanceof RetryableError) || attempt >= c.maxAttempts || this.stopping.signal.aborted) {
          this.events.gaveUp?.(n, attempt, reason)
          return
        }
        const base = backoffMs(attempt, c.initialBackoffMs, c.maxBackoffMs)
        const wait =
          err.retryAfterMs !== null
            ? Math.min(err.retryAfterMs, c.maxBackoffMs)
            : base / 2 + (this.random() * base) / 2
        if (!(await sleep(wait, this.stopping.signal))) {
          this.events.gaveUp?.(n, attempt, `${reason} (channel closed before retry)`)
          return
        }
      }
    }
  }

  private async post(body: string, id: string): Promise<void> {
    const c = this.config
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'replimesh-notifier',
      [DELIVERY_HEADER]: id,
    }
    if (c.secret) headers[SIGNATURE_HEADER] = signWebhook(c.secret, Date.now(), body)
    let res: Response
    try {
      res = await fetch(c.url, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.any([AbortSignal.timeout(c.timeoutMs), this.stopping.signal]),
      })
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code
      throw new RetryableError(`${(err as Error).message}${cause ? ` (${cause})` : ''}`)
    }
    await res.body?.cancel()
    if (res.ok) return
    const reason = `HTTP ${res.status} from ${c.url}`
    if (res.status === 408 || res.status === 429 || res.status >= 500) {
      // Retry-After in seconds (RFC 9110 §10.2.3); the HTTP-date form falls back to our backoff.
      const header = res.headers.get('retry-after')
      const after = header !== null && /^\d+$/.test(header.trim()) ? Number(header) * 1000 : null
      throw new RetryableError(reason, after)
    }
    throw new Error(reason)
  }

  /** Delivers what is queued until `signal` aborts, then abandons the rest (reported as gaveUp). */
  async close(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.closed = true
    const onAbort = () => this.stopping.abort()
    if (options.signal?.aborted) onAbort()
    options.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      await this.pumping
    } finally {
      options.signal?.removeEventListener('abort', onAbort)
      this.stopping.abort()
    }
    for (const n of this.queue.splice(0)) this.events.gaveUp?.(n, 0, 'channel closed')
  }
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false)
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve(true)
    }, ms)
    const onAbort = () => {
      clearTimeout(timer)
      resolve(false)
    }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

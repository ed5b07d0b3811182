// E-mail from the Notifier arrives at a real SMTP server (smtp-server) over TLS: STARTTLS and
// implicit TLS with a certificate made by openssl for this test; untrusted certificates and a
// server without STARTTLS get no mail (no silent downgrade to plaintext).
import { execFileSync } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SMTPServer, type SMTPServerOptions } from 'smtp-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNotifier, messages, parseNotifierConfig } from '../../src/failover/index.js'
import { hasTool, oracle } from '../helpers/oracles.js'

interface Received {
  from: string
  to: string[]
  secure: boolean
  user: string | undefined
  raw: string
}

/** Quoted-printable soft breaks and escapes (RFC 2045 §6.7), enough to read nodemailer's text. */
function decodeQp(text: string): string {
  const bytes = text
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)))
  return Buffer.from(bytes, 'latin1').toString('utf8')
}

describe.runIf(oracle('openssl', hasTool('openssl', ['version'])))(
  'e-mail channel against smtp-server',
  () => {
    let dir: string
    let key: string
    let cert: string
    const servers: SMTPServer[] = []
    const inbox: Received[] = []

    async function startServer(options: Partial<SMTPServerOptions>): Promise<number> {
      const server = new SMTPServer({
        key,
        cert,
        authOptional: true,
        onAuth(auth, _session, cb) {
          if (auth.username === 'ops' && auth.password === 's3cret') cb(null, { user: 'ops' })
          else cb(new Error('bad credentials'))
        },
        onData(stream, session, cb) {
          const parts: Buffer[] = []
          stream.on('data', (d: Buffer) => parts.push(d))
          stream.on('end', () => {
            inbox.push({
              from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
              to: session.envelope.rcptTo.map((r) => r.address),
              secure: session.secure,
              user: session.user as string | undefined,
              raw: Buffer.concat(parts).toString('latin1'),
            })
            cb()
          })
        },
        logger: false,
        ...options,
      })
      servers.push(server)
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      return ((server as unknown as { server: { address(): AddressInfo } }).server.address() as AddressInfo)
        .port
    }

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'replimesh-smtp-'))
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=localhost',
          '-addext',
          'subjectAltName=IP:127.0.0.1,DNS:localhost',
          '-keyout',
          join(dir, 'key.pem'),
          '-out',
          join(dir, 'cert.pem'),
        ],
        { stdio: 'ignore' },
      )
      key = await readFile(join(dir, 'key.pem'), 'utf8')
      cert = await readFile(join(dir, 'cert.pem'), 'utf8')
    })

    afterAll(async () => {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))))
      await rm(dir, { recursive: true, force: true })
    })

    const failoverMail = (id: string) =>
      messages.failoverCompleted(
        { node: 'hv3', site: 'C', id },
        {
          vm: 'db1',
          from: 'hv2',
          to: 'hv3',
          epoch: 4,
          pointSeq: 118,
          dataLossMs: 2100,
          rpoMs: 5000,
          downtimeMs: 4200,
          rtoMs: 120_000,
        },
      )

    it('sends over STARTTLS with authentication, verified against the test CA', async () => {
      const port = await startServer({ secure: false })
      const notifier = createNotifier(
        parseNotifierConfig({
          email: {
            host: '127.0.0.1',
            port,
            security: 'starttls',
            ca: cert,
            user: 'ops',
            password: 's3cret',
            from: 'replimesh@example.org',
            to: ['oncall@example.org', 'dr@example.org'],
            minLevel: 'warning',
          },
        }),
      )
      const n = failoverMail('mail-1')
      expect(await notifier.notify(n)).toEqual([{ channel: 'email', result: 'sent' }])
      await notifier.stop()
      const mail = inbox.find((m) => m.raw.includes('mail-1'))!
      expect(mail.secure).toBe(true)
      expect(mail.user).toBe('ops')
      expect(mail.from).toBe('replimesh@example.org')
      expect(mail.to).toEqual(['oncall@example.org', 'dr@example.org'])
      const text = decodeQp(mail.raw)
      expect(text).toContain('Subject: [replimesh] WARNING: VM db1 now runs on hv3')
      expect(text).toContain(`What failed: ${n.failed}`)
      expect(text).toContain(`What was done: ${n.done}`)
      expect(text).toContain(`What to decide: ${n.decide}`)
    })

    it('sends over implicit TLS', async () => {
      const port = await startServer({ secure: true })
      const notifier = createNotifier(
        parseNotifierConfig({
          email: {
            host: '127.0.0.1',
            port,
            security: 'tls',
            ca: cert,
            from: 'replimesh@example.org',
            to: ['oncall@example.org'],
          },
        }),
      )
      const n = messages.failoverFailed(
        { node: 'hv3', id: 'mail-2' },
        { vm: 'db1', from: 'hv2', to: 'hv3', reason: 'no disk space' },
      )
      expect(await notifier.notify(n)).toEqual([{ channel: 'email', result: 'sent' }])
      await notifier.stop()
      const mail = inbox.find((m) => m.raw.includes('mail-2'))!
      expect(mail.secure).toBe(true)
      expect(decodeQp(mail.raw)).toContain('Subject: [replimesh] CRITICAL: Failover of VM db1 failed')
    })

    it('refuses a certificate it cannot verify, and a server without STARTTLS', async () => {
      const tlsPort = await startServer({ secure: false })
      const plainPort = await startServer({
        secure: false,
        hideSTARTTLS: true,
        disabledCommands: ['STARTTLS'],
      })
      const before = inbox.length
      for (const [port, ca] of [
        [tlsPort, undefined],
        [plainPort, cert],
      ] as const) {
        const notifier = createNotifier(
          parseNotifierConfig({
            email: {
              host: '127.0.0.1',
              port,
              ca,
              from: 'replimesh@example.org',
              to: ['oncall@example.org'],
              timeoutMs: 5000,
            },
          }),
        )
        const n = messages.failoverFailed({ node: 'hv3' }, { vm: 'db1', from: 'hv2', to: null, reason: 'x' })
        const [result] = await notifier.notify(n)
        expect({
          case: port === tlsPort ? 'untrusted certificate' : 'no STARTTLS',
          result: result.result,
        }).toMatchObject({ result: 'failed' })
        expect(result.error).toBeTruthy()
        await notifier.stop()
      }
      expect(inbox.length).toBe(before)
    })
  },
)

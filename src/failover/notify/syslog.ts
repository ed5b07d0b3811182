// Syslog channel: RFC 5424 messages over UDP (RFC 5426), or a TCP/unix stream socket with
// octet-counting framing (RFC 6587 §3.4.1). Node's dgram has no unix datagram sockets, so a
// local /dev/log (datagram) is reached through a UDP listener of the local syslog daemon instead.
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { connect, type Socket } from 'node:net'
import { hostname } from 'node:os'
import { SYSLOG_STREAM_MAX_BYTES, SYSLOG_UDP_MAX_BYTES } from '../constants.js'
import { SYSLOG_FACILITIES, type SyslogConfig } from './config.js'
import type { Notification, NotificationChannel, Severity } from './types.js'

/** RFC 5424 §6.2.1 severities. */
const SYSLOG_SEVERITY: Record<Severity, number> = { critical: 2, error: 3, warning: 4, info: 6 }
/** SD-ID with the documentation enterprise number (RFC 5612), as in our SNMP OIDs. */
export const SD_ID = 'replimesh@32473'

export interface SyslogHeader {
  facility: keyof typeof SYSLOG_FACILITIES
  appName: string
  hostname?: string
  procId?: string
}

/** RFC 5424 §6.1: PRINTUSASCII without spaces, at most `max` chars, "-" when empty. */
function headerField(value: string | undefined, max: number): string {
  const clean = (value ?? '').replace(/[^\x21-\x7e]/g, '_').slice(0, max)
  return clean || '-'
}

/** RFC 5424 §6.3.3: escape '"', '\' and ']' in PARAM-VALUE. */
function paramValue(value: string): string {
  return value.replace(/[\\"\]]/g, (c) => `\\${c}`)
}

/** One RFC 5424 message (without transport framing). */
export function formatRfc5424(n: Notification, h: SyslogHeader): string {
  const pri = SYSLOG_FACILITIES[h.facility] * 8 + SYSLOG_SEVERITY[n.severity]
  const params: Array<[string, string]> = [
    ['id', n.id],
    ['kind', n.kind],
    ['node', n.node],
  ]
  for (const key of ['nodeSite', 'site', 'vm', 'peer'] as const) {
    const v = n[key]
    if (v) params.push([key, v])
  }
  params.push(['failed', n.failed], ['done', n.done], ['decide', n.decide])
  const sd = `[${SD_ID} ${params.map(([k, v]) => `${k}="${paramValue(v)}"`).join(' ')}]`
  const header = [
    `<${pri}>1`,
    new Date(n.time).toISOString(),
    headerField(h.hostname ?? hostname(), 255),
    headerField(h.appName, 48),
    headerField(h.procId ?? String(process.pid), 128),
    headerField(n.kind, 32),
  ].join(' ')
  // MSG is UTF-8 and so starts with a BOM (§6.4).
  return `${header} ${sd} \uFEFF${n.title}: ${n.failed}; done: ${n.done}; decide: ${n.decide}`
}

/** Cuts a message to at most `maxBytes` of UTF-8 without splitting a character. */
export function truncateUtf8(text: string, maxBytes: number): Buffer {
  const buf = Buffer.from(text, 'utf8')
  if (buf.length <= maxBytes) return buf
  let end = maxBytes
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--
  return buf.subarray(0, end)
}

export class SyslogChannel implements NotificationChannel {
  readonly name = 'syslog'
  private udp: UdpSocket | null = null
  private stream: Socket | null = null

  constructor(private readonly config: SyslogConfig) {}

  async send(n: Notification, options: { signal?: AbortSignal } = {}): Promise<void> {
    const text = formatRfc5424(n, { facility: this.config.facility, appName: this.config.appName })
    if (this.config.transport === 'udp') return this.sendUdp(truncateUtf8(text, SYSLOG_UDP_MAX_BYTES))
    const msg = truncateUtf8(text, SYSLOG_STREAM_MAX_BYTES)
    const framed = Buffer.concat([Buffer.from(`${msg.length} `), msg])
    const socket = await this.connectStream(options.signal)
    await new Promise<void>((resolve, reject) =>
      socket.write(framed, (err) => (err ? reject(err) : resolve())),
    )
  }

  private sendUdp(msg: Buffer): Promise<void> {
    if (!this.udp) {
      this.udp = createSocket(this.config.host.includes(':') ? 'udp6' : 'udp4')
      this.udp.unref()
      this.udp.on('error', () => {}) // send() reports per-message errors through its callback
    }
    const udp = this.udp
    return new Promise((resolve, reject) =>
      udp.send(msg, this.config.port, this.config.host, (err) => (err ? reject(err) : resolve())),
    )
  }

  /** One long-lived stream connection, re-made after it breaks. */
  private connectStream(signal?: AbortSignal): Promise<Socket> {
    if (this.stream && !this.stream.destroyed && this.stream.writable) return Promise.resolve(this.stream)
    const c = this.config
    return new Promise((resolve, reject) => {
      const socket =
        c.transport === 'unix' ? connect({ path: c.path! }) : connect({ host: c.host, port: c.port })
      const fail = (err: Error) => {
        signal?.removeEventListener('abort', onAbort)
        socket.destroy()
        reject(err)
      }
      const onAbort = () => fail(signal?.reason ?? new Error('aborted'))
      signal?.addEventListener('abort', onAbort, { once: true })
      socket.once('error', fail)
      socket.once('connect', () => {
        signal?.removeEventListener('abort', onAbort)
        socket.off('error', fail)
        socket.on('error', () => socket.destroy()) // the next send reconnects
        socket.unref()
        this.stream = socket
        resolve(socket)
      })
    })
  }

  async close(): Promise<void> {
    this.udp?.close()
    this.udp = null
    const s = this.stream
    this.stream = null
    if (s && !s.destroyed) await new Promise<void>((resolve) => s.end(resolve))
  }
}

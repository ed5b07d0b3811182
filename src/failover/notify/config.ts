// Notification settings, checked once at the edge (STYLE.md §13). Every default is written here.
import { z } from 'zod'
import { NotifierConfigError } from '../errors.js'
import { SEVERITIES } from './types.js'

const severity = z.enum(SEVERITIES)

/** RFC 5424 §6.2.1 facility names we accept; `daemon` (3) by default, `local0`..`local7` common. */
export const SYSLOG_FACILITIES = {
  kern: 0,
  user: 1,
  mail: 2,
  daemon: 3,
  auth: 4,
  syslog: 5,
  lpr: 6,
  news: 7,
  uucp: 8,
  cron: 9,
  authpriv: 10,
  ftp: 11,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
} as const

export const SyslogConfig = z
  .object({
    /** `udp` (RFC 5426), `tcp` or `unix` (a stream socket; RFC 6587 octet counting). Default udp. */
    transport: z.enum(['udp', 'tcp', 'unix']).default('udp'),
    /** Default 127.0.0.1. */
    host: z.string().min(1).default('127.0.0.1'),
    /** Default 514. */
    port: z.number().int().min(1).max(65535).default(514),
    /** Socket path for transport `unix` (a stream socket such as syslog-ng's unix-stream()). */
    path: z.string().min(1).optional(),
    facility: z.enum(Object.keys(SYSLOG_FACILITIES) as [keyof typeof SYSLOG_FACILITIES]).default('daemon'),
    /** APP-NAME field. Default "replimesh". */
    appName: z.string().min(1).max(48).default('replimesh'),
    /** Default "warning". */
    minLevel: severity.default('warning'),
  })
  .refine((c) => c.transport !== 'unix' || c.path, { message: 'syslog transport "unix" needs a path' })

export const EventLogConfig = z.object({
  /** Default "warning". Written through the hypervisor (Windows Event Log on Hyper-V). */
  minLevel: severity.default('warning'),
})

export const SnmpConfig = z.object({
  targets: z
    .array(
      z.object({
        host: z.string().min(1),
        /** Default 162. */
        port: z.number().int().min(1).max(65535).default(162),
        /** Default "public". */
        community: z.string().min(1).default('public'),
      }),
    )
    .min(1),
  /**
   * Enterprise OID our traps live under. Default 1.3.6.1.4.1.32473.1: 32473 is the enterprise
   * number RFC 5612 reserves for documentation; set your own before production.
   */
  enterpriseOid: z
    .string()
    .regex(/^1(\.\d+)+$/, 'an OID like 1.3.6.1.4.1.32473.1')
    .default('1.3.6.1.4.1.32473.1'),
  /** Default "warning". */
  minLevel: severity.default('warning'),
})

export const EmailConfig = z.object({
  host: z.string().min(1),
  /** Default 587 (submission with STARTTLS). Use 465 with security "tls". */
  port: z.number().int().min(1).max(65535).default(587),
  /** `starttls` (required, default), `tls` (implicit TLS), `none` (plain: only for a local relay). */
  security: z.enum(['starttls', 'tls', 'none']).default('starttls'),
  user: z.string().optional(),
  password: z.string().optional(),
  /** PEM of the CA that signs the server's certificate, when not a public CA. */
  ca: z.string().optional(),
  /** Default true. Turn off only for a lab relay with an untrusted certificate. */
  rejectUnauthorized: z.boolean().default(true),
  from: z.string().min(3),
  to: z.array(z.string().min(3)).min(1),
  /** Default "[replimesh]". */
  subjectPrefix: z.string().default('[replimesh]'),
  /** Default "error". */
  minLevel: severity.default('error'),
  /** Per message. Default 15000. */
  timeoutMs: z.number().int().positive().default(15_000),
})

export const WebhookConfig = z.object({
  url: z.url({ protocol: /^https?$/ }),
  /** HMAC-SHA256 key; without it the request is unsigned. */
  secret: z.string().min(16).optional(),
  /** Default "warning". */
  minLevel: severity.default('warning'),
  /** Attempts per notification, first included. Default 6. */
  maxAttempts: z.number().int().min(1).max(50).default(6),
  /** First retry delay; doubles per attempt up to maxBackoffMs. Defaults 500 and 30000. */
  initialBackoffMs: z.number().int().min(1).default(500),
  maxBackoffMs: z.number().int().min(1).default(30_000),
  /** Per request. Default 5000. */
  timeoutMs: z.number().int().positive().default(5_000),
  /** Notifications waiting for delivery; the oldest is dropped (and counted) beyond it. Default 1000. */
  queueLimit: z.number().int().min(1).max(100_000).default(1_000),
})

export const NotifierConfig = z.object({
  syslog: SyslogConfig.optional(),
  eventLog: EventLogConfig.optional(),
  snmp: SnmpConfig.optional(),
  email: EmailConfig.optional(),
  webhooks: z.array(WebhookConfig).default([]),
})

export type SyslogConfig = z.infer<typeof SyslogConfig>
export type EventLogConfig = z.infer<typeof EventLogConfig>
export type SnmpConfig = z.infer<typeof SnmpConfig>
export type EmailConfig = z.infer<typeof EmailConfig>
export type WebhookConfig = z.infer<typeof WebhookConfig>
export type NotifierConfig = z.infer<typeof NotifierConfig>
/** What an operator writes: every defaulted field optional. */
export type NotifierConfigInput = z.input<typeof NotifierConfig>

/** Checks and completes a notifications config; throws NotifierConfigError naming each bad field. */
export function parseNotifierConfig(input: unknown): NotifierConfig {
  const r = NotifierConfig.safeParse(input)
  if (r.success) return r.data
  const problems = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
  throw new NotifierConfigError(problems)
}

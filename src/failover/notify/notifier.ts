// The Notifier fans one notification out to every configured channel whose level it reaches.
// A channel that fails never stops the others or the caller: failures are counted, logged and
// returned, because a failover must not wait on an SMTP server.
import type { Hypervisor } from '../../hyperv/index.js'
import { CHANNEL_SEND_TIMEOUT_MS } from '../constants.js'
import type { FailoverMetrics } from '../metrics.js'
import type { NotifierConfig } from './config.js'
import { EmailChannel } from './email.js'
import { EventLogChannel } from './event-log.js'
import { SnmpTrapChannel } from './snmp.js'
import { SyslogChannel } from './syslog.js'
import { atLeast, type Notification, type NotificationChannel, type Severity } from './types.js'
import { WebhookChannel } from './webhook.js'

/** The part of a pino logger we use. */
export interface NotifyLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

export interface NotifierComponents {
  /** Needed for the event-log channel. */
  hypervisor?: Pick<Hypervisor, 'writeEvent'>
  metrics?: FailoverMetrics
  logger?: NotifyLogger
}

export interface ChannelEntry {
  channel: NotificationChannel
  minLevel: Severity
}

export interface ChannelResult {
  channel: string
  /** `queued`: a webhook accepted it; delivery is reported later through metrics and the log. */
  result: 'sent' | 'queued' | 'failed' | 'skipped'
  error?: string
}

const silent: NotifyLogger = { info() {}, warn() {} }

export class Notifier {
  private readonly log: NotifyLogger
  private readonly history: Notification[] = []

  constructor(
    readonly channels: ChannelEntry[],
    private readonly components: NotifierComponents = {},
  ) {
    this.log = components.logger ?? silent
  }

  async start(): Promise<void> {}

  /** Sends to every channel at once; resolves when each has sent, queued or failed. */
  async notify(n: Notification, options: { signal?: AbortSignal } = {}): Promise<ChannelResult[]> {
    this.history.push(n)
    if (this.history.length > 100) this.history.shift()
    this.log.info({ notification: n }, n.title)
    return Promise.all(
      this.channels.map(async ({ channel, minLevel }): Promise<ChannelResult> => {
        if (!atLeast(n.severity, minLevel)) return { channel: channel.name, result: 'skipped' }
        const signal = AbortSignal.any([
          AbortSignal.timeout(CHANNEL_SEND_TIMEOUT_MS),
          ...(options.signal ? [options.signal] : []),
        ])
        try {
          await channel.send(n, { signal })
          if (channel instanceof WebhookChannel) return { channel: channel.name, result: 'queued' }
          this.components.metrics?.notification(channel.name, 'sent')
          return { channel: channel.name, result: 'sent' }
        } catch (err) {
          const error = (err as Error).message
          this.components.metrics?.notification(channel.name, 'failed')
          this.log.warn(
            { channel: channel.name, notification: n.id, err: error },
            'notification not delivered',
          )
          return { channel: channel.name, result: 'failed', error }
        }
      }),
    )
  }

  /** The last notifications (at most 100), newest last: for the dashboard and `status`. */
  recent(): Notification[] {
    return [...this.history]
  }

  /** Flushes queued webhooks until `signal` aborts (default 5 s), then closes every channel. */
  async stop(options: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = options.signal ?? AbortSignal.timeout(5_000)
    await Promise.allSettled(this.channels.map(({ channel }) => channel.close?.({ signal })))
  }
}

/** Builds the channels a config names. */
export function createNotifier(config: NotifierConfig, components: NotifierComponents = {}): Notifier {
  const entries: ChannelEntry[] = []
  const log = components.logger ?? silent
  const metrics = components.metrics
  if (config.syslog)
    entries.push({ channel: new SyslogChannel(config.syslog), minLevel: config.syslog.minLevel })
  if (config.eventLog) {
    if (!components.hypervisor) throw new Error('the eventLog notification channel needs a hypervisor')
    entries.push({
      channel: new EventLogChannel(components.hypervisor, config.eventLog),
      minLevel: config.eventLog.minLevel,
    })
  }
  if (config.snmp) entries.push({ channel: new SnmpTrapChannel(config.snmp), minLevel: config.snmp.minLevel })
  if (config.email) entries.push({ channel: new EmailChannel(config.email), minLevel: config.email.minLevel })
  for (const hook of config.webhooks) {
    const channel: WebhookChannel = new WebhookChannel(hook, {
      delivered: () => metrics?.notification(channel.name, 'sent'),
      gaveUp: (n, attempts, reason) => {
        metrics?.notification(channel.name, 'failed')
        log.warn({ channel: channel.name, notification: n.id, attempts, err: reason }, 'webhook gave up')
      },
      dropped: (n) => {
        metrics?.notification(channel.name, 'dropped')
        log.warn(
          { channel: channel.name, notification: n.id },
          'webhook queue full: oldest notification dropped',
        )
      },
    })
    entries.push({ channel, minLevel: hook.minLevel })
  }
  return new Notifier(entries, components)
}

// Host event channel: the Windows Event Log on Hyper-V (the lab hypervisor logs it), through the
// Hypervisor's writeEvent, with a stable EventId per kind of notification.
import type { Hypervisor } from '../../hyperv/index.js'
import type { EventLogConfig } from './config.js'
import { EVENT_IDS, type Notification, type NotificationChannel, notificationText } from './types.js'

export class EventLogChannel implements NotificationChannel {
  readonly name = 'eventlog'

  constructor(
    private readonly hypervisor: Pick<Hypervisor, 'writeEvent'>,
    readonly config: EventLogConfig,
  ) {}

  async send(n: Notification): Promise<void> {
    const level = n.severity === 'info' ? 'info' : n.severity === 'warning' ? 'warning' : 'error'
    await this.hypervisor.writeEvent({ level, eventId: EVENT_IDS[n.kind], message: notificationText(n) })
  }
}

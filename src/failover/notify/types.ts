// What a notification is, whatever channel carries it. Every notification answers three
// questions for the operator: what failed, what replimesh did, and what the operator decides.

export const SEVERITIES = ['info', 'warning', 'error', 'critical'] as const
export type Severity = (typeof SEVERITIES)[number]

/** True when `severity` is at least as serious as `min`. */
export function atLeast(severity: Severity, min: Severity): boolean {
  return SEVERITIES.indexOf(severity) >= SEVERITIES.indexOf(min)
}

export const NOTIFICATION_KINDS = [
  'host-suspected',
  'host-down',
  'site-down',
  'failover-started',
  'failover-completed',
  'failover-failed',
  'awaiting-operator',
  'fenced',
  'quorum-lost',
  'rpo-breach',
  'over-subscribed',
  'rpo-restored',
  'test-failover',
  'failback-completed',
] as const
export type NotificationKind = (typeof NOTIFICATION_KINDS)[number]

/**
 * Stable numeric id per kind: the Windows Event Log EventId and the last arc of the SNMP trap OID.
 * Never renumber: operators filter on these.
 */
export const EVENT_IDS: Record<NotificationKind, number> = {
  'host-suspected': 1001,
  'host-down': 1002,
  'site-down': 1003,
  'failover-started': 1101,
  'failover-completed': 1102,
  'failover-failed': 1103,
  'awaiting-operator': 1104,
  fenced: 1201,
  'quorum-lost': 1202,
  'rpo-breach': 1301,
  'over-subscribed': 1302,
  'rpo-restored': 1303,
  'test-failover': 1401,
  'failback-completed': 1402,
}

export interface Notification {
  /** Unique per notification: webhooks send it as the delivery id so receivers can de-duplicate. */
  id: string
  kind: NotificationKind
  severity: Severity
  /** ms since the epoch. */
  time: number
  /** The node that reports it (name or peer id) and that node's site. */
  node: string
  nodeSite?: string
  /** The site the notification is about (a failed host's site, a lost site), if any. */
  site?: string
  vm?: string
  /** The peer (host) the notification is about, if any. */
  peer?: string
  /** One short line: the subject of an e-mail, the headline of a page. */
  title: string
  /** What failed. */
  failed: string
  /** What replimesh did about it. */
  done: string
  /** What the operator should decide (or "nothing" and why). */
  decide: string
  /** Facts for programs (webhook JSON, syslog structured data). */
  details?: Record<string, string | number | boolean>
}

/** The full text, the same on every channel that carries text. */
export function notificationText(n: Notification): string {
  const about = [n.vm && `VM ${n.vm}`, n.peer && `host ${n.peer}`, n.site && `site ${n.site}`]
    .filter(Boolean)
    .join(', ')
  return [
    n.title,
    about ? `About: ${about}` : null,
    `What failed: ${n.failed}`,
    `What was done: ${n.done}`,
    `What to decide: ${n.decide}`,
    `Reported by ${n.node}${n.nodeSite ? ` (site ${n.nodeSite})` : ''} at ${new Date(n.time).toISOString()} (${n.severity}, ${n.kind}, id ${n.id})`,
  ]
    .filter((line): line is string => line !== null)
    .join('\n')
}

/** A way to reach an operator. `send` rejects when this one delivery failed. */
export interface NotificationChannel {
  readonly name: string
  send(n: Notification, options?: { signal?: AbortSignal }): Promise<void>
  /** Flushes what is queued (bounded by the signal) and releases sockets and timers. */
  close?(options?: { signal?: AbortSignal }): Promise<void>
}

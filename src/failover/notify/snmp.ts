// SNMP channel: one SNMPv2c trap per notification to each target (net-snmp). The trap OID is
// <enterprise>.0.<eventId>; the varbinds are <enterprise>.1.<n> as listed in TRAP_VARBINDS, so a
// MIB (or an operator reading snmptrapd's log) sees the same three answers as every channel.
import snmp from 'net-snmp'
import { SNMP_VARBIND_MAX_CHARS } from '../constants.js'
import type { SnmpConfig } from './config.js'
import { EVENT_IDS, type Notification, type NotificationChannel } from './types.js'

/** Varbind arcs under <enterprise>.1. Never renumber. */
export const TRAP_VARBINDS = {
  kind: 1,
  severity: 2,
  node: 3,
  site: 4,
  vm: 5,
  peer: 6,
  title: 7,
  failed: 8,
  done: 9,
  decide: 10,
  id: 11,
  nodeSite: 12,
} as const

export function trapOid(enterpriseOid: string, n: Notification): string {
  return `${enterpriseOid}.0.${EVENT_IDS[n.kind]}`
}

export function trapVarbinds(enterpriseOid: string, n: Notification): snmp.Varbind[] {
  const out: snmp.Varbind[] = []
  for (const [key, arc] of Object.entries(TRAP_VARBINDS)) {
    const value = n[key as keyof typeof TRAP_VARBINDS]
    if (value === undefined || value === '') continue
    out.push({
      oid: `${enterpriseOid}.1.${arc}`,
      type: snmp.ObjectType.OctetString,
      value: String(value).slice(0, SNMP_VARBIND_MAX_CHARS),
    })
  }
  return out
}

export class SnmpTrapChannel implements NotificationChannel {
  readonly name = 'snmp'
  private readonly sessions: snmp.Session[]

  constructor(private readonly config: SnmpConfig) {
    this.sessions = config.targets.map((t) =>
      snmp.createSession(t.host, t.community, { trapPort: t.port, version: snmp.Version2c }),
    )
    for (const s of this.sessions) s.on('error', () => {}) // reported per trap through the callback
  }

  async send(n: Notification): Promise<void> {
    const oid = trapOid(this.config.enterpriseOid, n)
    const varbinds = trapVarbinds(this.config.enterpriseOid, n)
    const results = await Promise.allSettled(
      this.sessions.map(
        (s) =>
          new Promise<void>((resolve, reject) =>
            s.trap(oid, varbinds, (err: Error | null) => (err ? reject(err) : resolve())),
          ),
      ),
    )
    const failed = results.flatMap((r, i) =>
      r.status === 'rejected'
        ? [`${this.config.targets[i].host}:${this.config.targets[i].port}: ${r.reason}`]
        : [],
    )
    if (failed.length) throw new Error(failed.join('; '))
  }

  async close(): Promise<void> {
    for (const s of this.sessions) s.close()
  }
}

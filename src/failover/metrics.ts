// Prometheus metrics of a node (prom-client, one registry per node, never the global one).
// Counters are bumped by events as they happen (failovers, RPO breaches, bytes, points); gauges
// that describe the present (peers by state, replication lag) are read from a snapshot the node
// supplies at scrape time, so they can never go stale.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'

export type PeerState = 'alive' | 'suspect' | 'down'
export const PEER_STATES: readonly PeerState[] = ['alive', 'suspect', 'down']
export type FailoverMode = 'automatic' | 'manual' | 'planned' | 'test' | 'failback'

/** The present state of the node, read at each scrape. */
export interface MetricsSnapshot {
  peers: Array<{ state: PeerState }>
  vms: Array<{
    name: string
    role: 'primary' | 'replica'
    lagSeconds: number | null
    rpoSeconds: number | null
  }>
}

export interface FailoverMetricsInit {
  /** Read at each scrape; default: no peers, no VMs. */
  snapshot?: () => MetricsSnapshot | Promise<MetricsSnapshot>
  /** Also export Node's process metrics (CPU, memory, event loop). Default false. */
  processMetrics?: boolean
}

export class FailoverMetrics {
  readonly registry = new Registry()
  private readonly snapshot: () => MetricsSnapshot | Promise<MetricsSnapshot>
  private readonly lag: Gauge<'vm' | 'role'>
  private readonly rpo: Gauge<'vm'>
  private readonly peers: Gauge<'state'>
  private readonly rpoBreaches: Counter<'vm'>
  private readonly failovers: Counter<'vm' | 'mode' | 'result'>
  private readonly bytesSent: Counter<'peer'>
  private readonly bytesReceived: Counter<'peer'>
  private readonly points: Counter<'vm'>
  private readonly notifications: Counter<'channel' | 'result'>
  private readonly detection: Histogram
  private readonly promotion: Histogram

  constructor(init: FailoverMetricsInit = {}) {
    this.snapshot = init.snapshot ?? (() => ({ peers: [], vms: [] }))
    const registers = [this.registry]
    this.lag = new Gauge({
      name: 'replimesh_replication_lag_seconds',
      help: 'Age of the newest committed recovery point of each VM',
      labelNames: ['vm', 'role'],
      registers,
    })
    this.rpo = new Gauge({
      name: 'replimesh_rpo_seconds',
      help: 'RPO of each VM tier',
      labelNames: ['vm'],
      registers,
    })
    this.peers = new Gauge({
      name: 'replimesh_peers',
      help: 'Peers by liveness state',
      labelNames: ['state'],
      registers,
    })
    this.rpoBreaches = new Counter({
      name: 'replimesh_rpo_breaches_total',
      help: 'Times a VM went outside its RPO',
      labelNames: ['vm'],
      registers,
    })
    this.failovers = new Counter({
      name: 'replimesh_failovers_total',
      help: 'Failovers, failbacks and test failovers started by this node',
      labelNames: ['vm', 'mode', 'result'],
      registers,
    })
    this.bytesSent = new Counter({
      name: 'replimesh_bytes_sent_total',
      help: 'Replication bytes sent, by peer',
      labelNames: ['peer'],
      registers,
    })
    this.bytesReceived = new Counter({
      name: 'replimesh_bytes_received_total',
      help: 'Replication bytes received, by peer',
      labelNames: ['peer'],
      registers,
    })
    this.points = new Counter({
      name: 'replimesh_points_committed_total',
      help: 'Recovery points committed on this node',
      labelNames: ['vm'],
      registers,
    })
    this.notifications = new Counter({
      name: 'replimesh_notifications_total',
      help: 'Notifications by channel and result (sent, failed, dropped)',
      labelNames: ['channel', 'result'],
      registers,
    })
    const buckets = [0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120]
    this.detection = new Histogram({
      name: 'replimesh_detection_seconds',
      help: 'From the last answer of a host to its confirmed-down decision',
      buckets,
      registers,
    })
    this.promotion = new Histogram({
      name: 'replimesh_promotion_seconds',
      help: 'From the failover decision to the VM running',
      buckets,
      registers,
    })
    if (init.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'replimesh_' })
  }

  rpoBreach(vm: string): void {
    this.rpoBreaches.inc({ vm })
  }
  failover(vm: string, mode: FailoverMode, result: 'ok' | 'failed'): void {
    this.failovers.inc({ vm, mode, result })
  }
  sent(peer: string, bytes: number): void {
    this.bytesSent.inc({ peer }, bytes)
  }
  received(peer: string, bytes: number): void {
    this.bytesReceived.inc({ peer }, bytes)
  }
  pointCommitted(vm: string): void {
    this.points.inc({ vm })
  }
  notification(channel: string, result: 'sent' | 'failed' | 'dropped'): void {
    this.notifications.inc({ channel, result })
  }
  detected(seconds: number): void {
    this.detection.observe(seconds)
  }
  promoted(seconds: number): void {
    this.promotion.observe(seconds)
  }

  get contentType(): string {
    return this.registry.contentType
  }

  /** The Prometheus text exposition, with gauges refreshed from the snapshot. */
  async render(): Promise<string> {
    const s = await this.snapshot()
    this.peers.reset()
    for (const state of PEER_STATES)
      this.peers.set({ state }, s.peers.filter((p) => p.state === state).length)
    this.lag.reset()
    this.rpo.reset()
    for (const vm of s.vms) {
      if (vm.lagSeconds !== null) this.lag.set({ vm: vm.name, role: vm.role }, vm.lagSeconds)
      if (vm.rpoSeconds !== null) this.rpo.set({ vm: vm.name }, vm.rpoSeconds)
    }
    return this.registry.metrics()
  }
}

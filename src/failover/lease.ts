// OwnerLease: the self-fencing half of "no two nodes run one VM in one epoch" (DESIGN.md §6).
// An owner holds a lease on its running VMs while it hears from peers at a quorum of sites; every
// contact renews it. When it runs out, the owner turns its VMs off. The quorum side confirms the
// owner down after `downAfterMs` of silence, but it starts the VMs elsewhere only once the owner's
// lease has surely run out and its stop is done, counted from its own last contact with the owner
// (the two sides' last contacts differ by up to a ping interval; the owner checks every tickMs):
//
//     promotion not before  lastContact + leaseMs + pingIntervalMs + tickMs + LEASE_STOP_BUDGET_MS
//
// which is `promotionDelayMs` after the confirmation (the start's gate, StartVmOptions: the
// hypervisor prepares the start meanwhile, the VM runs only after). By default the lease is `downAfterMs`: an
// owner fences itself after the silence that would have it declared down, so a slow machine (ping
// answers late by a second or two under load: measured here) does not stop VMs for nothing, and a
// failover costs pingIntervalMs + tickMs + LEASE_STOP_BUDGET_MS more. A lease shorter than
// `downAfterMs - pingIntervalMs - tickMs - LEASE_STOP_BUDGET_MS` needs no wait at all; one longer
// than twice downAfterMs, or shorter than two ping intervals, is refused at load.
//
// When the lease runs out and the sites this node cannot hear could form a quorum without it
// (with fewer sites and no witness nobody can take a VM over, so nothing is stopped), the node
// stops producing points and, unless `isolationResponse` is `keep-running`, stops (turns off) the
// running VMs it owns that are replicated elsewhere, and tells the operator. When it hears a quorum
// again, it asks its peers who owns each of those VMs (FailoverService.reconcile): a VM that
// another node owns at a higher epoch stays stopped here, as that owner's replica (fencing did it);
// a VM nobody took over is restarted, but only after this node wins exactly the next epoch for it
// with a quorum of sites, so a takeover racing the heal can never also start it (one of the two
// claims of that epoch is refused). If a newer epoch is known or the claim fails, the VM stays
// stopped and the operator decides.
import { randomUUID } from 'node:crypto'
import type { Hypervisor } from '../hyperv/index.js'
import type { EpochCoordinator } from './coordinator.js'
import { EpochQuorumError, FailoverConfigError } from './errors.js'
import type { Notifier, NotifyLogger } from './notify/notifier.js'
import type { Notification } from './notify/types.js'
import { type Member, siteQuorum } from './quorum.js'
import type { FailoverMeshView, ReplicaSource } from './service.js'

/** What a stop (turn off) of the VMs of one node may take, counted in the lease inequality. */
export const LEASE_STOP_BUDGET_MS = 1_000

/** The mesh timing the lease is derived from (MeshNode.timing). */
export interface LeaseTiming {
  downAfterMs: number
  pingIntervalMs?: number
}

/** How long after its confirmation a failed owner's VMs may start elsewhere (see above). */
export function promotionDelayMs(leaseMs: number, timing: LeaseTiming, tickMs: number): number {
  return Math.max(
    0,
    leaseMs + (timing.pingIntervalMs ?? 0) + tickMs + LEASE_STOP_BUDGET_MS - timing.downAfterMs,
  )
}

/**
 * The lease to use: `configured` if set, else `downAfterMs`. Throws FailoverConfigError when it is
 * so short that one late heartbeat would end it, or so long that it would hold every failover
 * back by more than a detection time. Without timing (a mesh view that does not say) only a
 * configured lease is used, unchecked; null: no lease.
 */
export function resolveLeaseMs(
  configured: number | null,
  timing: LeaseTiming | undefined,
  tickMs: number,
): number | null {
  if (!timing) return configured
  const leaseMs = configured ?? timing.downAfterMs
  const min = 2 * (timing.pingIntervalMs ?? 0)
  const max = 2 * timing.downAfterMs
  const problems: string[] = []
  if (leaseMs < min || leaseMs <= 0)
    problems.push(
      `leaseMs: ${leaseMs} ms is too short: at least two ping intervals (${min} ms), so one late heartbeat does not stop VMs`,
    )
  if (leaseMs > max)
    problems.push(
      `leaseMs: ${leaseMs} ms is too long: failovers wait for it to run out (leaseMs + pingIntervalMs + check interval ${tickMs} ms + stop budget ${LEASE_STOP_BUDGET_MS} ms after the last contact), so at most 2 x downAfterMs = ${max} ms`,
    )
  if (problems.length) throw new FailoverConfigError(problems)
  return leaseMs
}

export interface LeasePeer {
  peerId: string
  site: string
  /** ms since the epoch of the last contact (ping answer or gossip), when the mesh tracks it. */
  lastSeenMs?: number
  /** Alive and connected: used when lastSeenMs is unknown. */
  alive: boolean
}

export interface LeaseVerdict {
  /** A quorum of sites was heard within the lease. */
  held: boolean
  /** When the lease ends if nothing more is heard (ms since the epoch); null: no quorum to renew it. */
  expiresAtMs: number | null
  /** Sites heard within the lease, this node's own included. */
  heardSites: string[]
  /** The sites not heard could form a quorum without this node (they could promote its VMs). */
  othersCouldClaim: boolean
}

/**
 * Pure: is the lease held at `now`? The lease is renewed at the latest instant since which peers at
 * a quorum of sites (this node's own site always, the witness as its vote) have been heard.
 */
export function leaseVerdict(input: {
  now: number
  self: Member
  peers: LeasePeer[]
  leaseMs: number
  witnessId?: string
}): LeaseVerdict {
  const { now, leaseMs, witnessId } = input
  const contact = (p: LeasePeer) => p.lastSeenMs ?? (p.alive ? now : Number.NEGATIVE_INFINITY)
  const members = input.peers.filter((p) => p.peerId !== witnessId)
  const witness = witnessId ? input.peers.find((p) => p.peerId === witnessId) : undefined
  const rule = { sites: [input.self.site, ...members.map((m) => m.site)], witness: !!witnessId }
  const lastBySite = new Map<string, number>([[input.self.site, Number.POSITIVE_INFINITY]])
  for (const m of members)
    lastBySite.set(m.site, Math.max(lastBySite.get(m.site) ?? Number.NEGATIVE_INFINITY, contact(m)))
  const witnessLast = witness ? contact(witness) : Number.NEGATIVE_INFINITY
  // The latest instant t with a quorum among the sites (and witness) heard at or after t.
  const instants = [...lastBySite.values(), witnessLast]
    .filter((t) => Number.isFinite(t) || t === Number.POSITIVE_INFINITY)
    .sort((a, b) => b - a)
  let renewedAt: number | null = null
  for (const t of instants) {
    const sites = [...lastBySite].filter(([, last]) => last >= t).map(([site]) => site)
    if (siteQuorum(rule, sites, witnessLast >= t).reached) {
      renewedAt = t === Number.POSITIVE_INFINITY ? now : t
      break
    }
  }
  const expiresAtMs = renewedAt === null ? null : renewedAt + leaseMs
  const heardSites = [...lastBySite]
    .filter(([, last]) => now - last <= leaseMs)
    .map(([site]) => site)
    .sort()
  const silent = rule.sites.filter((s) => !heardSites.includes(s))
  // The witness may answer both sides of a partition: count it for the others.
  const othersCouldClaim = silent.length > 0 && siteQuorum(rule, silent, !!witnessId).reached
  return { held: expiresAtMs !== null && now <= expiresAtMs, expiresAtMs, heardSites, othersCouldClaim }
}

export interface OwnerLeaseComponents {
  mesh: FailoverMeshView
  coordinator: Pick<EpochCoordinator, 'ledger' | 'claim'>
  hypervisor: Pick<Hypervisor, 'listVms' | 'startVm' | 'stopVm'>
  /** knownEpoch: the highest epoch among the points held (a claim must rise above them). */
  replicas: Pick<ReplicaSource, 'setProducing' | 'owned'> & { knownEpoch?(vm: string): Promise<number> }
  notifier: Pick<Notifier, 'notify'>
  logger?: NotifyLogger
  config: {
    leaseMs?: number | null
    isolationResponse?: 'stop' | 'keep-running'
    witness?: { peerId: string } | null
  }
  tickMs?: number
  /** Asks live peers who owns every VM registered here (FailoverService.reconcile). */
  reconcile(): Promise<void>
  /** The failover service's quorum (mesh liveness) agrees that this node is on the quorum side. */
  hasQuorum(): boolean
}

export interface LeaseStatus {
  leaseMs: number | null
  /** How long a failover of a host waits after confirming it down (the host's lease must run out). */
  promotionDelayMs: number | null
  state: 'unarmed' | 'held' | 'expired'
  expiresAtMs: number | null
  heardSites: string[]
  /** VMs this lease stopped that are still waiting for quorum to return. */
  fenced: string[]
  lastExpiry: { atMs: number; stopped: string[] } | null
  lastRegain: { atMs: number; restarted: string[]; replicas: string[]; waiting: string[] } | null
}

const silent: NotifyLogger = { info() {}, warn() {} }
/** Scheduling jitter tolerated between two checks before the gap counts as a stall. */
const STALL_SLACK_MS = 250

export class OwnerLease {
  readonly leaseMs: number | null
  private state: LeaseStatus['state'] = 'unarmed'
  private verdict: LeaseVerdict | null = null
  /** VM → the epoch it ran at here when the lease stopped it (0: never claimed). */
  private readonly fenced = new Map<string, number>()
  /** VMs some other node holds a replica of (from gossip): those another site could promote. */
  private readonly replicatedElsewhere = new Set<string>()
  private lastExpiry: LeaseStatus['lastExpiry'] = null
  private lastRegain: LeaseStatus['lastRegain'] = null
  private running: Promise<void> | null = null
  private readonly log: NotifyLogger
  private readonly tickMs: number
  private lastCallMs = 0
  /** The last due expiry was put off because this process had stalled. */
  private deferred = false

  constructor(private readonly c: OwnerLeaseComponents) {
    this.log = c.logger ?? silent
    this.tickMs = c.tickMs ?? 250
    const configured = c.config.leaseMs ?? null
    const leaseMs = resolveLeaseMs(configured, c.mesh.timing, this.tickMs)
    this.leaseMs = leaseMs
  }

  /** One check; concurrent calls share the one in flight (a stop or a regain may take seconds). */
  check(now = Date.now()): Promise<void> {
    if (this.leaseMs === null) return Promise.resolve()
    // Checks come every tickMs: a longer gap means this process stalled, and contacts that arrived
    // meanwhile are still queued behind this timer; judge the lease on the next check instead.
    // At most one check in a row is deferred, so a node that stays slow still fences itself (the
    // deferral costs one check interval, inside the stop budget).
    const gap = now - this.lastCallMs
    const stalled = this.lastCallMs > 0 && gap > 2 * this.tickMs + STALL_SLACK_MS && !this.deferred
    this.lastCallMs = now
    this.running ??= this.step(now, this.leaseMs, stalled).finally(() => {
      this.running = null
    })
    return this.running
  }

  private promotionDelay(): number | null {
    const timing = this.c.mesh.timing
    return this.leaseMs === null || !timing ? null : promotionDelayMs(this.leaseMs, timing, this.tickMs)
  }

  /**
   * Before VMs of a failed `host` start here: waits until the host's own lease has surely run out
   * and its stop is done, counted from this node's last contact with it (see the top of the file).
   */
  async waitOut(host: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    const timing: LeaseTiming | undefined = this.c.mesh.timing
    if (this.leaseMs === null || !timing) return
    const last = this.c.mesh.peers().find((p) => p.peerId === host)?.lastSeenMs ?? Date.now()
    const until = last + this.leaseMs + (timing.pingIntervalMs ?? 0) + this.tickMs + LEASE_STOP_BUDGET_MS
    const waitMs = until - Date.now()
    if (waitMs <= 0) return
    this.log.info(
      { host, waitMs },
      "waiting for the failed host's owner lease to run out before starting its VMs",
    )
    // A timer may fire a millisecond before the wall clock reaches its end (libuv counts whole
    // milliseconds of a loop time taken earlier): it is waited again until `until` has passed.
    for (let left = waitMs; left > 0; left = until - Date.now())
      await new Promise<void>((resolve, reject) => {
        options.signal?.throwIfAborted()
        const onAbort = () => {
          clearTimeout(timer)
          reject(options.signal?.reason)
        }
        const timer = setTimeout(() => {
          options.signal?.removeEventListener('abort', onAbort)
          resolve()
        }, left)
        options.signal?.addEventListener('abort', onAbort, { once: true })
      })
  }

  /** Waits for the check in flight. */
  async stop(): Promise<void> {
    await this.running?.catch(() => {})
  }

  status(): LeaseStatus {
    return {
      leaseMs: this.leaseMs,
      promotionDelayMs: this.promotionDelay(),
      state: this.state,
      expiresAtMs: this.verdict?.expiresAtMs ?? null,
      heardSites: this.verdict?.heardSites ?? [],
      fenced: [...this.fenced.keys()],
      lastExpiry: this.lastExpiry,
      lastRegain: this.lastRegain,
    }
  }

  private async step(now: number, leaseMs: number, stalled: boolean): Promise<void> {
    const self = { peerId: this.c.mesh.peerId, site: this.c.mesh.site }
    for (const s of this.c.mesh.nodeStates())
      if (s.peerId !== self.peerId) for (const r of s.replicas) this.replicatedElsewhere.add(r.vm)
    const v = leaseVerdict({
      now,
      self,
      peers: this.c.mesh.peers().map((p) => ({
        peerId: p.peerId,
        site: p.site,
        lastSeenMs: p.lastSeenMs,
        alive: p.state === 'alive' && p.connected,
      })),
      leaseMs,
      witnessId: this.c.config.witness?.peerId,
    })
    this.verdict = v
    // Armed once a quorum with another site has been heard: at start-up (or while a mesh's first
    // sites join) the mesh is still forming, and a node alone in its mesh needs no lease.
    if (this.state === 'unarmed') {
      if (v.held && v.heardSites.length > 1) this.state = 'held'
      return
    }
    const due = this.state === 'held' && !v.held && v.othersCouldClaim
    this.deferred = due && stalled
    if (due && !stalled) await this.expire(now, v)
    else if (this.state === 'expired' && v.held && this.c.hasQuorum()) await this.regain(now)
  }

  /** The VMs running here that this node owns (or nobody has claimed) and another node replicates. */
  private async ownedRunning(): Promise<Array<{ vm: string; epoch: number }>> {
    const self = this.c.mesh.peerId
    return (await this.c.hypervisor.listVms())
      .filter((v) => v.state === 'running' && this.replicatedElsewhere.has(v.name))
      .map((v) => ({ vm: v.name, claim: this.c.coordinator.ledger.current(v.name) }))
      .filter((x) => !x.claim || x.claim.owner === self)
      .map((x) => ({ vm: x.vm, epoch: x.claim?.epoch ?? 0 }))
  }

  private async expire(now: number, v: LeaseVerdict): Promise<void> {
    this.state = 'expired'
    const reason = `owner lease of ${this.leaseMs} ms expired: only sites ${v.heardSites.join(', ')} heard`
    this.c.replicas.setProducing?.(false, reason)
    const owned = await this.ownedRunning()
    const stop = this.c.config.isolationResponse !== 'keep-running'
    const stopped: string[] = []
    if (stop) {
      const results = await Promise.allSettled(
        owned.map(({ vm }) => this.c.hypervisor.stopVm(vm, { force: true })),
      )
      for (const [i, r] of results.entries()) {
        const { vm, epoch } = owned[i]
        if (r.status === 'fulfilled') {
          stopped.push(vm)
          this.fenced.set(vm, epoch)
        } else this.log.warn({ vm, err: (r.reason as Error).message }, 'lease expired: could not stop VM')
      }
    }
    this.lastExpiry = { atMs: now, stopped }
    const silentMs = Object.fromEntries(
      this.c.mesh.peers().map((p) => [p.peerId, p.lastSeenMs === undefined ? null : now - p.lastSeenMs]),
    )
    this.log.warn(
      { reason, stopped, kept: stop ? [] : owned.map((o) => o.vm), silentMs },
      'owner lease expired',
    )
    void this.notify(
      leaseExpired(this.reporter(), {
        leaseMs: this.leaseMs ?? 0,
        heardSites: v.heardSites,
        stopped,
        keptRunning: stop
          ? owned.filter((o) => !stopped.includes(o.vm)).map((o) => o.vm)
          : owned.map((o) => o.vm),
      }),
    )
  }

  private async regain(now: number): Promise<void> {
    await this.c.reconcile()
    const self = this.c.mesh.peerId
    const restarted: string[] = []
    const replicas: string[] = []
    const waiting: string[] = []
    for (const [vm, epoch] of this.fenced) {
      const ledger = this.c.coordinator.ledger
      const cur = ledger.current(vm)
      if (cur && cur.owner !== self && cur.epoch > epoch) {
        replicas.push(`${vm}@${cur.epoch}:${cur.owner}`)
        continue
      }
      // Restart only at exactly the next epoch: if anything above the epoch it ran at is known
      // here (promised to another node, or on points a new owner sent), someone took it over or
      // is doing so, and a claim above that would win against the owner running it now.
      const known = Math.max(ledger.highest(vm), (await this.c.replicas.knownEpoch?.(vm).catch(() => 0)) ?? 0)
      if (known > epoch) {
        waiting.push(vm)
        this.log.warn({ vm, ranAt: epoch, known }, 'lease regained: a newer epoch exists; not restarting VM')
        continue
      }
      try {
        const won = await this.c.coordinator.claim(vm, {
          previous: self,
          signal: AbortSignal.timeout(10_000),
        })
        await this.c.hypervisor.startVm(vm)
        await this.c.replicas.owned?.(vm, won.claim.epoch)
        restarted.push(vm)
      } catch (err) {
        const newer = this.c.coordinator.ledger.current(vm)
        if (newer && newer.owner !== self) replicas.push(`${vm}@${newer.epoch}:${newer.owner}`)
        else waiting.push(vm)
        this.log.warn(
          { vm, err: (err as Error).message.split('\n')[0], quorum: err instanceof EpochQuorumError },
          'lease regained: not restarting VM',
        )
      }
    }
    this.fenced.clear()
    this.state = 'held'
    this.c.replicas.setProducing?.(true, 'owner lease regained: a quorum of sites is reachable')
    this.lastRegain = { atMs: now, restarted, replicas, waiting }
    this.log.info(this.lastRegain, 'owner lease regained')
    if (restarted.length || replicas.length || waiting.length)
      void this.notify(leaseRegained(this.reporter(), { restarted, replicas, waiting }))
  }

  private reporter() {
    return { node: this.c.mesh.peerId, site: this.c.mesh.site }
  }

  private async notify(n: Notification): Promise<void> {
    await this.c.notifier
      .notify(n)
      .catch((err: Error) => this.log.warn({ err: err.message }, 'notify failed'))
  }
}

// The lease's notifications: built here, in the words of notify/messages.ts (failed, done, decide).
const list = (xs: string[]) => (xs.length ? xs.join(', ') : 'none')

function note(
  r: { node: string; site: string },
  severity: Notification['severity'],
  body: Pick<Notification, 'title' | 'failed' | 'done' | 'decide' | 'details'>,
): Notification {
  return {
    id: randomUUID(),
    kind: 'fenced',
    severity,
    time: Date.now(),
    node: r.node,
    nodeSite: r.site,
    ...body,
  }
}

export function leaseExpired(
  r: { node: string; site: string },
  f: { leaseMs: number; heardSites: string[]; stopped: string[]; keptRunning: string[] },
): Notification {
  return note(r, 'critical', {
    title: `Node ${r.node} is cut off and fenced itself`,
    failed: `for ${(f.leaseMs / 1000).toFixed(1)} s this node heard only sites ${list(f.heardSites)}, not a quorum; the other sites may fail its VMs over`,
    done:
      `stopped producing recovery points; turned off ${list(f.stopped)} so they never run twice` +
      (f.keptRunning.length
        ? `; still running (isolationResponse keep-running): ${list(f.keptRunning)}`
        : ''),
    decide:
      'restore the links; when they return this node learns who owns each VM: VMs taken over elsewhere stay off here as replicas, the others restart here. Do not start them by hand meanwhile',
    details: { leaseMs: f.leaseMs, stopped: f.stopped.length, keptRunning: f.keptRunning.length },
  })
}

export function leaseRegained(
  r: { node: string; site: string },
  f: { restarted: string[]; replicas: string[]; waiting: string[] },
): Notification {
  return note(r, f.waiting.length ? 'error' : 'warning', {
    title: `Node ${r.node} reaches a quorum again`,
    failed: 'this node had been cut off from a quorum of sites and had stopped its VMs',
    done: `restarted here at a new epoch: ${list(f.restarted)}; owned elsewhere now, kept off as replicas: ${list(f.replicas)}`,
    decide: f.waiting.length
      ? `${list(f.waiting)} stayed off: no quorum agreed on an owner; check replimesh status and fail them over or start them`
      : 'nothing now; to bring VMs that moved back here, run replimesh failback <vm>',
    details: { restarted: f.restarted.length, replicas: f.replicas.length, waiting: f.waiting.length },
  })
}

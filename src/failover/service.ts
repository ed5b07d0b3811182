// FailoverService: the thin shell around the pure core (STYLE.md §1). Flow, once per tick:
//  1. Quorum: can this node reach a quorum of sites? If not, replication stops producing points
//     (an isolated owner must not keep writing a history the quorum side may replace).
//  2. Learn epochs from gossip (signed node states carry each owner's VMs and epochs); a higher
//     epoch for a VM running here fences it: stop, become a replica.
//  3. Detect: for every peer, gather every live member's view and confirm "down" by a quorum of
//     sites. A newly confirmed host is handled: its VMs (from its last state) are placed among
//     the holders of their newest points; each node computes the same plan and promotes only the
//     VMs placed on itself, in boot order; alert-tier VMs are announced and wait for an operator.
//     While it stays down its VMs nobody owns yet are placed again every REPLAN_DOWN_HOST_MS
//     (plans made from lagging gossip can each place a VM on the other node); a node acts on a VM
//     of one failure once.
// Promotion: quorum epoch claim → replica disks made equal to a committed point → register →
// re-IP → boot slot → start, gated: the hypervisor prepares the start (the lab forks the guest)
// while the failed owner's lease runs out, and the VM runs only after → announce (the claim) →
// replication protects it from here.
// Planned failover (and failback): the owner stops the VM, replication commits one last point on
// the target, the target promotes at epoch+1; the old owner learns the claim and becomes a replica.
import type { Hypervisor, VmInfo } from '../hyperv/index.js'
import type { NodeState, PeerLiveness, PeerView } from '../mesh/index.js'
import type { FailoverConfig } from './config.js'
import {
  CONTROL_REQUEST_TIMEOUT_MS,
  FAILOVER_REQUEST_TIMEOUT_MS,
  MAX_RECONCILE_VMS,
  PROBE_FRESH_MS,
  PROBE_INTERVAL_MS,
  RECONCILE_EVERY_TICKS,
  REPLAN_DOWN_HOST_MS,
  STARTUP_GRACE_MS,
} from './constants.js'
import type { ControlPeer, ControlReply, ControlRequest } from './control.js'
import type { EpochCoordinator } from './coordinator.js'
import type { EpochClaim } from './epoch.js'
import { fenceDecision } from './epoch.js'
import { FailoverError } from './errors.js'
import { PlannedHandOver } from './handover.js'
import { OwnerLease } from './lease.js'
import type { FailoverMetrics, FailoverMode } from './metrics.js'
import { networkMapping } from './network-map.js'
import * as messages from './notify/messages.js'
import type { Notifier, NotifyLogger } from './notify/notifier.js'
import { candidateFromState, type PlacementCandidate, placeVms, vmSizeFromState } from './placement.js'
import type { VmObjectives } from './plan.js'
import { bootWaves, decideVm, runInBootOrder, type Tier, type Trigger } from './policy.js'
import { confirmDown, hasQuorum, type Member, type QuorumOutcome } from './quorum.js'
import { RpoWatch, type TargetLag } from './rpo-watch.js'
import { vmTier } from './tiers.js'

export interface FailoverMeshView {
  readonly peerId: string
  readonly site: string
  peers(): Array<{
    peerId: string
    site: string
    state: PeerLiveness
    connected: boolean
    nodeState: NodeState | null
    /** ms since the epoch of the last answer or gossip from it, when the mesh tracks it. */
    lastSeenMs?: number
  }>
  /** The mesh's silence limit: a peer silent this long is down in this node's own view. */
  readonly timing?: { downAfterMs: number }
  /** Fresh signed states of every member, this node's own included. */
  nodeStates(): NodeState[]
}

/** What failover needs of replication (the node composes it from the replication service). */
export interface ReplicaSource {
  /**
   * Makes the replica disks equal a committed point (rolling an interrupted apply forward). With
   * `test`, returns a separate copy of that point's disks instead: a test failover must never
   * write into the replica that replication keeps applying to.
   */
  prepare(
    vm: string,
    options?: { signal?: AbortSignal; test?: boolean },
  ): Promise<{ config: VmInfo; diskPaths: string[]; point: { seq: number; time: number } }>
  /** Deletes the disks of a test copy made by prepare({test: true}). */
  releaseTest?(vm: string): Promise<void>
  /** A promotion failed after prepare: replication may apply to the replica again. */
  released?(vm: string): Promise<void>
  /** Highest epoch replication knows for `vm` (a claim must rise above the points held). */
  knownEpoch?(vm: string): Promise<number>
  /** Any node: a newer owner of `vm` was announced (replicas refuse older epochs' points). */
  learnEpoch?(vm: string, epoch: number, owner: string): Promise<void>
  /** Planned failover, on the owner with the VM stopped: one last point committed on `to`. */
  finalSync?(
    vm: string,
    options: { to?: string; signal?: AbortSignal },
  ): Promise<{ seq: number; time: number }>
  /** A planned hand-over did not happen: protect the VM from here again. */
  resume?(vm: string): Promise<void>
  /** After a promotion: this node owns `vm` at `epoch` and protects it to others. */
  owned?(vm: string, epoch: number): Promise<void>
  /** After fencing: `vm` belongs to `owner`; resync the local copy from it by delta. */
  fenced?(vm: string, owner: string, epoch: number): Promise<void>
  /** Points may be produced only while this node has quorum. */
  setProducing?(allowed: boolean, reason: string): void
  /** The RPO/RTO the operator set for `vm` with `protect`, as far as this node knows them. */
  objectives?(vm: string): Promise<VmObjectives | null>
  /** Per VM protected from here and target: its lag and RPO now (the RPO alarm reads it each tick). */
  targetLags?(nowMs: number): TargetLag[] | Promise<TargetLag[]>
}

export interface FailoverServiceComponents {
  mesh: FailoverMeshView
  coordinator: EpochCoordinator
  hypervisor: Hypervisor
  replicas: ReplicaSource
  notifier: Notifier
  metrics?: FailoverMetrics
  config: FailoverConfig
  logger?: NotifyLogger
  /** How often detection runs. Default 250 ms. */
  tickMs?: number
  /** How long failback waits for its target to hold a point of the current epoch. Default 10 s. */
  failbackResyncWaitMs?: number
}

export interface FailoverOutcome {
  vm: string
  on: string
  name: string
  epoch: number | null
  pointSeq: number
  dataLossMs: number
  tookMs: number
}

/** One VM of a host or site failover: where it runs now, or why not; `warning` if over capacity. */
export type HostFailoverRow = { vm: string; ok: boolean; on: string | null; error?: string; warning?: string }

const silent: NotifyLogger = { info() {}, warn() {} }

/**
 * A boot slot for one promotion of a host failover: the promotion prepares (claim, replica
 * check, register, re-IP) as soon as it is created and waits at `open` only to start the VM; it
 * calls `settle` once the start is done or it failed, which frees the slot for the next VM.
 */
interface BootSlot {
  open: Promise<void>
  grant(): void
  /** Resolves when the VM started (rejects with the promotion's error). */
  settled: Promise<void>
  settle(err?: Error): void
}

function bootSlot(): BootSlot {
  let grant!: () => void
  let settle!: (err?: Error) => void
  const open = new Promise<void>((r) => {
    grant = r
  })
  const settled = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve())
  })
  settled.catch(() => {}) // observed by the boot order when its turn comes, if ever
  return { open, grant, settled, settle }
}

type PromoteOptions = {
  mode: FailoverMode
  from?: string
  fromSite?: string
  failedAtMs?: number
  signal?: AbortSignal
  /** A host failover's boot slot: prepare at once, start in boot order. */
  slot?: BootSlot
}

export class FailoverService {
  private timer: NodeJS.Timeout | null = null
  /** Confirmed-down hosts: when their VMs were last placed, and the VMs this node acted on. */
  private readonly handled = new Map<string, { at: number; acted: Set<string> }>()
  private readonly lastState = new Map<string, NodeState>()
  private quorum: QuorumOutcome | null = null
  private readonly busy = new Map<string, Promise<FailoverOutcome>>()
  private readonly log: NotifyLogger
  private ticking = false
  private ticks = 0
  private readonly probedAt = new Map<string, number>()
  private readonly probes = new Map<string, { state: PeerLiveness; at: number }>()
  private startedAt = 0
  private readonly handover: PlannedHandOver
  private readonly lease: OwnerLease
  private readonly rpo: RpoWatch

  constructor(private readonly c: FailoverServiceComponents) {
    this.log = c.logger ?? silent
    this.rpo = new RpoWatch({
      reporter: () => this.reporter(),
      notify: (n) => c.notifier.notify(n),
      metrics: c.metrics,
      logger: this.log,
    })
    this.lease = new OwnerLease({ ...c, reconcile: () => this.reconcile(), hasQuorum: () => this.hasQuorum })
    this.handover = new PlannedHandOver({
      self: c.mesh.peerId,
      coordinator: c.coordinator,
      hypervisor: c.hypervisor,
      replicas: c.replicas,
      log: this.log,
      hasQuorum: () => this.hasQuorum,
      nodeStates: () => c.mesh.nodeStates(),
      ownerFromGossip: (vm) => this.ownerFromGossip(vm),
      placement: (vm) => this.plan([this.self.peerId], 'manual').decisions.find((x) => x.vm === vm),
      resyncWaitMs: c.failbackResyncWaitMs,
    })
    c.coordinator.setDelegate((from, req) => this.onRequest(from, req))
  }

  /** Another node hands us a VM to run (an operator's --to, a failback, a host or site plan). */
  private async onRequest(from: ControlPeer, req: ControlRequest): Promise<ControlReply> {
    if (req.type === 'view') {
      const p = this.c.mesh.peers().find((x) => x.peerId === req.peer)
      return { type: 'seen', peer: req.peer, state: p ? this.localView(p) : null }
    }
    if (req.type !== 'failover') return { type: 'error', message: `unexpected request ${req.type}` }
    this.log.info({ vm: req.vm, mode: req.mode, by: from.peerId }, 'failover requested by a peer')
    try {
      // Planned: the owner is asked to hand the VM over; any other node is asked to take it.
      const outcome =
        req.mode === 'planned' && (await this.handover.ownsHere(req.vm))
          ? await this.handover.handOver(req.vm, req.to)
          : await this.promote(req.vm, { mode: req.mode, from: req.from })
      return { type: 'failed-over', outcome }
    } catch (err) {
      return { type: 'error', message: (err as Error).message.slice(0, 1000) }
    }
  }

  async start(): Promise<void> {
    this.startedAt = Date.now()
    this.timer = setInterval(
      () =>
        void this.tick().catch((err) =>
          this.log.warn({ err: (err as Error).message }, 'failover tick failed'),
        ),
      this.c.tickMs ?? 250,
    )
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    await Promise.allSettled(this.busy.values())
    await this.lease.stop()
  }

  private get self(): Member {
    return { peerId: this.c.mesh.peerId, site: this.c.mesh.site }
  }

  private reporter() {
    return { node: this.c.mesh.peerId, site: this.c.mesh.site }
  }

  private tier(vm: string): { tier: Tier; priority: number } {
    return vmTier(this.c.config, vm)
  }

  /** One round of quorum, epoch learning, fencing and detection. Public for tests. */
  async tick(now = Date.now()): Promise<void> {
    // The owner lease runs beside the tick: a tick can wait seconds on peers a partition cut off.
    void this.lease
      .check()
      .catch((err) => this.log.warn({ err: (err as Error).message }, 'lease check failed'))
    if (this.ticking) return
    this.ticking = true
    try {
      const peers = this.c.mesh.peers()
      for (const s of this.c.mesh.nodeStates()) this.lastState.set(s.peerId, s)
      const witnessId = this.c.config.witness?.peerId
      const members = peers
        .filter((p) => p.peerId !== witnessId)
        .map((p) => ({ peerId: p.peerId, site: p.site }))
      // A site is reachable through any connected member this node does not see down: a suspect
      // peer (a ping or two missed: busy promoting a VM, a loaded machine) still votes, else one
      // host's death plus a slow answer from another site cut a healthy node off (and stopped
      // its points). A cut link keeps its connection open but goes silent past downAfterMs.
      const aliveIds = peers.filter((p) => p.connected && this.localView(p) !== 'down').map((p) => p.peerId)
      this.checkQuorum(members, aliveIds, witnessId)
      await this.learnFromGossip()
      if (++this.ticks % RECONCILE_EVERY_TICKS === 1) await this.reconcile()
      await this.watchRpo(now)
      for (const target of peers) {
        if (target.peerId === witnessId) continue
        const mine = this.localView(target)
        const views: PeerView[] = [
          { reporter: this.self.peerId, reporterSite: this.self.site, reporterAlive: true, state: mine },
        ]
        for (const p of peers) {
          if (p.peerId === target.peerId || p.peerId === witnessId) continue
          const v = p.nodeState?.views.find((x) => x.peerId === target.peerId)
          if (v)
            views.push({
              reporter: p.peerId,
              reporterSite: p.site,
              reporterAlive: p.state === 'alive',
              state: v.state,
            })
        }
        if (mine !== 'alive') this.mergeProbes(target.peerId, peers, views)
        const witness = witnessId ? peers.find((p) => p.peerId === witnessId) : undefined
        const d = confirmDown({
          target: target.peerId,
          members: [this.self, ...members],
          views,
          witnessConfigured: !!witnessId,
          witness: witness
            ? {
                reachable: witness.state === 'alive',
                state: witness.nodeState?.views.find((x) => x.peerId === target.peerId)?.state ?? null,
              }
            : null,
        })
        // Not down any more (alive, or back to suspect): a later confirmation is a new failure.
        if (d.state !== 'down') this.handled.delete(target.peerId)
        const seen = this.handled.get(target.peerId)
        if (d.state === 'down' && (!seen || now - seen.at >= REPLAN_DOWN_HOST_MS)) {
          const acted = seen?.acted ?? new Set<string>()
          this.handled.set(target.peerId, { at: now, acted })
          if (!seen) this.log.info({ peer: target.peerId, reason: d.reason }, 'host confirmed down')
          void this.onHostDown(target.peerId, target.site, d.quorum.agreeingSites, now, {
            again: !!seen,
            acted,
          }).catch((err) =>
            this.log.warn(
              { peer: target.peerId, err: (err as Error).message },
              'handling a failed host failed',
            ),
          )
        }
      }
    } finally {
      this.ticking = false
    }
  }

  /** RPO alarm: one notification and count per breach of a VM on a target, one when it clears. */
  private async watchRpo(now: number): Promise<void> {
    if (!this.c.replicas.targetLags) return
    try {
      this.rpo.check(await this.c.replicas.targetLags(now), now)
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'RPO check failed')
    }
  }

  /**
   * This node's own view of a peer: the mesh's verdict waits for another site before it says
   * "down", but a vote must be this node's own, so silence beyond downAfterMs counts as down.
   */
  private localView(p: { state: PeerLiveness; lastSeenMs?: number }): PeerLiveness {
    const limit = this.c.mesh.timing?.downAfterMs
    if (p.state !== 'down' && limit && p.lastSeenMs !== undefined && Date.now() - p.lastSeenMs >= limit)
      return 'down'
    return p.state
  }

  /**
   * Gossip can lag (a relay lost, a state not yet refreshed): while this node sees `target` down,
   * it also asks every live peer directly, at most once per PROBE_INTERVAL_MS, and a fresh answer
   * replaces that peer's gossiped view.
   */
  private mergeProbes(target: string, peers: ReturnType<FailoverMeshView['peers']>, views: PeerView[]): void {
    const now = Date.now()
    const asked = this.probedAt.get(target) ?? 0
    if (now - asked >= PROBE_INTERVAL_MS) {
      this.probedAt.set(target, now)
      for (const p of peers) {
        if (p.peerId === target || p.state !== 'alive' || !p.connected) continue
        void this.c.coordinator
          .request(
            p.peerId,
            { type: 'view', peer: target },
            { signal: AbortSignal.timeout(CONTROL_REQUEST_TIMEOUT_MS) },
          )
          .then((r) => {
            if (r.type === 'seen' && r.state)
              this.probes.set(`${target}|${p.peerId}`, { state: r.state, at: Date.now() })
          })
          .catch(() => {})
      }
    }
    for (const p of peers) {
      const probe = this.probes.get(`${target}|${p.peerId}`)
      if (!probe || now - probe.at > PROBE_FRESH_MS || p.state !== 'alive') continue
      const fresh: PeerView = {
        reporter: p.peerId,
        reporterSite: p.site,
        reporterAlive: true,
        state: probe.state,
      }
      const i = views.findIndex((v) => v.reporter === p.peerId)
      if (i >= 0) views[i] = fresh
      else views.push(fresh)
    }
  }

  private checkQuorum(members: Member[], alive: string[], witnessId: string | undefined): void {
    const q = hasQuorum({
      mySite: this.self.site,
      members,
      alivePeers: alive,
      witnessConfigured: !!witnessId,
      witnessReachable: !!witnessId && alive.includes(witnessId),
    })
    const was = this.quorum?.reached
    this.quorum = q
    if (was === q.reached) return
    const reason = q.reached ? 'quorum of sites reachable' : `no quorum: ${q.votes} of ${q.needed} site votes`
    this.c.replicas.setProducing?.(q.reached, reason)
    // At start-up peers connect one by one: quorum may come and go before the mesh has formed.
    if (!q.reached && was !== undefined && Date.now() - this.startedAt > STARTUP_GRACE_MS) {
      const owned = this.ownedHere()
      void this.c.notifier.notify(
        messages.quorumLost(this.reporter(), {
          reachableSites: q.agreeingSites,
          neededSites: q.needed,
          vms: owned,
        }),
      )
    }
  }

  get hasQuorum(): boolean {
    return this.quorum?.reached ?? false
  }

  private ownedHere(): string[] {
    const l = this.c.coordinator.ledger
    return (this.lastState.get(this.self.peerId)?.vms ?? [])
      .map((v) => v.name)
      .filter((vm) => l.current(vm)?.owner === this.self.peerId)
  }

  /** Adopts higher epochs other owners publish, and fences what runs here against them. */
  private async learnFromGossip(): Promise<void> {
    for (const s of this.lastState.values()) {
      if (s.peerId === this.self.peerId) continue
      for (const vm of s.vms) {
        if (vm.epoch <= 0) continue
        const claim = { vm: vm.name, epoch: vm.epoch, owner: s.peerId }
        if (this.c.coordinator.ledger.learn(claim) === 'newer') await this.onClaim(claim)
      }
    }
  }

  /**
   * Asks live peers what they know of every VM registered here, so a node that was away while
   * its VMs moved (it missed the announcement) learns the new owner and fences itself.
   */
  async reconcile(): Promise<void> {
    // Stopped VMs too: a host that comes back after its VMs moved learns it is now their replica.
    const running = (await this.c.hypervisor.listVms()).map((v) => v.name).slice(0, MAX_RECONCILE_VMS)
    if (running.length === 0) return
    const alive = this.c.mesh
      .peers()
      .filter((p) => p.state === 'alive' && p.connected)
      .map((p) => p.peerId)
    for (const vm of running) {
      const replies = await Promise.allSettled(
        alive.map((peer) =>
          this.c.coordinator.request(
            peer,
            { type: 'query', vm },
            { signal: AbortSignal.timeout(CONTROL_REQUEST_TIMEOUT_MS) },
          ),
        ),
      )
      for (const r of replies) {
        if (r.status !== 'fulfilled' || r.value.type !== 'known' || !r.value.current) continue
        if (this.c.coordinator.ledger.learn(r.value.current) === 'newer') await this.onClaim(r.value.current)
      }
    }
  }

  /** Fencing: called for every newer claim learned (announce or gossip). */
  async onClaim(claim: EpochClaim): Promise<void> {
    if (claim.owner === this.self.peerId) return
    await this.c.replicas
      .learnEpoch?.(claim.vm, claim.epoch, claim.owner)
      .catch((err: Error) =>
        this.log.warn({ vm: claim.vm, err: err.message }, 'replication did not learn the epoch'),
      )
    let running = false
    try {
      running = (await this.c.hypervisor.getVm(claim.vm)).state === 'running'
    } catch {
      return // not registered here: nothing to fence
    }
    const decision = fenceDecision(
      { self: this.self.peerId, vm: claim.vm, epoch: claim.epoch - 1, owner: this.self.peerId, running },
      claim,
    )
    if (decision.action === 'stop-and-become-replica') {
      await this.c.hypervisor.stopVm(claim.vm, { force: true })
      this.log.warn({ vm: claim.vm, reason: decision.reason }, 'fenced: stopped the local copy')
      await this.c.notifier.notify(
        messages.fenced(this.reporter(), {
          vm: claim.vm,
          ownEpoch: claim.epoch - 1,
          seenEpoch: claim.epoch,
          owner: claim.owner,
        }),
      )
    }
    // The resync set-up reads the fenced disks: it must not hold up the announcement's reply.
    if (decision.action !== 'none')
      void this.c.replicas
        .fenced?.(claim.vm, claim.owner, claim.epoch)
        .catch((err: Error) =>
          this.log.warn({ vm: claim.vm, err: err.message }, 'becoming a replica of the new owner failed'),
        )
  }

  /** A host is confirmed down: plan all its VMs at once and promote those placed here. */
  /**
   * Plans the VMs owned by `hosts` (from their last states): placement among live holders of
   * each VM's newest point, then a decision per VM for `trigger`, in boot order.
   */
  plan(hosts: string[], trigger: Trigger, now = Date.now()) {
    const failed = new Set(hosts)
    const vms = hosts.flatMap((h) =>
      (this.lastState.get(h)?.vms ?? [])
        .filter((v) => {
          const cur = this.c.coordinator.ledger.current(v.name)
          return !cur || cur.owner === h // someone else already owns it: not this failure's VM
        })
        .map((v) => ({ ...v, host: h })),
    )
    const aliveIds = new Set(
      this.c.mesh
        .peers()
        .filter((p) => p.state === 'alive')
        .map((p) => p.peerId),
    )
    const candidates: PlacementCandidate[] = [...this.lastState.values()]
      .filter((s) => !failed.has(s.peerId) && (s.peerId === this.self.peerId || aliveIds.has(s.peerId)))
      .map(candidateFromState)
    const placement = placeVms({
      // Sizes from the failed host's last gossiped state; room from each candidate's.
      vms: vms.map((v) => ({
        name: v.name,
        ...vmSizeFromState(v),
        ...this.tier(v.name),
        ...this.c.config.vms[v.name],
      })),
      candidates,
      hubs: this.c.config.hubs,
      exclude: hosts,
      overCapacity: this.c.config.overCapacity,
      maxVcpusPerCpu: this.c.config.maxVcpusPerCpu,
    })
    const decisions = [...vms]
      .sort((x, y) => this.tier(x.name).priority - this.tier(y.name).priority || x.name.localeCompare(y.name))
      .map((v) => {
        const { tier, priority } = this.tier(v.name)
        const p = placement.placements.find((x) => x.vm === v.name)
        const time = p ? this.pointTime(p.peerId, v.name) : null
        const newestPoint = p ? { seq: p.pointSeq, time: time ?? now } : null
        const d = decideVm(
          { vm: v.name, tier, priority, wasRunning: v.state === 'running', newestPoint },
          trigger,
          now,
        )
        const unplaced = placement.unplaced.find((u) => u.vm === v.name)
        return {
          ...d,
          reason: unplaced ? unplaced.reason : d.reason,
          host: v.host,
          priority,
          placement: p ?? null,
        }
      })
    return { vms, decisions, warnings: placement.warnings, aliveIds }
  }

  /**
   * Places a failed host's VMs nobody owns yet and promotes those placed here. `again`: a later
   * placement of the same failure (no host-down notice); `acted`: the VMs this node already
   * promoted or announced as waiting for it in this failure, never acted on twice.
   */
  private async onHostDown(
    peerId: string,
    site: string,
    confirmedBy: string[],
    now: number,
    failure: { again: boolean; acted: Set<string> },
  ): Promise<void> {
    const last = this.lastState.get(peerId)
    const { vms, decisions, warnings: planWarnings, aliveIds } = this.plan([peerId], 'host-down', now)
    const plan = { warnings: planWarnings }
    const reporterId = [this.self.peerId, ...aliveIds].filter((id) => id !== peerId).sort()[0]
    if (reporterId === this.self.peerId && !failure.again) {
      await this.c.notifier.notify(
        messages.hostDown(this.reporter(), {
          peer: peerId,
          site,
          confirmedBySites: confirmedBy,
          vms: vms.map((v) => v.name),
          automatic: decisions.filter((d) => d.action === 'failover').map((d) => d.vm),
        }),
      )
      for (const w of plan.warnings)
        await this.c.notifier.notify(messages.overSubscribed(this.reporter(), { ...w, peer: w.peerId }))
    }
    const mine = decisions.filter((d) => d.placement?.peerId === this.self.peerId && !failure.acted.has(d.vm))
    if (failure.again && mine.length > 0)
      this.log.info(
        { peer: peerId, vms: mine.map((d) => d.vm) },
        'placed again from newer gossip: VMs of the failed host nobody owns yet go to this node',
      )
    for (const d of mine) failure.acted.add(d.vm)
    for (const d of mine.filter((x) => x.action === 'await-operator'))
      await this.c.notifier.notify(
        messages.awaitingOperator(this.reporter(), {
          vm: d.vm,
          from: peerId,
          candidates: [this.self.peerId],
          dataLossMs: d.expectedLossMs ?? 0,
        }),
      )
    const steps = mine
      .filter((d) => d.action === 'failover')
      .map((d) => ({ vm: d.vm, peerId: this.self.peerId, priority: d.priority }))
    // Every VM prepares at once (epoch claims are round trips, the rest is light disk work);
    // only the starts, which cost a host its CPU, take boot-order slots, and a slot is free again
    // as soon as its VM runs (the notification follows outside it).
    const slots = new Map(steps.map((s) => [s.vm, bootSlot()]))
    const promotions = steps.map((s) =>
      this.promote(s.vm, {
        mode: 'automatic',
        from: peerId,
        fromSite: site,
        failedAtMs: last ? last.time : now,
        slot: slots.get(s.vm),
      }).catch(() => {}),
    )
    await runInBootOrder(bootWaves(steps, this.c.config.maxStartsPerHost), (s) => {
      const slot = slots.get(s.vm)!
      slot.grant()
      return slot.settled
    })
    await Promise.all(promotions)
  }

  private pointTime(peerId: string, vm: string): number | null {
    return this.lastState.get(peerId)?.replicas.find((r) => r.vm === vm)?.lastPoint?.time ?? null
  }

  /**
   * Makes `vm` run here. Modes: automatic/manual raise the epoch with quorum; `test` starts an
   * isolated copy under another name and id, leaving the epoch and production alone.
   */
  promote(vm: string, opts: PromoteOptions): Promise<FailoverOutcome> {
    const key = opts.mode === 'test' ? `${vm}#test` : vm
    const running = this.busy.get(key)
    if (running) {
      // Already under way (its own slot, if any, frees the boot order): this slot has nothing to run.
      opts.slot?.settle()
      return running
    }
    const work = this.doPromote(vm, opts).then(
      (outcome) => {
        opts.slot?.settle()
        return outcome
      },
      (err: Error) => {
        opts.slot?.settle(err)
        throw err
      },
    )
    const tracked = work.finally(() => this.busy.delete(key))
    this.busy.set(key, tracked)
    return tracked
  }

  private async doPromote(vm: string, opts: PromoteOptions): Promise<FailoverOutcome> {
    const t0 = Date.now()
    const steps: Record<string, number> = {}
    const step = (name: string, since: number) => {
      const now = Date.now()
      steps[name] = now - since
      return now
    }
    let at = t0
    const test = opts.mode === 'test'
    let prepared = false
    const from = opts.from ?? this.c.coordinator.ledger.current(vm)?.owner ?? 'unknown'
    try {
      if (!test && !this.hasQuorum) throw new FailoverError(vm, 'this node cannot reach a quorum of sites')
      const previous = from === 'unknown' ? undefined : from
      const name = test ? `${vm}-test` : vm
      let registered = await this.c.hypervisor.getVm(name).catch(() => null)
      if (registered && registered.state !== 'stopped')
        throw new FailoverError(vm, `${name} is ${registered.state} on this node already`)
      // Replacing `previous`: if another node replaced it meanwhile (an announcement came in since
      // this promotion was decided), claiming the next epoch would take the VM from that node.
      const current = this.c.coordinator.ledger.current(vm)
      if (!test && previous && current && current.owner !== previous)
        throw new FailoverError(vm, `${current.owner} owns it already (epoch ${current.epoch})`)
      const minEpoch = test ? 0 : ((await this.c.replicas.knownEpoch?.(vm)) ?? 0)
      // Peers place a failed host's VMs from gossip that can lag, so two nodes may both claim it:
      // the claim names the epoch it raises from, exactly one wins, and the other gets
      // EpochLostError naming the winner (coordinator.ts), before it touched the replica.
      const claim = test
        ? null
        : await this.c.coordinator.claim(vm, { signal: opts.signal, previous, minEpoch })
      at = step('claimMs', at)
      const prep = await this.c.replicas.prepare(vm, { signal: opts.signal, test })
      prepared = !test
      at = step('prepareMs', at)
      if (registered && !test) {
        // A fenced copy of an earlier epoch: it runs from the replica's disks now, and whatever
        // its hypervisor kept of the old run (a point journal, change maps) must not follow it.
        await this.c.hypervisor.unregisterVm(name)
        registered = null
      }
      if (!registered)
        await this.c.hypervisor.registerVm(prep.config, prep.diskPaths, test ? { newId: true, name } : {})
      const homeSite = opts.fromSite ?? this.lastState.get(from)?.site ?? this.self.site
      const { mappings } = networkMapping({
        vm,
        nics: prep.config.nics,
        homeSite,
        targetSite: this.self.site,
        rules: this.c.config.network,
        isolate: test,
      })
      if (mappings.length) await this.c.hypervisor.applyNetworkMapping(name, mappings)
      at = step('registerMs', at)
      if (opts.slot) {
        await opts.slot.open
        at = step('slotMs', at)
      }
      // The start's gate: the hypervisor may prepare the start meanwhile (the lab forks its guest
      // and opens the disks), but the VM runs only once it resolves.
      let gated = false
      const gate = async () => {
        at = step('bootMs', at)
        // The failed owner may be alive but cut off: its lease must run out (it turns the VM off) first.
        if (opts.mode === 'automatic' && opts.from)
          await this.lease.waitOut(opts.from, { signal: opts.signal })
        at = step('leaseMs', at)
        // A prepare can take seconds: if a newer epoch was promised meanwhile, another node is taking it.
        if (claim && this.c.coordinator.ledger.highest(vm) > claim.claim.epoch)
          throw new FailoverError(
            vm,
            `epoch ${this.c.coordinator.ledger.highest(vm)} was promised to another node meanwhile`,
          )
        gated = true
      }
      await this.c.hypervisor.startVm(name, { gate })
      if (!gated)
        this.log.warn({ vm }, 'the hypervisor started the VM without awaiting its gate (a bug: unsafe)')
      at = step('startMs', at)
      opts.slot?.settle()
      // Protection onwards starts in the background: it dials the rest of the replica set (the
      // failed owner among them, refused for seconds), which must not hold this promotion's boot
      // slot; replication serialises it with any later hand-over of the same VM.
      if (claim) {
        const epoch = claim.claim.epoch
        this.c.replicas
          .owned?.(vm, epoch)
          ?.catch((err: Error) =>
            this.log.warn({ vm, epoch, err: err.message }, 'protection from the new owner did not start'),
          )
      }
      prepared = false
      const tookMs = Date.now() - t0
      this.log.info({ vm, mode: opts.mode, tookMs, ...steps }, 'promoted')
      // Planned: the VM was stopped before its final point, which this promotion runs from.
      const failedAt = opts.mode === 'planned' ? prep.point.time : (opts.failedAtMs ?? Date.now())
      const dataLossMs = Math.max(0, failedAt - prep.point.time)
      this.c.metrics?.failover(vm, opts.mode, 'ok')
      this.c.metrics?.promoted(tookMs / 1000)
      const { tier } = this.tier(vm)
      // The VM's own protection settings win over its tier's defaults.
      const own = test
        ? null
        : await this.c.replicas.objectives?.(vm).catch((e: Error) => {
            this.log.warn({ vm, err: e.message }, "the VM's own RPO/RTO were not read: its tier's apply")
            return null
          })
      await this.c.notifier.notify(
        test
          ? messages.testFailover(this.reporter(), {
              vm,
              on: this.self.peerId,
              copy: name,
              pointSeq: prep.point.seq,
            })
          : messages.failoverCompleted(this.reporter(), {
              vm,
              from,
              to: this.self.peerId,
              epoch: claim!.claim.epoch,
              pointSeq: prep.point.seq,
              dataLossMs,
              rpoMs: own?.rpoMs ?? tier.rpoMs,
              downtimeMs: Date.now() - (opts.failedAtMs ?? t0),
              rtoMs: own?.rtoMs ?? tier.rtoMs,
            }),
      )
      return {
        vm,
        on: this.self.peerId,
        name,
        epoch: claim?.claim.epoch ?? null,
        pointSeq: prep.point.seq,
        dataLossMs,
        tookMs,
      }
    } catch (err) {
      if (prepared)
        await this.c.replicas
          .released?.(vm)
          .catch((e: Error) =>
            this.log.warn({ vm, err: e.message }, 'the replica was not released: applies stay held'),
          )
      this.c.metrics?.failover(vm, opts.mode, 'failed')
      await this.c.notifier.notify(
        messages.failoverFailed(this.reporter(), {
          vm,
          from,
          to: this.self.peerId,
          reason: (err as Error).message,
        }),
      )
      throw err
    }
  }

  /**
   * An operator's failover of one VM: to `to`, or to the best holder of its newest point. The
   * node that will run it does the promotion; this one hands it over through the control protocol.
   */
  async failover(
    vm: string,
    opts: { to?: string; mode: 'manual' | 'test' | 'failback' | 'planned'; signal?: AbortSignal },
  ): Promise<FailoverOutcome> {
    if (opts.mode === 'planned') return this.handover.planned(vm, opts.to, opts.signal)
    const owner = this.c.coordinator.ledger.current(vm)?.owner ?? this.ownerFromGossip(vm)
    let to = opts.to
    if (!to) {
      const hosts = owner ? [owner] : []
      const d = hosts.length ? this.plan(hosts, 'manual').decisions.find((x) => x.vm === vm) : undefined
      if (!d?.placement) throw new FailoverError(vm, d?.reason ?? 'its owner is unknown here; give --to PEER')
      to = d.placement.peerId
    }
    if (to === this.self.peerId)
      return this.promote(vm, { mode: opts.mode, from: owner, signal: opts.signal })
    const reply = await this.c.coordinator
      .request(
        to,
        { type: 'failover', vm, mode: opts.mode, ...(owner ? { from: owner } : {}) },
        { signal: opts.signal ?? AbortSignal.timeout(FAILOVER_REQUEST_TIMEOUT_MS) },
      )
      .catch((err: Error) => {
        throw new FailoverError(vm, `${to} did not answer: ${err.message}`)
      })
    if (reply.type === 'failed-over') return reply.outcome
    throw new FailoverError(
      vm,
      reply.type === 'error' ? `${to} answered: ${reply.message}` : `${to} answered ${reply.type}`,
    )
  }

  /** An operator's failover of every VM of some hosts (a host, or all hosts of a site), in boot order. */
  async failoverHosts(hosts: string[], opts: { signal?: AbortSignal } = {}): Promise<HostFailoverRow[]> {
    const { decisions, warnings } = this.plan(hosts, 'manual')
    // Placements beyond a host's room (a hub's ratio, or over capacity by policy) are said aloud.
    for (const w of warnings)
      await this.c.notifier.notify(messages.overSubscribed(this.reporter(), { ...w, peer: w.peerId }))
    const out: HostFailoverRow[] = decisions
      .filter((d) => !d.placement || d.action !== 'failover')
      .map((d) => ({ vm: d.vm, ok: false, on: null, error: d.reason }))
    const steps = decisions
      .filter((d) => d.placement && d.action === 'failover')
      .map((d) => ({ vm: d.vm, peerId: d.placement!.peerId, priority: d.priority }))
    const results = await runInBootOrder(
      bootWaves(steps, this.c.config.maxStartsPerHost),
      (step, o) =>
        this.failover(step.vm, { to: step.peerId, mode: 'manual', signal: o.signal }).then(() => {}),
      { signal: opts.signal },
    )
    for (const r of results) {
      const warning = decisions.find((d) => d.vm === r.vm)?.placement?.warning
      out.push({
        vm: r.vm,
        ok: r.ok,
        on: r.ok ? r.peerId : null,
        ...(r.error ? { error: r.error } : {}),
        ...(warning ? { warning } : {}),
      })
    }
    return out
  }

  /** Hosts of `site` known to this node (from gossip). */
  hostsAt(site: string): string[] {
    return [...this.lastState.values()]
      .filter((s) => s.site === site && s.peerId !== this.self.peerId)
      .map((s) => s.peerId)
  }

  /**
   * Brings `vm` back to its previous owner (or `to`): a planned switch once that node holds a
   * point of the current epoch (see handover.ts).
   */
  failback(vm: string, opts: { to?: string; signal?: AbortSignal } = {}): Promise<FailoverOutcome> {
    return this.handover.failback(vm, opts)
  }

  /** The owner of `vm` by the highest epoch gossip shows. */
  ownerFromGossip(vm: string): string | undefined {
    let best: { owner: string; epoch: number } | undefined
    for (const s of this.lastState.values())
      for (const v of s.vms)
        if (v.name === vm && (!best || v.epoch > best.epoch)) best = { owner: s.peerId, epoch: v.epoch }
    return best?.owner
  }

  /** For the API and dashboard. */
  status() {
    return {
      peerId: this.self.peerId,
      site: this.self.site,
      quorum: this.quorum,
      lease: this.lease.status(),
      owners: this.c.coordinator.ledger.claims(),
      rpoBreaches: this.rpo.breaches(),
      notifications: this.c.notifier.recent().slice(-20),
    }
  }

  /** Ends a test failover: stops and removes the isolated copy. */
  async endTest(vm: string): Promise<void> {
    const name = `${vm}-test`
    await this.c.hypervisor.stopVm(name, { force: true }).catch(() => {})
    await this.c.hypervisor.unregisterVm(name)
    await this.c.replicas.releaseTest?.(vm)
  }
}

// Planned failover and failback (DESIGN.md §6), the hand-over between two running nodes:
//
//   asked anywhere ─▶ the owner (control 'failover' mode planned, with `to`) ─▶ stop the VM cleanly
//   ─▶ replication commits one last point on the target (finalSync) ─▶ the target promotes at
//   epoch+1 (control 'failover' mode planned, from the owner) ─▶ the owner learns the claim and
//   becomes a replica (FailoverService.onClaim). Nothing written before the stop is lost.
//
// If the target does not take the VM, the owner runs it again, unless some node was promised a
// newer epoch (two running copies are worse than none). A hand-over whose answer was lost (a
// stream reset under load) is recognised from the claim the asking node learns.
import type { Hypervisor } from '../hyperv/index.js'
import type { NodeState } from '../mesh/index.js'
import { FAILOVER_REQUEST_TIMEOUT_MS } from './constants.js'
import type { EpochCoordinator } from './coordinator.js'
import type { EpochClaim } from './epoch.js'
import { FailoverError } from './errors.js'
import type { NotifyLogger } from './notify/notifier.js'
import type { FailoverOutcome, ReplicaSource } from './service.js'

/** What the hand-over needs of the failover service. */
export interface HandOverHost {
  self: string
  coordinator: EpochCoordinator
  hypervisor: Hypervisor
  replicas: ReplicaSource
  log: NotifyLogger
  hasQuorum(): boolean
  nodeStates(): NodeState[]
  ownerFromGossip(vm: string): string | undefined
  /** Where the plan would run `vm` if its owner failed, or why nowhere. */
  placement(vm: string): { placement: { peerId: string } | null; reason?: string } | undefined
  /** How long failback waits for its target to hold a point of the current epoch. Default 10 s. */
  resyncWaitMs?: number
}

/** Failback waits this long for its target to show (in gossip) a point of the current epoch. */
const FAILBACK_RESYNC_WAIT_MS = 10_000

/** After a hand-over's answer was lost, the new owner's claim is awaited this long. */
const LOST_ANSWER_WAIT_MS = 15_000

/** The outcome of a hand-over whose answer was lost, from the claim this node learned. */
function lostAnswer(vm: string, claim: EpochClaim, pointSeq: number, t0: number): FailoverOutcome {
  return {
    vm,
    on: claim.owner,
    name: vm,
    epoch: claim.epoch,
    pointSeq,
    dataLossMs: 0,
    tookMs: Date.now() - t0,
  }
}

/** A planned hand-over waits this long for a point under way before the VM can stop. */
const STOP_FOR_HANDOVER_MS = 15_000

export class PlannedHandOver {
  constructor(private readonly h: HandOverHost) {}

  /**
   * Brings `vm` back to its previous owner (or `to`): a planned switch, so the final point is
   * committed there first and nothing is lost. Asked on the old owner itself, it comes home here.
   */
  async failback(vm: string, opts: { to?: string; signal?: AbortSignal } = {}): Promise<FailoverOutcome> {
    const current = this.h.coordinator.ledger.current(vm)
    let to = opts.to ?? this.h.coordinator.ledger.previousOwner(vm)
    if (!to && current && current.owner !== this.h.self) to = this.h.self
    if (!to) throw new FailoverError(vm, 'no earlier owner is known on this node; give --to PEER')
    await this.awaitResynced(vm, to, current?.epoch ?? 0, opts.signal)
    return this.planned(vm, to, opts.signal)
  }

  /**
   * Failback goes only to a node that reverse replication has brought up to date (it holds a
   * point of the current epoch, as its gossip says): otherwise the final sync would be a full
   * copy while the VM is stopped. Waits briefly for gossip to catch up.
   */
  private async awaitResynced(vm: string, to: string, epoch: number, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + (this.h.resyncWaitMs ?? FAILBACK_RESYNC_WAIT_MS)
    for (;;) {
      signal?.throwIfAborted()
      const held = this.h
        .nodeStates()
        .find((s) => s.peerId === to)
        ?.replicas.find((r) => r.vm === vm)
      if (held?.lastPoint && held.epoch >= epoch) return
      if (Date.now() > deadline)
        throw new FailoverError(
          vm,
          `${to} holds no point of epoch ${epoch} yet: reverse replication has not caught up; try again when it has`,
        )
      await new Promise((r) => setTimeout(r, 250))
    }
  }

  /** Does this node own `vm` now (the newest claim, or it runs here and nobody claimed it)? */
  async ownsHere(vm: string): Promise<boolean> {
    const current = this.h.coordinator.ledger.current(vm)
    if (current) return current.owner === this.h.self
    return (await this.h.hypervisor.getVm(vm).catch(() => null))?.state === 'running'
  }

  /** Planned failover of `vm` to `to`: done by its owner, asked through the control protocol. */
  async planned(vm: string, to: string | undefined, signal?: AbortSignal): Promise<FailoverOutcome> {
    if (await this.ownsHere(vm)) return this.handOver(vm, to, signal)
    const owner = this.h.coordinator.ledger.current(vm)?.owner ?? this.h.ownerFromGossip(vm)
    if (!owner) throw new FailoverError(vm, 'its owner is unknown here')
    const t0 = Date.now()
    const before = this.h.coordinator.ledger.current(vm)?.epoch ?? 0
    const reply = await this.h.coordinator
      .request(
        owner,
        { type: 'failover', vm, mode: 'planned', ...(to ? { to } : {}) },
        { signal: signal ?? AbortSignal.timeout(FAILOVER_REQUEST_TIMEOUT_MS) },
      )
      .catch(async (err: Error) => {
        // The hand-over may have happened and only its answer been lost (a stream reset).
        const done = await this.newOwnerOf(vm, before, (c) => c.owner !== owner && (!to || c.owner === to))
        if (done) return { type: 'failed-over' as const, outcome: lostAnswer(vm, done, 0, t0) }
        throw new FailoverError(vm, `its owner ${owner} did not answer: ${err.message}`)
      })
    if (reply.type === 'failed-over') return reply.outcome
    throw new FailoverError(
      vm,
      reply.type === 'error' ? `${owner} answered: ${reply.message}` : `${owner} answered ${reply.type}`,
    )
  }

  /**
   * On the owner: stop the VM, commit one last point on the target, have the target promote it
   * at epoch+1. This node learns the claim and becomes a replica (onClaim). If the target does
   * not take the VM, it runs here again.
   */
  async handOver(vm: string, to: string | undefined, signal?: AbortSignal): Promise<FailoverOutcome> {
    const sync = this.h.replicas.finalSync
    if (!sync) throw new FailoverError(vm, 'replication on this node offers no final sync')
    if (!this.h.hasQuorum()) throw new FailoverError(vm, 'this node cannot reach a quorum of sites')
    let target = to
    if (!target) {
      const d = this.h.placement(vm)
      if (!d?.placement)
        throw new FailoverError(vm, d?.reason ?? 'no holder of its points is known; give --to PEER')
      target = d.placement.peerId
    }
    if (target === this.h.self) throw new FailoverError(vm, 'it already runs on this node')
    const t0 = Date.now()
    const before = this.h.coordinator.ledger.highest(vm)
    const wasRunning = (await this.h.hypervisor.getVm(vm)).state === 'running'
    if (wasRunning) await this.stopForHandOver(vm, signal)
    let synced: { seq: number; time: number }
    try {
      synced = await sync(vm, { to: target, signal })
    } catch (err) {
      await this.resumeHere(vm, wasRunning)
      throw new FailoverError(
        vm,
        `final sync to ${target} failed (${(err as Error).message}); it runs here again`,
      )
    }
    this.h.log.info({ vm, to: target, seq: synced.seq }, 'final point committed; handing the VM over')
    const reply = await this.h.coordinator
      .request(
        target,
        { type: 'failover', vm, mode: 'planned', from: this.h.self },
        { signal: signal ?? AbortSignal.timeout(FAILOVER_REQUEST_TIMEOUT_MS) },
      )
      .catch(async (err: Error) => {
        const done = await this.newOwnerOf(vm, before, (c) => c.owner === target)
        return done
          ? { type: 'failed-over' as const, outcome: lostAnswer(vm, done, synced.seq, t0) }
          : { type: 'error' as const, message: err.message }
      })
    if (reply.type === 'failed-over') return reply.outcome
    // Restart here only if no node was promised a newer epoch: two running copies are worse.
    if (this.h.coordinator.ledger.highest(vm) <= before) await this.resumeHere(vm, wasRunning)
    throw new FailoverError(
      vm,
      `${target} did not take it over (${reply.type === 'error' ? reply.message : reply.type})`,
    )
  }

  /** Waits a little for a claim of `vm` above `epoch` that `accept`s (a lost answer's hand-over). */
  private async newOwnerOf(
    vm: string,
    epoch: number,
    accept: (claim: EpochClaim) => boolean,
  ): Promise<EpochClaim | null> {
    const deadline = Date.now() + LOST_ANSWER_WAIT_MS
    for (;;) {
      const c = this.h.coordinator.ledger.current(vm)
      if (c && c.epoch > epoch && accept(c)) return c
      if (Date.now() > deadline) return null
      await new Promise((r) => setTimeout(r, 200))
    }
  }

  /** A clean stop; the hypervisor refuses while replication holds a point open, so retry briefly. */
  private async stopForHandOver(vm: string, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + STOP_FOR_HANDOVER_MS
    for (;;) {
      signal?.throwIfAborted()
      try {
        await this.h.hypervisor.stopVm(vm)
        return
      } catch (err) {
        if (Date.now() > deadline)
          throw new FailoverError(vm, `it could not be stopped: ${(err as Error).message}`)
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  }

  private async resumeHere(vm: string, start: boolean): Promise<void> {
    if (start)
      await this.h.hypervisor
        .startVm(vm)
        .catch((err: Error) => this.h.log.warn({ vm, err: err.message }, 'restart failed'))
    await this.h.replicas
      .resume?.(vm)
      .catch((err: Error) =>
        this.h.log.warn({ vm, err: err.message }, 'protection did not resume: the VM runs unprotected'),
      )
  }
}

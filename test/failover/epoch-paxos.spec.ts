// The epoch protocol as a property: random clusters (3-5 nodes over 2-3 sites, a witness for two
// sites sometimes), several proposers racing for one VM, messages delayed, reordered, duplicated
// and dropped (requests and replies), nodes crashing and coming back from their persisted ledger
// JSON. Checked: never two owners announced for one epoch (safety); and once the chaos stops, a
// proposer that retries decides, and the VM can be failed over again after that (liveness).
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  type ControlReply,
  type ControlRequest,
  type ControlTransport,
  controlReplySchema,
  controlRequestSchema,
  type EpochClaim,
  EpochCoordinator,
  EpochLedger,
  EpochLostError,
  type Member,
} from '../../src/failover/index.js'
import { prng } from '../helpers/prng.js'

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

interface Chaos {
  drop: number
  dup: number
  maxDelayMs: number
}

interface SimNode {
  member: Member
  incarnation: number
  crashed: boolean
  coordinator: EpochCoordinator
  /** The ledger as last persisted (what a restart reads). */
  saved: string | undefined
}

/** Safety record: every owner any node announced, taught or was told won, per epoch. */
class Decisions {
  readonly byEpoch = new Map<number, Set<string>>()
  note(c: EpochClaim): void {
    const owners = this.byEpoch.get(c.epoch) ?? new Set<string>()
    owners.add(c.owner)
    this.byEpoch.set(c.epoch, owners)
  }
  conflicts(): string[] {
    return [...this.byEpoch].filter(([, o]) => o.size > 1).map(([e, o]) => `epoch ${e}: ${[...o].join(', ')}`)
  }
}

class SimCluster {
  readonly nodes = new Map<string, SimNode>()
  readonly decisions = new Decisions()
  chaos: Chaos | null
  readonly random: () => number

  constructor(
    readonly members: Member[],
    readonly witness: Member | null,
    chaos: Chaos,
    seed: number,
  ) {
    this.chaos = chaos
    this.random = prng(seed)
    for (const m of [...members, ...(witness ? [witness] : [])]) {
      const node: SimNode = { member: m, incarnation: 0, crashed: false, saved: undefined } as SimNode
      this.nodes.set(m.peerId, node)
      this.boot(node)
    }
  }

  private boot(node: SimNode): void {
    const inc = ++node.incarnation
    node.crashed = false
    const self = node.member
    const ledger = node.saved === undefined ? undefined : new EpochLedger(JSON.parse(node.saved))
    node.coordinator = new EpochCoordinator({
      self,
      transport: this.transport(node, inc),
      members: () => this.members.filter((m) => m.peerId !== self.peerId),
      // Everyone looks alive: failures show up as requests that fail (drops, crashes).
      alive: () => [...this.nodes.keys()].filter((id) => id !== self.peerId),
      persist: async (state) => {
        if (node.incarnation !== inc || node.crashed) throw new Error(`${self.peerId} crashed`)
        await sleep(this.random() < 0.5 ? 0 : 1) // the fsync
        if (node.incarnation !== inc || node.crashed) throw new Error(`${self.peerId} crashed`)
        node.saved = JSON.stringify(state)
      },
      ledger,
      witness: this.witness ? { peerId: this.witness.peerId } : null,
      onClaim: (claim) => this.decisions.note(claim),
      retry: { backoffMs: 2 },
    })
  }

  crash(id: string): void {
    const node = this.nodes.get(id)!
    node.crashed = true
    node.incarnation++
  }

  restart(id: string): void {
    const node = this.nodes.get(id)!
    if (node.crashed) this.boot(node)
  }

  private delay(): Promise<void> {
    const max = this.chaos?.maxDelayMs ?? 1
    return sleep(Math.floor(this.random() * (max + 1)))
  }

  private transport(sender: SimNode, inc: number): ControlTransport {
    const alive = (n: SimNode, i: number) => !n.crashed && n.incarnation === i
    return {
      request: async (peerId, req) => {
        if (!alive(sender, inc)) throw new Error(`${sender.member.peerId} crashed`)
        const wire: ControlRequest = controlRequestSchema.parse(JSON.parse(JSON.stringify(req)))
        if (wire.type === 'announce') this.decisions.note(wire.claim)
        if ((wire.type === 'prepare' || wire.type === 'accept') && wire.base) this.decisions.note(wire.base)
        await this.delay()
        if (this.chaos && this.random() < this.chaos.drop) throw new Error('request lost')
        const target = this.nodes.get(peerId)
        if (!target || target.crashed) throw new Error(`${peerId} unreachable`)
        const targetInc = target.incarnation
        const from = { peerId: sender.member.peerId, site: sender.member.site }
        const reply = target.coordinator.answer(from, wire)
        if (this.chaos && this.random() < this.chaos.dup) {
          const again = JSON.parse(JSON.stringify(wire)) as ControlRequest
          void this.delay().then(() =>
            target.crashed ? undefined : target.coordinator.answer(from, again).catch(() => undefined),
          )
        }
        const answer: ControlReply = await reply
        await this.delay()
        if (!alive(target, targetInc)) throw new Error(`${peerId} crashed before it replied`)
        if (this.chaos && this.random() < this.chaos.drop) throw new Error('reply lost')
        return controlReplySchema.parse(JSON.parse(JSON.stringify(answer)))
      },
      serve: () => {},
      close: async () => {},
    }
  }

  /** One claim by `id` of the owner it knows replaced, its outcome noted. */
  async claim(id: string, signal?: AbortSignal): Promise<'won' | 'lost' | 'undecided'> {
    const c = this.nodes.get(id)!.coordinator
    const previous = c.ledger.current('w')?.owner
    try {
      const r = await c.claim('w', { previous, signal })
      this.decisions.note(r.claim)
      return 'won'
    } catch (err) {
      if (err instanceof EpochLostError && err.winner.announced) {
        this.decisions.note({ vm: 'w', epoch: err.winner.epoch, owner: err.winner.owner })
        return 'lost'
      }
      return 'undecided'
    }
  }

  /** Every announced owner in the ledgers, running and persisted. */
  noteLedgers(): void {
    for (const n of this.nodes.values()) {
      const c = n.coordinator.ledger.current('w')
      if (c) this.decisions.note(c)
      if (n.saved) {
        const s = new EpochLedger(JSON.parse(n.saved)).current('w')
        if (s) this.decisions.note(s)
      }
    }
  }
}

const layoutArb = fc
  .record({
    sites: fc.integer({ min: 2, max: 3 }),
    extra: fc.array(fc.nat(2), { minLength: 0, maxLength: 2 }),
    witness: fc.boolean(),
  })
  .map(({ sites, extra, witness }) => {
    const letters = ['a', 'b', 'c'].slice(0, sites)
    const counts = letters.map(() => 1)
    for (const e of extra) counts[e % sites]++
    while (counts.reduce((a, b) => a + b) < 3) counts[0]++
    const members: Member[] = letters.flatMap((l, i) =>
      Array.from({ length: counts[i] }, (_, k) => ({ peerId: `${l}${k + 1}`, site: l.toUpperCase() })),
    )
    return { members, witness: sites === 2 && witness ? { peerId: 'w1', site: 'W' } : null }
  })

const scenarioArb = fc.record({
  layout: layoutArb,
  proposers: fc.array(fc.record({ node: fc.nat(), atMs: fc.nat(30) }), { minLength: 2, maxLength: 4 }),
  crashes: fc.array(
    fc.record({ node: fc.nat(), atMs: fc.nat(40), downMs: fc.integer({ min: 1, max: 25 }) }),
    {
      maxLength: 3,
    },
  ),
  chaos: fc.record({
    drop: fc.double({ min: 0, max: 0.3, noNaN: true }),
    dup: fc.double({ min: 0, max: 0.2, noNaN: true }),
    maxDelayMs: fc.integer({ min: 0, max: 8 }),
  }),
  seed: fc.integer(),
  /** Epochs decided before the chaos (the VM has an owner already, or none). */
  before: fc.integer({ min: 0, max: 2 }),
})

describe('epoch Paxos under chaos (property)', () => {
  it('never two owners for one epoch; once the chaos stops, a retry decides and the VM moves again', async () => {
    const stats = { won: 0, lost: 0, undecided: 0, runs: 0 }
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (s) => {
        stats.runs++
        const { members, witness } = s.layout
        const sim = new SimCluster(members, witness, s.chaos, s.seed)
        const ids = members.map((m) => m.peerId)
        const pick = (n: number) => ids[n % ids.length]
        // Calm start: `before` owners one after another.
        sim.chaos = null
        for (let i = 0; i < s.before; i++) expect(await sim.claim(pick(i))).toBe('won')
        sim.chaos = s.chaos
        // Chaos: racing proposers, crashes and restarts.
        const racing = s.proposers.map(async (p) => {
          await sleep(p.atMs)
          const id = pick(p.node)
          if (sim.nodes.get(id)!.crashed) return 'undecided'
          return sim.claim(id, AbortSignal.timeout(5_000))
        })
        const crashing = s.crashes.map(async (c) => {
          await sleep(c.atMs)
          const id = pick(c.node)
          sim.crash(id)
          await sleep(c.downMs)
          sim.restart(id)
        })
        for (const r of await Promise.all(racing)) stats[r]++
        await Promise.all(crashing)
        sim.noteLedgers()
        expect(sim.decisions.conflicts()).toEqual([])
        // The chaos stops (every node up, no loss, short delays). One proposer retries: decided.
        sim.chaos = null
        for (const id of sim.nodes.keys()) sim.restart(id)
        await sleep(5) // duplicates still in flight land
        const p = pick(s.seed >>> 0)
        expect(await sim.claim(p, AbortSignal.timeout(10_000))).not.toBe('undecided')
        // And the VM can be failed over again: another node replaces whoever owns it now.
        const q = pick((s.seed >>> 0) + 1)
        expect(await sim.claim(q, AbortSignal.timeout(10_000))).not.toBe('undecided')
        sim.noteLedgers()
        expect(sim.decisions.conflicts()).toEqual([])
        // Everyone up and reachable: the newest owner reached every member.
        const newest = Math.max(...sim.decisions.byEpoch.keys())
        for (const id of ids) expect(sim.nodes.get(id)!.coordinator.ledger.current('w')?.epoch).toBe(newest)
      }),
      { numRuns: 60, interruptAfterTimeLimit: 60_000 },
    )
    // The chaos did make proposers race and lose (the property is not vacuous).
    expect(stats.runs).toBeGreaterThanOrEqual(20)
    expect(stats.lost + stats.undecided).toBeGreaterThan(0)
  }, 120_000)
})

// Seeding from several peers at once (DESIGN.md §4; issue 6). A target that holds no point of a VM
// yet (a new copy, or a replica whose store was lost) is seeded by the VM's source as usual:
//
//   source ── hello {vm} ──▶ target        the target holds no point of vm: a seed begins
//   source ── query ids ───▶ target        target: pull the lacking ids, at once, from every peer
//                                          that gossips a committed point of vm (puller.ts: get
//                                          frames, each chunk verified by hash as it is stored)
//   source ◀── lack bits ─── target        only what no holder gave within the deadline
//   source ── chunk… ──────▶ target        the source pushes just that remainder
//
// So the protocol change is nil on the source's side: the holders are learned from the mesh's
// gossip (each node publishes the replicas it holds with their last point), and the answer to the
// lack query shrinks. A holder that sends a bad chunk is charged and routed around (puller.ts); a
// chunk nobody could give is pushed by the source, so a seed never depends on a helper peer. The
// pull per query is bounded by a deadline well under the source's stall timeout (session.ts).
import type { ChunkLease, ChunkStore } from '../chunkstore/index.js'
import type { ChunkId } from './ids.js'
import { addPeerCounts, emptyPeerStats, type PeerPullStats, pullChunks } from './puller.js'
import type { ReplicationLogger, ReplicationNetwork } from './session.js'

/** Time a target spends pulling one query's lacking ids before it leaves the rest to the source. */
export const SEED_PULL_DEADLINE_MS = 8000
/** A seed with no hello or query for this long is over (its source went away). */
const SEED_IDLE_MS = 120_000
/** Finished seeds kept for `GET /replication/seeds`. */
const SEED_HISTORY = 16

export interface SeedPullComponents {
  network: ReplicationNetwork
  store: Pick<ChunkStore, 'has' | 'putChunk'>
  logger: ReplicationLogger
  /** Peers other than this node that gossip a committed point of `vm`, best first. */
  holders(vm: string): string[]
  deadlineMs?: number
}

/** One seed of a VM on this node: who gave its chunks. */
export interface SeedStats {
  vm: string
  /** The peer that protects the VM to this node (it pushes what the holders did not give). */
  source: string
  /** Ids the source asked about that this node lacked. */
  lacking: number
  /** Of those, chunks pulled from holders, and their bytes. */
  pulled: number
  pulledBytes: number
  /** Of those, answered as lacking: the source pushes them. */
  leftToSource: number
  /** Per holder asked: chunks and bytes it gave, bad chunks it sent, ids it lacked. */
  byPeer: Record<string, PeerPullStats>
  startedAt: number
  updatedAt: number
  /** The seed ended with a committed point. */
  committed: boolean
  /** Holders no longer asked in this seed: they sent bad chunks, failed, or gave nothing in time. */
  dropped: string[]
}

export class SeedPuller {
  /** Seeds in progress by source peer, then VM. */
  private readonly active = new Map<string, Map<string, SeedStats>>()
  private readonly history: SeedStats[] = []

  constructor(private readonly c: SeedPullComponents) {}

  /** The source `source` said hello for `vm`, of which this node holds no point. */
  begin(source: string, vm: string): void {
    const now = Date.now()
    let bySource = this.active.get(source)
    if (!bySource) {
      bySource = new Map()
      this.active.set(source, bySource)
    }
    const seed = bySource.get(vm)
    if (seed) seed.updatedAt = now
    else
      bySource.set(vm, {
        vm,
        source,
        lacking: 0,
        pulled: 0,
        pulledBytes: 0,
        leftToSource: 0,
        byPeer: {},
        startedAt: now,
        updatedAt: now,
        committed: false,
        dropped: [],
      })
  }

  /** A point of `vm` from `source` was committed: its seed is over. */
  end(source: string, vm: string): void {
    const seed = this.active.get(source)?.get(vm)
    if (!seed) return
    seed.committed = true
    this.retire(source, vm)
  }

  /** Seeds in progress and recently finished, newest first. */
  list(): SeedStats[] {
    this.expire()
    const live = [...this.active.values()].flatMap((m) => [...m.values()])
    return [...live, ...this.history].sort((a, b) => b.startedAt - a.startedAt)
  }

  /**
   * Before answering a lack query from `source`: pulls what this node lacks from the holders of
   * the VM(s) it seeds from that source. Returns the ids still lacking (the source pushes those).
   */
  async beforeLack(source: string, lacking: ChunkId[], lease: ChunkLease): Promise<ChunkId[]> {
    this.expire()
    const seeds = [...(this.active.get(source)?.values() ?? [])]
    if (seeds.length === 0 || lacking.length === 0) return lacking
    const self = this.c.network.peerId
    const seed = seeds[0]
    const peers = [...new Set(seeds.flatMap((s) => this.c.holders(s.vm)))].filter(
      (p) => p !== self && !seed.dropped.includes(p),
    )
    seed.updatedAt = Date.now()
    seed.lacking += lacking.length
    if (peers.length === 0) {
      seed.leftToSource += lacking.length
      return lacking
    }
    const deadline = AbortSignal.timeout(this.c.deadlineMs ?? SEED_PULL_DEADLINE_MS)
    const r = await pullChunks(lacking, {
      network: this.c.network,
      store: this.c.store,
      peers,
      logger: this.c.logger,
      lease,
      signal: deadline,
    })
    // What the store holds now decides the answer (a chunk stored as the deadline struck counts).
    const still = await this.c.store.has(lacking)
    seed.pulled += r.fetched
    seed.pulledBytes += r.bytes
    seed.leftToSource += still.length
    seed.updatedAt = Date.now()
    for (const [peer, s] of Object.entries(r.byPeer)) {
      const into = seed.byPeer[peer] ?? emptyPeerStats()
      seed.byPeer[peer] = into
      addPeerCounts(into, s)
      if (s.error && s.error !== 'stopped') into.error = s.error
      // A holder that lies, fails, or is too slow to give anything costs every later query its
      // deadline: the rest of this seed goes without it (the source, or other holders, cover).
      const useless =
        s.bad > 0 || (s.error !== null && s.error !== 'stopped') || (s.error === 'stopped' && s.chunks === 0)
      if (useless && !seed.dropped.includes(peer)) {
        seed.dropped.push(peer)
        this.c.logger.warn(
          { vm: seed.vm, peer, bad: s.bad, reason: s.error },
          `seed of ${seed.vm}: no longer pulling from ${peer} (${s.bad > 0 ? `${s.bad} bad chunk(s)` : (s.error ?? 'nothing in time')})`,
        )
      }
    }
    if (r.fetched > 0 || still.length > 0)
      this.c.logger.info(
        { source, vm: seed.vm, pulled: r.fetched, fromPeers: peers, leftToSource: still.length },
        `seed of ${seed.vm}: pulled ${r.fetched} of ${lacking.length} lacking chunk(s) from ${peers.length} holder(s); ${still.length} left to ${source}`,
      )
    return still
  }

  private retire(source: string, vm: string): void {
    const bySource = this.active.get(source)
    const seed = bySource?.get(vm)
    if (!bySource || !seed) return
    bySource.delete(vm)
    if (bySource.size === 0) this.active.delete(source)
    this.history.unshift(seed)
    this.history.length = Math.min(this.history.length, SEED_HISTORY)
  }

  private expire(): void {
    const now = Date.now()
    for (const [source, bySource] of this.active)
      for (const [vm, seed] of bySource) if (now - seed.updatedAt > SEED_IDLE_MS) this.retire(source, vm)
  }
}

// Chain forwarding: a hop that committed a point sends it on to the next peer of its `forward`
// list, reading chunks from its own store. Against the point the next peer holds, only changed
// chunks are offered, as sub-chunk deltas when the change is small (both versions are in this
// store, so the changed sectors are found by comparing them); the next peer's point counts as a
// base only when this store holds the same point (same seq and epoch). One forward runs per VM
// at a time; points committed meanwhile collapse into the newest. The point travels with its
// producer's signature, unchanged: a hop vouches for nothing, the next peer checks the owner's.
import type { ChunkStore, RecoveryPoint } from '../chunkstore/index.js'
import { chunkLength, diffRanges, extractDelta, shouldSendDelta } from './delta.js'
import type { ChunkId } from './ids.js'
import type { LinkTable } from './link.js'
import type { ManifestEntry, PointHeader } from './messages.js'
import { type EntryList, fullEntries } from './packed-manifest.js'
import { findPoint, fromStoreId, readPackedManifest } from './replica-store.js'
import { type OfferItem, type ReplicationLogger, type ReplicationNetwork, TargetSession } from './session.js'
import { nextHop } from './targets.js'

const OFFER_BATCH = 64

export interface ForwarderComponents {
  network: ReplicationNetwork
  store: ChunkStore
  logger: ReplicationLogger
  /** The node's links: a chain hop's sends obey the same limits and compression. */
  links?: LinkTable
}

export class Forwarder {
  private readonly running = new Map<string, Promise<void>>()
  private readonly wanted = new Map<string, { point: RecoveryPoint; header: PointHeader }>()
  readonly forwarded = new Map<string, { peer: string; seq: number; payloadBytes: number }>()

  constructor(private readonly c: ForwarderComponents) {}

  /** Queues forwarding of a committed point along header.forward. */
  forward(point: RecoveryPoint, header: PointHeader): void {
    if (header.forward.length === 0) return
    this.wanted.set(point.vm, { point, header })
    if (this.running.has(point.vm)) return
    const run = this.drain(point.vm).finally(() => this.running.delete(point.vm))
    this.running.set(point.vm, run)
  }

  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()])
  }

  private async drain(vm: string): Promise<void> {
    for (;;) {
      const next = this.wanted.get(vm)
      if (!next) return
      this.wanted.delete(vm)
      try {
        await this.send(next.point, next.header)
      } catch (err) {
        this.c.logger.warn(
          { vm, seq: next.point.seq, peer: next.header.forward[0], reason: (err as Error).message },
          'forwarding a point failed; the next point retries',
        )
      }
    }
  }

  private async send(point: RecoveryPoint, header: PointHeader): Promise<void> {
    const hop = nextHop(header.forward)
    if (!hop) return
    const store = this.c.store
    const session = await TargetSession.open({
      network: this.c.network,
      peer: hop.to,
      vm: point.vm,
      vmId: header.vmId,
      logger: this.c.logger,
      link: this.c.links?.forPeer(hop.to),
    })
    try {
      const last = session.state.lastSeq
      if (last !== null && last >= point.seq) return
      const held = last === null ? undefined : await findPoint(store, point.vm, last)
      // A point of another epoch under that number is another point (failover, failback).
      const base = held && held.epoch === session.state.epoch ? held : undefined
      const entries: EntryList[] = []
      for (let i = 0; i < point.disks.length; i++) {
        const d = point.disks[i]
        const b = base?.disks[i]
        const incremental = b && b.virtualSize === d.virtualSize && b.chunkSize === d.chunkSize
        const list: ManifestEntry[] = []
        const items: OfferItem[] = []
        const flush = async () => {
          await session.offer(items.splice(0))
        }
        if (incremental) {
          for await (const c of store.diffChanges(b, d)) {
            const id = fromStoreId(c.after.toString('hex'))
            list.push({ index: c.index, id })
            if (id !== null)
              items.push(
                this.item(
                  id,
                  fromStoreId(c.before.toString('hex')),
                  chunkLength(c.index, d.chunkSize, d.virtualSize),
                ),
              )
            if (items.length >= OFFER_BATCH) await flush()
          }
          entries.push(list)
        } else {
          // The whole manifest, offered as it is read: 32 bytes a data chunk kept for the commit,
          // whose entries are made again as they are sent (no array of the disk's ids).
          const ids = await readPackedManifest(store, point, i, async (index, id) => {
            items.push(this.item(id, null, chunkLength(index, d.chunkSize, d.virtualSize)))
            if (items.length >= OFFER_BATCH) await flush()
          })
          entries.push(fullEntries(ids))
        }
        if (items.length > 0) await flush()
      }
      await session.commit(
        {
          ...header,
          baseSeq: base ? last : null,
          forward: hop.forward,
          // The producer's signature as received (and as stored with the point), never this hop's.
          signed: header.signed ?? point.signed,
          disks: point.disks.map((d, index) => ({
            index,
            virtualSize: d.virtualSize,
            chunkSize: d.chunkSize,
            entries: entries[index].length,
          })),
        },
        entries,
      )
      this.forwarded.set(point.vm, { peer: hop.to, seq: point.seq, payloadBytes: session.stats.payloadBytes })
      this.c.logger.info(
        { vm: point.vm, seq: point.seq, peer: hop.to, bytes: session.stats.payloadBytes },
        `forwarded point ${point.vm}@${point.seq} to ${hop.to}`,
      )
    } finally {
      await session.close().catch(() => {})
    }
  }

  private item(id: ChunkId, before: ChunkId | null, length: number): OfferItem {
    const store = this.c.store
    let bytes: Buffer | null = null
    const load = async () => {
      bytes ??= await store.getChunk(id)
      return bytes
    }
    return {
      id,
      length,
      load,
      delta:
        before === null
          ? undefined
          : async () => {
              const after = await load()
              const old = await store.getChunk(before)
              if (old.length !== after.length) return null
              const ranges = diffRanges(old, after)
              return shouldSendDelta(ranges, after.length)
                ? { base: before, ranges, bytes: extractDelta(after, ranges) }
                : null
            },
    }
  }
}

// The receiving side of the chunks and points protocols (see session.ts for the flow). Every
// chunk is hashed before it is stored; one that fails is rejected (the sender sends it again) and
// the sender is named in the log. A point is committed only when every chunk its manifests name
// is in the store; then the replica VHDX is brought up to it and the point is forwarded.
// Fencing on the wire: a point of an epoch lower than the highest this node knows for its VM is
// refused, and a node that protects a VM itself (it believes it owns it) takes no points for it.
import {
  type ChunkLease,
  type ChunkStore,
  IncompletePointError,
  MissingChunkError,
  type RecoveryPoint,
  ChunkHashMismatchError as StoreHashMismatchError,
} from '../chunkstore/index.js'
import type { DuplexByteStream } from '../mesh/index.js'
import { MessageChannel } from './channel.js'
import {
  ACK_BATCH_BYTES,
  ACK_BATCH_IDS,
  MAX_IDS_PER_FRAME,
  MAX_POINT_DISK_CHUNKS,
  STORE_BATCH_CHUNKS,
} from './constants.js'
import { rebuildChunk } from './delta.js'
import { ChunkHashMismatchError, FrameError, PointSignatureError } from './errors.js'
import { fastFingerprintChunk } from './fingerprints.js'
import type { ChunkId } from './ids.js'
import {
  type ChunksMessage,
  decodeChunksMessage,
  decodePointsMessage,
  encodeChunksMessage,
  encodePointsMessage,
  type ManifestEntry,
  type NackReason,
  type PointDiskHeader,
  type PointHeader,
  type PointsMessage,
  VM_NAME_PATTERN,
} from './messages.js'
import { PackedManifest } from './packed-manifest.js'
import {
  checkSignedRoots,
  type MemberKeys,
  type SignedPointFields,
  verifyPointHeader,
} from './point-signature.js'
import { buildManifest, findPoint, hashHex, patchManifest } from './replica-store.js'
import { serveFetch } from './restore-pull.js'
import type { SeedPuller } from './seed-pull.js'
import type { ReplicationLogger } from './session.js'

/**
 * Received bytes after which the store is flushed (durable and indexed; a killed receiver's
 * written records are indexed again when its store opens, see chunkstore/repair.ts).
 */
const FLUSH_EVERY_BYTES = 16 * 1024 * 1024
const FLUSH_EVERY_MS = 1000

export interface ReceiverStats {
  chunksStored: number
  deltasApplied: number
  bytesStored: number
  rejected: number
}

export interface ReceiverComponents {
  store: ChunkStore
  logger: ReplicationLogger
  /** Called after a point is committed in the store (replica disk, forwarding, gossip). */
  onCommitted(point: RecoveryPoint, header: PointHeader, fromPeer: string): void
  /** Why this node takes no points of `vm` now (it protects the VM itself), or null. */
  refuses?(vm: string): string | null
  /** Highest epoch this node knows for `vm` apart from its points (claims learned). */
  epochFloor?(vm: string): Promise<number>
  /** Seeds from several peers at once: lacking chunks are pulled from holders first (seed-pull.ts). */
  seedPull?: SeedPuller
  /**
   * Public keys of current mesh members: every point must be signed by its declared source, a
   * member, over exactly what is committed (point-signature.ts). The service always sets it;
   * only a bare receiver in a benchmark leaves it out and takes points unchecked.
   */
  memberKey?: MemberKeys
}

export class PointReceiver {
  readonly stats: ReceiverStats = { chunksStored: 0, deltasApplied: 0, bytesStored: 0, rejected: 0 }

  /** Stored ids not yet acknowledged, per chunks channel (see handleChunks). */
  private readonly acks = new WeakMap<MessageChannel<ChunksMessage>, ChunkId[]>()
  /** Per VM: the tail of the fence() queue (a point's last check and store commit, or a change). */
  private readonly fences = new Map<string, Promise<unknown>>()

  constructor(private readonly c: ReceiverComponents) {}

  /**
   * Runs `fn` while no point of `vm` is between its last check and its store commit. A change to
   * what this node knows of `vm` (a newer epoch learned) made inside fence() is seen by every point
   * not yet committed, and every point committed before it is in the store when `fn` runs: once it
   * returns, no point it refuses can land.
   */
  fence<T>(vm: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.fences.get(vm) ?? Promise.resolve()).then(fn)
    const tail = run.catch(() => {})
    this.fences.set(vm, tail)
    void tail.then(() => {
      if (this.fences.get(vm) === tail) this.fences.delete(vm)
    })
    return run
  }

  /**
   * Why a point is refused now (owned here, a newer epoch known, a newer point held, its seq held
   * at another epoch), 'held' when this very point is held already, or null. Checked before the
   * point's manifest is built and again inside fence(), where it decides.
   */
  private async fenced(
    header: PointHeader,
  ): Promise<{ reason: NackReason; message: string; missing: ChunkId[] } | 'held' | null> {
    const refusal = this.c.refuses?.(header.vm)
    if (refusal) return { reason: 'stale', message: refusal, missing: [] }
    const held = await findPoint(this.c.store, header.vm, header.seq)
    if (held)
      return held.epoch === header.epoch
        ? 'held'
        : {
            reason: 'stale',
            message: `holds point ${header.seq} of epoch ${held.epoch}, not ${header.epoch}`,
            missing: [],
          }
    const last = await this.c.store.lastPoint(header.vm)
    const known = Math.max(last?.epoch ?? 0, (await this.c.epochFloor?.(header.vm)) ?? 0)
    if (header.epoch < known)
      return {
        reason: 'stale',
        message: `point of epoch ${header.epoch}, but ${header.vm} is at epoch ${known} here: its sender is fenced`,
        missing: [],
      }
    if (last && last.seq > header.seq)
      return { reason: 'stale', message: `holds point ${last.seq}, newer than ${header.seq}`, missing: [] }
    return null
  }

  async handleChunks(stream: DuplexByteStream, ctx: { peerId: string }): Promise<void> {
    // Chunk and delta frames are received into reused buffers and handed back once stored (the
    // store copies what it keeps): a fresh buffer per frame, held until stored, cost a full
    // garbage collection every few MiB.
    const ch = new MessageChannel(
      stream,
      encodeChunksMessage,
      decodeChunksMessage,
      undefined,
      undefined,
      (m) => m.type === 'chunk' || m.type === 'delta',
    )
    const lease = this.c.store.lease()
    // A flush (pack fdatasync, then an index batch) runs beside the receive loop, one at a time
    // (the timer's too: one of its own beside the loop's let three intervals pile up):
    // awaiting it stalled the stream for every 16 MiB. Its failure ends the stream at the next frame.
    let unflushed = 0
    let flushing: Promise<void> | null = null
    let flushFailure: unknown = null
    const startFlush = () => {
      unflushed = 0
      flushing = this.c.store
        .flush()
        .catch((err) => {
          flushFailure = err
        })
        .finally(() => {
          flushing = null
        })
    }
    const timer = setInterval(() => {
      if (unflushed > 0 && !flushing) startFlush()
    }, FLUSH_EVERY_MS)
    const acks: ChunkId[] = []
    let unacked = 0
    this.acks.set(ch, acks)
    try {
      for (;;) {
        const m = await ch.next()
        if (m === null) break
        if (flushFailure) throw flushFailure
        let stored = 0
        if (m.type === 'chunk') {
          // Chunk frames already received are verified and stored together (one index lookup).
          const batch = [m]
          let after: ChunksMessage | null = null
          while (ch.hasBuffered && batch.length < STORE_BATCH_CHUNKS) {
            const n = await ch.next()
            if (n?.type === 'chunk') batch.push(n)
            else {
              after = n
              break
            }
          }
          const put = await this.storeChunks(batch, ch, lease, ctx.peerId)
          stored += put.bytes
          // The store writes from the frames' buffers: they are reused once written.
          const release = () => {
            for (const b of batch) ch.release(b)
          }
          if (put.written) void put.written.finally(release)
          else release()
          if (after) {
            stored += await this.onChunksMessage(after, ch, lease, ctx.peerId)
            ch.release(after)
          }
        } else {
          stored = await this.onChunksMessage(m, ch, lease, ctx.peerId)
          ch.release(m)
        }
        unflushed += stored
        unacked += stored
        // Stored ids are acknowledged in batches: once a part of the sender's window is waiting
        // for them, or once the frames already received are handled and none came in during one
        // more turn of the event loop (a receiver that keeps up finds its queue empty after
        // nearly every chunk: an ack frame per chunk cost it a socket write and a cipher each).
        if (acks.length > 0 && acks.length < ACK_BATCH_IDS && unacked < ACK_BATCH_BYTES && !ch.hasBuffered)
          await new Promise<void>((resolve) => setImmediate(resolve))
        if (
          acks.length >= ACK_BATCH_IDS ||
          unacked >= ACK_BATCH_BYTES ||
          (acks.length > 0 && !ch.hasBuffered)
        ) {
          unacked = 0
          await ch.send({ type: 'stored', ids: acks.splice(0) })
        }
        // At most one flush runs. A receiver a whole interval ahead of it waits for it, so the
        // bytes acknowledged and not yet durable (a restarted target asks for them again) stay
        // under two intervals however slow fdatasync is (a loaded machine let them pile up).
        if (unflushed >= FLUSH_EVERY_BYTES && flushing) await flushing
        if (unflushed >= FLUSH_EVERY_BYTES && !flushing) startFlush()
      }
      if (acks.length > 0) await ch.send({ type: 'stored', ids: acks.splice(0) })
      await ch.end()
    } finally {
      clearInterval(timer)
      await flushing
      await this.c.store.flush().catch(() => {})
      lease.release()
    }
  }

  /** Handles one frame; returns the bytes it stored. */
  private async onChunksMessage(
    m: ChunksMessage,
    ch: MessageChannel<ChunksMessage>,
    lease: ChunkLease,
    peer: string,
  ): Promise<number> {
    const store = this.c.store
    switch (m.type) {
      case 'query': {
        let lacking = await store.has(m.ids)
        if (lacking.length > 0 && this.c.seedPull)
          lacking = await this.c.seedPull.beforeLack(peer, lacking, lease)
        const missing = new Set(lacking)
        await ch.send({ type: 'lack', req: m.req, lacking: m.ids.map((id) => missing.has(id)) })
        return 0
      }
      case 'chunk':
        return this.store(m.id, m.bytes, ch, lease, peer, false)
      case 'delta': {
        let base: Uint8Array | null = null
        if (m.base !== null) {
          try {
            base = await store.getChunk(m.base)
          } catch (err) {
            if (!(err instanceof MissingChunkError)) throw err
            await ch.send({ type: 'reject', id: m.id, reason: 'base-missing' })
            return 0
          }
        }
        let rebuilt: Uint8Array
        try {
          rebuilt = rebuildChunk(base, m, (b) => hashHex(store, b), peer)
        } catch (err) {
          if (!(err instanceof ChunkHashMismatchError || err instanceof FrameError)) throw err
          return this.reject(m.id, ch, peer, err.message)
        }
        return this.store(m.id, rebuilt, ch, lease, peer, true)
      }
      case 'prints': {
        // Fingerprints of chunks held here, for a source that keeps none of them (bounded memory)
        // and whose change tracking is coarser than a block: its delta then carries only the
        // blocks that differ. A chunk not held (or unreadable) gets none: the source sends the
        // tracked ranges instead; one that fails its check here is said in the log (the store
        // is damaged), not to the source.
        const prints: Array<Uint8Array | null> = []
        for (const id of m.ids) {
          try {
            prints.push(fastFingerprintChunk(await store.getChunk(id)))
          } catch (err) {
            if (!(err instanceof MissingChunkError))
              this.c.logger.warn(
                { chunk: id, peer, reason: (err as Error).message },
                'a held chunk could not be read for its fingerprints',
              )
            prints.push(null)
          }
        }
        await ch.send({ type: 'printed', req: m.req, prints })
        return 0
      }
      case 'get': {
        const missing: ChunkId[] = []
        for (const id of m.ids) {
          try {
            await ch.send({ type: 'chunk', id, bytes: await store.getChunk(id) })
          } catch {
            missing.push(id)
          }
        }
        await ch.send({ type: 'missing', req: m.req, ids: missing.slice(0, MAX_IDS_PER_FRAME) })
        return 0
      }
      default:
        throw new FrameError(`unexpected '${m.type}' frame from ${peer}`, 'chunks', peer)
    }
  }

  private async store(
    id: ChunkId,
    bytes: Uint8Array,
    ch: MessageChannel<ChunksMessage>,
    lease: ChunkLease,
    peer: string,
    delta: boolean,
  ): Promise<number> {
    try {
      // The bytes are this frame's own (nothing reuses them): the store keeps them without a copy.
      await this.c.store.putChunk(id, bytes, lease, { owned: true })
    } catch (err) {
      if (!(err instanceof StoreHashMismatchError)) throw err
      return this.reject(id, ch, peer, err.message)
    }
    if (delta) this.stats.deltasApplied++
    else this.stats.chunksStored++
    this.stats.bytesStored += bytes.length
    await this.ack(ch, id)
    return bytes.length
  }

  /**
   * Stores chunk frames (store() for several, with one index lookup); returns the bytes stored
   * and, when the store writes from the frames' own buffers, when that write is done (the
   * frames must not be released before).
   */
  private async storeChunks(
    batch: Array<Extract<ChunksMessage, { type: 'chunk' }>>,
    ch: MessageChannel<ChunksMessage>,
    lease: ChunkLease,
    peer: string,
  ): Promise<{ bytes: number; written: Promise<void> | null }> {
    // The pack writer writes straight from the frames' (reused, pooled) receive buffers instead
    // of copying each chunk into its staging buffers first: one copy of every byte less.
    let written: Promise<void> | null = null
    const results = await this.c.store.putChunks(
      batch.map((m) => ({ hex: m.id, bytes: m.bytes })),
      lease,
      {
        retain: (w) => {
          written = w
        },
      },
    )
    let bytes = 0
    for (const [i, result] of results.entries()) {
      const { id, bytes: data } = batch[i]
      if (result instanceof StoreHashMismatchError) {
        await this.reject(id, ch, peer, result.message)
        continue
      }
      this.stats.chunksStored++
      this.stats.bytesStored += data.length
      bytes += data.length
      await this.ack(ch, id)
    }
    return { bytes, written }
  }

  /** Acknowledges a stored chunk: batched on a handleChunks stream, at once elsewhere. */
  private async ack(ch: MessageChannel<ChunksMessage>, id: ChunkId): Promise<void> {
    const acks = this.acks.get(ch)
    if (acks) acks.push(id)
    else await ch.send({ type: 'stored', ids: [id] })
  }

  private async reject(
    id: ChunkId,
    ch: MessageChannel<ChunksMessage>,
    peer: string,
    reason: string,
  ): Promise<number> {
    this.stats.rejected++
    this.c.logger.warn(
      { peer, chunk: id, reason },
      `rejected chunk ${id.slice(0, 16)}… from ${peer}: it failed verification; asked again`,
    )
    await ch.send({ type: 'reject', id, reason: 'hash' })
    return 0
  }

  async handlePoints(stream: DuplexByteStream, ctx: { peerId: string }): Promise<void> {
    const ch = new MessageChannel(stream, encodePointsMessage, decodePointsMessage)
    for (;;) {
      const m = await ch.next()
      if (m === null) break
      if (m.type === 'hello') {
        if (!VM_NAME_PATTERN.test(m.vm))
          throw new FrameError(`'${m.vm}' is not a VM name`, 'points', ctx.peerId)
        const refusal = this.c.refuses?.(m.vm)
        if (refusal) throw new FrameError(`points of ${m.vm} refused: ${refusal}`, 'points', ctx.peerId)
        const last = await this.c.store.lastPoint(m.vm)
        if (!last) this.c.seedPull?.begin(ctx.peerId, m.vm)
        await ch.send({
          type: 'state',
          vm: m.vm,
          lastSeq: last?.seq ?? null,
          epoch: last?.epoch ?? null,
          disks: (last?.disks ?? []).map((d, index) => ({
            index,
            chunkSize: d.chunkSize,
            virtualSize: d.virtualSize,
          })),
        })
      } else if (m.type === 'fetch') {
        await serveFetch(this.c.store, ch, m)
      } else if (m.type === 'point') {
        const entries = await collectManifests(ch, m.point)
        const verdict = await this.commit(m.point, entries, ctx.peerId)
        if (verdict === null) await ch.send({ type: 'ack', seq: m.point.seq })
        else await ch.send({ type: 'nack', seq: m.point.seq, ...verdict })
      } else {
        throw new FrameError(`unexpected '${m.type}' frame from ${ctx.peerId}`, 'points', ctx.peerId)
      }
    }
    await ch.end()
  }

  /** Commits a received point; null when committed (or already held), else why not. */
  async commit(
    header: PointHeader,
    entries: DiskEntries[],
    peer: string,
  ): Promise<{ reason: NackReason; message: string; missing: ChunkId[] } | null> {
    const store = this.c.store
    if (!VM_NAME_PATTERN.test(header.vm))
      return { reason: 'invalid', message: `'${header.vm}' is not a VM name`, missing: [] }
    const refusal = this.c.refuses?.(header.vm)
    if (refusal) return { reason: 'stale', message: refusal, missing: [] }
    let signedFields: SignedPointFields | null = null
    if (this.c.memberKey) {
      try {
        signedFields = await verifyPointHeader(header, this.c.memberKey)
      } catch (err) {
        if (!(err instanceof PointSignatureError)) throw err
        return this.refuseSignature(err, peer)
      }
    }
    const early = await this.fenced(header)
    if (early) return early === 'held' ? null : early
    let base: RecoveryPoint | undefined
    if (header.baseSeq !== null) {
      base = await findPoint(store, header.vm, header.baseSeq)
      if (!base)
        return {
          reason: 'base-unknown',
          message: `no point ${header.baseSeq} of ${header.vm} here`,
          missing: [],
        }
    }
    // Per disk: with a base of the same geometry, the entries patch its tree (only the nodes over
    // them are read and rehashed); without one, they are the whole manifest.
    const plans: Array<
      | {
          base: { virtualSize: number; chunkSize: number; root: string }
          changes: Map<number, ChunkId | null>
        }
      | { whole: PackedManifest }
    > = []
    for (const [position, d] of header.disks.entries()) {
      if (d.index !== position)
        return { reason: 'invalid', message: 'disks must be listed in index order', missing: [] }
      const baseDisk = base?.disks[d.index]
      if (base && !(baseDisk && baseDisk.virtualSize === d.virtualSize && baseDisk.chunkSize === d.chunkSize))
        return {
          reason: 'base-unknown',
          message: `disk ${d.index} changed geometry since point ${header.baseSeq}`,
          missing: [],
        }
      const got = entries[position]
      if (got.invalid) return { reason: 'invalid', message: `disk ${d.index}: ${got.invalid}`, missing: [] }
      if (baseDisk) plans.push({ base: baseDisk, changes: got.changes })
      else if (got.whole) plans.push({ whole: got.whole })
      else return { reason: 'invalid', message: `disk ${d.index}: entries against no base`, missing: [] }
    }
    // With a base, the ids it holds are held by its committed point (and commitPoint checks every
    // id under the nodes that change): asking for this point's own entries keeps the check at the
    // size of the change, not of the disk. A full manifest is asked about a batch at a time; the
    // nack names as many missing ids as its frame carries (the rest are only counted: an id
    // lacking in two batches past that many may count twice).
    const missing = new Set<ChunkId>()
    let lacking = 0
    for (const got of entries)
      for (const batch of got.named())
        for (const id of await store.has(batch)) {
          if (missing.has(id)) continue
          lacking++
          if (missing.size < MAX_IDS_PER_FRAME) missing.add(id)
        }
    if (lacking > 0)
      return {
        reason: 'missing-chunks',
        message: `${lacking} chunk(s) not stored here`,
        missing: [...missing],
      }
    const lease = store.lease()
    try {
      const disks = []
      for (const [i, d] of header.disks.entries()) {
        const plan = plans[i]
        const root =
          'whole' in plan
            ? await buildManifest(store, lease, d.virtualSize, d.chunkSize, plan.whole)
            : await patchManifest(store, lease, plan.base, plan.changes)
        disks.push({
          disk: String(d.index),
          virtualSize: d.virtualSize,
          chunkSize: d.chunkSize,
          root,
          hash: store.hashAlgorithm,
        })
      }
      if (signedFields)
        try {
          checkSignedRoots(
            signedFields,
            disks.map((d) => d.root),
            header,
          )
        } catch (err) {
          if (!(err instanceof PointSignatureError)) throw err
          return this.refuseSignature(err, peer)
        }
      const point: RecoveryPoint = {
        vm: header.vm,
        seq: header.seq,
        epoch: header.epoch,
        time: header.time,
        consistency: header.consistency,
        disks,
        config: header.config,
        source: header.source,
        ...(header.signed ? { signed: header.signed } : {}),
      }
      // Checked again at commit time, fenced against learnEpoch (see fence()): a newer epoch may
      // have been learned since the check above, and a fenced sender's point must not land after.
      // The same point may come by two routes at once (a chain and a direct target): the one that
      // commits second finds it held here, inside the fence, and is answered as committed.
      const late = await this.fence(header.vm, async () => {
        const refused = await this.fenced(header)
        if (refused) return refused
        try {
          await store.commitPoint(point)
        } catch (err) {
          if (err instanceof IncompletePointError)
            return { reason: 'missing-chunks' as const, message: err.message, missing: err.missing }
          throw err
        }
        return null
      })
      if (late === 'held') return null
      if (late) return late
      this.c.logger.info(
        { vm: header.vm, seq: header.seq, from: peer },
        `committed point ${header.vm}@${header.seq}`,
      )
      this.c.onCommitted(point, header, peer)
      return null
    } finally {
      lease.release()
    }
  }

  private refuseSignature(
    err: PointSignatureError,
    peer: string,
  ): { reason: NackReason; message: string; missing: ChunkId[] } {
    this.c.logger.warn(
      { point: err.point, source: err.source, peer, reason: err.message },
      `refused ${err.message}; sent by ${peer}, nothing committed`,
    )
    return { reason: 'signature', message: err.message, missing: [] }
  }
}

/**
 * One disk's manifest entries of a received point, kept as they arrive: a full manifest packed (32
 * bytes a data chunk, nothing for zero pages, where an object per entry cost ~120 bytes), entries
 * against a base by chunk index. An entry past the disk's end is remembered: the point is refused.
 */
class DiskEntries {
  readonly whole: PackedManifest | null
  readonly changes = new Map<number, ChunkId | null>()
  received = 0
  invalid: string | null = null
  private readonly count: number

  constructor(disk: PointDiskHeader, full: boolean) {
    const count = Math.ceil(disk.virtualSize / disk.chunkSize)
    if (count > MAX_POINT_DISK_CHUNKS)
      this.invalid = `disk ${disk.index} has ${count} chunks, more than any disk`
    this.whole = full && !this.invalid ? PackedManifest.zeros(count) : null
    this.count = count
  }

  add(e: ManifestEntry): void {
    this.received++
    if (this.invalid) return
    if (e.index >= this.count) {
      this.invalid = `entry for chunk ${e.index} past its ${this.count} chunks`
      return
    }
    if (this.whole) this.whole.set(e.index, e.id)
    else this.changes.set(e.index, e.id)
  }

  /** The chunk ids the entries name (not zero), a batch at a time, each batch without repeats. */
  *named(batch = MAX_IDS_PER_FRAME): Generator<ChunkId[]> {
    const ids = this.whole
      ? (function* (m: PackedManifest) {
          for (const i of m.dataIndexes()) yield m.get(i) as ChunkId
        })(this.whole)
      : this.changes.values()
    let out = new Set<ChunkId>()
    for (const id of ids) {
      if (id === null) continue
      out.add(id)
      if (out.size >= batch) {
        yield [...out]
        out = new Set()
      }
    }
    if (out.size > 0) yield [...out]
  }
}

/** Reads the manifest frames of a point up to its commit frame. */
async function collectManifests(
  ch: MessageChannel<PointsMessage>,
  header: PointHeader,
): Promise<DiskEntries[]> {
  const entries = header.disks.map((d) => new DiskEntries(d, header.baseSeq === null))
  for (;;) {
    const m = await ch.next()
    if (m === null) throw new FrameError(`stream ended inside point ${header.seq}`, 'points')
    if (m.type === 'commit') {
      if (m.seq !== header.seq) throw new FrameError(`commit ${m.seq} inside point ${header.seq}`, 'points')
      header.disks.forEach((d, i) => {
        if (entries[i].received !== d.entries)
          throw new FrameError(
            `disk ${d.index}: ${entries[i].received} of ${d.entries} manifest entries`,
            'points',
          )
      })
      return entries
    }
    if (m.type !== 'manifest' || m.seq !== header.seq)
      throw new FrameError(`unexpected '${m.type}' frame inside point ${header.seq}`, 'points')
    const i = header.disks.findIndex((d) => d.index === m.disk)
    if (i < 0 || entries[i].received + m.entries.length > header.disks[i].entries)
      throw new FrameError(`manifest frame for disk ${m.disk} overruns the point`, 'points')
    for (const e of m.entries) entries[i].add(e)
  }
}

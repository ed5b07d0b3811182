// The sending side of one point to one target. Request flow:
//
//   points:  hello {vm} ──────────────▶ state {lastSeq}        (what the target holds already)
//   chunks:  query ids ───────────────▶ lack bitmap            (per batch of chunks)
//            chunk | delta ───────────▶ stored id | reject id  (bounded bytes in flight)
//   points:  point, manifest…, commit ▶ ack | nack             (only once every chunk is stored)
//
// A rejected chunk (its hash did not verify on the target, or a delta's base is missing there)
// is sent again in full, a bounded number of times. The session never reads the disk itself: the
// caller offers items that know how to load their bytes (from a frozen point or from the store).
import type { DuplexByteStream } from '../mesh/index.js'
import { MessageChannel } from './channel.js'
import {
  DEFAULT_BYTES_IN_FLIGHT,
  MAX_CHUNK_RETRIES,
  MAX_ENTRIES_PER_FRAME,
  MAX_IDS_PER_FRAME,
  MAX_PRINT_IDS,
} from './constants.js'
import { CommitRefusedError, ReplicationError } from './errors.js'
import type { ChunkId } from './ids.js'
import type { Link } from './link.js'
import {
  type ByteRange,
  CHUNKS_PROTOCOL,
  CHUNKS_PROTOCOL_1_0,
  type ChunksMessage,
  decodeChunksMessage,
  decodePointsMessage,
  encodeChunksMessage,
  encodeChunksMessageParts,
  encodePointsMessage,
  type ManifestEntry,
  POINTS_PROTOCOL,
  type PointHeader,
  type PointsMessage,
} from './messages.js'
import { entryFrames } from './packed-manifest.js'

/** How a node reaches its peers: MeshNode satisfies it; tests use an in-memory network. */
export interface ReplicationNetwork {
  readonly peerId: string
  handle(
    protocol: string,
    handler: (stream: DuplexByteStream, ctx: { peerId: string }) => Promise<void>,
  ): void
  unhandle?(protocol: string): Promise<void>
  dialProtocol(
    peerId: string,
    protocol: string,
    options?: { signal?: AbortSignal },
  ): Promise<DuplexByteStream>
}

/** Framing of a chunk frame beyond its payload (credit header, kind, header, id), for the link. */
const FRAME_OVERHEAD_BYTES = 64

/** Opening a session (dial, hello, state) gives up after this long. */
const OPEN_TIMEOUT_MS = 30_000
/** A target that answers nothing for this long while work is outstanding is given up on. */
const STALL_TIMEOUT_MS = 20_000

export interface ReplicationLogger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
}

export interface DeltaPatch {
  base: ChunkId | null
  ranges: ByteRange[]
  bytes: Uint8Array
}

/** A chunk the target may lack. */
export interface OfferItem {
  id: ChunkId
  load(): Promise<Uint8Array>
  /** A patch against a chunk the target holds, when one pays; null to send the whole chunk. */
  delta?(): Promise<DeltaPatch | null>
  length: number
  /**
   * Called once when the session is done with the item's bytes: the target stored it, held it
   * already, or it was a duplicate of an id already offered. Never called for an item still in
   * flight when the session fails or closes (a frame queued on the dead stream may still read
   * it): the caller then must not reuse the bytes.
   */
  release?(): void
}

export interface SessionStats {
  queried: number
  chunksSent: number
  deltasSent: number
  /** Chunk and delta payload bytes sent (resends included; compressed chunks at their wire size). */
  payloadBytes: number
  resent: number
  /** Every byte of both streams in both directions, framing included. */
  wireBytes: number
  /** Chunks sent compressed, and the payload bytes compression saved. */
  compressedChunks: number
  savedBytes: number
}

export interface TargetState {
  lastSeq: number | null
  epoch: number | null
}

interface InFlight {
  item: OfferItem
  bytes: number
  attempts: number
}

export interface SessionInit {
  network: ReplicationNetwork
  peer: string
  vm: string
  vmId: string
  logger: ReplicationLogger
  signal?: AbortSignal
  maxBytesInFlight?: number
  /** Fault injection for tests: corrupt the bytes of this many first full chunks sent. */
  corruptChunks?: number
  /** The link to the peer: bandwidth limit (chunk and delta frames wait for it) and compression. */
  link?: Link
}

export class TargetSession {
  readonly stats: SessionStats = {
    queried: 0,
    chunksSent: 0,
    deltasSent: 0,
    payloadBytes: 0,
    resent: 0,
    wireBytes: 0,
    compressedChunks: 0,
    savedBytes: 0,
  }
  private failure: Error | null = null
  private readonly inFlight = new Map<ChunkId, InFlight>()
  private bytesInFlight = 0
  private readonly sent = new Set<ChunkId>()
  /** Answers of prequery(), by id, until offer() takes them. */
  private readonly asked = new Map<ChunkId, Promise<boolean>>()
  /** Requests (query, prints) waiting for their answer, by req. */
  private readonly queries = new Map<
    number,
    { resolve: (answer: unknown) => void; reject: (err: Error) => void }
  >()
  private nextReq = 0
  private waiters: Array<() => void> = []
  private corruptLeft: number

  private constructor(
    private readonly init: SessionInit,
    private readonly chunks: MessageChannel<ChunksMessage>,
    private readonly points: MessageChannel<PointsMessage>,
    readonly state: TargetState,
    /** The target answers 'prints' (chunks 1.1.0). */
    private readonly printsSupported = true,
  ) {
    this.corruptLeft = init.corruptChunks ?? 0
    init.signal?.addEventListener('abort', this.onAbort, { once: true })
    // A killed peer does not always reset its streams promptly: a watchdog ends a stalled session.
    this.watchdog = setInterval(() => {
      const busy = this.inFlight.size > 0 || this.queries.size > 0 || this.awaitingReply
      if (busy && Date.now() - this.lastActivity > STALL_TIMEOUT_MS)
        this.abort(new ReplicationError(`target ${init.peer} answered nothing for ${STALL_TIMEOUT_MS} ms`))
    }, 1000)
    this.watchdog.unref?.()
    void this.pump()
  }

  private readonly watchdog: NodeJS.Timeout
  private lastActivity = Date.now()
  private awaitingReply = false

  private readonly onAbort = () =>
    this.abort(new ReplicationError(`replication to ${this.init.peer} stopped`))

  static async open(init: SessionInit): Promise<TargetSession> {
    const { network, peer, signal } = init
    const dialSignal = () =>
      signal
        ? AbortSignal.any([signal, AbortSignal.timeout(OPEN_TIMEOUT_MS)])
        : AbortSignal.timeout(OPEN_TIMEOUT_MS)
    const pointsStream = await network.dialProtocol(peer, POINTS_PROTOCOL, { signal: dialSignal() })
    const points = new MessageChannel(pointsStream, encodePointsMessage, decodePointsMessage)
    const timer = setTimeout(
      () => points.abort(new ReplicationError(`target ${peer} did not answer within ${OPEN_TIMEOUT_MS} ms`)),
      OPEN_TIMEOUT_MS,
    )
    try {
      await points.send({ type: 'hello', vm: init.vm, vmId: init.vmId }, signal)
      const state = await points.expect<Extract<PointsMessage, { type: 'state' }>>(
        'state',
        'the target state',
      )
      // A target of an older version speaks chunks 1.0.0: it is asked for no fingerprints.
      let prints = true
      let chunksStream: DuplexByteStream
      try {
        chunksStream = await network.dialProtocol(peer, CHUNKS_PROTOCOL, { signal: dialSignal() })
      } catch (err) {
        if ((err as Error).name !== 'UnsupportedProtocolError') throw err
        chunksStream = await network.dialProtocol(peer, CHUNKS_PROTOCOL_1_0, { signal: dialSignal() })
        prints = false
      }
      const chunks = new MessageChannel(
        chunksStream,
        encodeChunksMessage,
        decodeChunksMessage,
        undefined,
        encodeChunksMessageParts,
      )
      return new TargetSession(init, chunks, points, { lastSeq: state.lastSeq, epoch: state.epoch }, prints)
    } catch (err) {
      points.abort(err as Error)
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  get peer(): string {
    return this.init.peer
  }

  get error(): Error | null {
    return this.failure
  }

  /** Asks which items the target lacks and sends those, waiting for room in the window. */
  async offer(items: OfferItem[]): Promise<void> {
    // Ids sent before in this session and repeats within `items` are not sent again.
    const unique = new Map<ChunkId, OfferItem>()
    for (const it of items) {
      if (this.sent.has(it.id) || unique.has(it.id)) it.release?.()
      else unique.set(it.id, it)
    }
    const asked = [...unique.values()].filter((it) => this.asked.has(it.id))
    const rest = [...unique.values()].filter((it) => !this.asked.has(it.id))
    for (const it of asked) {
      const lacks = await this.asked.get(it.id)!
      this.asked.delete(it.id)
      this.sent.add(it.id)
      if (lacks) await this.sendItem(it, 0, true)
      else it.release?.()
    }
    for (let at = 0; at < rest.length; at += MAX_IDS_PER_FRAME) {
      const batch = rest.slice(at, at + MAX_IDS_PER_FRAME)
      const lacking = await this.query(batch.map((it) => it.id))
      for (let i = 0; i < batch.length; i++) {
        this.sent.add(batch[i].id)
        if (lacking[i]) await this.sendItem(batch[i], 0, true)
        else batch[i].release?.()
      }
    }
  }

  /**
   * Sends the "which do you lack?" query for items that offer() will get next, now: the target
   * answers it behind the chunk frames already on their way, so the answer is there when the
   * offer comes, instead of the stream draining for a round trip every batch. At most
   * MAX_IDS_PER_FRAME ids wait for an offer at a time (the rest are asked by offer itself).
   */
  prequery(items: OfferItem[]): void {
    if (this.failure) return
    const ids = [...new Set(items.map((it) => it.id))].filter(
      (id) => !this.sent.has(id) && !this.asked.has(id),
    )
    const room = MAX_IDS_PER_FRAME - this.asked.size
    if (ids.length === 0 || ids.length > room) return
    const answer = this.query(ids)
    answer.catch(() => {})
    ids.forEach((id, i) => {
      const lacks = answer.then((lacking) => lacking[i])
      lacks.catch(() => {})
      this.asked.set(id, lacks)
    })
  }

  /** Ids among `ids` the target lacks (not counting chunks sent in this session). */
  async query(ids: ChunkId[]): Promise<boolean[]> {
    const lacking = await this.request<boolean[]>({ type: 'query', req: this.nextReq++, ids })
    this.stats.queried += ids.length
    if (lacking.length !== ids.length)
      throw new ReplicationError(`target ${this.peer} answered ${lacking.length} of ${ids.length} ids`)
    return lacking
  }

  /**
   * The 4 KiB block fingerprints of chunks the target holds (null for one it does not), at most
   * MAX_PRINT_IDS at a time: a source keeps fingerprints only of chunks it read as changed.
   */
  async fingerprints(ids: ChunkId[]): Promise<Array<Uint8Array | null>> {
    const out: Array<Uint8Array | null> = []
    if (!this.printsSupported) return ids.map(() => null)
    for (let at = 0; at < ids.length; at += MAX_PRINT_IDS) {
      const part = ids.slice(at, at + MAX_PRINT_IDS)
      const prints = await this.request<Array<Uint8Array | null>>({
        type: 'prints',
        req: this.nextReq++,
        ids: part,
      })
      if (prints.length !== part.length)
        throw new ReplicationError(
          `target ${this.peer} sent fingerprints of ${prints.length} of ${part.length} ids`,
        )
      out.push(...prints)
    }
    return out
  }

  private async request<T>(m: Extract<ChunksMessage, { req: number }>): Promise<T> {
    this.check()
    const answer = new Promise<T>((resolve, reject) =>
      this.queries.set(m.req, { resolve: resolve as (a: unknown) => void, reject }),
    )
    answer.catch(() => {})
    await this.chunks.send(m, this.init.signal)
    return answer
  }

  /** Resolves once every chunk sent is stored on the target (or fails). */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0) {
      this.check()
      await this.wait()
    }
    this.check()
  }

  /**
   * Commits a point whose chunks are all stored: sends the point, its manifest entries per disk (a
   * frame at a time, made as they are sent: a full manifest need not exist as entries all at once)
   * and the commit, and waits for the answer. Throws CommitRefusedError on a nack.
   */
  async commit(point: PointHeader, entries: ReadonlyArray<Iterable<ManifestEntry>>): Promise<void> {
    await this.settle()
    const signal = this.init.signal
    await this.points.send({ type: 'point', point }, signal)
    for (let disk = 0; disk < entries.length; disk++)
      for (const frame of entryFrames(entries[disk], MAX_ENTRIES_PER_FRAME))
        await this.points.send({ type: 'manifest', seq: point.seq, disk, entries: frame }, signal)
    await this.points.send({ type: 'commit', seq: point.seq }, signal)
    this.lastActivity = Date.now()
    this.awaitingReply = true
    const reply = await this.points.next().finally(() => {
      this.awaitingReply = false
    })
    if (reply === null)
      throw new CommitRefusedError(
        `target ${this.peer} closed the stream before answering`,
        this.peer,
        'closed',
      )
    if (reply.type === 'nack') {
      throw new CommitRefusedError(
        `target ${this.peer} refused point ${point.seq}: ${reply.message}`,
        this.peer,
        reply.reason,
      )
    }
    if (reply.type !== 'ack' || reply.seq !== point.seq)
      throw new CommitRefusedError(
        `target ${this.peer} answered a '${reply.type}' frame to commit ${point.seq}`,
        this.peer,
        'invalid',
      )
    this.stats.wireBytes = this.wire()
  }

  async close(): Promise<void> {
    clearInterval(this.watchdog)
    this.init.signal?.removeEventListener('abort', this.onAbort)
    await Promise.all([this.chunks.end(), this.points.end()])
    this.stats.wireBytes = this.wire()
  }

  abort(err: Error): void {
    clearInterval(this.watchdog)
    this.init.signal?.removeEventListener('abort', this.onAbort)
    this.fail(err)
    this.chunks.abort(err)
    this.points.abort(err)
    this.stats.wireBytes = this.wire()
  }

  private wire(): number {
    const c = this.chunks.stats
    const p = this.points.stats
    return c.bytesSent + c.bytesReceived + p.bytesSent + p.bytesReceived
  }

  private async sendItem(item: OfferItem, attempts: number, allowDelta: boolean): Promise<void> {
    while (
      this.bytesInFlight > 0 &&
      this.bytesInFlight + item.length > (this.init.maxBytesInFlight ?? DEFAULT_BYTES_IN_FLIGHT)
    ) {
      this.check()
      await this.wait()
    }
    this.check()
    const patch = allowDelta && item.delta ? await item.delta() : null
    let message: ChunksMessage
    let bytes: number
    if (patch) {
      message = {
        type: 'delta',
        id: item.id,
        base: patch.base,
        length: item.length,
        ranges: patch.ranges,
        bytes: patch.bytes,
      }
      bytes = patch.bytes.length
      this.stats.deltasSent++
    } else {
      let data = await item.load()
      if (this.corruptLeft > 0) {
        this.corruptLeft--
        data = Uint8Array.from(data)
        data[0] ^= 0xff
        this.init.logger.warn(
          { peer: this.peer, chunk: item.id },
          'fault injection: sending a corrupted chunk',
        )
      }
      const packed = (await this.init.link?.maybeCompress(data)) ?? null
      if (packed) {
        message = { type: 'zchunk', id: item.id, codec: 'br', length: data.length, bytes: packed }
        bytes = packed.length
        this.stats.compressedChunks++
        this.stats.savedBytes += data.length - packed.length
      } else {
        message = { type: 'chunk', id: item.id, bytes: data }
        bytes = data.length
      }
      this.stats.chunksSent++
    }
    this.inFlight.set(item.id, { item, bytes, attempts })
    this.bytesInFlight += bytes
    this.stats.payloadBytes += bytes
    // The bucket is taken after the window: a sender waiting for acks holds no link bandwidth.
    await this.init.link?.send(bytes + FRAME_OVERHEAD_BYTES, this.init.signal)
    await this.chunks.send(message, this.init.signal)
    this.lastActivity = Date.now()
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const m = await this.chunks.next()
        if (m === null) break
        this.lastActivity = Date.now()
        if (m.type === 'lack' || m.type === 'printed') {
          this.queries.get(m.req)?.resolve(m.type === 'lack' ? m.lacking : m.prints)
          this.queries.delete(m.req)
        } else if (m.type === 'stored') {
          for (const id of m.ids) this.landed(id)?.item.release?.()
        } else if (m.type === 'reject') {
          await this.rejected(m.id, m.reason)
        } else {
          throw new ReplicationError(`target ${this.peer} sent an unexpected '${m.type}' frame`)
        }
        this.wake()
      }
      if (this.inFlight.size > 0 || this.queries.size > 0)
        this.fail(new ReplicationError(`target ${this.peer} ended the chunks stream early`))
    } catch (err) {
      this.fail(err as Error)
    }
  }

  /** Takes a chunk out of the window; returns its entry (the caller releases it or sends it again). */
  private landed(id: ChunkId): InFlight | undefined {
    const f = this.inFlight.get(id)
    if (!f) return undefined
    this.inFlight.delete(id)
    this.bytesInFlight -= f.bytes
    return f
  }

  private async rejected(id: ChunkId, reason: string): Promise<void> {
    const f = this.inFlight.get(id)
    if (!f) return
    this.landed(id)
    this.init.logger.warn(
      { peer: this.peer, chunk: id, reason, attempt: f.attempts + 1 },
      'target rejected a chunk; sending it again in full',
    )
    if (f.attempts + 1 > MAX_CHUNK_RETRIES)
      throw new ReplicationError(`chunk ${id} rejected ${f.attempts + 1} times by ${this.peer} (${reason})`)
    this.stats.resent++
    // Resend without blocking the pump (it must keep reading acks to free the window).
    this.sendItem(f.item, f.attempts + 1, false).catch((err) => this.fail(err as Error))
  }

  private wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  private check(): void {
    if (this.failure) throw this.failure
    this.init.signal?.throwIfAborted()
  }

  private fail(err: Error): void {
    if (this.failure) return
    this.failure = err
    for (const q of this.queries.values()) q.reject(err)
    this.queries.clear()
    this.wake()
  }
}

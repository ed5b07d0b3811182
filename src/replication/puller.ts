// Pulls chunks from several peers that hold them, at once (DESIGN.md §4, chunks protocol: "pull
// from several peers at once for restore"). Request flow, per peer, over its own chunks stream:
//
//   get {req} ids ───────────▶ chunk… (each one it holds) then missing {req} ids
//
// The wanted ids form one shared queue; every peer's worker takes the next batch when it has room,
// so a fast peer serves more than a slow one. Each chunk is verified by the store (putChunk hashes
// it) before it counts: a chunk that fails is charged to the peer that sent it and asked of the
// others; so is an id a peer says it lacks. A peer whose stream fails gives its batch back. What
// no peer could give is returned as `missing`. Memory is bounded by PULL_BATCH_IDS x chunk size x
// PULL_BATCHES_PER_PEER per peer (the credit stream bounds the rest). Aborting `signal` (a
// deadline) ends the pull quietly: what was not verified by then is returned as `missing`.
import {
  type ChunkLease,
  type ChunkStore,
  ChunkHashMismatchError as StoreHashMismatchError,
} from '../chunkstore/index.js'
import { MessageChannel } from './channel.js'
import { ReplicationError } from './errors.js'
import type { ChunkId } from './ids.js'
import {
  CHUNKS_PROTOCOL_1_0,
  type ChunksMessage,
  decodeChunksMessage,
  encodeChunksMessage,
} from './messages.js'
import type { ReplicationLogger, ReplicationNetwork } from './session.js'

/** Ids asked of a peer in one get frame. */
export const PULL_BATCH_IDS = 32
/** Get frames a peer may have outstanding (pipelining hides the round trip). */
export const PULL_BATCHES_PER_PEER = 2

export interface PullInit {
  network: ReplicationNetwork
  store: Pick<ChunkStore, 'has' | 'putChunk'>
  /** Peers that may hold the chunks. */
  peers: string[]
  logger: ReplicationLogger
  /** Keeps pulled chunks safe from GC until the caller commits what names them. */
  lease?: ChunkLease
  signal?: AbortSignal
}

export interface PeerPullStats {
  chunks: number
  bytes: number
  /** Chunks it sent that failed verification. */
  bad: number
  /** Ids it said it lacks. */
  lacked: number
  error: string | null
}

/** A peer's stats before any pull. */
export function emptyPeerStats(): PeerPullStats {
  return { chunks: 0, bytes: 0, bad: 0, lacked: 0, error: null }
}

/** Adds the counts of `s` to `into` (its error is the caller's to merge). */
export function addPeerCounts(into: PeerPullStats, s: PeerPullStats): void {
  into.chunks += s.chunks
  into.bytes += s.bytes
  into.bad += s.bad
  into.lacked += s.lacked
}

export interface PullResult {
  fetched: number
  bytes: number
  byPeer: Record<string, PeerPullStats>
  /** Ids no peer could give (verified). */
  missing: ChunkId[]
}

interface Want {
  id: ChunkId
  /** Peers that lack it, sent it bad, or failed while holding it. */
  tried: Set<string>
}

/** Attempts at opening a peer's chunks stream (a busy connection refuses a new stream now and then). */
const DIAL_ATTEMPTS = 3
const DIAL_RETRY_MS = 300

async function dialWithRetry(init: PullInit, peer: string) {
  for (let attempt = 1; ; attempt++) {
    try {
      // 'get' is in every version of the protocol: any holder answers 1.0.0.
      return await init.network.dialProtocol(peer, CHUNKS_PROTOCOL_1_0, { signal: init.signal })
    } catch (err) {
      if (attempt >= DIAL_ATTEMPTS || init.signal?.aborted) throw err
      init.logger.info(
        { peer, attempt, reason: (err as Error).message },
        `opening a chunks stream to ${peer} failed; trying again`,
      )
      await new Promise((r) => setTimeout(r, DIAL_RETRY_MS * attempt))
    }
  }
}

export async function pullChunks(ids: ChunkId[], init: PullInit): Promise<PullResult> {
  const lacking = await init.store.has([...new Set(ids)])
  const queue: Want[] = lacking.map((id) => ({ id, tried: new Set() }))
  const byPeer: Record<string, PeerPullStats> = {}
  for (const p of init.peers) byPeer[p] = emptyPeerStats()
  const live = new Set(init.peers)
  const result: PullResult = { fetched: 0, bytes: 0, byPeer, missing: [] }
  let inFlight = 0
  // Woken when work comes back to the queue or a batch ends (termination is then re-checked).
  const waiters: Array<() => void> = []
  const wake = () => {
    for (const w of waiters.splice(0)) w()
  }
  // Small pulls are cut finer, so that every peer gets a share at once.
  const batchIds = Math.max(
    1,
    Math.min(PULL_BATCH_IDS, Math.ceil(queue.length / (init.peers.length * PULL_BATCHES_PER_PEER))),
  )
  const takeFor = (peer: string): Want[] => {
    const out: Want[] = []
    for (let i = 0; i < queue.length && out.length < batchIds; ) {
      if (queue[i].tried.has(peer)) i++
      else out.push(...queue.splice(i, 1))
    }
    return out
  }
  // A deadline ends every stream at once, even one waiting on a peer that answers nothing.
  const channels = new Set<MessageChannel<ChunksMessage>>()
  const onAbort = () => {
    for (const c of channels) c.abort(new ReplicationError('chunk pull stopped'))
    wake()
  }
  init.signal?.addEventListener('abort', onAbort, { once: true })
  const finished = () => inFlight === 0 && queue.every((w) => [...live].every((p) => w.tried.has(p)))

  const worker = async (peer: string) => {
    let ch: MessageChannel<ChunksMessage> | null = null
    let reading: Promise<void> | null = null
    let outstanding = new Map<number, Map<ChunkId, Want>>()
    let req = 0
    try {
      const stream = await dialWithRetry(init, peer)
      const channel = new MessageChannel(stream, encodeChunksMessage, decodeChunksMessage)
      ch = channel
      channels.add(channel)
      init.signal?.throwIfAborted()
      const reader = (async () => {
        for (;;) {
          const m = await channel.next()
          if (m === null) throw new ReplicationError(`peer ${peer} ended the chunks stream`)
          if (m.type === 'chunk') await received(peer, m.id, m.bytes, outstanding)
          else if (m.type === 'missing') {
            const batch = outstanding.get(m.req)
            outstanding.delete(m.req)
            for (const want of batch?.values() ?? []) giveBack(want, peer, true)
            inFlight--
            wake()
          } else throw new ReplicationError(`peer ${peer} answered a get with a '${m.type}' frame`)
        }
      })()
      reading = reader.catch(() => {})
      for (;;) {
        init.signal?.throwIfAborted()
        if (finished()) break
        const batch = outstanding.size < PULL_BATCHES_PER_PEER ? takeFor(peer) : []
        if (batch.length === 0) {
          await Promise.race([new Promise<void>((r) => waiters.push(r)), reader])
          continue
        }
        const r = req++
        outstanding.set(r, new Map(batch.map((w) => [w.id, w])))
        inFlight++
        await channel.send({ type: 'get', req: r, ids: batch.map((w) => w.id) }, init.signal)
      }
      await channel.end()
    } catch (err) {
      const stopped = init.signal?.aborted === true
      byPeer[peer].error = stopped ? 'stopped' : (err as Error).message
      if (!stopped)
        init.logger.warn({ peer, reason: (err as Error).message }, `pulling chunks from ${peer} failed`)
      ch?.abort(err as Error)
      // A chunk being stored when the stream broke is finished (or given back) before we return.
      await reading
    } finally {
      live.delete(peer)
      for (const batch of outstanding.values()) {
        inFlight--
        for (const want of batch.values()) giveBack(want, peer, false)
      }
      outstanding = new Map()
      wake()
    }
  }

  const giveBack = (want: Want, peer: string, lacked: boolean) => {
    want.tried.add(peer)
    if (lacked) byPeer[peer].lacked++
    queue.push(want)
  }

  const received = async (
    peer: string,
    id: ChunkId,
    bytes: Uint8Array,
    outstanding: Map<number, Map<ChunkId, Want>>,
  ) => {
    let want: Want | undefined
    for (const batch of outstanding.values()) {
      want = batch.get(id)
      if (want) {
        batch.delete(id)
        break
      }
    }
    if (!want)
      throw new ReplicationError(`peer ${peer} sent chunk ${id.slice(0, 16)}… that was not asked for`)
    try {
      await init.store.putChunk(id, bytes, init.lease)
    } catch (err) {
      if (!(err instanceof StoreHashMismatchError)) throw err
      byPeer[peer].bad++
      init.logger.warn(
        { peer, chunk: id, reason: err.message },
        `chunk ${id.slice(0, 16)}… from ${peer} failed verification; asking another peer`,
      )
      want.tried.add(peer)
      queue.push(want)
      wake()
      return
    }
    byPeer[peer].chunks++
    byPeer[peer].bytes += bytes.length
    result.fetched++
    result.bytes += bytes.length
  }

  try {
    await Promise.all(init.peers.map((p) => worker(p)))
  } finally {
    init.signal?.removeEventListener('abort', onAbort)
  }
  result.missing = queue.map((w) => w.id)
  return result
}

// Restore from peers (DESIGN.md §4 "pull from several peers at once for restore", §7 restore). A
// node whose store lacks the point asked for, or some of its chunks, gets them from the peers that
// hold the VM's points:
//
//   points:  fetch {vm, seq|null} ──▶ point {…} manifest… commit   (one holder: the point and its
//                                                                   full manifests, as held there)
//   chunks:  get ids ───────────────▶ chunk… missing ids          (every holder at once, puller.ts;
//                                                                   each chunk hashed as it is stored)
//
// then writes the file from its own store. The fetched point is not committed here (this node does
// not become a replica of the VM): its manifest tree and chunks are kept from GC by a lease until
// the file is written. Holders come from the mesh's gossip (replicas held, with their last point).
import { type ChunkStore, materialise, type RecoveryPoint } from '../chunkstore/index.js'
import { createDisk } from '../hyperv/index.js'
import { MessageChannel } from './channel.js'
import { MAX_ENTRIES_PER_FRAME } from './constants.js'
import { FrameError, PointNotFoundError, ReplicationError } from './errors.js'
import type { ChunkId } from './ids.js'
import {
  decodePointsMessage,
  encodePointsMessage,
  POINTS_PROTOCOL,
  type PointHeader,
  type PointsMessage,
} from './messages.js'
import { type EntryList, entryFrames, fullEntries } from './packed-manifest.js'
import { checkSignedRoots, type MemberKeys, manifestRoot, verifyPointHeader } from './point-signature.js'
import { addPeerCounts, type PullResult, pullChunks } from './puller.js'
import { buildManifest, findPoint, readManifestIds, readPackedManifest } from './replica-store.js'
import type { ReplicationLogger, ReplicationNetwork } from './session.js'

/** Fetching a point's header and manifests from one holder gives up after this long. */
const FETCH_TIMEOUT_MS = 60_000

/** A peer that gossips a committed point of the VM. */
export interface PointHolder {
  peer: string
  seq: number
  time: number
}

// ---- the holder's side -------------------------------------------------------------------------

/** Answers a fetch frame: the point held here with its full manifests, or a nack. */
export async function serveFetch(
  store: ChunkStore,
  ch: MessageChannel<PointsMessage>,
  m: Extract<PointsMessage, { type: 'fetch' }>,
): Promise<void> {
  const point = m.seq === null ? await store.lastPoint(m.vm) : await findPoint(store, m.vm, m.seq)
  if (!point) {
    await ch.send({
      type: 'nack',
      seq: m.seq ?? 0,
      reason: 'error',
      message: `no point ${m.vm}@${m.seq ?? 'newest'} held here`,
      missing: [],
    })
    return
  }
  // Each disk's manifest packed, its entries made again frame by frame as they are sent.
  const entries: EntryList[] = []
  for (let i = 0; i < point.disks.length; i++)
    entries.push(fullEntries(await readPackedManifest(store, point, i)))
  const config = (point.config ?? {}) as Record<string, unknown>
  const header: PointHeader = {
    vm: point.vm,
    vmId: typeof config.id === 'string' ? config.id.slice(0, 256) : point.vm,
    seq: point.seq,
    epoch: point.epoch,
    time: point.time,
    consistency: point.consistency,
    baseSeq: null,
    alg: point.disks[0]?.hash ?? store.hashAlgorithm,
    source: point.source || 'unknown',
    // Not known to a store; the header needs one and a fetcher does not use it.
    rpoSeconds: 1,
    forward: [],
    config,
    disks: point.disks.map((d, index) => ({
      index,
      virtualSize: d.virtualSize,
      chunkSize: d.chunkSize,
      entries: entries[index].length,
    })),
    ...(point.signed ? { signed: point.signed } : {}),
  }
  await ch.send({ type: 'point', point: header })
  for (let disk = 0; disk < entries.length; disk++)
    for (const frame of entryFrames(entries[disk], MAX_ENTRIES_PER_FRAME))
      await ch.send({ type: 'manifest', seq: point.seq, disk, entries: frame })
  await ch.send({ type: 'commit', seq: point.seq })
}

// ---- the fetcher's side ------------------------------------------------------------------------

/** Asks `peer` for point `seq` (null: its newest) of `vm`: the header and each disk's chunk ids. */
export async function fetchPoint(
  network: ReplicationNetwork,
  peer: string,
  vm: string,
  seq: number | null,
  signal?: AbortSignal,
): Promise<{ header: PointHeader; ids: Array<Array<ChunkId | null>> }> {
  const timeout = AbortSignal.timeout(FETCH_TIMEOUT_MS)
  const both = signal ? AbortSignal.any([signal, timeout]) : timeout
  const stream = await network.dialProtocol(peer, POINTS_PROTOCOL, { signal: both })
  const ch = new MessageChannel(stream, encodePointsMessage, decodePointsMessage)
  const onAbort = () =>
    ch.abort(new ReplicationError(`fetching ${vm}@${seq ?? 'newest'} from ${peer} timed out`))
  both.addEventListener('abort', onAbort, { once: true })
  try {
    await ch.send({ type: 'fetch', vm, seq }, both)
    const first = await ch.next()
    if (first === null) throw new ReplicationError(`${peer} closed the stream instead of sending ${vm}`)
    if (first.type === 'nack') throw new PointNotFoundError(vm, seq, { peer })
    if (first.type !== 'point') throw new FrameError(`answered a fetch with '${first.type}'`, 'points', peer)
    const header = first.point
    if (header.vm !== vm || (seq !== null && header.seq !== seq))
      throw new FrameError(`sent ${header.vm}@${header.seq} for ${vm}@${seq ?? 'newest'}`, 'points', peer)
    const ids = header.disks.map((d, position) => {
      if (d.index !== position) throw new FrameError('disks out of order', 'points', peer)
      return new Array<ChunkId | null>(Math.ceil(d.virtualSize / d.chunkSize)).fill(null)
    })
    const counts = header.disks.map(() => 0)
    for (;;) {
      const m = await ch.next()
      if (m === null) throw new FrameError(`stream ended inside point ${header.seq}`, 'points', peer)
      if (m.type === 'commit' && m.seq === header.seq) break
      if (m.type !== 'manifest' || m.seq !== header.seq || !ids[m.disk])
        throw new FrameError(`unexpected '${m.type}' frame inside point ${header.seq}`, 'points', peer)
      counts[m.disk] += m.entries.length
      if (counts[m.disk] > header.disks[m.disk].entries)
        throw new FrameError(`manifest of disk ${m.disk} overruns the point`, 'points', peer)
      for (const e of m.entries) {
        if (e.index >= ids[m.disk].length)
          throw new FrameError(`entry for chunk ${e.index} past disk ${m.disk}`, 'points', peer)
        ids[m.disk][e.index] = e.id
      }
    }
    header.disks.forEach((d, i) => {
      if (counts[i] !== d.entries)
        throw new FrameError(`disk ${i}: ${counts[i]} of ${d.entries} manifest entries`, 'points', peer)
    })
    await ch.end()
    return { header, ids }
  } catch (err) {
    ch.abort(err as Error)
    throw err
  } finally {
    both.removeEventListener('abort', onAbort)
  }
}

export interface RestoreParts {
  network: ReplicationNetwork
  store: ChunkStore
  logger: ReplicationLogger
  /** Peers other than this node that gossip a committed point of `vm`, newest (by time) first. */
  holders(vm: string): PointHolder[]
  /** Members' public keys: a fetched point must carry its source's signature over its roots. */
  memberKey: MemberKeys
}

export interface RestoreOptions {
  seq?: number
  disk?: number
  out: string
  format: 'raw' | 'vhdx'
  signal?: AbortSignal
}

export interface RestoreResult {
  point: RecoveryPoint
  disk: number
  bytesWritten: number
  /** Present when chunks (or the point itself) came from peers. */
  pulled?: {
    /** The peer whose point header and manifests were used; null: the point is held here. */
    pointFrom: string | null
    chunks: number
    bytes: number
    byPeer: PullResult['byPeer']
  }
}

/**
 * Writes one disk of a point (default: the newest known) to a new file. The point and its chunks
 * come from this node's store; whatever it lacks is fetched from the VM's holders, several at once.
 */
export async function restoreDisk(
  parts: RestoreParts,
  vm: string,
  o: RestoreOptions,
): Promise<RestoreResult> {
  const { store } = parts
  const diskIndex = o.disk ?? 0
  const lease = store.lease()
  try {
    let point = o.seq === undefined ? await store.lastPoint(vm) : await findPoint(store, vm, o.seq)
    const holders = parts.holders(vm)
    let pointFrom: string | null = null
    let ids: Array<ChunkId | null>
    // The newest point known anywhere: a peer's, when it is newer than this node's.
    const newer =
      o.seq === undefined ? holders.filter((h) => !point || h.time > point.time) : point ? [] : holders
    const fetched =
      newer.length > 0
        ? await fetchFromHolders(parts, vm, o.seq ?? null, newer, o.signal).catch((err: Error) => {
            // A newer point that cannot be fetched: this node's own newest will do.
            if (point) return null
            throw err
          })
        : null
    if (fetched) {
      pointFrom = fetched.peer
      const h = fetched.header
      if (h.alg !== store.hashAlgorithm)
        throw new ReplicationError(
          `point ${vm}@${h.seq} on ${fetched.peer} uses ${h.alg} chunk ids; this store uses ${store.hashAlgorithm}`,
        )
      const d = h.disks[diskIndex]
      if (!d)
        throw new ReplicationError(`point ${vm}@${h.seq} has no disk ${diskIndex} (it has ${h.disks.length})`)
      ids = fetched.ids[diskIndex]
      point = {
        vm,
        seq: h.seq,
        epoch: h.epoch,
        time: h.time,
        consistency: h.consistency,
        // Only the restored disk gets a manifest here; the others are described, not held.
        disks: h.disks.map((x) => ({
          disk: String(x.index),
          virtualSize: x.virtualSize,
          chunkSize: x.chunkSize,
          root: '0'.repeat(64),
          hash: store.hashAlgorithm,
        })),
        config: h.config,
        source: h.source,
      }
    } else {
      if (!point) throw new PointNotFoundError(vm, o.seq ?? null, { peersAsked: 0 })
      if (!point.disks[diskIndex])
        throw new ReplicationError(
          `point ${vm}@${point.seq} has no disk ${diskIndex} (it has ${point.disks.length})`,
        )
      ids = await readManifestIds(store, point, diskIndex)
    }
    const named = [...new Set(ids.filter((id): id is ChunkId => id !== null))]
    for (const id of named) lease.protect(id)
    const lacking = await store.has(named)
    let pulled: RestoreResult['pulled']
    if (lacking.length > 0) {
      const peers = holders.map((h) => h.peer)
      if (peers.length === 0)
        throw new ReplicationError(
          `${lacking.length} chunk(s) of ${vm}@${point.seq} are not on this node and no peer holds ${vm}`,
        )
      const pull = (ids: ChunkId[]) =>
        pullChunks(ids, {
          network: parts.network,
          store,
          peers,
          logger: parts.logger,
          lease,
          signal: o.signal,
        })
      const r = await pull(lacking)
      if (r.missing.length > 0) {
        // One more round for what a stream that failed on the way left behind.
        const again = await pull(r.missing)
        r.fetched += again.fetched
        r.bytes += again.bytes
        r.missing = again.missing
        for (const [peer, s] of Object.entries(again.byPeer)) {
          const into = r.byPeer[peer]
          addPeerCounts(into, s)
          into.error = s.error ?? into.error
        }
      }
      if (r.missing.length > 0)
        throw new ReplicationError(
          `${r.missing.length} chunk(s) of ${vm}@${point.seq} could not be fetched from ${peers.length} peer(s)`,
        )
      pulled = { pointFrom, chunks: r.fetched, bytes: r.bytes, byPeer: r.byPeer }
      parts.logger.info(
        { vm, seq: point.seq, pointFrom, chunks: r.fetched, byPeer: r.byPeer },
        `restore of ${vm}@${point.seq}: pulled ${r.fetched} chunk(s) from ${peers.length} peer(s)`,
      )
    } else if (pointFrom) pulled = { pointFrom, chunks: 0, bytes: 0, byPeer: {} }
    if (pointFrom) {
      const d = point.disks[diskIndex]
      d.root = await buildManifest(store, lease, d.virtualSize, d.chunkSize, ids)
    }
    const d = point.disks[diskIndex]
    const target = await createDisk(o.out, { format: o.format, virtualSize: d.virtualSize })
    try {
      const r = await materialise(store, point, diskIndex, target, { targetIsZero: true })
      return { point, disk: diskIndex, bytesWritten: r.bytesWritten, ...(pulled ? { pulled } : {}) }
    } finally {
      await target.close()
    }
  } finally {
    lease.release()
  }
}

/** The point from the first holder that has it (the newest holder first). */
/** A fetched point is used only if its source signed it and its manifests have the signed roots. */
async function verifyFetched(
  parts: RestoreParts,
  header: PointHeader,
  ids: Array<Array<ChunkId | null>>,
): Promise<void> {
  const fields = await verifyPointHeader(header, parts.memberKey)
  // Another algorithm's point is refused by the caller, with that reason.
  const alg = parts.store.hashAlgorithm
  if (header.alg !== alg) return
  const roots = await Promise.all(
    header.disks.map((d, i) => manifestRoot(d.virtualSize, d.chunkSize, ids[i] ?? [], alg)),
  )
  checkSignedRoots(fields, roots, header)
}

async function fetchFromHolders(
  parts: RestoreParts,
  vm: string,
  seq: number | null,
  holders: PointHolder[],
  signal?: AbortSignal,
): Promise<{ peer: string; header: PointHeader; ids: Array<Array<ChunkId | null>> }> {
  const candidates = seq === null ? holders : holders.filter((h) => h.seq >= seq)
  let lastError: Error | null = null
  for (const h of candidates) {
    try {
      const fetched = await fetchPoint(parts.network, h.peer, vm, seq ?? h.seq, signal)
      await verifyFetched(parts, fetched.header, fetched.ids)
      return { peer: h.peer, ...fetched }
    } catch (err) {
      lastError = err as Error
      parts.logger.warn(
        { vm, seq, peer: h.peer, reason: lastError.message },
        `fetching point ${vm}@${seq ?? h.seq} from ${h.peer} failed`,
      )
    }
  }
  if (lastError && !(lastError instanceof PointNotFoundError))
    throw new ReplicationError(
      `no peer gave point ${vm}@${seq ?? 'newest'} (${candidates.length} asked; last: ${lastError.message})`,
    )
  throw new PointNotFoundError(vm, seq, { peersAsked: candidates.length })
}

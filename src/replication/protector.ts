// The protection pipeline of one VM on its source node. One cycle:
//
//   createPoint(sinceReference) ─▶ read only the changed chunks of the frozen disks ─▶ hash
//   ─▶ per target: query what it lacks ─▶ send chunks, or sub-chunk deltas against the chunk it
//   holds ─▶ commit the point once every chunk is stored there ─▶ releasePoint ─▶ save state.
//
// Each target is at some point already: the previous one (incremental, deltas allowed), a few
// behind (the change log names what else changed), or none/unknown (full manifest; the query
// still skips every chunk it holds, which is how an interrupted seed resumes and how VMs dedup).
// A scheduler spaces cycles to keep the lag well under the RPO.
import { hashFunction } from '../chunkstore/index.js'
import type { ConsistencyPoint, Hypervisor, VirtualDisk } from '../hyperv/index.js'
import { FINGERPRINT_CACHE_BYTES } from './constants.js'
import { chunkLength, deltaBytes, extractDelta, rangesByChunk, shouldSendDelta } from './delta.js'
import {
  changedBlocks,
  FINGERPRINT_BLOCK_BYTES,
  FingerprintCache,
  fastFingerprintChunk,
} from './fingerprints.js'
import type { ChunkId } from './ids.js'
import type { LagTracker } from './lag.js'
import type { LinkStatus, LinkTable } from './link.js'
import type { ByteRange, PointHeader } from './messages.js'
import { type EntryList, fullEntries, PackedManifest } from './packed-manifest.js'
import { type PointSigner, signedFields, signPoint } from './point-signature.js'
import { RootCache } from './root-cache.js'
import { PointScheduler } from './scheduler.js'
import {
  type DeltaPatch,
  type OfferItem,
  type ReplicationLogger,
  type ReplicationNetwork,
  TargetSession,
} from './session.js'
import {
  CHANGE_LOG_POINTS,
  type ManifestChanges,
  type Protection,
  type ProtectionFiles,
  SEQ_RESERVE_BLOCK,
  type SourceState,
  seqFloorOf,
} from './settings.js'
import { planRoutes } from './targets.js'

export const DEFAULT_CHUNK_BYTES = 256 * 1024
/** Chunks read from the frozen disk per batch (bounded memory: batch x chunk size). */
const READ_BATCH_CHUNKS = 32
const RETRY_AFTER_FAILURE_MS = 1000

export interface ProtectorComponents {
  network: ReplicationNetwork
  hypervisor: Hypervisor
  files: ProtectionFiles
  lag: LagTracker
  logger: ReplicationLogger
  /** Hash algorithm of chunk ids (the store's). */
  hashAlgorithm: 'blake3' | 'sha256'
  /** Fault injection for tests: corrupt this many first chunks sent to each target. */
  corruptChunks?: number
  /** The node's links (limits, compression); absent: unlimited, uncompressed. */
  links?: LinkTable
  /** False while this node may not produce points (no quorum). */
  mayProduce?: () => boolean
  /**
   * Signs each point with this node's key (point-signature.ts); receivers refuse unsigned points.
   * Absent only where a benchmark drives a bare receiver that does not check.
   */
  sign?: PointSigner
  /**
   * The highest seq of `vm` this node knows apart from its state: points in its own store and
   * what peers gossip they hold. A new point's seq is above it.
   */
  knownSeq?: (vm: string) => Promise<number>
}

export interface TargetProgress {
  peer: string
  seq: number | null
  time: number | null
  chunksSent: number
  deltasSent: number
  payloadBytes: number
  wireBytes: number
  resent: number
  /** Chunks sent compressed and the payload bytes that saved. */
  compressedChunks: number
  savedBytes: number
  lastError: string | null
  /** While a full copy (seed or resync) runs: bytes of data checked (sent or found there) of all. */
  seeding: { doneBytes: number; totalBytes: number } | null
  /** The link this target is reached over, as of the last session. */
  link: LinkStatus | null
}

type Mode = 'delta' | 'log' | 'full'

/** A chunk read with content other than the previous point's (not zero). */
interface ChangedChunk {
  index: number
  id: ChunkId
  bytes: Uint8Array
  /** Its id in the previous point (null: zero), undefined without one. */
  before: ChunkId | null | undefined
}

/**
 * Tracked ranges of a chunk that block fingerprints could narrow: none (tracking was lost), or
 * more than one block's bytes but not the whole chunk (a chunk written all over, like the 1 MiB
 * writes of a streaming VM, is sent whole: asking would cost the target a read for nothing).
 */
function coarse(ranges: ByteRange[] | undefined, chunkLength: number): boolean {
  if (!ranges) return true
  const bytes = deltaBytes(ranges)
  return bytes > FINGERPRINT_BLOCK_BYTES && bytes < chunkLength
}

interface Live {
  session: TargetSession
  mode: Mode
  forward: string[]
  /** Per disk, the manifest entries the commit sends (a full manifest's are made as they are sent). */
  entries: EntryList[]
  /** Indexes already offered this cycle, per disk. */
  offered: Array<Set<number>>
  /** Its stats were added to the target's progress. */
  noted: boolean
}

export class VmProtector {
  readonly progress = new Map<string, TargetProgress>()
  private readonly scheduler: PointScheduler
  private state!: SourceState
  private manifests: PackedManifest[] | null = null
  /** Merkle node ids of the manifests above, so each point rehashes only its changed branches. */
  private roots: RootCache | null = null
  /**
   * 4 KiB-block fingerprints of chunks read as changed (see fingerprints.ts), by chunk id: bounded,
   * whatever the disk's size. A seed fingerprints nothing; a target is asked for the rest.
   */
  private readonly prints = new FingerprintCache(FINGERPRINT_CACHE_BYTES)
  private readonly zeroFingerprints = new Map<number, Buffer>()
  private readonly hash: (b: Uint8Array) => Buffer
  private loop: Promise<void> | null = null
  /** Seqs up to this one are reserved on disk by this protector (0: none yet). */
  private seqsReservedTo = 0
  /** The newest seq this protector gave a point. */
  private lastSeqHanded = 0
  /** Step timings of the cycle running now. */
  private steps: StepClock | null = null
  private readonly abort = new AbortController()
  private wake: (() => void) | null = null
  cycles = 0
  /** Milliseconds each step of the last cycle took (see CycleSteps); logged with each commit. */
  lastSteps: CycleSteps | null = null

  constructor(
    readonly protection: Protection,
    private readonly c: ProtectorComponents,
  ) {
    this.scheduler = new PointScheduler({ rpoMs: protection.rpoSeconds * 1000 })
    this.hash = hashFunction(c.hashAlgorithm)
    for (const hop of planRoutes(protection.targets, protection.chain))
      this.progress.set(hop.to, emptyProgress(hop.to))
  }

  get lastSeq(): number | null {
    return this.state?.seq ?? null
  }

  async start(): Promise<void> {
    await this.load()
    this.loop = this.run()
  }

  /** Reads the persisted state without starting the loop (start() does both; benches drive cycle()). */
  async load(): Promise<void> {
    const { state, manifests } = await this.c.files.readState(this.protection.vm)
    this.state = state
    this.manifests = manifests
    const now = Date.now()
    for (const { to: peer } of planRoutes(this.protection.targets, this.protection.chain)) {
      const t = state.targets[peer]
      this.c.lag.track(this.protection.vm, peer, this.protection.rpoSeconds, now, t?.time ?? null)
      const p = this.progress.get(peer)
      if (p && t) Object.assign(p, { seq: t.seq, time: t.time })
    }
  }

  async stop(): Promise<void> {
    this.abort.abort(new Error('protection stopped'))
    this.wake?.()
    await this.loop?.catch(() => {})
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal
    while (!signal.aborted) {
      const started = Date.now()
      let failed = false
      try {
        failed = !(await this.cycle())
      } catch (err) {
        failed = true
        if (!signal.aborted)
          this.c.logger.warn(
            { vm: this.protection.vm, reason: (err as Error).message },
            'replication cycle failed',
          )
      }
      this.cycles++
      const cycleMs = Date.now() - started
      this.scheduler.observeCycle(cycleMs)
      const lagMs = (this.c.lag.worstLag(this.protection.vm, Date.now()) ?? 0) * 1000
      const delay = failed
        ? Math.max(RETRY_AFTER_FAILURE_MS, this.scheduler.delayMs(cycleMs, lagMs))
        : this.scheduler.delayMs(cycleMs, lagMs)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay)
        this.wake = () => {
          clearTimeout(t)
          resolve()
        }
      })
    }
  }

  /**
   * The next point's seq: above every seq known for the VM (its state, the floor reserved before,
   * points held anywhere, the targets' answers to hello) and reserved on disk before the point
   * leaves: a target may commit it even if this cycle fails or the node dies, and (vm, seq) must
   * never name two contents. Seqs are reserved SEQ_RESERVE_BLOCK at a time (state.seqFloor is the
   * block's end), so most points write nothing here; after a restart the VM's seqs go on above
   * the whole block, a gap no reader minds.
   */
  private async nextSeq(live: Live[]): Promise<number> {
    const known = Math.max(
      this.state.seq ?? 0,
      this.lastSeqHanded,
      (await this.c.knownSeq?.(this.protection.vm)) ?? 0,
      ...live.map((l) => l.session.state.lastSeq ?? 0),
    )
    // A block reserved by an earlier run (or protector) may have been used up to its end.
    const seq = Math.max(known, this.seqsReservedTo === 0 ? seqFloorOf(this.state) : 0) + 1
    if (seq > this.seqsReservedTo) {
      const end = seq + SEQ_RESERVE_BLOCK - 1
      this.state = { ...this.state, seqFloor: Math.max(end, this.state.seqFloor ?? 0) }
      await this.c.files.writeState(this.protection.vm, this.state, null)
      this.seqsReservedTo = end
    }
    this.lastSeqHanded = seq
    return seq
  }

  /** One point to every direct target. True when every target committed it. */
  async cycle(): Promise<boolean> {
    const { vm, vmId } = this.protection
    const signal = this.abort.signal
    if (this.c.mayProduce && !this.c.mayProduce()) return false
    const steps = new StepClock()
    this.steps = steps
    this.lastSteps = steps.ms
    const live: Live[] = []
    for (const hop of planRoutes(this.protection.targets, this.protection.chain)) {
      try {
        const session = await TargetSession.open({
          network: this.c.network,
          peer: hop.to,
          vm,
          vmId,
          logger: this.c.logger,
          signal,
          corruptChunks: this.c.corruptChunks,
          link: this.c.links?.forPeer(hop.to),
        })
        live.push({ session, mode: 'full', forward: hop.forward, entries: [], offered: [], noted: false })
      } catch (err) {
        this.noteError(hop.to, err as Error)
      }
    }
    if (live.length === 0) return false
    steps.mark('open')
    const info = await this.c.hypervisor.getVm(vm)
    const point = await this.c.hypervisor.createPoint(vm, { sinceReference: this.state.reference, signal })
    steps.mark('take')
    let manifests: PackedManifest[] | null = null
    // The point the files hold: the new one is written as its changes to it, not in full.
    let changes: ManifestChanges | undefined
    let reference: string | null = null
    let seq = -1
    try {
      seq = await this.nextSeq(live)
      steps.mark('seq')
      const geometry = point.disks.map((d, i) => ({
        virtualSize: d.virtualSize,
        chunkSize:
          this.state.disks[i]?.virtualSize === d.virtualSize
            ? this.state.disks[i].chunkSize
            : DEFAULT_CHUNK_BYTES,
      }))
      const sameGeometry =
        this.manifests !== null &&
        geometry.length === this.state.disks.length &&
        geometry.every((g, i) => g.virtualSize === this.state.disks[i].virtualSize)
      const prev = sameGeometry ? this.manifests : null
      const prevSeq = this.state.seq
      for (const l of live) l.mode = this.modeFor(l.session.state, prev !== null)
      manifests = []
      const changed: number[][] = []
      for (let i = 0; i < point.disks.length; i++) {
        const disk = await this.c.hypervisor.openPointDisk(point, i)
        try {
          const r = await this.readDisk(point, i, disk, geometry[i].chunkSize, prev?.[i] ?? null, live)
          manifests.push(r.ids)
          changed.push(r.changed)
        } finally {
          await disk.close()
        }
      }
      if (prev && prevSeq !== null) changes = { fromSeq: prevSeq, from: prev }
      steps.mark('read')
      const header: Omit<PointHeader, 'baseSeq' | 'forward' | 'disks'> = {
        vm,
        vmId,
        seq,
        epoch: this.state.epoch,
        time: point.time,
        consistency: point.consistency,
        alg: this.c.hashAlgorithm,
        source: this.c.network.peerId,
        rpoSeconds: this.protection.rpoSeconds,
        rtoSeconds: this.protection.rtoSeconds,
        replicaSet: this.protection.targets,
        config: info as unknown as Record<string, unknown>,
      }
      if (this.c.sign) {
        const roots: Array<{ virtualSize: number; chunkSize: number; root: string }> = []
        this.roots ??= new RootCache(this.c.hashAlgorithm)
        for (const [i, g] of geometry.entries())
          roots.push({
            ...g,
            root: this.roots.root(
              g.virtualSize,
              g.chunkSize,
              manifests[i],
              prev ? { ids: prev[i], changed: changed[i] } : null,
            ),
          })
        header.signed = await signPoint(signedFields(header, roots), this.c.sign)
      }
      steps.mark('sign')
      await Promise.all(live.map((l) => this.commitTo(l, header, geometry, point)))
      steps.mark('commit')
      this.state = {
        ...this.state,
        seq,
        seqEpoch: this.state.epoch,
        time: point.time,
        disks: geometry,
        changeLog: [
          ...this.state.changeLog,
          // A disk read whole (no manifest to compare with) is "all" in the log, not every index.
          { seq, indexes: changed.map((list, i) => (prev?.[i] ? list : null)) },
        ].slice(-CHANGE_LOG_POINTS),
      }
    } finally {
      for (const l of live) await l.session.close().catch(() => {})
      steps.mark('close')
      try {
        reference = await this.c.hypervisor.releasePoint(point)
      } catch (err) {
        this.c.logger.warn(
          { vm, reason: (err as Error).message },
          'releasing the point failed; the next point reads everything',
        )
      }
      if (manifests && manifests.length === point.disks.length && this.state.seq === seq) {
        this.manifests = manifests
        this.state.reference = reference
      } else {
        this.state.reference = null
      }
      for (const l of live) if (!l.noted) this.noteStats(l.session)
      steps.mark('release')
      await this.c.files.writeState(vm, this.state, this.state.seq === seq ? this.manifests : null, changes)
      steps.mark('save')
      this.steps = null
    }
    const direct = planRoutes(this.protection.targets, this.protection.chain).length
    return live.length === direct && live.every((l) => this.state.targets[l.session.peer]?.seq === seq)
  }

  private zeroFingerprint(length: number): Buffer {
    let fp = this.zeroFingerprints.get(length)
    if (!fp) {
      fp = fastFingerprintChunk(new Uint8Array(length))
      this.zeroFingerprints.set(length, fp)
    }
    return fp
  }

  /**
   * How to bring a target from the point it holds to the next one. A continuation (delta or log)
   * needs the target's point to be the very point this source produced under that number: the
   * same seq *and* the same epoch. A target holding a point of another epoch under that number
   * (a point of the previous owner, written while this node was promoted, or of this node before
   * it was fenced) gets a full manifest; the "which do you lack?" query still ships only the
   * chunks it lacks.
   */
  private modeFor(target: { lastSeq: number | null; epoch: number | null }, havePrev: boolean): Mode {
    const { lastSeq } = target
    if (lastSeq === null || !havePrev || this.state.seq === null) return 'full'
    if (target.epoch !== this.epochOf(lastSeq)) return 'full'
    if (lastSeq === this.state.seq) return 'delta'
    if (lastSeq > this.state.seq) return 'full'
    // The log must name every point after the target's: each entry holds the changes since the
    // entry before it, so an entry for the target's own point proves the rest follow it (seqs
    // may skip numbers: see SEQ_RESERVE_BLOCK); without it, every seq up to ours needs one.
    const log = this.state.changeLog
    const needed = log.filter((e) => e.seq > lastSeq)
    const covered = log.some((e) => e.seq === lastSeq) || needed.length === this.state.seq - lastSeq
    // A point that read a disk whole (a first point, or a new size) changed all of it: a full manifest.
    const whole = needed.some((e) => e.indexes.some((list) => list === null))
    return covered && !whole ? 'log' : 'full'
  }

  /**
   * The epoch of this source's point `seq`: the newest one may come from the owner before a
   * promotion (seqEpoch); older ones in the change log were produced here, at this epoch.
   */
  private epochOf(seq: number): number {
    return seq === this.state.seq ? (this.state.seqEpoch ?? this.state.epoch) : this.state.epoch
  }

  /** Reads the chunks that may have changed, offers them to every target; returns the manifest. */
  private async readDisk(
    point: ConsistencyPoint,
    diskIndex: number,
    disk: VirtualDisk,
    chunkSize: number,
    prev: PackedManifest | null,
    live: Live[],
  ): Promise<{ ids: PackedManifest; changed: number[] }> {
    const virtualSize = point.disks[diskIndex].virtualSize
    const count = Math.ceil(virtualSize / chunkSize)
    const ids = prev ? prev.clone() : PackedManifest.zeros(count)
    const tracked = point.disks[diskIndex].changed
    const byChunk =
      prev && tracked
        ? rangesByChunk(
            tracked.map((r) => ({ offset: r.offset, length: r.length })),
            chunkSize,
            virtualSize,
          )
        : null
    const toRead = byChunk ? [...byChunk.keys()] : await dataChunks(disk, chunkSize, count)
    const changed: number[] = []
    for (const l of live) {
      l.offered[diskIndex] = new Set()
      l.entries[diskIndex] = []
      if (l.mode === 'full') this.seedTotal(l, toRead.length * chunkSize)
    }
    const buffers = new ReadBuffers(READ_BATCH_CHUNKS * chunkSize)
    const readBatch = async (at: number) => {
      const batch: OfferItem[] = []
      const batchIndexes: number[] = []
      const readStart = performance.now()
      const buffer = buffers.take()
      const chunks = await readChunks(
        disk,
        toRead.slice(at, at + READ_BATCH_CHUNKS),
        chunkSize,
        virtualSize,
        buffer.bytes,
      )
      const hashStart = performance.now()
      this.steps?.add('read.io', hashStart - readStart)
      const read: ChangedChunk[] = []
      for (const { index, bytes } of chunks) {
        const hash = isZero(bytes) ? null : this.hash(bytes)
        if (prev?.holds(index, hash)) continue
        const before = prev ? prev.get(index) : undefined
        const id = hash ? hash.toString('hex') : null
        ids.setBytes(index, hash)
        changed.push(index)
        batchIndexes.push(index)
        if (id !== null) read.push({ index, id, bytes, before })
      }
      // A delta needs the base's block fingerprints; a seed (nothing to patch) computes none. Those
      // asked of a target are not awaited here: the request goes out before this batch's "which do
      // you lack?" query, so its answer comes with that one, and a patch is made only when a
      // session sends the chunk (no round trip of its own per batch on a WAN).
      const bases = prev ? this.basePrints(read, byChunk, live) : null
      bases?.catch(() => {})
      for (const { index, id, bytes, before } of read) {
        const length = bytes.length
        let delta: () => Promise<DeltaPatch | null> = async () => null
        if (bases && before !== undefined) {
          const fp = fastFingerprintChunk(bytes)
          this.prints.set(id, fp)
          const tracked = byChunk?.get(index)
          const makePatch = async (): Promise<DeltaPatch | null> => {
            const oldFp = before === null ? this.zeroFingerprint(length) : (await bases).get(before)
            const ranges = (oldFp && changedBlocks(oldFp, fp, length)) || tracked
            return ranges && shouldSendDelta(ranges, length)
              ? { base: before, ranges, bytes: extractDelta(bytes, ranges) }
              : null
          }
          // Made once, on first use: the sessions of a fan-out share it.
          let patch: Promise<DeltaPatch | null> | null = null
          delta = () => {
            patch ??= makePatch()
            return patch
          }
        }
        batch.push({
          id,
          length,
          load: async () => bytes,
          delta,
          release: buffer.release,
        })
      }
      this.steps?.add('read.hash', performance.now() - hashStart)
      // Ask now, while the batch before is still being sent (see TargetSession.prequery).
      for (const l of live) if (!l.session.error) l.session.prequery(batch)
      return { batch, batchIndexes, buffer }
    }
    // The next batch is read and hashed while this one is offered, so a slow or limited link
    // stays busy during disk reads (memory: two batches). Batches are read in order, one at a time.
    let next: ReturnType<typeof readBatch> | null = toRead.length > 0 ? readBatch(0) : null
    try {
      for (let at = 0; next; at += READ_BATCH_CHUNKS) {
        this.abort.signal.throwIfAborted()
        const { batch, batchIndexes, buffer } = await next
        next = at + READ_BATCH_CHUNKS < toRead.length ? readBatch(at + READ_BATCH_CHUNKS) : null
        next?.catch(() => {})
        const offerStart = performance.now()
        await this.offerAll(live, diskIndex, batch, batchIndexes, buffer)
        this.steps?.add('read.offer', performance.now() - offerStart)
        for (const l of live) this.seedDone(l, Math.min(READ_BATCH_CHUNKS, toRead.length - at) * chunkSize)
      }
    } finally {
      // Never leave a read running on a disk the caller is about to close.
      await next?.catch(() => {})
    }
    // Without tracking, a chunk of the previous manifest that is no longer in a data extent (its
    // block was deallocated, e.g. trimmed) was not read: it is zero now. (A disk read whole, with
    // no previous manifest, is "all changed" in the change log: its zero chunks are not listed.)
    if (prev && !byChunk) {
      // Both lists ascend: a walk along `toRead`, not a set of every data chunk.
      let r = 0
      for (const i of prev.dataIndexes()) {
        while (r < toRead.length && toRead[r] < i) r++
        if (toRead[r] !== i) {
          ids.set(i, null)
          changed.push(i)
          // An entry of every target's manifest, like the zero chunks a read found.
          for (const l of live) l.offered[diskIndex].add(i)
        }
      }
    }
    await this.offerExtras(live, diskIndex, disk, chunkSize, virtualSize, ids)
    return { ids, changed: changed.sort((a, b) => a - b) }
  }

  /**
   * Block fingerprints of the chunks `read` replaces, by base id: those kept here, and those a
   * target holds when the change tracking is coarser than a block (or absent) for that chunk. Asked
   * of one target in delta or log mode (it holds the previous point); without an answer the
   * tracked ranges are sent.
   */
  private async basePrints(
    read: ChangedChunk[],
    byChunk: Map<number, ByteRange[]> | null,
    live: Live[],
  ): Promise<Map<ChunkId, Uint8Array>> {
    const out = new Map<ChunkId, Uint8Array>()
    const ask = new Set<ChunkId>()
    for (const { index, before, bytes } of read) {
      if (!before || out.has(before)) continue
      const held = this.prints.get(before)
      if (held) out.set(before, held)
      else if (coarse(byChunk?.get(index), bytes.length)) ask.add(before)
    }
    const holder = live.find((l) => l.mode !== 'full' && !l.session.error)
    if (ask.size === 0 || !holder) return out
    try {
      const ids = [...ask]
      const answers = await holder.session.fingerprints(ids)
      ids.forEach((id, i) => {
        const fp = answers[i]
        if (fp) out.set(id, fp)
      })
    } catch (err) {
      this.c.logger.warn(
        { vm: this.protection.vm, peer: holder.session.peer, reason: (err as Error).message },
        'no block fingerprints from the target: deltas carry the tracked ranges',
      )
    }
    return out
  }

  private async offerAll(
    live: Live[],
    diskIndex: number,
    batch: OfferItem[],
    changed: number[],
    buffer: ReadBuffer,
  ): Promise<void> {
    try {
      await Promise.all(
        live.map(async (l) => {
          if (l.session.error) return
          // Each session releases each item once it is done with its bytes (see OfferItem).
          buffer.hold(batch.length)
          try {
            await l.session.offer(l.mode === 'delta' ? batch : batch.map((b) => ({ ...b, delta: undefined })))
          } catch (err) {
            this.noteError(l.session.peer, err as Error)
            l.session.abort(err as Error)
          }
        }),
      )
    } finally {
      buffer.release()
    }
    for (const l of live) for (const index of changed) l.offered[diskIndex].add(index)
  }

  /** Chunks a lagging or new target needs beyond this point's changes, read on demand. */
  private async offerExtras(
    live: Live[],
    diskIndex: number,
    disk: VirtualDisk,
    chunkSize: number,
    virtualSize: number,
    ids: PackedManifest,
  ): Promise<void> {
    for (const l of live) {
      const offered = l.offered[diskIndex]
      let extra: number[]
      if (l.mode === 'full') {
        // Every data chunk: those not offered yet are read below.
        l.entries[diskIndex] = fullEntries(ids)
        extra = []
        for (const i of ids.dataIndexes()) if (!offered.has(i)) extra.push(i)
      } else {
        const wanted = new Set<number>(offered)
        if (l.mode === 'log') {
          const since = l.session.state.lastSeq ?? 0
          // (No entry after `since` reads a disk whole: modeFor chose 'full' then.)
          for (const e of this.state.changeLog)
            if (e.seq > since) for (const i of e.indexes[diskIndex] ?? []) wanted.add(i)
        }
        const sorted = [...wanted].sort((a, b) => a - b)
        l.entries[diskIndex] = sorted.map((index) => ({ index, id: ids.get(index) }))
        extra = sorted.filter((i) => !offered.has(i) && !ids.isZero(i))
      }
      if (l.session.error) continue
      if (l.mode === 'full') this.seedTotal(l, extra.length * chunkSize)
      try {
        for (let at = 0; at < extra.length; at += READ_BATCH_CHUNKS * 8) {
          const items: OfferItem[] = extra.slice(at, at + READ_BATCH_CHUNKS * 8).map((index) => {
            const length = chunkLength(index, chunkSize, virtualSize)
            return {
              id: ids.get(index) as ChunkId,
              length,
              load: async () => {
                const bytes = Buffer.allocUnsafe(length)
                await disk.read(bytes, index * chunkSize, length)
                return bytes
              },
            }
          })
          await l.session.offer(items)
          this.seedDone(l, items.length * chunkSize)
        }
      } catch (err) {
        this.noteError(l.session.peer, err as Error)
        l.session.abort(err as Error)
      }
    }
  }

  private async commitTo(
    l: Live,
    header: Omit<PointHeader, 'baseSeq' | 'forward' | 'disks'>,
    geometry: Array<{ virtualSize: number; chunkSize: number }>,
    point: ConsistencyPoint,
  ): Promise<void> {
    if (l.session.error) return
    const peer = l.session.peer
    try {
      const settleStart = performance.now()
      await l.session.settle()
      const ackStart = performance.now()
      this.steps?.add('commit.settle', ackStart - settleStart)
      await l.session.commit(
        {
          ...header,
          baseSeq: l.mode === 'full' ? null : l.session.state.lastSeq,
          forward: l.forward,
          disks: geometry.map((g, index) => ({ index, ...g, entries: l.entries[index].length })),
        },
        l.entries,
      )
      this.steps?.add('commit.ack', performance.now() - ackStart)
      l.noted = true
      this.noteStats(l.session)
      this.state.targets[peer] = { seq: header.seq, time: point.time }
      this.c.lag.committed(this.protection.vm, peer, point.time)
      const p = this.progress.get(peer)
      if (p) Object.assign(p, { seq: header.seq, time: point.time, lastError: null })
      this.c.logger.info(
        {
          vm: header.vm,
          seq: header.seq,
          peer,
          mode: l.mode,
          chunks: l.session.stats.chunksSent,
          deltas: l.session.stats.deltasSent,
          bytes: l.session.stats.payloadBytes,
          ms: this.steps?.ms,
        },
        `point ${header.vm}@${header.seq} committed on ${peer}`,
      )
    } catch (err) {
      this.noteError(peer, err as Error)
    }
  }

  /** A full copy to this target will check `bytes` more (progress for `protect` on a terminal). */
  private seedTotal(l: Live, bytes: number): void {
    const p = this.progress.get(l.session.peer)
    if (!p || bytes === 0) return
    p.seeding ??= { doneBytes: 0, totalBytes: 0 }
    p.seeding.totalBytes += bytes
  }

  private seedDone(l: Live, bytes: number): void {
    const p = this.progress.get(l.session.peer)
    if (p?.seeding && l.mode === 'full' && !l.session.error)
      p.seeding.doneBytes = Math.min(p.seeding.totalBytes, p.seeding.doneBytes + bytes)
  }

  private noteError(peer: string, err: Error): void {
    const p = this.progress.get(peer) ?? emptyProgress(peer)
    p.lastError = err.message
    this.progress.set(peer, p)
    this.c.logger.warn({ vm: this.protection.vm, peer, reason: err.message }, `replication to ${peer} failed`)
  }

  private noteStats(session: TargetSession): void {
    const p = this.progress.get(session.peer) ?? emptyProgress(session.peer)
    p.chunksSent += session.stats.chunksSent
    p.deltasSent += session.stats.deltasSent
    p.payloadBytes += session.stats.payloadBytes
    p.wireBytes += session.stats.wireBytes
    p.resent += session.stats.resent
    p.compressedChunks += session.stats.compressedChunks
    p.savedBytes += session.stats.savedBytes
    p.seeding = null
    p.link = this.c.links?.forPeer(session.peer).status() ?? null
    this.progress.set(session.peer, p)
  }
}

/**
 * Milliseconds per step of one cycle: mark(step) charges the time since the previous mark to
 * `step`; add() records a part measured inside a step (read.io, read.hash, read.offer inside
 * read; commit.settle, commit.ack inside commit), summed over batches and targets.
 */
export type CycleSteps = Record<string, number>

class StepClock {
  readonly ms: CycleSteps = {}
  private last = performance.now()

  mark(step: string): void {
    const now = performance.now()
    this.add(step, now - this.last)
    this.last = now
  }

  add(step: string, ms: number): void {
    this.ms[step] = Math.round(((this.ms[step] ?? 0) + ms) * 10) / 10
  }
}

function emptyProgress(peer: string): TargetProgress {
  return {
    peer,
    seq: null,
    time: null,
    chunksSent: 0,
    deltasSent: 0,
    payloadBytes: 0,
    wireBytes: 0,
    resent: 0,
    compressedChunks: 0,
    savedBytes: 0,
    lastError: null,
    seeding: null,
    link: null,
  }
}

const ZERO_PAGE = Buffer.alloc(64 * 1024)
function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZERO_PAGE.length) {
    const n = Math.min(ZERO_PAGE.length, b.length - at)
    if (b.compare(ZERO_PAGE, 0, n, at, at + n) !== 0) return false
  }
  return true
}

/**
 * A read buffer of one batch (see ReadBuffers), counted: the reader holds it while it offers the
 * batch, and each target holds it once per chunk offered to it, until its session releases it.
 */
interface ReadBuffer {
  bytes: Buffer
  hold(n: number): void
  release(): void
}

/** Free read buffers kept per disk read: read-ahead, the batch offered, the window in flight. */
const SPARE_READ_BUFFERS = 6

/**
 * Reused read buffers of one disk's batches. A fresh 8 MiB buffer per batch cost the sender
 * ~2 CPU-s per GiB (page faults on new memory, full collections to free it) against ~0.05 when
 * reused. A buffer goes back to the free list only once every hold is released, i.e. every
 * target stored (acknowledged) or did not need each chunk of it; a chunk still in flight when
 * its session fails is never released, so a frame left queued on a dead stream can never read
 * another batch's bytes: that buffer is left to the garbage collector.
 */
class ReadBuffers {
  private readonly free: Buffer[] = []

  constructor(private readonly size: number) {}

  take(): ReadBuffer {
    const bytes = this.free.pop() ?? Buffer.allocUnsafeSlow(this.size)
    let holds = 1
    return {
      bytes,
      hold: (n) => {
        holds += n
      },
      release: () => {
        if (holds <= 0) throw new Error('a read buffer was released more often than held')
        holds--
        if (holds === 0 && this.free.length < SPARE_READ_BUFFERS) this.free.push(bytes)
      },
    }
  }
}

/**
 * The chunks at `indexes` (ascending), each run of adjacent chunks in one read, the runs back to
 * back in `into` (at least indexes.length x chunkSize bytes): a seed reads a whole batch with one
 * call instead of one per chunk. Each chunk is a view of `into`.
 */
async function readChunks(
  disk: VirtualDisk,
  indexes: number[],
  chunkSize: number,
  virtualSize: number,
  into: Buffer,
): Promise<Array<{ index: number; bytes: Buffer }>> {
  const out: Array<{ index: number; bytes: Buffer }> = []
  let at = 0
  for (let i = 0; i < indexes.length; ) {
    let j = i + 1
    while (j < indexes.length && indexes[j] === indexes[j - 1] + 1) j++
    const start = indexes[i] * chunkSize
    const end = Math.min(virtualSize, (indexes[j - 1] + 1) * chunkSize)
    const run = into.subarray(at, at + end - start)
    await disk.read(run, start, run.length)
    for (let k = i; k < j; k++) {
      const from = (indexes[k] - indexes[i]) * chunkSize
      out.push({
        index: indexes[k],
        bytes: run.subarray(from, from + chunkLength(indexes[k], chunkSize, virtualSize)),
      })
    }
    at += run.length
    i = j
  }
  return out
}

/** Indexes of chunks that hold any data (zero extents are skipped without reading). */
async function dataChunks(disk: VirtualDisk, chunkSize: number, count: number): Promise<number[]> {
  const out = new Set<number>()
  let extents: Awaited<ReturnType<VirtualDisk['map']>>
  try {
    extents = await disk.map({ resolveParents: true })
  } catch {
    return Array.from({ length: count }, (_, i) => i)
  }
  for (const e of extents) {
    if (e.state === 'zero') continue
    const first = Math.floor(e.start / chunkSize)
    const last = Math.min(count - 1, Math.floor((e.start + e.length - 1) / chunkSize))
    for (let i = first; i <= last; i++) out.add(i)
  }
  return [...out].sort((a, b) => a - b)
}

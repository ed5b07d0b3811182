// Messages of the two replication protocols (DESIGN.md §4), on top of frames.ts.
//
// chunks (/replimesh/chunks/1.1.0; 1.0.0 is the same without prints), opened by the side that
// has data to push or wants to pull:
//   query {req} ids        → lack {req, count} bitmap      "which of these ids do you lack?"
//   chunk id+bytes         → stored ids | reject {reason} id
//   delta {base,len,ranges} id+bytes: a sub-chunk patch; the receiver rebuilds the chunk from its
//                            stored base plus the changed ranges and checks the result's hash
//   get {req} ids          → chunk… then missing {req} ids (pull, for restore and multi-peer seed)
//   prints {req} ids       → printed {req, sizes} fingerprints: the 4 KiB block fingerprints of
//                            chunks the target holds (size 0: not held), for a source whose change
//                            tracking is coarser than a block and who keeps no fingerprints of them
//   zchunk {codec,length} id+bytes: a chunk compressed on the wire (link.ts decides when); it is
//                            decoded here into a plain chunk (bounded by `length`), so the receiver
//                            verifies the hash of the decompressed bytes like any other chunk
// points (/replimesh/points/1.0.0), opened by the source of a point:
//   hello {vm}             → state {lastSeq, epoch, disks}    what the target already holds
//   point {…} manifest… commit {seq} → ack {seq} | nack {seq, reason} missing-ids
//   fetch {vm, seq|null}   → point {…} manifest… commit {seq} | nack   a held point with its full
//                            manifests, for a node that restores or seeds from peers (restore-pull.ts)
// A point is committed on the target only when every chunk it names is stored and verified.
import { brotliDecompressSync } from 'node:zlib'
import { z } from 'zod'
import {
  CHUNK_ID_BYTES,
  MAX_CHUNK_BYTES,
  MAX_DELTA_RANGES,
  MAX_DISKS_PER_POINT,
  MAX_ENTRIES_PER_FRAME,
  MAX_FORWARD_HOPS,
  MAX_IDS_PER_FRAME,
  MAX_PRINT_IDS,
} from './constants.js'
import { FrameError } from './errors.js'
import { FINGERPRINT_BLOCK_BYTES, FINGERPRINT_BYTES } from './fingerprints.js'
import { encodeFrame, encodeFrameBodyParts, FRAME_PREFIX_BYTES, type RawFrame } from './frames.js'
import {
  CHUNK_ID_PATTERN,
  type ChunkId,
  idFromBytes,
  idToBytes,
  isZeroIdBytes,
  packIds,
  unpackIds,
} from './ids.js'

export const CHUNKS_PROTOCOL = '/replimesh/chunks/1.1.0'
/** The chunks protocol of nodes before block fingerprints were asked of targets (no prints). */
export const CHUNKS_PROTOCOL_1_0 = '/replimesh/chunks/1.0.0'
export const POINTS_PROTOCOL = '/replimesh/points/1.0.0'

/** A changed byte range inside one chunk: [offset within the chunk, length]. */
export type ByteRange = [offset: number, length: number]

export type ChunksMessage =
  | { type: 'query'; req: number; ids: ChunkId[] }
  | { type: 'lack'; req: number; lacking: boolean[] }
  | { type: 'chunk'; id: ChunkId; bytes: Uint8Array }
  | { type: 'zchunk'; id: ChunkId; codec: ChunkCodec; length: number; bytes: Uint8Array }
  | {
      type: 'delta'
      id: ChunkId
      base: ChunkId | null
      length: number
      ranges: ByteRange[]
      bytes: Uint8Array
    }
  | { type: 'stored'; ids: ChunkId[] }
  | { type: 'reject'; id: ChunkId; reason: RejectReason }
  | { type: 'get'; req: number; ids: ChunkId[] }
  | { type: 'missing'; req: number; ids: ChunkId[] }
  | { type: 'prints'; req: number; ids: ChunkId[] }
  | { type: 'printed'; req: number; prints: Array<Uint8Array | null> }

export type RejectReason = 'hash' | 'base-missing' | 'invalid'

/** Wire compression of one chunk: brotli (see link.ts for why). */
export type ChunkCodec = 'br'

const CHUNKS_KIND = {
  query: 1,
  lack: 2,
  chunk: 3,
  delta: 4,
  stored: 5,
  reject: 6,
  get: 7,
  missing: 8,
  zchunk: 9,
  prints: 10,
  printed: 11,
} as const

const reqHeader = z.object({ req: z.number().int().nonnegative() }).strict()
const lackHeader = z
  .object({ req: z.number().int().nonnegative(), count: z.number().int().min(0).max(MAX_IDS_PER_FRAME) })
  .strict()
/** Fingerprints of the largest chunk. */
const MAX_PRINT_BYTES = (MAX_CHUNK_BYTES / FINGERPRINT_BLOCK_BYTES) * FINGERPRINT_BYTES
const printedHeader = z
  .object({
    req: z.number().int().nonnegative(),
    sizes: z
      .array(z.number().int().min(0).max(MAX_PRINT_BYTES).multipleOf(FINGERPRINT_BYTES))
      .max(MAX_PRINT_IDS),
  })
  .strict()
const chunkIdSchema = z.string().regex(CHUNK_ID_PATTERN)
const deltaHeader = z
  .object({
    base: chunkIdSchema.nullable(),
    length: z.number().int().positive().max(MAX_CHUNK_BYTES),
    ranges: z
      .array(z.tuple([z.number().int().nonnegative(), z.number().int().positive()]))
      .max(MAX_DELTA_RANGES),
  })
  .strict()
const zchunkHeader = z
  .object({ codec: z.literal('br'), length: z.number().int().positive().max(MAX_CHUNK_BYTES) })
  .strict()
const rejectHeader = z.object({ reason: z.enum(['hash', 'base-missing', 'invalid']) }).strict()

/**
 * A chunks message as the parts of a credit-stream message (no length prefix): a chunk's bytes
 * are a part of their own, never copied into a frame buffer. Other messages are one part.
 */
export function encodeChunksMessageParts(m: ChunksMessage): Uint8Array[] {
  if (m.type === 'chunk') return encodeFrameBodyParts(CHUNKS_KIND.chunk, null, idToBytes(m.id), m.bytes)
  return [encodeChunksMessage(m).subarray(FRAME_PREFIX_BYTES)]
}

export function encodeChunksMessage(m: ChunksMessage): Uint8Array {
  switch (m.type) {
    case 'query':
    case 'get':
    case 'missing':
      return encodeFrame(CHUNKS_KIND[m.type], { req: m.req }, packIds(m.ids))
    case 'prints':
      return encodeFrame(CHUNKS_KIND.prints, { req: m.req }, packIds(m.ids))
    case 'printed':
      return encodeFrame(
        CHUNKS_KIND.printed,
        { req: m.req, sizes: m.prints.map((p) => p?.length ?? 0) },
        Buffer.concat(m.prints.filter((p) => p !== null)),
      )
    case 'lack':
      return encodeFrame(CHUNKS_KIND.lack, { req: m.req, count: m.lacking.length }, packBits(m.lacking))
    case 'chunk':
      return encodeFrame(CHUNKS_KIND.chunk, null, idToBytes(m.id), m.bytes)
    case 'zchunk':
      return encodeFrame(CHUNKS_KIND.zchunk, { codec: m.codec, length: m.length }, idToBytes(m.id), m.bytes)
    case 'delta':
      return encodeFrame(
        CHUNKS_KIND.delta,
        { base: m.base, length: m.length, ranges: m.ranges },
        idToBytes(m.id),
        m.bytes,
      )
    case 'stored':
      return encodeFrame(CHUNKS_KIND.stored, null, packIds(m.ids))
    case 'reject':
      return encodeFrame(CHUNKS_KIND.reject, { reason: m.reason }, idToBytes(m.id))
  }
}

export function decodeChunksMessage(f: RawFrame): ChunksMessage {
  switch (f.kind) {
    case CHUNKS_KIND.query:
    case CHUNKS_KIND.get:
    case CHUNKS_KIND.missing: {
      const { req } = parseHeader(reqHeader, f, 'chunks')
      const type = f.kind === CHUNKS_KIND.query ? 'query' : f.kind === CHUNKS_KIND.get ? 'get' : 'missing'
      return { type, req, ids: unpackIds(f.payload, MAX_IDS_PER_FRAME) }
    }
    case CHUNKS_KIND.prints: {
      const { req } = parseHeader(reqHeader, f, 'chunks')
      return { type: 'prints', req, ids: unpackIds(f.payload, MAX_PRINT_IDS) }
    }
    case CHUNKS_KIND.printed: {
      const { req, sizes } = parseHeader(printedHeader, f, 'chunks')
      const total = sizes.reduce((a, b) => a + b, 0)
      if (f.payload.length !== total)
        throw new FrameError(
          `printed frame of ${f.payload.length} bytes for sizes adding up to ${total}`,
          'chunks',
        )
      let at = 0
      const prints = sizes.map((n) => {
        at += n
        return n === 0 ? null : f.payload.subarray(at - n, at)
      })
      return { type: 'printed', req, prints }
    }
    case CHUNKS_KIND.lack: {
      const { req, count } = parseHeader(lackHeader, f, 'chunks')
      if (f.payload.length !== Math.ceil(count / 8))
        throw new FrameError(`lack bitmap of ${f.payload.length} bytes for ${count} ids`, 'chunks')
      return { type: 'lack', req, lacking: unpackBits(f.payload, count) }
    }
    case CHUNKS_KIND.chunk: {
      noHeader(f, 'chunks')
      const bytes = f.payload.subarray(CHUNK_ID_BYTES)
      if (f.payload.length <= CHUNK_ID_BYTES || bytes.length > MAX_CHUNK_BYTES)
        throw new FrameError(`chunk frame with ${bytes.length} data bytes`, 'chunks')
      return { type: 'chunk', id: idFromBytes(f.payload), bytes }
    }
    case CHUNKS_KIND.zchunk: {
      const h = parseHeader(zchunkHeader, f, 'chunks')
      if (f.payload.length <= CHUNK_ID_BYTES) throw new FrameError('zchunk frame without data', 'chunks')
      return {
        type: 'chunk',
        id: idFromBytes(f.payload),
        bytes: decompressChunk(f.payload.subarray(CHUNK_ID_BYTES), h.length),
      }
    }
    case CHUNKS_KIND.delta: {
      const h = parseHeader(deltaHeader, f, 'chunks')
      if (f.payload.length < CHUNK_ID_BYTES) throw new FrameError('delta frame without a chunk id', 'chunks')
      const bytes = f.payload.subarray(CHUNK_ID_BYTES)
      checkRanges(h.ranges, h.length, bytes.length)
      return {
        type: 'delta',
        id: idFromBytes(f.payload),
        base: h.base,
        length: h.length,
        ranges: h.ranges,
        bytes,
      }
    }
    case CHUNKS_KIND.stored:
      noHeader(f, 'chunks')
      return { type: 'stored', ids: unpackIds(f.payload, MAX_IDS_PER_FRAME) }
    case CHUNKS_KIND.reject: {
      const { reason } = parseHeader(rejectHeader, f, 'chunks')
      if (f.payload.length !== CHUNK_ID_BYTES)
        throw new FrameError('reject frame without exactly one id', 'chunks')
      return { type: 'reject', reason, id: idFromBytes(f.payload) }
    }
    default:
      throw new FrameError(`unknown chunks frame kind ${f.kind}`, 'chunks')
  }
}

/** Decompresses a chunk to exactly `length` bytes; never allocates more (a hostile peer's bomb). */
function decompressChunk(bytes: Uint8Array, length: number): Uint8Array {
  let out: Buffer
  try {
    out = brotliDecompressSync(bytes, { maxOutputLength: length })
  } catch (err) {
    throw new FrameError(
      `compressed chunk does not decode to ${length} bytes: ${(err as Error).message}`,
      'chunks',
    )
  }
  if (out.length !== length)
    throw new FrameError(`compressed chunk decodes to ${out.length} bytes, not ${length}`, 'chunks')
  return out
}

/** Ranges must be sorted, disjoint, inside the chunk, and account for every payload byte. */
function checkRanges(ranges: ByteRange[], chunkLength: number, payloadLength: number): void {
  let end = 0
  let total = 0
  for (const [offset, length] of ranges) {
    if (offset < end) throw new FrameError('delta ranges overlap or are out of order', 'chunks')
    end = offset + length
    if (end > chunkLength)
      throw new FrameError(`delta range ends at ${end}, past the chunk's ${chunkLength} bytes`, 'chunks')
    total += length
  }
  if (total !== payloadLength)
    throw new FrameError(`delta ranges cover ${total} bytes but carry ${payloadLength}`, 'chunks')
}

// ---- points ------------------------------------------------------------------------------------

export interface PointDiskHeader {
  index: number
  virtualSize: number
  chunkSize: number
  /** Manifest entries that follow in manifest frames for this disk. */
  entries: number
}

/** Everything about a recovery point except its manifests' entries. */
export interface PointHeader {
  vm: string
  vmId: string
  seq: number
  epoch: number
  /** ms since the epoch: when the source froze the point. */
  time: number
  consistency: 'crash' | 'application'
  /** Entries are changes against this point the target holds; null: entries are the full manifest. */
  baseSeq: number | null
  /** Hash algorithm of the chunk ids. */
  alg: string
  /** Peer id of the node that produced the point. */
  source: string
  rpoSeconds: number
  /** The owner's RTO and replica set: a replica promoted later protects the VM with them. */
  rtoSeconds?: number
  replicaSet?: string[]
  /** Where the receiver forwards the point after it commits it (a chain); empty for a leaf. */
  forward: string[]
  /** The VM's configuration (the hypervisor's catalogue entry), opaque here. */
  config: Record<string, unknown>
  disks: PointDiskHeader[]
  /**
   * The producing node's signature over the point (point-signature.ts), forwarded unchanged by
   * chain hops. Optional on the wire so that a missing one is refused with a nack, not a frame error.
   */
  signed?: { payload: string; signature: string }
}

/** One manifest entry: chunk `index` of a disk now holds `id` (null: all zeros). */
export interface ManifestEntry {
  index: number
  id: ChunkId | null
}

export type NackReason = 'base-unknown' | 'missing-chunks' | 'stale' | 'invalid' | 'signature' | 'error'

export type PointsMessage =
  | { type: 'hello'; vm: string; vmId: string }
  | { type: 'fetch'; vm: string; seq: number | null }
  | {
      type: 'state'
      vm: string
      lastSeq: number | null
      epoch: number | null
      disks: Array<{ index: number; chunkSize: number; virtualSize: number }>
    }
  | { type: 'point'; point: PointHeader }
  | { type: 'manifest'; seq: number; disk: number; entries: ManifestEntry[] }
  | { type: 'commit'; seq: number }
  | { type: 'ack'; seq: number }
  | { type: 'nack'; seq: number; reason: NackReason; message: string; missing: ChunkId[] }

const POINTS_KIND = {
  hello: 1,
  state: 2,
  point: 3,
  manifest: 4,
  commit: 5,
  ack: 6,
  nack: 7,
  fetch: 8,
} as const

/** VM names as the chunk store accepts them (they name points: `<vm>@<seq>`). */
export const VM_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const vmName = z.string().regex(VM_NAME_PATTERN)
const seqSchema = z.number().int().nonnegative()
const helloHeader = z.object({ vm: vmName, vmId: z.string().max(256) }).strict()
const fetchHeader = z.object({ vm: vmName, seq: z.number().int().nonnegative().nullable() }).strict()
const diskShape = z.object({
  index: z
    .number()
    .int()
    .min(0)
    .max(MAX_DISKS_PER_POINT - 1),
  chunkSize: z.number().int().positive().max(MAX_CHUNK_BYTES),
  virtualSize: z.number().int().nonnegative(),
})
const stateHeader = z
  .object({
    vm: vmName,
    lastSeq: seqSchema.nullable(),
    epoch: seqSchema.nullable(),
    disks: z.array(diskShape.strict()).max(MAX_DISKS_PER_POINT),
  })
  .strict()
export const pointHeaderSchema = z
  .object({
    vm: vmName,
    vmId: z.string().max(256),
    seq: seqSchema,
    epoch: seqSchema,
    time: z.number().int().nonnegative(),
    consistency: z.enum(['crash', 'application']),
    baseSeq: seqSchema.nullable(),
    alg: z.string().min(1).max(32),
    source: z.string().min(1).max(128),
    rpoSeconds: z.number().positive(),
    rtoSeconds: z.number().positive().optional(),
    replicaSet: z.array(z.string().min(1).max(128)).max(MAX_FORWARD_HOPS).optional(),
    forward: z.array(z.string().min(1).max(128)).max(MAX_FORWARD_HOPS),
    config: z.record(z.string(), z.unknown()),
    disks: z
      .array(diskShape.extend({ entries: z.number().int().nonnegative() }).strict())
      .min(1)
      .max(MAX_DISKS_PER_POINT),
    signed: z
      .object({ payload: z.string().max(64 * 1024), signature: z.string().max(256) })
      .strict()
      .optional(),
  })
  .strict()
const manifestHeader = z
  .object({
    seq: seqSchema,
    disk: z
      .number()
      .int()
      .min(0)
      .max(MAX_DISKS_PER_POINT - 1),
  })
  .strict()
const seqHeader = z.object({ seq: seqSchema }).strict()
const nackHeader = z
  .object({
    seq: seqSchema,
    reason: z.enum(['base-unknown', 'missing-chunks', 'stale', 'invalid', 'signature', 'error']),
    message: z.string().max(1024),
  })
  .strict()

const ENTRY_BYTES = 4 + CHUNK_ID_BYTES

export function encodePointsMessage(m: PointsMessage): Uint8Array {
  switch (m.type) {
    case 'hello':
      return encodeFrame(POINTS_KIND.hello, { vm: m.vm, vmId: m.vmId })
    case 'fetch':
      return encodeFrame(POINTS_KIND.fetch, { vm: m.vm, seq: m.seq })
    case 'state':
      return encodeFrame(POINTS_KIND.state, { vm: m.vm, lastSeq: m.lastSeq, epoch: m.epoch, disks: m.disks })
    case 'point':
      return encodeFrame(POINTS_KIND.point, m.point)
    case 'manifest':
      return encodeFrame(POINTS_KIND.manifest, { seq: m.seq, disk: m.disk }, packEntries(m.entries))
    case 'commit':
    case 'ack':
      return encodeFrame(POINTS_KIND[m.type], { seq: m.seq })
    case 'nack':
      return encodeFrame(
        POINTS_KIND.nack,
        { seq: m.seq, reason: m.reason, message: m.message.slice(0, 1024) },
        packIds(m.missing.slice(0, MAX_IDS_PER_FRAME)),
      )
  }
}

export function decodePointsMessage(f: RawFrame): PointsMessage {
  switch (f.kind) {
    case POINTS_KIND.hello:
      return { type: 'hello', ...parseHeader(helloHeader, f, 'points') }
    case POINTS_KIND.fetch:
      return { type: 'fetch', ...parseHeader(fetchHeader, f, 'points') }
    case POINTS_KIND.state:
      return { type: 'state', ...parseHeader(stateHeader, f, 'points') }
    case POINTS_KIND.point:
      return { type: 'point', point: parseHeader(pointHeaderSchema, f, 'points') as PointHeader }
    case POINTS_KIND.manifest:
      return {
        type: 'manifest',
        ...parseHeader(manifestHeader, f, 'points'),
        entries: unpackEntries(f.payload),
      }
    case POINTS_KIND.commit:
      return { type: 'commit', ...parseHeader(seqHeader, f, 'points') }
    case POINTS_KIND.ack:
      return { type: 'ack', ...parseHeader(seqHeader, f, 'points') }
    case POINTS_KIND.nack:
      return {
        type: 'nack',
        ...parseHeader(nackHeader, f, 'points'),
        missing: unpackIds(f.payload, MAX_IDS_PER_FRAME),
      }
    default:
      throw new FrameError(`unknown points frame kind ${f.kind}`, 'points')
  }
}

function packEntries(entries: ManifestEntry[]): Uint8Array {
  if (entries.length > MAX_ENTRIES_PER_FRAME)
    throw new FrameError(`${entries.length} manifest entries exceed ${MAX_ENTRIES_PER_FRAME} per frame`)
  const out = new Uint8Array(entries.length * ENTRY_BYTES)
  const view = new DataView(out.buffer)
  entries.forEach((e, i) => {
    view.setUint32(i * ENTRY_BYTES, e.index)
    if (e.id !== null) idToBytes(e.id, out, i * ENTRY_BYTES + 4)
  })
  return out
}

function unpackEntries(bytes: Uint8Array): ManifestEntry[] {
  if (bytes.length % ENTRY_BYTES !== 0)
    throw new FrameError(`manifest payload of ${bytes.length} bytes is not whole entries`, 'points')
  const n = bytes.length / ENTRY_BYTES
  if (n > MAX_ENTRIES_PER_FRAME)
    throw new FrameError(`${n} manifest entries exceed ${MAX_ENTRIES_PER_FRAME}`, 'points')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out: ManifestEntry[] = new Array(n)
  for (let i = 0; i < n; i++) {
    const at = i * ENTRY_BYTES
    out[i] = {
      index: view.getUint32(at),
      id: isZeroIdBytes(bytes, at + 4) ? null : idFromBytes(bytes, at + 4),
    }
  }
  return out
}

// ---- helpers -----------------------------------------------------------------------------------

function parseHeader<T>(schema: z.ZodType<T>, f: RawFrame, protocol: string): T {
  const r = schema.safeParse(f.header)
  if (!r.success) {
    const issue = r.error.issues[0]
    throw new FrameError(
      `invalid ${protocol} frame (kind ${f.kind}): ${issue?.path.join('.') || 'header'}: ${issue?.message}`,
      protocol,
    )
  }
  return r.data
}

function noHeader(f: RawFrame, protocol: string): void {
  if (f.header !== null)
    throw new FrameError(`${protocol} frame kind ${f.kind} carries an unexpected header`, protocol)
}

function packBits(bits: boolean[]): Uint8Array {
  const out = new Uint8Array(Math.ceil(bits.length / 8))
  bits.forEach((b, i) => {
    if (b) out[i >> 3] |= 1 << (i & 7)
  })
  return out
}

function unpackBits(bytes: Uint8Array, count: number): boolean[] {
  const out: boolean[] = new Array(count)
  for (let i = 0; i < count; i++) out[i] = (bytes[i >> 3] & (1 << (i & 7))) !== 0
  return out
}

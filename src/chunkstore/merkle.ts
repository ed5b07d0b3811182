// Manifests as Merkle trees (DESIGN.md §3). A disk of `chunkCount` chunks has a tree of fixed
// shape: level-0 nodes list up to FANOUT chunk ids in disk order, level-k nodes list up to
// FANOUT ids of level-(k-1) nodes, and a single root sits at level depth-1. Nodes are stored as
// chunks (their id is the hash of their encoding). A node whose entries are all ZERO_ID is itself
// ZERO_ID and is never stored, so an empty disk's root is ZERO_ID and costs nothing.
//
// These are pure functions over a node reader/writer: no files, no LevelDB.
import { InvalidPointError } from './errors.js'
import { type HashFn, ID_BYTES, ZERO_ID } from './hash.js'

const NODE_MAGIC = 0x314e4d52 // 'RMN1' little-endian
export const NODE_HEADER_BYTES = 12

export interface TreeShape {
  chunkCount: number
  fanout: number
  /** Levels: 1 when the root is itself a leaf-list node. */
  depth: number
}

export function treeShape(virtualSize: number, chunkSize: number, fanout: number): TreeShape {
  const chunkCount = Math.ceil(virtualSize / chunkSize)
  let depth = 1
  let span = fanout
  while (span < chunkCount) {
    span *= fanout
    depth++
  }
  return { chunkCount, fanout, depth }
}

/** Chunks covered by one node at `level` (level 0 covers `fanout` chunks). */
export function levelSpan(shape: TreeShape, level: number): number {
  return shape.fanout ** (level + 1)
}

/** Number of entries of the node at `level` whose first chunk is `chunkStart`. */
export function nodeEntryCount(shape: TreeShape, level: number, chunkStart: number): number {
  const childSpan = level === 0 ? 1 : shape.fanout ** level
  const covered = Math.min(shape.chunkCount - chunkStart, levelSpan(shape, level))
  return Math.ceil(covered / childSpan)
}

/**
 * A node's buffer with its header written (magic, level, 3 zero bytes, entry count, all
 * little-endian) and room for `count` ids after it: the one place the layout is written.
 */
function nodeWithHeader(level: number, count: number): Buffer {
  const out = Buffer.allocUnsafe(NODE_HEADER_BYTES + count * ID_BYTES)
  out.writeUInt32LE(NODE_MAGIC, 0)
  out.writeUInt8(level, 4)
  out.fill(0, 5, 8)
  out.writeUInt32LE(count, 8)
  return out
}

export function encodeNode(level: number, ids: Buffer[]): Buffer {
  const out = nodeWithHeader(level, ids.length)
  for (const [i, id] of ids.entries()) id.copy(out, NODE_HEADER_BYTES + i * ID_BYTES)
  return out
}

export function decodeNode(bytes: Buffer): { level: number; ids: Buffer[] } {
  if (bytes.length < NODE_HEADER_BYTES || bytes.readUInt32LE(0) !== NODE_MAGIC)
    throw new InvalidPointError('not a manifest node')
  const level = bytes.readUInt8(4)
  const count = bytes.readUInt32LE(8)
  if (bytes.length !== NODE_HEADER_BYTES + count * ID_BYTES)
    throw new InvalidPointError('manifest node has a bad length')
  const ids: Buffer[] = []
  for (let i = 0; i < count; i++) {
    const at = NODE_HEADER_BYTES + i * ID_BYTES
    ids.push(bytes.subarray(at, at + ID_BYTES))
  }
  return { level, ids }
}

/** Receives each new node (id, encoded bytes) as the builder completes it. */
export type NodeSink = (id: Buffer, bytes: Buffer, level: number) => Promise<void>

/**
 * Builds a tree from chunk ids pushed in disk order, keeping only one partial node per level in
 * memory. `finish()` returns the root id.
 */
export class TreeBuilder {
  private readonly levels: Buffer[][]
  private pushed = 0

  constructor(
    private readonly shape: TreeShape,
    private readonly hash: HashFn,
    private readonly sink: NodeSink,
  ) {
    this.levels = Array.from({ length: shape.depth }, () => [])
  }

  async push(chunkId: Buffer): Promise<void> {
    if (this.pushed >= this.shape.chunkCount) throw new InvalidPointError('more chunks than the disk holds')
    this.pushed++
    await this.add(0, Buffer.from(chunkId))
  }

  async finish(): Promise<Buffer> {
    if (this.pushed !== this.shape.chunkCount)
      throw new InvalidPointError(`manifest has ${this.pushed} of ${this.shape.chunkCount} chunks`)
    if (this.shape.chunkCount === 0) return ZERO_ID
    const top = this.shape.depth - 1
    for (let level = 0; level < top; level++) {
      if (this.levels[level].length > 0) await this.close(level)
    }
    return this.emit(top, this.levels[top])
  }

  private async add(level: number, id: Buffer): Promise<void> {
    const list = this.levels[level]
    list.push(id)
    if (list.length === this.shape.fanout && level < this.shape.depth - 1) await this.close(level)
  }

  private async close(level: number): Promise<void> {
    const ids = this.levels[level]
    this.levels[level] = []
    await this.add(level + 1, await this.emit(level, ids))
  }

  private emit(level: number, ids: Buffer[]): Promise<Buffer> {
    return emitNode(level, ids, this.hash, this.sink)
  }
}

/** A node's id; its bytes go to `sink` (a node of only ZERO_ID entries is ZERO_ID, never stored). */
async function emitNode(level: number, ids: Buffer[], hash: HashFn, sink: NodeSink): Promise<Buffer> {
  if (ids.every((id) => id.equals(ZERO_ID))) return ZERO_ID
  const bytes = encodeNode(level, ids)
  const id = hash(bytes)
  await sink(id, bytes, level)
  return id
}

/** Reads a stored node's verified bytes. */
export type NodeReader = (id: Buffer) => Promise<Buffer>

/** The entries of a node; a ZERO_ID node expands to the right number of ZERO_ID entries. */
export async function nodeEntries(
  shape: TreeShape,
  read: NodeReader,
  id: Buffer,
  level: number,
  chunkStart: number,
): Promise<Buffer[]> {
  const count = nodeEntryCount(shape, level, chunkStart)
  if (id.equals(ZERO_ID)) return new Array(count).fill(ZERO_ID)
  const node = decodeNode(await read(id))
  if (node.level !== level || node.ids.length !== count)
    throw new InvalidPointError(`manifest node ${id.toString('hex')} does not fit the disk's shape`)
  return node.ids
}

/** Yields every chunk id of a manifest in disk order, reading one path of nodes at a time. */
export async function* leaves(shape: TreeShape, read: NodeReader, root: Buffer): AsyncGenerator<Buffer> {
  if (shape.chunkCount === 0) return
  yield* walkLeaves(shape, read, root, shape.depth - 1, 0)
}

async function* walkLeaves(
  shape: TreeShape,
  read: NodeReader,
  id: Buffer,
  level: number,
  chunkStart: number,
): AsyncGenerator<Buffer> {
  const entries = await nodeEntries(shape, read, id, level, chunkStart)
  if (level === 0) {
    yield* entries
    return
  }
  const childSpan = shape.fanout ** level
  for (let i = 0; i < entries.length; i++)
    yield* walkLeaves(shape, read, entries[i], level - 1, chunkStart + i * childSpan)
}

export interface ChunkChange {
  index: number
  before: Buffer
  after: Buffer
}

/**
 * The chunks that differ between two manifests of the same shape, by ascending index. Only
 * subtrees whose ids differ are read.
 */
export async function* diffTrees(
  shape: TreeShape,
  read: NodeReader,
  rootA: Buffer,
  rootB: Buffer,
): AsyncGenerator<ChunkChange> {
  if (shape.chunkCount === 0) return
  yield* walkDiff(shape, read, rootA, rootB, shape.depth - 1, 0)
}

async function* walkDiff(
  shape: TreeShape,
  read: NodeReader,
  a: Buffer,
  b: Buffer,
  level: number,
  chunkStart: number,
): AsyncGenerator<ChunkChange> {
  if (a.equals(b)) return
  const [ea, eb] = await Promise.all([
    nodeEntries(shape, read, a, level, chunkStart),
    nodeEntries(shape, read, b, level, chunkStart),
  ])
  const childSpan = level === 0 ? 1 : shape.fanout ** level
  for (let i = 0; i < ea.length; i++) {
    if (ea[i].equals(eb[i])) continue
    if (level === 0) yield { index: chunkStart + i, before: ea[i], after: eb[i] }
    else yield* walkDiff(shape, read, ea[i], eb[i], level - 1, chunkStart + i * childSpan)
  }
}

/**
 * The root of the tree `root` with the chunk ids in `changes` (index → id) replaced: the same root
 * TreeBuilder gives the whole changed manifest, but only the nodes on the paths from changed
 * chunks to the root are read and rehashed (a small change costs a small comparison). Each new
 * node goes to `sink`; ZERO_ID nodes are never stored.
 */
export async function patchTree(
  shape: TreeShape,
  read: NodeReader,
  hash: HashFn,
  sink: NodeSink,
  root: Buffer,
  changes: ReadonlyMap<number, Buffer>,
): Promise<Buffer> {
  if (changes.size === 0) return root
  const indexes = [...changes.keys()].sort((a, b) => a - b)
  if (indexes[0] < 0 || indexes[indexes.length - 1] >= shape.chunkCount)
    throw new InvalidPointError(`a changed chunk lies outside the disk's ${shape.chunkCount} chunks`)
  return patchNode(shape, read, hash, sink, changes, root, shape.depth - 1, 0, indexes)
}

async function patchNode(
  shape: TreeShape,
  read: NodeReader,
  hash: HashFn,
  sink: NodeSink,
  changes: ReadonlyMap<number, Buffer>,
  id: Buffer,
  level: number,
  chunkStart: number,
  indexes: number[],
): Promise<Buffer> {
  const entries = [...(await nodeEntries(shape, read, id, level, chunkStart))]
  if (level === 0) {
    for (const i of indexes) entries[i - chunkStart] = changes.get(i) as Buffer
  } else {
    const childSpan = shape.fanout ** level
    for (let at = 0; at < indexes.length; ) {
      const child = Math.floor((indexes[at] - chunkStart) / childSpan)
      let end = at
      while (end < indexes.length && Math.floor((indexes[end] - chunkStart) / childSpan) === child) end++
      const childStart = chunkStart + child * childSpan
      entries[child] = await patchNode(
        shape,
        read,
        hash,
        sink,
        changes,
        entries[child],
        level - 1,
        childStart,
        indexes.slice(at, end),
      )
      at = end
    }
  }
  return emitNode(level, entries, hash, sink)
}

/**
 * The id of the node at `level` whose entries are `packed` (ids laid end to end): the same id
 * TreeBuilder gives that node, ZERO_ID when every entry is ZERO_ID. For callers that keep a tree's
 * node ids and rehash only the nodes whose entries changed.
 */
export function packedNodeId(level: number, packed: Buffer, hash: HashFn): Buffer {
  let zero = true
  for (let i = 0; i < packed.length; i++)
    if (packed[i] !== 0) {
      zero = false
      break
    }
  if (zero) return ZERO_ID
  const out = nodeWithHeader(level, packed.length / ID_BYTES)
  packed.copy(out, NODE_HEADER_BYTES)
  return hash(out)
}

// What the replication layer needs of the chunk store, in its terms: chunk ids as hex (null for
// an all-zero chunk), manifests as id lists, points named by VM and sequence number.
import {
  type ChunkLease,
  type ChunkStore,
  MERKLE_FANOUT,
  patchTree,
  type RecoveryPoint,
  TreeBuilder,
  treeShape,
  ZERO_HEX,
} from '../chunkstore/index.js'
import type { ChunkId } from './ids.js'
import { idBytesAt, PackedManifest } from './packed-manifest.js'

export type { ChunkStore, RecoveryPoint }

const ZERO_ID = Buffer.alloc(32)

export function hashHex(store: ChunkStore, bytes: Uint8Array): ChunkId {
  return store.hash(bytes).toString('hex')
}

/** null for the zero flag, the id otherwise. */
export function fromStoreId(hex: string): ChunkId | null {
  return hex === ZERO_HEX ? null : hex
}

/**
 * The manifest of `disk` of a held point, packed (32 bytes a data chunk, nothing for zero pages).
 * `onData` is awaited for each data chunk as it is read (a chain hop offers them meanwhile).
 */
export async function readPackedManifest(
  store: ChunkStore,
  point: RecoveryPoint,
  disk: number,
  onData?: (index: number, id: ChunkId) => Promise<void> | void,
): Promise<PackedManifest> {
  const d = point.disks[disk]
  const out = PackedManifest.zeros(Math.ceil(d.virtualSize / d.chunkSize))
  let index = 0
  for await (const hex of store.readManifest(d)) {
    const id = fromStoreId(hex)
    if (id !== null) {
      out.set(index, id)
      await onData?.(index, id)
    }
    index++
  }
  return out
}

/**
 * Builds a manifest tree from ids in disk order (an array, or a packed manifest: a full point's as
 * a receiver collects it) and appends its new nodes to the store (made durable by the commitPoint
 * that follows). Returns the root id.
 */
export async function buildManifest(
  store: ChunkStore,
  lease: ChunkLease,
  virtualSize: number,
  chunkSize: number,
  ids: ReadonlyArray<ChunkId | null> | PackedManifest,
): Promise<string> {
  const shape = treeShape(virtualSize, chunkSize, MERKLE_FANOUT)
  const builder = new TreeBuilder(shape, store.hash, nodeSink(store, lease))
  const at = idBytesAt(ids)
  for (let i = 0; i < shape.chunkCount; i++) await builder.push(at(i) ?? ZERO_ID)
  return (await builder.finish()).toString('hex')
}

/**
 * The root of `disk`'s manifest (a committed point's) with `changes` (chunk index → id) applied,
 * storing the nodes that change: only the nodes over changed chunks are read and hashed, so a
 * point of a few changes to a 100 GiB disk costs a few node reads, not the 12.5 MiB manifest.
 */
export async function patchManifest(
  store: ChunkStore,
  lease: ChunkLease,
  disk: { virtualSize: number; chunkSize: number; root: string },
  changes: ReadonlyMap<number, ChunkId | null>,
): Promise<string> {
  const shape = treeShape(disk.virtualSize, disk.chunkSize, MERKLE_FANOUT)
  const ids = new Map([...changes].map(([index, id]) => [index, id ? Buffer.from(id, 'hex') : ZERO_ID]))
  const root = await patchTree(
    shape,
    (id) => store.getChunk(id.toString('hex')),
    store.hash,
    nodeSink(store, lease),
    Buffer.from(disk.root, 'hex'),
    ids,
  )
  return root.toString('hex')
}

/** Appends each new manifest node the store lacks (durable with the commitPoint that follows). */
function nodeSink(store: ChunkStore, lease: ChunkLease) {
  return async (id: Buffer, bytes: Buffer) => {
    const [found] = await store.lookupProtected([id.toString('hex')], lease)
    if (found) return
    const { written } = await store.appendChunks([{ id, bytes, kind: 'node' }])
    await written
  }
}

export async function findPoint(
  store: ChunkStore,
  vm: string,
  seq: number,
): Promise<RecoveryPoint | undefined> {
  try {
    return await store.getPoint(`${vm}@${seq}`)
  } catch {
    return undefined
  }
}

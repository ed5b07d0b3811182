// Front door of the chunk store (DESIGN.md §3): content-addressed, deduplicated, crash-safe
// storage of disk versions. Open a store with openChunkStore(); the replication layer uses
//   has(ids) -> missing ids, getChunk(id) -> verified bytes, putChunk(id, bytes, lease),
//   readManifest / diffManifests, commitPoint(point), listPoints(vm), materialise(...).
import { ChunkStore, type ChunkStoreInit } from './store.js'

export { DEFAULT_CHUNK_SIZE, MATERIALISE_CONCURRENCY, MERKLE_FANOUT } from './constants.js'
export * from './errors.js'
export { nodeStoreFs, type StoreFile, type StoreFs } from './fs.js'
export { collectGarbage, type GcOptions, type GcReport } from './gc.js'
export {
  DEFAULT_HASH,
  HASH_ALGORITHMS,
  type HashAlgorithm,
  hashFunction,
  isChunkIdHex,
  ZERO_HEX,
} from './hash.js'
// The two-thread hasher of ingest (the bench measures it alone).
export { ParallelHasher, sharedBuffer } from './hash-pool.js'
export { type ByteRange, type IngestOptions, type IngestResult, ingestDisk } from './ingest.js'
export { type MaterialiseOptions, type MaterialiseResult, materialise } from './materialise.js'
// Used by replication to build the manifest of a point received over the wire.
export { packedNodeId, patchTree, TreeBuilder, treeShape } from './merkle.js'
export {
  type Consistency,
  type ManifestRef,
  type PointDisk,
  type PointSignature,
  parsePointName,
  pointName,
  type RecoveryPoint,
  validatePoint,
} from './points.js'
export { type PutOptions, type PutResult, putDisks } from './put.js'
export { type RetentionPolicy, selectRetained } from './retention.js'
export type { ChunkLease, ChunkStore, ChunkStoreInit, Compression } from './store.js'
export { type DamagedChunk, type VerifyReport, verifyStore } from './verify.js'

/**
 * Opens (creating if needed) the store in `init.dir`, repairing packs a crash left partial.
 * Only one process may hold a store open (LevelDB's lock): a second gets StoreOpenError.
 */
export function openChunkStore(init: ChunkStoreInit): Promise<ChunkStore> {
  return ChunkStore.open(init)
}

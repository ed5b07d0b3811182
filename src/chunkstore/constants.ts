// Every limit of the chunk store, named (STYLE.md practice 7). Sizes in bytes.

/**
 * Default chunk size; `npm run bench -- --only store` measures 64 KiB-4 MiB every run. Recorded
 * 2026-11-26 (2 cores, loaded machine; puts of 256 MiB random data, then 40 scattered 4 KiB
 * writes): stored delta 2.6 / 5.1 / 10.0 / 40 / 160 MiB at 64 KiB / 128 KiB / 256 KiB / 1 MiB /
 * 4 MiB; put 81 / 58 / 185 / 109 / 66 MiB/s, i.e. bound by the store disk at every size, not by
 * the chunk size. The delta grows linearly with the chunk size; below 256 KiB the index entries,
 * lookups and Merkle leaves per GiB grow as it shrinks (4096 per GiB at 256 KiB, 16384 at 64 KiB)
 * for a delta of a few MiB saved. 256 KiB stands: a 40-write delta near 10 MiB, a small index.
 */
export const DEFAULT_CHUNK_SIZE = 256 * 1024
export const MIN_CHUNK_SIZE = 4 * 1024
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024

/** Entries per Merkle node: 1024 ids of 32 bytes = a 32 KiB node. */
export const MERKLE_FANOUT = 1024

/** A pack file is sealed and a new one started once it reaches this size. */
export const DEFAULT_PACK_SIZE_LIMIT = 256 * 1024 * 1024

/** Ingest reads the disk in windows of this many bytes (rounded to whole chunks). */
export const INGEST_WINDOW_BYTES = 8 * 1024 * 1024
/** Windows read ahead of the one being hashed. */
export const INGEST_READ_AHEAD = 2
/**
 * Window buffers of one ingest (memory = window x buffers): the read-ahead, the window being
 * hashed, the one being looked up and the ones waiting for their pack write.
 */
export const INGEST_BUFFERS = INGEST_READ_AHEAD + 4
/** An ingest that reads at least this much hashes on a worker thread too (worth its start-up). */
export const INGEST_PARALLEL_HASH_BYTES = 64 * 1024 * 1024

/** A pack writer starts a background fdatasync after this many bytes, so writeback overlaps reads. */
export const BACKGROUND_SYNC_BYTES = 64 * 1024 * 1024

/** putChunk returns before its pack write unless this many appended bytes are still unwritten. */
export const PUT_CHUNK_UNWRITTEN_BYTES = 32 * 1024 * 1024

/** Ids remembered as absent after a query (a receiver's next chunks skip their index lookup). */
export const KNOWN_ABSENT_MAX_IDS = 65_536

/** Ingest makes its new chunks durable and indexed every this many new chunks. */
export const INGEST_FLUSH_CHUNKS = 8192

/** Chunks fetched concurrently while materialising a point into a disk. */
export const MATERIALISE_CONCURRENCY = 8

/** GC deletes index entries and moves chunks in LevelDB batches of at most this many keys. */
export const GC_BATCH_KEYS = 2048
/** A sealed pack is rewritten when less than this fraction of its bytes is still live. */
export const GC_COMPACT_LIVE_RATIO = 0.75

/** Compression is kept only when it saves at least this fraction of the chunk. */
export const COMPRESSION_MIN_SAVING = 0.1
/** Bytes of a chunk compressed first to decide whether compressing the rest can pay. */
export const COMPRESSION_PROBE_BYTES = 16 * 1024

/** Largest point record (JSON) accepted: config blobs belong elsewhere. */
export const MAX_POINT_JSON_BYTES = 1024 * 1024

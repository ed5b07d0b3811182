// Every limit of the replication layer, named (STYLE.md §7). Wire limits bound what a peer may
// make us allocate; engine limits bound memory and bytes in flight.

/** Chunk ids on the wire: 32 raw bytes (BLAKE3-256 or SHA-256, per the manifest's algorithm). */
export const CHUNK_ID_BYTES = 32
/** Largest chunk a disk may use (DESIGN.md §3: 64 KiB to 4 MiB, default 256 KiB). */
export const MAX_CHUNK_BYTES = 4 * 1024 * 1024
/** JSON header of one frame. */
export const MAX_HEADER_BYTES = 256 * 1024
/** One frame: the largest chunk with its id and framing fits (the mesh's credit streams carry 4 MiB + 1 KiB). */
export const MAX_FRAME_BYTES = MAX_CHUNK_BYTES + 1024
/** Ids in one QUERY / GET / STORED / MISSING frame. */
export const MAX_IDS_PER_FRAME = 8192
/**
 * Ids in one PRINTS frame: the answer carries 8 bytes per 4 KiB block of each (16 KiB for a
 * 4 MiB chunk), so it stays far below a frame.
 */
export const MAX_PRINT_IDS = 128
/** Manifest entries (chunk index + id) in one MANIFEST frame. */
export const MAX_ENTRIES_PER_FRAME = 65_536
/** Most chunks a disk of a point may have: a 64 TiB disk (VHDX's largest) of 256 KiB chunks. */
export const MAX_POINT_DISK_CHUNKS = 2 ** 28
/** Data chunks a restore looks up, pulls when lacking, and writes, a batch at a time. */
export const RESTORE_BATCH_IDS = 65_536
/** Changed ranges in one sub-chunk delta. */
export const MAX_DELTA_RANGES = 1024
/** Disks of one VM in one point. */
export const MAX_DISKS_PER_POINT = 64
/** Hops a point may still be forwarded through. */
export const MAX_FORWARD_HOPS = 16

/**
 * A delta is sent instead of the whole chunk when its payload is at most this fraction of the
 * chunk: beyond it, the receiver's read of the base chunk costs more than the bytes saved.
 */
export const DELTA_MAX_FRACTION = 0.5
/** Sector granularity of change tracking (RCT and the lab report 512-byte aligned ranges). */
export const SECTOR_BYTES = 512

/** Bytes of chunk frames sent but not yet acknowledged as stored, per target. */
export const DEFAULT_BYTES_IN_FLIGHT = 16 * 1024 * 1024
/** The receiver acknowledges stored chunks in batches of at most this many ids. */
export const ACK_BATCH_IDS = 256
/** ...and at least once per this many stored bytes (an eighth of the sender's window). */
export const ACK_BATCH_BYTES = DEFAULT_BYTES_IN_FLIGHT / 8

/** A receiver stores at most this many chunk frames it already holds together (one index lookup). */
export const STORE_BATCH_CHUNKS = 32

/** Scheduler: never take points more often than this. */
export const MIN_POINT_INTERVAL_MS = 200
/** Scheduler: never wait longer than this between points, whatever the RPO. */
export const MAX_POINT_INTERVAL_MS = 60_000
/**
 * Scheduler: the lag aimed at, as a fraction of the RPO (well under it). At 0.15 the bench's lag p99
 * (20 MB/s, RPO 5 s) was 0.84-1.02 s over three runs: points 0.45 s apart plus up to 0.25 s
 * from freeze to commit, with no room for a slow point; at 0.1, 0.58-0.64 s (67-70 points in 20 s,
 * against 41-44).
 */
export const POINT_TARGET_LAG_FRACTION = 0.1

/**
 * Memory a source keeps per VM for block fingerprints of chunks it read as changed (an LRU by
 * chunk id; 4 MiB holds 8192 chunks of 256 KiB). Bounded, whatever the disk's size: fingerprints
 * of the other chunks are asked of a target when a coarse change range needs them.
 */
export const FINGERPRINT_CACHE_BYTES = 4 * 1024 * 1024

/** A chunk failing its hash is re-requested at most this many times before the point fails. */
export const MAX_CHUNK_RETRIES = 3

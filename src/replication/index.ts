// Front door of the replication layer (DESIGN.md §3-4): per-VM protection pipelines, the chunks
// and points protocols, target selection, scheduling and RPO accounting.

export { type ChannelStats, MessageChannel } from './channel.js'
export * from './constants.js'
export {
  applyDelta,
  chunkLength,
  coalesce,
  diffRanges,
  extractDelta,
  rangesByChunk,
  rebuildChunk,
  shouldSendDelta,
} from './delta.js'
export * from './errors.js'
export { Forwarder } from './forwarder.js'
export { encodeFrame, FrameDecoder, type RawFrame } from './frames.js'
export { type ChunkId, idFromBytes, idToBytes, packIds, unpackIds } from './ids.js'
export { type LagAlarm, LagTracker, lagSeconds } from './lag.js'
export {
  type Clock,
  COMPRESS_MIN_SAVING,
  compressChunk,
  LINKS_FILE,
  Link,
  type LinkStatus,
  LinkTable,
  RateMeter,
  TokenBucket,
} from './link.js'
export {
  compressionOn,
  type LinkEntry,
  LinkSettingsError,
  type LinksFile,
  linkEntrySchema,
  linksFileSchema,
  parseLinksFile,
  parseRate,
  parseSchedule,
  rateAt,
  type Schedule,
} from './link-settings.js'
export {
  type ByteRange,
  CHUNKS_PROTOCOL,
  CHUNKS_PROTOCOL_1_0,
  type ChunksMessage,
  decodeChunksMessage,
  decodePointsMessage,
  encodeChunksMessage,
  encodePointsMessage,
  type ManifestEntry,
  type NackReason,
  POINTS_PROTOCOL,
  type PointHeader,
  type PointsMessage,
} from './messages.js'
export { PackedManifest } from './packed-manifest.js'
export {
  configDigest,
  describePointSignature,
  type MemberKeys,
  manifestRoot,
  POINT_SIGNATURE_KIND,
  type PointSignatureStatus,
  type PointSigner,
  type SignedPointFields,
  signedFields,
  verifyPointHeader,
} from './point-signature.js'
export { DEFAULT_CHUNK_BYTES, type TargetProgress, VmProtector } from './protector.js'
export { type PeerPullStats, PULL_BATCH_IDS, type PullInit, type PullResult, pullChunks } from './puller.js'
export { PointReceiver, type ReceiverStats } from './receiver.js'
export { ReplicaDisks, type ReplicaRecord, replicaDiskPath } from './replica-disk.js'
export {
  fetchPoint,
  type PointHolder,
  type RestoreParts,
  type RestoreResult,
  restoreDisk,
} from './restore-pull.js'
export { PointScheduler, type PointSchedulerInit } from './scheduler.js'
export { SEED_PULL_DEADLINE_MS, SeedPuller, type SeedStats } from './seed-pull.js'
export {
  type PointSummary,
  type ProtectRequest,
  pointSummary,
  type ReplicationMesh,
  ReplicationService,
  type ReplicationServiceInit,
  summarisePoints,
  type VmReplicationStatus,
} from './service.js'
export {
  type DeltaPatch,
  type OfferItem,
  type ReplicationLogger,
  type ReplicationNetwork,
  type SessionStats,
  TargetSession,
} from './session.js'
export { type Protection, ProtectionFiles } from './settings.js'
export {
  type CandidateNode,
  nextHop,
  planRoutes,
  type RouteHop,
  selectTargets,
  type TargetRequest,
} from './targets.js'

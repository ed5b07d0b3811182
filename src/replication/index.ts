// Front door of the replication layer (DESIGN.md §3-4): per-VM protection pipelines, the chunks
// and points protocols, target selection, scheduling and RPO accounting.
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
export { encodeFrame, FrameDecoder, type RawFrame } from './frames.js'
export { type ChunkId, idFromBytes, idToBytes, packIds, unpackIds } from './ids.js'
export { type LagAlarm, LagTracker, lagSeconds } from './lag.js'
export {
  type ByteRange,
  CHUNKS_PROTOCOL,
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
export { PointScheduler, type PointSchedulerInit } from './scheduler.js'
export {
  type CandidateNode,
  nextHop,
  planRoutes,
  type RouteHop,
  selectTargets,
  type TargetRequest,
} from './targets.js'

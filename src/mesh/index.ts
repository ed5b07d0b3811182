// Front door of the mesh layer (DESIGN.md §4): the libp2p node with private membership, gossip of
// node state and liveness; join tokens and certificates; frames and credit-based flow control
// for the protocols later layers register (chunks, points, control).
export * from './certificate.js'
export * from './constants.js'
export * from './errors.js'
export { CreditStream, type CreditStreamInit, type DuplexByteStream, StreamClosedError } from './flow.js'
export {
  ByteReader,
  encodeFrame,
  encodeJsonFrame,
  type FrameSink,
  parseJsonFrame,
  sendWithBackpressure,
  writeJsonFrame,
} from './frames.js'
export {
  backoffMs,
  confirmedVerdict,
  localVerdict,
  type PeerLiveness,
  type PeerView,
  type Verdict,
} from './liveness.js'
export { type MeshLogger, silentLogger } from './logger.js'
export {
  DEFAULT_TIMING,
  MeshNode,
  type MeshNodeInit,
  type MeshTiming,
  type PeerStateEvent,
  type PeerStatus,
  type ProtocolContext,
  type ProtocolHandler,
} from './node.js'
export { type Issuer, type RedeemOutcome, redeemJoinToken, type TokenLedger } from './redeem.js'
export {
  decodePublicKey,
  encodePublicKey,
  meshIdOf,
  openEnvelope,
  publicKeyOfPeer,
  signEnvelope,
} from './signed.js'
export type { Capacity, HeldReplica, NodeState, OwnedVm } from './state.js'
export { hashSecret, type IssuedToken, issueJoinToken, type JoinToken, verifyJoinToken } from './token.js'
export { createTransportNode, type TransportInit, type TransportNode } from './transport.js'

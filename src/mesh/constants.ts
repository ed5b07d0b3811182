// Named limits of the mesh layer (STYLE.md §7): every frame, buffer and timer has one here.

/** Protocol ids. Later layers register theirs through MeshNode.handle with the same prefix. */
export const PROTOCOL_PREFIX = '/replimesh/'
export const MEMBERSHIP_PROTOCOL = '/replimesh/membership/1.0.0'
export const REDEEM_PROTOCOL = '/replimesh/redeem/1.0.0'
export const GOSSIP_PROTOCOL = '/replimesh/gossip/1.0.0'

/** Largest control frame (JSON) accepted on any replimesh protocol. */
export const MAX_CONTROL_FRAME_BYTES = 256 * 1024
/** Largest frame the credit stream carries (one chunk plus its header). */
export const MAX_DATA_FRAME_BYTES = 4 * 1024 * 1024 + 1024
/** Default receive window of a credit stream: bytes the sender may have in flight. */
export const DEFAULT_CREDIT_WINDOW_BYTES = 8 * 1024 * 1024
/** Largest message a gossip frame may carry (a node's whole state). */
export const MAX_GOSSIP_FRAME_BYTES = 128 * 1024
/** Frame length prefix: 4 bytes big-endian. */
export const FRAME_HEADER_BYTES = 4

/** Entries in the lists a node state carries. */
export const MAX_STATE_ADDRS = 32
export const MAX_STATE_VMS = 4096
export const MAX_STATE_VIEWS = 4096

/** How long a refused (non-member) peer stays refused by the connection gater. */
export const REFUSED_PEER_TTL_MS = 10 * 60_000
/** Join tokens: longest time to live `mesh token --ttl` accepts. */
export const MAX_TOKEN_TTL_MS = 30 * 86_400_000
/** Reconnect backoff bounds. */
export const RECONNECT_MIN_MS = 500
export const RECONNECT_MAX_MS = 30_000
/** A dial (redeem, reconnect, connect by hand) gives up after this long. */
export const DIAL_TIMEOUT_MS = 10_000

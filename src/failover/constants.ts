// Named limits of the failover layer (STYLE.md §7).

/** Longest syslog message we send over UDP (RFC 5426 §3.2: receivers must take 480, should 2048). */
export const SYSLOG_UDP_MAX_BYTES = 8192
/** Longest syslog message over a stream transport. */
export const SYSLOG_STREAM_MAX_BYTES = 64 * 1024
/** Longest text in one SNMP varbind (traps stay in one UDP datagram). */
export const SNMP_VARBIND_MAX_CHARS = 900
/** Longest webhook body we send. */
export const WEBHOOK_MAX_BODY_BYTES = 64 * 1024
/** A channel's send that takes longer than this is abandoned (webhooks retry on their own). */
export const CHANNEL_SEND_TIMEOUT_MS = 20_000
/** One control request (dial, request, reply). */
export const CONTROL_REQUEST_TIMEOUT_MS = 5_000
/** A failover handed to another node: it runs the whole promotion before it replies. */
export const FAILOVER_REQUEST_TIMEOUT_MS = 300_000
/**
 * A host still down this long after its VMs were placed is placed again from fresher gossip: two
 * nodes that each placed a VM on the other (their views of each other lagged) both promote none.
 */
export const REPLAN_DOWN_HOST_MS = 2_000
/** Every this many detection ticks, VMs running here are checked against their peers' owners. */
export const RECONCILE_EVERY_TICKS = 8
/** After start, losing quorum is not notified for this long (the mesh is still forming). */
export const STARTUP_GRACE_MS = 30_000
/** While a peer looks down here, live peers are asked directly for their view this often. */
export const PROBE_INTERVAL_MS = 1_000
/** A direct answer counts instead of gossip for this long. */
export const PROBE_FRESH_MS = 3_000
/** VMs checked against their peers' owners per reconcile round. */
export const MAX_RECONCILE_VMS = 256
/** Default boot-storm cap of a host failover: VMs started at once per logical CPU (config.ts). */
export const STARTS_PER_CPU = 8
/** Highest boot-storm cap accepted (maxStartsPerHost). */
export const MAX_STARTS_PER_HOST = 1024

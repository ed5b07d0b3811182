// Front door of the failover layer (DESIGN.md §6): failure detection with quorum, per-tier
// decisions, placement, epochs and fencing, network re-mapping, and operator notifications.
export * from './config.js'
export {
  CONTROL_PROTOCOL,
  type ControlPeer,
  type ControlReply,
  type ControlRequest,
  type ControlTransport,
  controlReplySchema,
  controlRequestSchema,
  meshControlTransport,
} from './control.js'
export { type ClaimResult, type CoordinatorComponents, EpochCoordinator } from './coordinator.js'
export * from './epoch.js'
export * from './errors.js'
export * from './metrics.js'
export * from './network-map.js'
export * from './notify/config.js'
export { EmailChannel } from './notify/email.js'
export { EventLogChannel } from './notify/event-log.js'
export type { Reporter } from './notify/messages.js'
export * as messages from './notify/messages.js'
export {
  type ChannelEntry,
  type ChannelResult,
  createNotifier,
  Notifier,
  type NotifierComponents,
  type NotifyLogger,
} from './notify/notifier.js'
export { SnmpTrapChannel, TRAP_VARBINDS, trapOid } from './notify/snmp.js'
export { formatRfc5424, SyslogChannel } from './notify/syslog.js'
export * from './notify/types.js'
export {
  DELIVERY_HEADER,
  SIGNATURE_HEADER,
  signWebhook,
  verifyWebhookSignature,
  WebhookChannel,
  type WebhookEvents,
} from './notify/webhook.js'
export * from './placement.js'
export * from './plan.js'
export * from './policy.js'
export * from './quorum.js'
export { RpoWatch, type RpoWatchComponents, type TargetLag } from './rpo-watch.js'
export {
  type FailoverMeshView,
  type FailoverOutcome,
  FailoverService,
  type FailoverServiceComponents,
  type ReplicaSource,
} from './service.js'

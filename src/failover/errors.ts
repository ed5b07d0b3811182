// Named errors of the failover layer, carrying the facts an operator needs (STYLE.md §6).

export class NotifierConfigError extends Error {
  override name = 'NotifierConfigError'
  constructor(readonly problems: string[]) {
    super(`bad notifications config: ${problems.join('; ')}`)
  }
}

/** One channel could not deliver one notification (after its retries, for webhooks). */
export class NotificationDeliveryError extends Error {
  override name = 'NotificationDeliveryError'
  constructor(
    readonly channel: string,
    readonly notificationId: string,
    reason: string,
  ) {
    super(`notification ${notificationId} not delivered by ${channel}: ${reason}`)
  }
}

export class FailoverConfigError extends Error {
  override name = 'FailoverConfigError'
  constructor(readonly problems: string[]) {
    super(`bad failover config: ${problems.join('; ')}`)
  }
}

/** A re-IP rule cannot be applied to a VM's addresses. */
export class NetworkMappingError extends Error {
  override name = 'NetworkMappingError'
}

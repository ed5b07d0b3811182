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

/** A saved epoch ledger (epochs.json) that is neither this version's format nor an older one. */
export class EpochLedgerError extends Error {
  override name = 'EpochLedgerError'
  constructor(readonly problems: string[]) {
    super(`unreadable epoch ledger: ${problems.slice(0, 5).join('; ')}`)
  }
}

/** A promotion did not gather a quorum of promises for its epoch. */
export class EpochQuorumError extends Error {
  override name = 'EpochQuorumError'
  constructor(
    readonly claim: { vm: string; epoch: number; owner: string },
    readonly quorum: { votes: number; needed: number; agreeingSites: string[] },
    readonly refused: Array<{ peerId: string; current: { epoch: number; owner: string } }>,
    readonly unreachable: Array<{ peerId: string; reason: string }>,
  ) {
    const why = [
      refused.length
        ? `refused by ${refused.map((r) => `${r.peerId} (epoch ${r.current.epoch} is ${r.current.owner}'s)`).join(', ')}`
        : '',
      unreachable.length ? `no answer from ${unreachable.map((u) => u.peerId).join(', ')}` : '',
    ]
      .filter(Boolean)
      .join('; ')
    super(
      `no quorum to make ${claim.owner} the owner of ${claim.vm} at epoch ${claim.epoch}: ` +
        `${quorum.votes} of ${quorum.needed} site votes${why ? `; ${why}` : ''}`,
    )
  }
}

/**
 * A claim lost to another node: `winner` owns the VM at that epoch or a newer one (announced: the
 * loser may have completed the winner's decision itself), or, when its retries ran out, members
 * accepted `winner` for that epoch (announced: false). See coordinator.ts.
 */
export class EpochLostError extends EpochQuorumError {
  override name = 'EpochLostError'
  constructor(
    claim: { vm: string; epoch: number; owner: string },
    quorum: { votes: number; needed: number; agreeingSites: string[] },
    refused: Array<{ peerId: string; current: { epoch: number; owner: string } }>,
    unreachable: Array<{ peerId: string; reason: string }>,
    readonly winner: { epoch: number; owner: string; announced: boolean },
  ) {
    super(claim, quorum, refused, unreachable)
    this.message =
      `${claim.owner} lost ${claim.vm} to ${winner.owner} (epoch ${winner.epoch} ` +
      `${winner.announced ? 'is announced to it' : 'was accepted for it by members'}): ${this.message}`
  }
}

/** A failover of one VM could not be carried out. */
export class FailoverError extends Error {
  override name = 'FailoverError'
  constructor(
    readonly vm: string,
    reason: string,
  ) {
    super(`cannot fail over ${vm}: ${reason}`)
  }
}

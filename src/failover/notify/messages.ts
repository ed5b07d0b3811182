// The notifications replimesh sends, built from facts. Pure: the same facts give the same words,
// so a table test can check that each one says what failed, what was done and what to decide.
import { randomUUID } from 'node:crypto'
import type { Notification, NotificationKind, Severity } from './types.js'

export interface Reporter {
  node: string
  site?: string
  /** ms since the epoch; defaults to Date.now(). */
  time?: number
  /** Defaults to a random UUID. */
  id?: string
}

function make(
  r: Reporter,
  kind: NotificationKind,
  severity: Severity,
  body: Omit<Notification, 'id' | 'kind' | 'severity' | 'time' | 'node' | 'nodeSite'>,
): Notification {
  const reporter = { id: r.id ?? randomUUID(), time: r.time ?? Date.now(), node: r.node }
  return { ...reporter, ...(r.site ? { nodeSite: r.site } : {}), kind, severity, ...body }
}

const list = (xs: string[]) => (xs.length ? xs.join(', ') : 'none')
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`

export function hostSuspected(
  r: Reporter,
  f: { peer: string; site: string; silentMs: number },
): Notification {
  return make(r, 'host-suspected', 'warning', {
    peer: f.peer,
    site: f.site,
    title: `Host ${f.peer} (site ${f.site}) is not answering`,
    failed: `host ${f.peer} at site ${f.site} has not answered for ${secs(f.silentMs)}`,
    done: 'nothing yet: waiting for peers at other sites to confirm before any failover',
    decide: 'nothing now; if the host is under maintenance, expect a host-down notification to follow',
    details: { silentMs: f.silentMs },
  })
}

export function hostDown(
  r: Reporter,
  f: { peer: string; site: string; confirmedBySites: string[]; vms: string[]; automatic: string[] },
): Notification {
  const waiting = f.vms.filter((vm) => !f.automatic.includes(vm))
  return make(r, 'host-down', 'critical', {
    peer: f.peer,
    site: f.site,
    title: `Host ${f.peer} (site ${f.site}) is down`,
    failed: `host ${f.peer} at site ${f.site} is confirmed down by peers at sites ${list(f.confirmedBySites)}`,
    done: `failing over automatically: ${list(f.automatic)}; waiting for an operator: ${list(waiting)}`,
    decide: waiting.length
      ? `whether to fail over ${list(waiting)} now (replimesh failover --host ${f.peer}) or wait for the host`
      : 'nothing for now; when the host is repaired it rejoins as a replica, then plan a failback',
    details: { vms: f.vms.length, automatic: f.automatic.length },
  })
}

export function siteDown(
  r: Reporter,
  f: { site: string; hosts: string[]; confirmedBySites: string[]; vms: string[] },
): Notification {
  return make(r, 'site-down', 'critical', {
    site: f.site,
    title: `Site ${f.site} is down`,
    failed: `all hosts at site ${f.site} (${list(f.hosts)}) are confirmed down by sites ${list(f.confirmedBySites)}`,
    done: `failing over ${f.vms.length} VM(s) by tier and boot order`,
    decide: `whether the site is lost for long; VMs waiting for you: replimesh failover --site ${f.site}`,
    details: { hosts: f.hosts.length, vms: f.vms.length },
  })
}

export function failoverStarted(
  r: Reporter,
  f: { vm: string; from: string; to: string; mode: 'automatic' | 'manual' | 'planned'; pointSeq: number },
): Notification {
  return make(r, 'failover-started', 'warning', {
    vm: f.vm,
    peer: f.from,
    title: `Failing over VM ${f.vm} to ${f.to}`,
    failed:
      f.mode === 'planned'
        ? 'nothing: a planned failover'
        : `VM ${f.vm} is not running: host ${f.from} is down`,
    done: `${f.mode} failover started: raising the epoch and starting ${f.vm} on ${f.to} from point ${f.pointSeq}`,
    decide: 'nothing now; a completion or failure notification follows',
    details: { pointSeq: f.pointSeq },
  })
}

export function failoverCompleted(
  r: Reporter,
  f: {
    vm: string
    from: string
    to: string
    epoch: number
    pointSeq: number
    dataLossMs: number
    rpoMs: number
    downtimeMs: number
    rtoMs: number
  },
): Notification {
  const late = f.downtimeMs > f.rtoMs
  const lossy = f.dataLossMs > f.rpoMs
  return make(r, 'failover-completed', late || lossy ? 'error' : 'warning', {
    vm: f.vm,
    peer: f.from,
    title: `VM ${f.vm} now runs on ${f.to}`,
    failed: `VM ${f.vm} stopped running on ${f.from}`,
    done:
      `started ${f.vm} on ${f.to} from point ${f.pointSeq} at epoch ${f.epoch}; ` +
      `data loss ${secs(f.dataLossMs)} (RPO ${secs(f.rpoMs)}), down for ${secs(f.downtimeMs)} (RTO ${secs(f.rtoMs)})`,
    decide: `when ${f.from} is repaired it becomes a replica; choose when to fail back (replimesh failback ${f.vm})`,
    details: { epoch: f.epoch, pointSeq: f.pointSeq, dataLossMs: f.dataLossMs, downtimeMs: f.downtimeMs },
  })
}

export function failoverFailed(
  r: Reporter,
  f: { vm: string; from: string; to: string | null; reason: string },
): Notification {
  return make(r, 'failover-failed', 'critical', {
    vm: f.vm,
    peer: f.from,
    title: `Failover of VM ${f.vm} failed`,
    failed: `VM ${f.vm} is down (host ${f.from}) and could not be started${f.to ? ` on ${f.to}` : ''}: ${f.reason}`,
    done: 'the VM is not running anywhere; its replicas are kept unchanged',
    decide: `fix the cause or choose another target: replimesh failover ${f.vm} --to PEER`,
  })
}

export function awaitingOperator(
  r: Reporter,
  f: { vm: string; from: string; candidates: string[]; dataLossMs: number },
): Notification {
  return make(r, 'awaiting-operator', 'critical', {
    vm: f.vm,
    peer: f.from,
    title: `VM ${f.vm} is down and waits for your decision`,
    failed: `VM ${f.vm} stopped running: host ${f.from} is confirmed down`,
    done: `nothing: its tier says alert and wait; newest point is ${secs(f.dataLossMs)} old, held by ${list(f.candidates)}`,
    decide: `fail over now (replimesh failover ${f.vm}${f.candidates[0] ? ` --to ${f.candidates[0]}` : ''}) or wait for ${f.from}`,
    details: { dataLossMs: f.dataLossMs },
  })
}

export function fenced(
  r: Reporter,
  f: { vm: string; ownEpoch: number; seenEpoch: number; owner: string },
): Notification {
  return make(r, 'fenced', 'warning', {
    vm: f.vm,
    peer: f.owner,
    title: `VM ${f.vm} was stopped here: ${f.owner} owns it now`,
    failed: `this node ran ${f.vm} at epoch ${f.ownEpoch}, but ${f.owner} owns it at epoch ${f.seenEpoch}`,
    done: `stopped the local copy of ${f.vm}; this node is now a replica and resyncs by delta`,
    decide: `nothing now; to bring ${f.vm} back here later, run replimesh failback ${f.vm}`,
    details: { ownEpoch: f.ownEpoch, seenEpoch: f.seenEpoch },
  })
}

export function quorumLost(
  r: Reporter,
  f: { reachableSites: string[]; neededSites: number; vms: string[] },
): Notification {
  return make(r, 'quorum-lost', 'critical', {
    title: `Node ${r.node} is cut off from the mesh`,
    failed: `only sites ${list(f.reachableSites)} are reachable; ${f.neededSites} are needed for quorum`,
    done:
      (f.vms.length
        ? `stopped producing recovery points for ${list(f.vms)}`
        : 'no VMs run here, so no recovery points were stopped') + '; no failover is started from this side',
    decide: 'restore the network links; do not start these VMs by hand elsewhere without replimesh',
    details: { reachable: f.reachableSites.length, needed: f.neededSites },
  })
}

export function rpoBreach(
  r: Reporter,
  f: { vm: string; lagMs: number; rpoMs: number; target?: string; seeding?: boolean },
): Notification {
  const on = f.target ? ` on ${f.target}` : ''
  return make(r, 'rpo-breach', 'error', {
    vm: f.vm,
    peer: f.target,
    title: `VM ${f.vm} is outside its RPO${f.seeding ? ' (still seeding)' : ''}`,
    failed: f.seeding
      ? `seeding ${f.vm}${on} has run ${secs(f.lagMs)} with no point committed yet; its RPO is ${secs(f.rpoMs)}`
      : `the newest committed point of ${f.vm}${on} is ${secs(f.lagMs)} old; its RPO is ${secs(f.rpoMs)}`,
    done: f.seeding
      ? 'seeding continues (it resumes where it stopped); nothing was failed over'
      : 'replication keeps sending; nothing was failed over',
    decide: f.seeding
      ? `nothing if a long first copy was expected; else whether to add bandwidth or seed ${f.vm} from a closer peer`
      : 'whether to add bandwidth, choose a closer target, or relax the tier (replimesh plan shows the numbers)',
    details: { lagMs: f.lagMs, rpoMs: f.rpoMs, ...(f.seeding ? { seeding: true } : {}) },
  })
}

export function rpoRestored(
  r: Reporter,
  f: { vm: string; lagMs: number; rpoMs: number; target?: string; breachedMs: number },
): Notification {
  const on = f.target ? ` on ${f.target}` : ''
  return make(r, 'rpo-restored', 'info', {
    vm: f.vm,
    peer: f.target,
    title: `VM ${f.vm} is within its RPO again`,
    failed: `nothing now: ${f.vm}${on} was outside its RPO for ${secs(f.breachedMs)}`,
    done: `a point committed${on}: its newest point is ${secs(f.lagMs)} old (RPO ${secs(f.rpoMs)})`,
    decide: 'nothing; the earlier rpo-breach is cleared',
    details: { lagMs: f.lagMs, rpoMs: f.rpoMs, breachedMs: f.breachedMs },
  })
}

export function overSubscribed(
  r: Reporter,
  f: {
    peer: string
    site: string
    vms: string[]
    memoryNeededBytes: number
    memoryFreeBytes: number
    /** `hub` (default): a hub within its ratio; `over-capacity`: beyond the host, by the VMs' policy. */
    kind?: 'hub' | 'over-capacity'
  },
): Notification {
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`
  const hub = (f.kind ?? 'hub') === 'hub'
  return make(r, 'over-subscribed', hub ? 'warning' : 'error', {
    peer: f.peer,
    site: f.site,
    title: hub ? `Hub ${f.peer} runs more than it has room for` : `Host ${f.peer} is over capacity`,
    failed: `failed-over VMs ${list(f.vms)} need ${gib(f.memoryNeededBytes)} of memory; ${f.peer} has ${gib(f.memoryFreeBytes)} free`,
    done: hub
      ? `started them on ${f.peer} anyway, because site ${f.site} is a hub allowed to be over-subscribed`
      : `started them on ${f.peer} over capacity, because their over-capacity policy is warn (no holder of their newest point had room)`,
    decide: 'which of them to fail back or move first, before the hub runs short',
    details: { memoryNeededBytes: f.memoryNeededBytes, memoryFreeBytes: f.memoryFreeBytes },
  })
}

export function testFailover(
  r: Reporter,
  f: { vm: string; on: string; copy: string; pointSeq: number },
): Notification {
  return make(r, 'test-failover', 'info', {
    vm: f.vm,
    title: `Test failover of ${f.vm} is running as ${f.copy}`,
    failed: 'nothing: this is a test',
    done: `started isolated copy ${f.copy} of ${f.vm} on ${f.on} from point ${f.pointSeq}; production keeps running`,
    decide: 'check the copy, then end the test (it is removed with its networking still isolated)',
    details: { pointSeq: f.pointSeq },
  })
}

export function failbackCompleted(
  r: Reporter,
  f: { vm: string; to: string; bytesMoved: number; epoch: number },
): Notification {
  return make(r, 'failback-completed', 'info', {
    vm: f.vm,
    title: `VM ${f.vm} is back on ${f.to}`,
    failed: 'nothing: a planned failback',
    done: `moved ${f.bytesMoved} changed bytes, stopped the copy, started ${f.vm} on ${f.to} at epoch ${f.epoch}`,
    decide: 'nothing; replication continues in the original direction',
    details: { bytesMoved: f.bytesMoved, epoch: f.epoch },
  })
}

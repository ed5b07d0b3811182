// The dashboard's pure part, shared by the browser module (app.ts, served as /dashboard/view.js)
// and the unit tests: what the API's answers mean on screen, and which API request each button
// stands for. No DOM and no Node here; only type imports, which vanish when compiled.
import type { FailoverOutcome } from '../../failover/index.js'
import type { VmStatusRow } from '../api/components.js'

/** GET /status (DESIGN.md §7). */
export interface StatusView {
  peerId: string
  site: string
  addrs: string[]
  peers: Array<{ peerId: string; site: string; state: 'alive' | 'suspect' | 'down' }>
  vms: VmStatusRow[]
}

/** One node's gossiped state, as GET /mesh/states gives it (the fields the dashboard reads). */
export interface MeshStateView {
  peerId: string
  site: string
  time: number
  vms: Array<{ name: string; state: string; epoch: number }>
  replicas: Array<{ vm: string; lastPoint: { seq: number; time: number } | null; epoch: number }>
}

/** One notification of GET /failover (failover/notify/types.ts). */
export interface NotificationView {
  id: string
  kind: string
  severity: string
  time: number
  node: string
  nodeSite?: string
  vm?: string
  peer?: string
  site?: string
  title: string
  failed: string
  done: string
  decide: string
}

/** GET /failover: null when the node runs without its failover service (503). */
export interface FailoverView {
  quorum: { reached: boolean; votes: number; needed: number; agreeingSites: string[] } | null
  notifications: NotificationView[]
}

/** A row of the VM table: this node's own status where it has the VM, else what gossip says. */
export interface VmView {
  name: string
  /** The VM's role on this node; `elsewhere` when only gossip knows it; `test copy` for name-test. */
  role: 'primary' | 'replica' | 'elsewhere' | 'test copy'
  state: string
  owner: string
  epoch: number
  lastPoint: { seq: number; time: number } | null
  lagSeconds: number | null
  rpoSeconds: number | null
  rpoBreached: boolean
  /** For a test copy, the VM it copies (the one `End test` names). */
  testOf: string | null
}

export const rpoBreached = (lagSeconds: number | null, rpoSeconds: number | null): boolean =>
  lagSeconds !== null && rpoSeconds !== null && lagSeconds > rpoSeconds

/** This node's VMs first (in its order), then VMs other nodes own that it does not hold. */
export function vmViews(status: StatusView, states: MeshStateView[]): VmView[] {
  const local = new Set(status.vms.map((v) => v.name))
  const rows: VmView[] = status.vms.map((v) => {
    const testOf = v.name.endsWith('-test') ? v.name.slice(0, -'-test'.length) : null
    return {
      name: v.name,
      role: testOf !== null && local.has(testOf) ? 'test copy' : v.role,
      state: v.state,
      owner: v.owner,
      epoch: v.epoch,
      lastPoint: v.lastPoint,
      lagSeconds: v.lagSeconds,
      rpoSeconds: v.rpoSeconds,
      rpoBreached: rpoBreached(v.lagSeconds, v.rpoSeconds),
      testOf: testOf !== null && local.has(testOf) ? testOf : null,
    }
  })
  const elsewhere = new Map<string, VmView>()
  for (const s of states) {
    if (s.peerId === status.peerId) continue
    for (const v of s.vms) {
      if (local.has(v.name)) continue
      const known = elsewhere.get(v.name)
      if (known && known.epoch >= v.epoch) continue
      elsewhere.set(v.name, {
        name: v.name,
        role: 'elsewhere',
        state: v.state,
        owner: s.peerId,
        epoch: v.epoch,
        lastPoint: newestPoint(states, v.name),
        lagSeconds: null,
        rpoSeconds: null,
        rpoBreached: false,
        testOf: null,
      })
    }
  }
  return [...rows, ...[...elsewhere.values()].sort((x, y) => x.name.localeCompare(y.name))]
}

/** The newest point of `vm` any node says it holds. */
function newestPoint(states: MeshStateView[], vm: string): { seq: number; time: number } | null {
  let best: { seq: number; time: number } | null = null
  for (const s of states)
    for (const r of s.replicas)
      if (r.vm === vm && r.lastPoint && (!best || r.lastPoint.time > best.time)) best = r.lastPoint
  return best
}

/** Every site the node knows of, with its hosts (this node's own site included). */
export function sitesOf(status: StatusView): Array<{ site: string; hosts: string[]; own: boolean }> {
  const sites = new Map<string, string[]>([[status.site, [status.peerId]]])
  for (const p of status.peers) sites.set(p.site, [...(sites.get(p.site) ?? []), p.peerId])
  return [...sites.entries()]
    .map(([site, hosts]) => ({ site, hosts, own: site === status.site }))
    .sort((x, y) => x.site.localeCompare(y.site))
}

/** `site · 12D3Koo…WxYz` for a peer id the status knows; the short id alone otherwise. */
export function peerLabel(status: StatusView | null, peerId: string): string {
  const short = peerId.length > 16 ? `${peerId.slice(0, 8)}…${peerId.slice(-4)}` : peerId
  if (!status) return short
  if (peerId === status.peerId) return `${status.site} · ${short} (this node)`
  const site = status.peers.find((p) => p.peerId === peerId)?.site
  return site ? `${site} · ${short}` : short
}

/** `4 s ago`, `3 min ago`, `2 h ago` (a clock slightly ahead reads as `just now`). */
export function formatAge(ms: number): string {
  if (ms < 1000) return 'just now'
  if (ms < 120_000) return `${Math.round(ms / 1000)} s ago`
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min ago`
  return `${Math.round(ms / 3_600_000)} h ago`
}

export const formatSeconds = (s: number | null): string =>
  s === null ? '—' : s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`

/** The token in a `#token=…` fragment (how `replimesh dashboard` hands it over), or null. */
export function tokenFromHash(hash: string): string | null {
  const token = new URLSearchParams(hash.replace(/^#/, '')).get('token')?.trim()
  return token ? token : null
}

/** What a button asks for. */
export type DashboardAction =
  | { kind: 'failover' | 'test' | 'planned' | 'failback' | 'end-test'; vm: string }
  | { kind: 'host'; peerId: string }
  | { kind: 'site'; site: string }

/** The API request of an action (the routes of api/failover.ts), `to` a chosen target or none. */
export function actionRequest(
  action: DashboardAction,
  to?: string,
): { path: string; body: Record<string, string> } {
  const target: Record<string, string> = to ? { to } : {}
  switch (action.kind) {
    case 'failover':
      return { path: '/failover', body: { vm: action.vm, ...target, mode: 'manual' } }
    case 'test':
      return { path: '/failover', body: { vm: action.vm, ...target, mode: 'test' } }
    case 'planned':
      return { path: '/failover', body: { vm: action.vm, ...target, mode: 'planned' } }
    case 'failback':
      return { path: '/failback', body: { vm: action.vm, ...target } }
    case 'end-test':
      return { path: '/failover/test/end', body: { vm: action.vm } }
    case 'host':
      return { path: '/failover', body: { host: action.peerId } }
    case 'site':
      return { path: '/failover', body: { site: action.site } }
  }
}

/** The action's name in one line: the dialog's title and the result's subject. */
export function actionTitle(action: DashboardAction, status: StatusView | null): string {
  switch (action.kind) {
    case 'failover':
      return `Fail over ${action.vm}`
    case 'test':
      return `Test failover of ${action.vm}`
    case 'planned':
      return `Planned failover of ${action.vm}`
    case 'failback':
      return `Fail back ${action.vm}`
    case 'end-test':
      return `End the test of ${action.vm}`
    case 'host':
      return `Fail over host ${peerLabel(status, action.peerId)}`
    case 'site':
      return `Fail over site ${action.site}`
  }
}

/** What the operator is about to do, said before the confirm button. */
export function actionWarning(action: DashboardAction): string {
  switch (action.kind) {
    case 'failover':
      return `${action.vm} starts on a replica at a new epoch; its current owner is fenced (its copy is stopped). Writes after the replica's newest point are lost.`
    case 'test':
      return `An isolated copy (${action.vm}-test) starts from a recovery point with its network cut off. Production keeps running.`
    case 'planned':
      return `${action.vm} is stopped, synced to the target one last time, and started there: no data is lost, the VM is down for the hand-over.`
    case 'failback':
      return `${action.vm} goes back to its previous host (or the chosen one) once that host holds a point of the current epoch: a planned switch, no data lost.`
    case 'end-test':
      return `The test copy ${action.vm}-test is stopped and removed. Production is not touched.`
    case 'host':
      return 'Every VM this host owns starts elsewhere, in boot order, at a new epoch; the host is fenced when it returns.'
    case 'site':
      return `Every VM of every host of site ${action.site} starts elsewhere, in boot order, at a new epoch.`
  }
}

interface HostRow {
  vm: string
  ok: boolean
  on: string | null
  error?: string
  warning?: string
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`

/** The API's answer to an action, in one line (the CLI's words). */
export function describeResult(action: DashboardAction, result: unknown, status: StatusView | null): string {
  if (action.kind === 'end-test') return `test copy of ${action.vm} removed`
  if (action.kind === 'host' || action.kind === 'site') {
    const rows = (result as { vms?: HostRow[] }).vms ?? []
    if (rows.length === 0) return `${actionTitle(action, status)}: no VM to fail over`
    return rows
      .map((r) =>
        r.ok
          ? `${r.vm} runs on ${peerLabel(status, r.on ?? '?')}${r.warning ? ` (WARNING: ${r.warning})` : ''}`
          : `${r.vm} NOT failed over: ${r.error}`,
      )
      .join('; ')
  }
  const o = result as FailoverOutcome
  const epoch = o.epoch === null ? 'isolated test copy' : `epoch ${o.epoch}`
  return `${o.name} runs on ${peerLabel(status, o.on)} (${epoch}) from point ${o.pointSeq}; data loss ${secs(o.dataLossMs)}; took ${secs(o.tookMs)}`
}

/** Whether a host/site result reports any VM not failed over (shown as an error). */
export function resultFailed(action: DashboardAction, result: unknown): boolean {
  if (action.kind !== 'host' && action.kind !== 'site') return false
  return ((result as { vms?: HostRow[] }).vms ?? []).some((r) => !r.ok)
}

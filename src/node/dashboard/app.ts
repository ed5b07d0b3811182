// The dashboard in the browser (served as /dashboard/app.js, compiled by tsc with the rest).
// Flow: the API token comes from the `#token=…` fragment (never sent to the server, removed from
// the address bar at once) or the prompt, and lives in sessionStorage. Every 2 s the page reads
// GET /status, /mesh/states and /failover with it and redraws; a 401 clears every datum and shows
// the prompt. A button opens a confirm dialog; the action is one POST with the bearer header (no
// cookie, so another origin cannot make it) and its one-line result or error is shown.
// Everything is drawn with textContent: VM names and notifications come from other nodes.
import {
  actionRequest,
  actionTitle,
  actionWarning,
  type DashboardAction,
  describeResult,
  type FailoverView,
  formatAge,
  formatSeconds,
  type MeshStateView,
  peerLabel,
  resultFailed,
  type StatusView,
  sitesOf,
  tokenFromHash,
  type VmView,
  vmViews,
} from './view.js'

const TOKEN_KEY = 'replimesh.apiToken'
const POLL_MS = 2000
const READ_TIMEOUT_MS = 10_000
/** A site failover waits for every VM; the server bounds each step, this only stops a hung page. */
const ACTION_TIMEOUT_MS = 15 * 60_000
const MAX_EVENTS = 20

class UnauthorizedError extends Error {
  override name = 'UnauthorizedError'
}
class ApiError extends Error {
  override name = 'ApiError'
}

let token: string | null = null
let status: StatusView | null = null
/** The VM rows last drawn (the confirm dialog reads a VM's owner from them). */
let rows: VmView[] = []
let busy = false

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T

async function api<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    cache: 'no-store',
    headers: {
      authorization: `Bearer ${token ?? ''}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(method === 'GET' ? READ_TIMEOUT_MS : ACTION_TIMEOUT_MS),
  })
  const text = await res.text()
  let value: { error?: string } | undefined
  try {
    value = text ? JSON.parse(text) : undefined
  } catch {
    value = undefined
  }
  if (res.status === 401) throw new UnauthorizedError(value?.error ?? 'the node refused the token')
  if (!res.ok) throw new ApiError(value?.error ?? `HTTP ${res.status}`)
  return value as T
}

/** Reads that may fail on their own (no failover service: 503) without hiding the rest. */
const optional = <T>(p: Promise<T>, fallback: T): Promise<T> =>
  p.catch((err) => {
    if (err instanceof UnauthorizedError) throw err
    return fallback
  })

type Child = Node | string | null | undefined | false
function h(tag: string, attrs: Record<string, string | boolean | undefined> = {}, ...children: Child[]) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue
    if (key === 'class') el.className = String(value)
    else el.setAttribute(key, value === true ? '' : value)
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) el.append(child)
  return el
}

function button(label: string, action: DashboardAction, danger = false): HTMLElement {
  const data: Record<string, string> = { 'data-action': action.kind }
  if ('vm' in action) data['data-vm'] = action.vm
  if ('peerId' in action) data['data-peer'] = action.peerId
  if ('site' in action) data['data-site'] = action.site
  return h('button', { type: 'button', class: danger ? 'danger' : undefined, disabled: busy, ...data }, label)
}

function showPrompt(why: string): void {
  status = null
  rows = []
  // No datum of a node that refused us stays on screen.
  for (const id of ['node', 'quorum', 'updated', 'sites', 'events']) $(id).replaceChildren()
  for (const id of ['vms', 'peers']) $(id).querySelector('tbody')?.replaceChildren()
  $('data').hidden = true
  $('token-why').textContent = why
  $('token-prompt').hidden = false
}

function renderNode(s: StatusView, failover: FailoverView | null): void {
  $('node').replaceChildren(
    'Node ',
    h('strong', {}, `site ${s.site}`),
    ' · ',
    h('span', { class: 'id', 'data-peer-id': s.peerId, title: s.addrs.join('\n') }, s.peerId),
  )
  const q = failover?.quorum
  $('quorum').replaceChildren(
    !failover
      ? 'failover service not running on this node'
      : q
        ? h(
            'span',
            { class: q.reached ? '' : 'quorum-lost' },
            `${q.reached ? 'quorum' : 'NO QUORUM'}: ${q.votes} of ${q.needed} votes needed` +
              (q.agreeingSites.length ? ` (sites ${q.agreeingSites.join(', ')})` : ''),
          )
        : 'quorum: not known yet',
  )
  const updated = $('updated')
  updated.className = ''
  updated.textContent = `updated ${new Date().toLocaleTimeString()}`
}

function renderVms(views: VmView[]): void {
  const now = Date.now()
  const body = views.map((v) => {
    const actions: Child[] =
      v.role === 'test copy' && v.testOf
        ? [button('End test', { kind: 'end-test', vm: v.testOf })]
        : [
            button('Fail over', { kind: 'failover', vm: v.name }, true),
            button('Test failover', { kind: 'test', vm: v.name }),
            button('Planned failover', { kind: 'planned', vm: v.name }),
            // Only a VM that was failed over has a previous host to go back to.
            v.epoch > 0 && button('Failback', { kind: 'failback', vm: v.name }),
          ]
    return h(
      'tr',
      { 'data-vm': v.name },
      h('td', { 'data-field': 'name' }, v.name),
      h('td', { 'data-field': 'role' }, v.role),
      h('td', { 'data-field': 'state', class: `state-${v.state}` }, v.state),
      h('td', { 'data-field': 'owner', 'data-peer-id': v.owner, title: v.owner }, peerLabel(status, v.owner)),
      h('td', { 'data-field': 'epoch' }, String(v.epoch)),
      h(
        'td',
        { 'data-field': 'last-point', 'data-seq': v.lastPoint ? String(v.lastPoint.seq) : undefined },
        v.lastPoint ? `#${v.lastPoint.seq} · ${formatAge(now - v.lastPoint.time)}` : 'none yet',
      ),
      h(
        'td',
        {
          'data-field': 'lag',
          class: v.rpoBreached ? 'breach' : undefined,
          'data-rpo-seconds': v.rpoSeconds === null ? undefined : String(v.rpoSeconds),
          title: v.rpoBreached ? 'RPO breached: the newest point is older than the RPO allows' : undefined,
        },
        `${formatSeconds(v.lagSeconds)} / ${formatSeconds(v.rpoSeconds)}${v.rpoBreached ? ' BREACH' : ''}`,
      ),
      h('td', {}, ...actions),
    )
  })
  $('vms')
    .querySelector('tbody')
    ?.replaceChildren(...(body.length ? body : [h('tr', {}, h('td', { colspan: '8' }, 'no VM known'))]))
}

function renderPeers(s: StatusView): void {
  const self = h(
    'tr',
    { class: 'self', 'data-peer-id': s.peerId },
    h('td', {}, s.site),
    h('td', { class: 'id' }, `${s.peerId} (this node)`),
    h('td', { 'data-field': 'state', class: 'state-alive' }, 'alive'),
    h('td', {}),
  )
  const rows = s.peers.map((p) =>
    h(
      'tr',
      { 'data-peer-id': p.peerId },
      h('td', {}, p.site),
      h('td', { class: 'id' }, p.peerId),
      h('td', { 'data-field': 'state', class: `state-${p.state}` }, p.state),
      h('td', {}, button('Fail over host', { kind: 'host', peerId: p.peerId }, true)),
    ),
  )
  $('peers')
    .querySelector('tbody')
    ?.replaceChildren(self, ...rows)
}

function renderSites(s: StatusView): void {
  $('sites').replaceChildren(
    ...sitesOf(s).map((site) =>
      h(
        'span',
        { 'data-site': site.site },
        site.own
          ? `${site.site} (this node's site, ${site.hosts.length} host${site.hosts.length === 1 ? '' : 's'})`
          : button(
              `Fail over site ${site.site} (${site.hosts.length} host${site.hosts.length === 1 ? '' : 's'})`,
              { kind: 'site', site: site.site },
              true,
            ),
      ),
    ),
  )
}

function renderEvents(failover: FailoverView | null): void {
  const list = failover ? [...failover.notifications].reverse().slice(0, MAX_EVENTS) : []
  $('events').replaceChildren(
    ...(list.length
      ? list.map((n) =>
          h(
            'li',
            { class: `severity-${n.severity}`, 'data-kind': n.kind },
            h('strong', {}, `${new Date(n.time).toLocaleTimeString()} ${n.title}`),
            h('div', { class: 'detail' }, `What failed: ${n.failed}`),
            h('div', { class: 'detail' }, `What was done: ${n.done}`),
            h('div', { class: 'detail' }, `What to decide: ${n.decide}`),
          ),
        )
      : [h('li', { class: 'detail' }, failover ? 'none' : 'not available on this node')]),
  )
}

async function refresh(): Promise<void> {
  if (!token) {
    // Keep the reason already shown (a refused token) until the operator gives another.
    if ($('token-prompt').hidden) showPrompt('This dashboard needs the node’s API token.')
    return
  }
  try {
    const [s, states, failover] = await Promise.all([
      api<StatusView>('GET', '/status'),
      optional(api<MeshStateView[]>('GET', '/mesh/states'), []),
      optional<FailoverView | null>(api<FailoverView>('GET', '/failover'), null),
    ])
    status = s
    $('token-prompt').hidden = true
    $('data').hidden = false
    renderNode(s, failover)
    rows = vmViews(s, states)
    renderVms(rows)
    renderPeers(s)
    renderSites(s)
    renderEvents(failover)
  } catch (err) {
    if (err instanceof UnauthorizedError) {
      sessionStorage.removeItem(TOKEN_KEY)
      token = null
      return showPrompt('The node refused this token (it changes when the node restarts).')
    }
    const updated = $('updated')
    updated.className = 'stale'
    updated.textContent = `the node does not answer (${(err as Error).message}); showing older data`
  }
}

function showResult(state: 'working' | 'ok' | 'error', text: string): void {
  const el = $('result')
  el.dataset.state = state
  el.textContent = text
}

/** Opens the confirm dialog; resolves with the chosen target ('' = automatic) or null. */
function confirmAction(action: DashboardAction): Promise<string | null> {
  const dialog = $<HTMLDialogElement>('confirm')
  $('confirm-title').textContent = `${actionTitle(action, status)}?`
  $('confirm-text').textContent = actionWarning(action)
  const targeted = action.kind === 'failover' || action.kind === 'test' || action.kind === 'planned'
  const select = $<HTMLSelectElement>('confirm-target')
  $('confirm-target-label').hidden = !(targeted || action.kind === 'failback')
  const automatic = action.kind === 'failback' ? 'its previous host' : 'the best holder of its newest point'
  // Where it can go: live nodes other than the VM's current owner.
  const owner = 'vm' in action ? rows.find((v) => v.name === action.vm)?.owner : undefined
  const nodes = status
    ? [{ peerId: status.peerId }, ...status.peers.filter((p) => p.state === 'alive')].filter(
        (n) => n.peerId !== owner,
      )
    : []
  select.replaceChildren(
    h('option', { value: '' }, automatic),
    ...nodes.map((n) => h('option', { value: n.peerId }, peerLabel(status, n.peerId))),
  )
  $('confirm-ok').textContent = actionTitle(action, status)
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok' ? select.value : null), {
      once: true,
    })
    dialog.returnValue = ''
    dialog.showModal()
  })
}

function setBusy(value: boolean): void {
  busy = value
  for (const b of document.querySelectorAll<HTMLButtonElement>('button[data-action]')) b.disabled = value
}

async function run(action: DashboardAction): Promise<void> {
  if (busy) return
  const to = await confirmAction(action)
  if (to === null) return
  const req = actionRequest(action, to || undefined)
  const title = actionTitle(action, status)
  setBusy(true)
  showResult('working', `${title}: working…`)
  try {
    const result = await api<unknown>('POST', req.path, req.body)
    showResult(resultFailed(action, result) ? 'error' : 'ok', describeResult(action, result, status))
  } catch (err) {
    if (err instanceof UnauthorizedError) {
      sessionStorage.removeItem(TOKEN_KEY)
      token = null
      showPrompt('The node refused this token (it changes when the node restarts).')
    } else showResult('error', `${title} failed: ${(err as Error).message}`)
  } finally {
    setBusy(false)
    void refresh()
  }
}

function actionOf(el: HTMLElement): DashboardAction | null {
  const { action, vm, peer, site } = el.dataset
  if (action === 'host' && peer) return { kind: 'host', peerId: peer }
  if (action === 'site' && site) return { kind: 'site', site }
  if (vm && (['failover', 'test', 'planned', 'failback', 'end-test'] as const).some((k) => k === action))
    return { kind: action as 'failover', vm }
  return null
}

async function poll(): Promise<void> {
  await refresh()
  setTimeout(poll, POLL_MS)
}

function main(): void {
  const fromHash = tokenFromHash(location.hash)
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash)
    // The token leaves the address bar (and the history) at once.
    history.replaceState(null, '', location.pathname + location.search)
  }
  token = sessionStorage.getItem(TOKEN_KEY)
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault()
    const value = $<HTMLInputElement>('token-input').value.trim()
    if (!value) return
    token = value
    sessionStorage.setItem(TOKEN_KEY, value)
    $<HTMLInputElement>('token-input').value = ''
    void refresh()
  })
  document.addEventListener('click', (event) => {
    const target = (event.target as Element | null)?.closest<HTMLButtonElement>('button[data-action]')
    if (!target || target.disabled) return
    const action = actionOf(target)
    if (action) void run(action)
  })
  void poll()
}

main()

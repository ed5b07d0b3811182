// The dashboard in headless Chromium against real nodes: a protected lab VM runs on B with its
// replica on C. C's dashboard, opened with the address `replimesh dashboard` prints, shows the
// peers and the VM with C's real values; clicking "Fail over" and confirming runs the VM on C,
// which `status --json` of the nodes confirms (not the page's own word), and B's copy is fenced.
// A wrong token shows the prompt and no datum. Chromium is Debian's (/usr/bin/chromium), driven
// by playwright-core; in CI (REPLIMESH_REQUIRE_ORACLES=1) a missing chromium fails this file.
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type BrowserContext, chromium, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createTestMesh,
  FAILOVER_TIMING,
  type TestMesh,
  type TestNode,
  testEnv,
  waitFor,
} from '../helpers/nodes.js'
import { oracle } from '../helpers/oracles.js'

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]
const UI_TIMEOUT_MS = 15_000

interface VmRow {
  name: string
  role: string
  state: string
  owner: string
  epoch: number
  lastPoint: { seq: number; time: number } | null
  rpoSeconds: number | null
}

describe.skipIf(!oracle('chromium', existsSync(CHROMIUM)))('dashboard in headless Chromium', () => {
  let mesh: TestMesh
  let context: BrowserContext | undefined
  let profile: string | undefined
  const pageErrors: string[] = []

  beforeAll(async () => {
    mesh = await createTestMesh(['A', 'B', 'C'], {
      env: testEnv({ REPLIMESH_TIMING: JSON.stringify({ ...FAILOVER_TIMING, membershipTimeoutMs: 20_000 }) }),
    })
    profile = await mkdtemp(join(tmpdir(), 'replimesh-chromium-'))
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 60_000,
    })
  }, 240_000)

  afterAll(async () => {
    await context?.close().catch(() => {})
    await mesh?.teardown()
    if (profile) await rm(profile, { recursive: true, force: true })
  }, 60_000)

  const ok = async (args: string[]) => {
    const r = await mesh.cli(args, 120_000)
    if (r.code !== 0) throw new Error(`replimesh ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  const cliRow = async (n: TestNode, vm: string) =>
    (JSON.parse(await ok(['status', '--dir', n.dir, '--json'])) as { vms: VmRow[] }).vms.find(
      (v) => v.name === vm,
    )
  const openPage = async (url: string): Promise<Page> => {
    const page = await context!.newPage()
    page.setDefaultTimeout(UI_TIMEOUT_MS)
    page.on('pageerror', (err) => pageErrors.push(err.message))
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) pageErrors.push(m.text())
    })
    await page.goto(url)
    return page
  }

  it('shows nothing with a wrong token, only the prompt; the right one shows the node', {
    timeout: 120_000,
  }, async () => {
    const c = mesh.nodes[2]
    const page = await openPage(`${c.url}/dashboard#token=not-the-token`)
    await page.locator('#token-prompt').waitFor({ state: 'visible' })
    expect(await page.locator('#token-why').textContent()).toMatch(/refused/)
    expect(await page.locator('#data').isHidden()).toBe(true)
    expect(await page.locator('#vms tbody tr, #peers tbody tr').count()).toBe(0)
    const text = (await page.locator('body').textContent()) ?? ''
    for (const n of mesh.nodes) expect(text).not.toContain(n.peerId)
    // The token never stays in the address bar.
    expect(page.url()).toBe(`${c.url}/dashboard`)

    await page.locator('#token-input').fill(c.token)
    await page.locator('#token-form button[type=submit]').click()
    await page.locator('#node [data-peer-id]').waitFor({ state: 'visible' })
    expect(await page.locator('#node [data-peer-id]').getAttribute('data-peer-id')).toBe(c.peerId)
    expect(await page.locator('#token-prompt').isHidden()).toBe(true)
    await page.close()
  })

  it('shows peers and the protected VM, fails it over with one click, and the nodes agree', {
    timeout: 360_000,
  }, async () => {
    const [a, b, c] = mesh.nodes
    await ok(['vm', 'create', '--dir', b.dir, 'web1', '--size', '16M'])
    await ok(['vm', 'start', '--dir', b.dir, 'web1', '--no-workload'])
    await ok(['protect', '--dir', b.dir, 'web1', '--rpo', '5s', '--rto', '60s', '--to', c.peerId])
    await waitFor(
      'two points of web1 on C',
      async () => (await c.call<unknown[]>('GET', '/replication/points/web1')).length >= 2,
      120_000,
      500,
    )

    // What a failover with no target decides from: C's gossip shows B running web1.
    await waitFor(
      "B's gossiped state on C to list web1",
      async () =>
        (await c.call<Array<{ peerId: string; vms: Array<{ name: string }> }>>('GET', '/mesh/states')).some(
          (s) => s.peerId === b.peerId && s.vms.some((v) => v.name === 'web1'),
        ),
      30_000,
      250,
    )

    const { url } = JSON.parse(await ok(['dashboard', '--dir', c.dir, '--json'])) as { url: string }
    expect(url).toBe(`${c.url}/dashboard#token=${encodeURIComponent(c.token)}`)
    const page = await openPage(url)
    expect(page.url()).toBe(`${c.url}/dashboard`)

    // This node, and both peers alive, as C's status has them.
    await page.locator('#node [data-peer-id]').waitFor({ state: 'visible' })
    expect(await page.locator('#node').textContent()).toContain('site C')
    for (const peer of [a, b]) {
      const row = page.locator(`#peers tr[data-peer-id="${peer.peerId}"]`)
      await expect
        .poll(() => row.locator('[data-field=state]').textContent(), { timeout: 30_000 })
        .toBe('alive')
      expect(await row.textContent()).toContain(peer.site)
    }

    // The VM row holds C's values: a replica owned by B at epoch 0, with a committed point.
    const vmRow = page.locator('#vms tr[data-vm="web1"]')
    await vmRow.waitFor({ state: 'visible' })
    const before = await cliRow(c, 'web1')
    expect(before).toMatchObject({ role: 'replica', owner: b.peerId, epoch: 0, rpoSeconds: 5 })
    const cell = (field: string) => vmRow.locator(`[data-field="${field}"]`)
    expect(await cell('role').textContent()).toBe('replica')
    expect(await cell('owner').getAttribute('data-peer-id')).toBe(b.peerId)
    expect(await cell('owner').textContent()).toMatch(/^B · /)
    expect(await cell('epoch').textContent()).toBe('0')
    // Points keep coming: the page catches up with the point the CLI saw, by its own refresh.
    await expect
      .poll(async () => Number(await cell('last-point').getAttribute('data-seq')), { timeout: 15_000 })
      .toBeGreaterThanOrEqual(before!.lastPoint!.seq)
    expect(await cell('lag').getAttribute('data-rpo-seconds')).toBe('5')

    // One click, one confirmation.
    await vmRow.locator('button[data-action="failover"]').click()
    await page.locator('#confirm').waitFor({ state: 'visible' })
    expect(await page.locator('#confirm-title').textContent()).toBe('Fail over web1?')
    await page.locator('#confirm-ok').click()
    const result = page.locator('#result')
    await expect
      .poll(() => result.getAttribute('data-state'), { timeout: 120_000, interval: 250 })
      .toMatch(/^(ok|error)$/)
    expect(await result.getAttribute('data-state'), (await result.textContent()) ?? '').toBe('ok')
    expect(await result.textContent()).toMatch(/^web1 runs on C · .* \(epoch 1\) from point \d+/)

    // The nodes' own word: web1 runs on C at epoch 1 (C turns owner of its replica in the
    // background, after the answer), and B's copy is fenced.
    await waitFor(
      'C to report web1 as its running primary',
      async () => {
        const row = ((await c.status()).vms as VmRow[]).find((v) => v.name === 'web1')
        return row?.role === 'primary' && row.state === 'running'
      },
      30_000,
      250,
    )
    expect(await cliRow(c, 'web1')).toMatchObject({
      role: 'primary',
      state: 'running',
      owner: c.peerId,
      epoch: 1,
    })
    await waitFor(
      "B to fence its copy of web1 (a stopped replica of C's)",
      async () => {
        const r = (await b.status()).vms as VmRow[]
        const row = r.find((v) => v.name === 'web1')
        return row?.state === 'stopped' && row.owner === c.peerId
      },
      60_000,
      250,
    )
    expect(await cliRow(b, 'web1')).toMatchObject({ state: 'stopped', owner: c.peerId, epoch: 1 })

    // The page follows by itself: web1 is C's primary now, and the failover is in the notifications.
    await expect.poll(() => cell('role').textContent(), { timeout: 10_000 }).toBe('primary')
    await expect.poll(() => cell('epoch').textContent(), { timeout: 10_000 }).toBe('1')
    expect(await page.locator('#events li[data-kind]').count()).toBeGreaterThan(0)
    expect(pageErrors).toEqual([])
    await page.close()
  })
})

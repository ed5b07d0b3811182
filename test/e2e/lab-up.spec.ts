// `lab up` as an operator runs it: a hub of 3 sites × 1 host with one VM each, detached. Each node's
// own status must show the VMs protected to the sites the topology says, with a committed point;
// `plan --json` from a branch must place each failed site's VM where its replica is; `lab down`
// must leave no process of the lab behind (the nodes by pid, and anything naming the folder).
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli, snapshotBuild, testEnv, waitFor } from '../helpers/nodes.js'
import { alive, processesUsing } from '../helpers/processes.js'

interface LabRecord {
  topology: string
  hubRatio: number | null
  nodes: Array<{ name: string; site: string; dir: string; pid: number; peerId: string }>
  vms: Array<{
    name: string
    node: string
    site: string
    targets: Array<{ node: string; site: string; peerId: string }>
  }>
}

interface StatusVm {
  name: string
  role: 'primary' | 'replica'
  state: string
  owner: string
  lastPoint: { seq: number; time: number } | null
}

interface PlanJson {
  site: string
  sites: Array<{ site: string; hub: { maxOversubscription: number } | null }>
  scenarios: Array<{
    kind: 'host' | 'site'
    failed: string
    fits: boolean
    vms: Array<{ vm: string; status: string; rpoMs: number; to: { peerId: string; site: string } | null }>
  }>
  atRisk: Array<{ vm: string; reason: string }>
  replicaDisk: Array<{ peerId: string; vms: Array<{ vm: string }> }>
}

describe('replimesh lab up --topology hub --detach', () => {
  let root = ''
  let dir = ''
  let bin = ''
  let removeBuild: () => Promise<void> = async () => {}
  let record: LabRecord | null = null
  const env = testEnv()
  const cli = (args: string[], timeoutMs = 60_000) => runCli(args, { env, bin, timeoutMs })

  beforeAll(async () => {
    const build = await snapshotBuild()
    bin = build.bin
    removeBuild = build.remove
    root = await mkdtemp(join(tmpdir(), 'replimesh-lab-'))
    dir = join(root, 'lab')
  })

  afterAll(async () => {
    // Whatever the test did, nothing of the lab survives it: stop by the pids lab.json recorded.
    const saved = await readFile(join(dir, 'lab.json'), 'utf8').catch(() => null)
    const pids = (saved ? (JSON.parse(saved) as LabRecord).nodes : (record?.nodes ?? [])).map((n) => n.pid)
    for (const pid of pids.filter((p) => p > 0 && alive(p)))
      try {
        process.kill(-pid, 'SIGKILL')
      } catch {}
    await removeBuild()
    await rm(root, { recursive: true, force: true })
  })

  it('builds the hub, protects each VM as the topology says, plans from gossip and stops clean', {
    timeout: 420_000,
  }, async () => {
    const up = await cli(
      [
        'lab',
        'up',
        '--dir',
        dir,
        '--topology',
        'hub',
        '--sites',
        '3',
        '--hosts-per-site',
        '1',
        '--vms',
        '1',
      ].concat(['--detach', '--json']),
      300_000,
    )
    expect(up.code, up.stderr).toBe(0)
    const lab = JSON.parse(up.stdout) as LabRecord
    record = lab
    expect(lab.topology).toBe('hub')
    expect(lab.hubRatio).toBe(1.5)
    expect(lab.nodes.map((n) => `${n.name}@${n.site}`)).toEqual([
      'site1-h1@site1',
      'site2-h1@site2',
      'site3-h1@site3',
    ])
    expect(lab.nodes.every((n) => alive(n.pid))).toBe(true)
    const peer = Object.fromEntries(lab.nodes.map((n) => [n.site, n.peerId]))
    const targetsOf = Object.fromEntries(lab.vms.map((v) => [v.name, v.targets.map((t) => t.site)]))
    expect(targetsOf).toEqual({
      'site1-h1-vm1': ['site2'],
      'site2-h1-vm1': ['site1'],
      'site3-h1-vm1': ['site1'],
    })

    // Each node's own status: its VM runs as primary; the VMs it protects are replicas with a point.
    for (const n of lab.nodes) {
      const r = await cli(['status', '--dir', n.dir, '--json'])
      expect(r.code, r.stderr).toBe(0)
      const vms = (JSON.parse(r.stdout) as { vms: StatusVm[] }).vms
      const own = vms.find((v) => v.name === `${n.name}-vm1`)
      expect(own, r.stdout).toMatchObject({ role: 'primary', state: 'running' })
      const expected = lab.vms.filter((v) => v.targets.some((t) => t.node === n.name)).map((v) => v.name)
      const replicas = vms.filter((v) => v.role === 'replica' && v.lastPoint !== null).map((v) => v.name)
      expect(replicas.sort()).toEqual(expected.sort())
    }

    // The plan from a branch (site2) sees the whole mesh through gossip (each state is fresh for
    // stateTtlMs after it arrives: wait for all three, with a deadline).
    const plan = await waitFor(
      'a plan from site2 covering the three nodes and their replicas',
      async () => {
        const p = await cli(['plan', '--dir', lab.nodes[1].dir, '--json'])
        if (p.code !== 0) throw new Error(p.stderr)
        const value = JSON.parse(p.stdout) as PlanJson & { nodes: number }
        return value.nodes === 3 && value.replicaDisk.length === 2 ? value : undefined
      },
      60_000,
      1000,
    )
    expect(plan.site).toBe('site2')
    expect(plan.sites.find((s) => s.site === 'site1')?.hub).toEqual({ maxOversubscription: 1.5 })
    const scenario = (kind: string, failed: string) =>
      plan.scenarios.find((s) => s.kind === kind && s.failed === failed)
    expect(plan.scenarios).toHaveLength(6)
    const placed = (kind: string, failed: string) =>
      Object.fromEntries(scenario(kind, failed)!.vms.map((v) => [v.vm, v.to?.site ?? null]))
    expect(placed('site', 'site1')).toEqual({ 'site1-h1-vm1': 'site2' })
    expect(placed('site', 'site2')).toEqual({ 'site2-h1-vm1': 'site1' })
    expect(placed('host', peer.site3)).toEqual({ 'site3-h1-vm1': 'site1' })
    expect(scenario('site', 'site3')!.vms[0].to?.peerId).toBe(peer.site1)
    expect(plan.scenarios.every((s) => s.fits)).toBe(true)
    // The lab's VMs are in its own tier: the RPO they were protected with (5 s by default).
    expect(scenario('site', 'site2')!.vms[0].rpoMs).toBe(5000)
    // One copy each: every VM is named at risk as a single copy.
    expect(plan.atRisk.map((r) => `${r.vm}:${r.reason}`).sort()).toEqual([
      'site1-h1-vm1:single copy',
      'site2-h1-vm1:single copy',
      'site3-h1-vm1:single copy',
    ])
    expect(
      plan.replicaDisk
        .find((d) => d.peerId === peer.site1)
        ?.vms.map((v) => v.vm)
        .sort(),
    ).toEqual(['site2-h1-vm1', 'site3-h1-vm1'])
    const human = await cli(['plan', '--dir', lab.nodes[0].dir])
    expect(human.stdout).toMatch(/Failure scenarios: 6, 0 do not fit/)

    // A second lab up on a running lab's folder is refused with one line.
    const again = await cli(['lab', 'up', '--dir', dir, '--topology', 'hub', '--sites', '2'])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/^replimesh: a lab is running in .*lab down --dir/)

    // lab down: every node by its pid, then nothing left that names the lab folder.
    const down = await cli(['lab', 'down', '--dir', dir, '--json'], 120_000)
    expect(down.code, down.stderr).toBe(0)
    const stopped = (JSON.parse(down.stdout) as { stopped: Array<{ pid: number; result: string }> }).stopped
    expect(stopped.map((s) => s.pid).sort()).toEqual(lab.nodes.map((n) => n.pid).sort())
    expect(stopped.every((s) => s.result === 'stopped')).toBe(true)
    expect(lab.nodes.filter((n) => alive(n.pid))).toEqual([])
    expect(await processesUsing(dir)).toEqual([])
  })

  it('in the foreground until SIGTERM, then stops every node it started', { timeout: 240_000 }, async () => {
    const fgDir = join(root, 'fg')
    const child = spawn(
      process.execPath,
      [bin, 'lab', 'up', '--dir', fgDir, '--topology', 'mesh', '--sites', '2', '--vms', '0', '--json'],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)))
    try {
      await waitFor('the lab summary', () => stderr.includes('Press Ctrl-C'), 180_000, 200)
      const lab = JSON.parse(stdout) as LabRecord
      expect(lab.nodes).toHaveLength(2)
      expect(lab.nodes.every((n) => alive(n.pid))).toBe(true)
      child.kill('SIGTERM')
      expect(await exited).toBe(0)
      expect(lab.nodes.filter((n) => alive(n.pid))).toEqual([])
      expect(await processesUsing(fgDir)).toEqual([])
      const saved = JSON.parse(await readFile(join(fgDir, 'lab.json'), 'utf8')) as {
        stoppedAt: number | null
      }
      expect(saved.stoppedAt).not.toBeNull()
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL')
      const saved = await readFile(join(fgDir, 'lab.json'), 'utf8').catch(() => null)
      for (const n of saved ? (JSON.parse(saved) as LabRecord).nodes : [])
        if (alive(n.pid))
          try {
            process.kill(-n.pid, 'SIGKILL')
          } catch {}
    }
  })
})

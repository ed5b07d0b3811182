// The `vm` commands end to end: real CLI processes and a real node daemon (from dist/, so build
// first). Checks the "done when" through the command line and qemu-img.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hasTool, oracle, qemuImg } from '../../helpers/oracles.js'
import { isAlive, MiB, useBuildSnapshot, waitFor } from './helpers.js'

const HAS_QEMU = oracle('qemu-img', hasTool('qemu-img'))

let bin: () => string = () => {
  throw new Error('no build snapshot yet')
}

function cli(args: string[], input?: Buffer | string) {
  const r = spawnSync(process.execPath, [bin(), ...args], { input, encoding: 'utf8', timeout: 60_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe.runIf(HAS_QEMU)('replimesh vm (CLI, with and without a node)', () => {
  let dir: string
  let daemon: ChildProcess | null = null
  const build = useBuildSnapshot()
  bin = () => build().bin

  const startDaemon = async () => {
    daemon = spawn(process.execPath, [bin(), 'start', '--dir', dir], { stdio: 'ignore' })
    await waitFor(
      'the node API',
      async () => (await readFile(join(dir, 'api.json'), 'utf8').catch(() => '')) !== '',
      30_000,
    )
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'replimesh-vmcli-'))
  })
  afterAll(async () => {
    daemon?.kill('SIGKILL')
    const pid = Number(
      JSON.parse(await readFile(join(dir, 'vms/w1/guest.pid'), 'utf8').catch(() => '{}')).pid,
    )
    if (pid > 0 && isAlive(pid)) process.kill(pid, 'SIGKILL')
    await rm(dir, { recursive: true, force: true })
  })

  it('creates and lists a VM without a node; start says clearly that no node runs', () => {
    const created = cli(['vm', 'create', '--dir', dir, 'w1', '--size', '16M', '--disks', '2', '--json'])
    expect(created.stderr).toBe('')
    expect(created.code).toBe(0)
    expect(JSON.parse(created.stdout)).toMatchObject({ name: 'w1', state: 'stopped' })
    const ls = JSON.parse(cli(['vm', 'ls', '--dir', dir, '--json']).stdout)
    expect(ls).toHaveLength(1)
    expect(ls[0].disks).toEqual([
      { path: join(dir, 'vms/w1/disk0.vhdx'), format: 'vhdx', virtualSize: 16 * MiB },
      { path: join(dir, 'vms/w1/disk1.vhdx'), format: 'vhdx', virtualSize: 16 * MiB },
    ])
    expect(ls[0].nics[0]).toMatchObject({ name: 'eth0', switch: 'lab' })
    const start = cli(['vm', 'start', '--dir', dir, 'w1'])
    expect(start.code).toBe(1)
    expect(start.stderr).toMatch(/^replimesh: no node is running on /)
    expect(cli(['vm', 'create', '--dir', dir, 'w1', '--size', '16M']).stderr).toMatch(/already exists/)
    expect(cli(['vm', 'create', '--dir', dir, 'w2', '--size', 'lots']).code).toBe(2)
  })

  it('starts, writes through the guest, stops: qemu-img shows the bytes; ls and records follow', async () => {
    expect(
      cli(['mesh', 'create', '--dir', dir, '--site', 'lab', '--listen', '/ip4/127.0.0.1/tcp/0']).code,
    ).toBe(0)
    await startDaemon()
    const started = cli(['vm', 'start', '--dir', dir, 'w1', '--rate', '512K', '--json'])
    expect(started.stderr).toBe('')
    expect(JSON.parse(started.stdout).state).toBe('running')
    expect(JSON.parse(cli(['vm', 'ls', '--dir', dir, '--json']).stdout)[0].state).toBe('running')

    const data = Buffer.from('bytes written through vm write, at an odd offset. '.repeat(40))
    const offset = 5 * MiB + 17
    const written = cli(
      ['vm', 'write', '--dir', dir, 'w1', '--offset', String(offset), '--disk', '1', '--json'],
      data,
    )
    expect(written.code).toBe(0)
    expect(JSON.parse(written.stdout)).toMatchObject({ bytes: data.length, disk: 1, offset })
    const again = cli(['vm', 'start', '--dir', dir, 'w1'])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/already running/)

    expect(JSON.parse(cli(['vm', 'stop', '--dir', dir, 'w1', '--json']).stdout).state).toBe('stopped')
    expect(JSON.parse(cli(['vm', 'ls', '--dir', dir, '--json']).stdout)[0].state).toBe('stopped')
    const raw = join(dir, 'w1-disk1.raw')
    qemuImg(['convert', '-f', 'vhdx', '-O', 'raw', join(dir, 'vms/w1/disk1.vhdx'), raw])
    expect((await readFile(raw)).subarray(offset, offset + data.length).equals(data)).toBe(true)

    const records = JSON.parse(cli(['vm', 'records', '--dir', dir, 'w1', '--json']).stdout)
    expect(records.lastSeq).toBeGreaterThan(0)
    expect(records).toMatchObject({ startSeq: 0, startTime: 0 })
    const copy = join(dir, 'copy.vhdx')
    await copyFile(join(dir, 'vms/w1/disk0.vhdx'), copy)
    expect(JSON.parse(cli(['vm', 'records', '--disk-file', copy, '--json']).stdout)).toEqual(records)
  })

  it('kill -9 of the node takes its running guest down; the VM starts again on a new node', async () => {
    expect(cli(['vm', 'start', '--dir', dir, 'w1']).code).toBe(0)
    const records = () => JSON.parse(cli(['vm', 'records', '--dir', dir, 'w1', '--json']).stdout)
    const before = records()
    // The kill must land after a record this run wrote past the first read: right after it (a
    // fast machine), the new run rightly began from that same record and proved nothing.
    let seen = before
    await waitFor('the guest to write another record', () => {
      seen = records()
      return seen.lastSeq > before.lastSeq
    })
    const guestPid = Number(JSON.parse(await readFile(join(dir, 'vms/w1/guest.pid'), 'utf8')).pid)
    expect(isAlive(guestPid)).toBe(true)
    daemon?.kill('SIGKILL')
    await waitFor('the guest to die with its node', () => !isAlive(guestPid), 10_000)
    for (const d of ['disk0.vhdx', 'disk1.vhdx'])
      expect(qemuImg(['check', '-f', 'vhdx', join(dir, 'vms/w1', d)])).toContain('No errors')
    await rm(join(dir, 'api.json'), { force: true }) // a killed node leaves its address behind
    await startDaemon()
    expect(cli(['vm', 'start', '--dir', dir, 'w1']).code).toBe(0)
    expect(cli(['vm', 'stop', '--dir', dir, 'w1']).code).toBe(0)
    const after = records()
    // No record the guest had written before the kill is lost.
    expect(after.startSeq).toBeGreaterThanOrEqual(seen.lastSeq)
    daemon?.kill('SIGTERM')
  })
})

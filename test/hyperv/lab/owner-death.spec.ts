// Guests die with their node: kill -9 of the owning process takes the guest down, the disks stay
// valid, and a later start works. A node that finds a guest of an earlier run alive stops it.
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createLabHypervisor, readDiskRecords } from '../../../src/hyperv/index.js'
import { GuestProcess } from '../../../src/hyperv/lab/guest-process.js'
import { hasTool, oracle, qemuImg } from '../../helpers/oracles.js'
import { isAlive, type LabHost, MiB, makeLabHost, sleep, useBuildSnapshot, waitFor } from './helpers.js'

const HAS_QEMU = oracle('qemu-img', hasTool('qemu-img'))
const OWNER = fileURLToPath(new URL('./fixtures/owner.mjs', import.meta.url))

describe('guests and their node', () => {
  const build = useBuildSnapshot()
  let host: LabHost
  let owner: ChildProcess | null = null
  const strays: number[] = []
  beforeEach(async () => {
    host = await makeLabHost(build().guestScript)
  })
  afterEach(async () => {
    owner?.kill('SIGKILL')
    for (const pid of strays) if (isAlive(pid)) process.kill(pid, 'SIGKILL')
    await host.cleanup()
  })

  it.runIf(HAS_QEMU)(
    'kill -9 of the owning process stops its guest; the VM starts again afterwards',
    async () => {
      await host.hv.createVm('orphan', { sizeBytes: 16 * MiB, disks: 2 })
      owner = spawn(process.execPath, [OWNER, build().hypervIndex, host.vmsDir, 'orphan'], {
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      const line = await Promise.race([
        new Promise<string>((resolve) =>
          createInterface({ input: owner?.stdout as NodeJS.ReadableStream }).once('line', resolve),
        ),
        sleep(20_000).then(() => 'timeout'),
      ])
      const { guestPid, reference } = JSON.parse(line)
      strays.push(guestPid)
      expect(isAlive(guestPid)).toBe(true)
      // The guest runs: a record on each disk (records mark the dirty maps the restart diffs from).
      const disks = (await host.hv.getVm('orphan')).disks.map((d) => d.path)
      await waitFor('a record on each disk', async () => {
        const records = await Promise.all(disks.map((d) => readDiskRecords(d).catch(() => null)))
        return records.every((r) => r !== null && r.lastSeq > 0)
      })
      owner.kill('SIGKILL')
      await waitFor('the guest to exit after its node was killed', () => !isAlive(guestPid), 10_000)

      const vm = await host.hv.getVm('orphan')
      expect(vm.state).toBe('stopped')
      for (const d of vm.disks) expect(qemuImg(['check', '-f', 'vhdx', d.path])).toContain('No errors')
      const left = await readDiskRecords(vm.disks[0].path)
      expect(left.lastSeq).toBeGreaterThan(0)

      await host.hv.startVm('orphan')
      // The guest saw its node vanish and saved its dirty maps: the old reference still diffs.
      const point = await host.hv.createPoint('orphan', { sinceReference: reference })
      for (const d of point.disks) expect(d.changed?.length).toBeGreaterThan(0)
      await host.hv.releasePoint(point)
      await host.hv.stopVm('orphan')
      const next = await readDiskRecords(vm.disks[0].path)
      expect(next.startSeq).toBe(left.lastSeq)
      expect(next.lastSeq).toBeGreaterThan(left.lastSeq)
    },
  )

  it('a node starting finds a guest of an earlier run alive and stops it', async () => {
    const { dir } = await host.hv.createVm('stale', { sizeBytes: 8 * MiB })
    // A guest whose parent is not the hypervisor about to start (as if left by an earlier run).
    const stale = await GuestProcess.spawn('stale', dir, { script: build().guestScript })
    strays.push(stale.pid)
    expect((await host.hv.getVm('stale')).state).toBe('running')
    const fresh = createLabHypervisor({ vmsDir: host.vmsDir, guestScript: build().guestScript })
    await fresh.start()
    await stale.exited
    expect(isAlive(stale.pid)).toBe(false)
    expect((await fresh.getVm('stale')).state).toBe('stopped')
    await fresh.startVm('stale')
    expect((await fresh.getVm('stale')).state).toBe('running')
    await fresh.stop()
    // The new run continued the stream the stale guest wrote.
    expect((await readDiskRecords(join(dir, 'disk0.vhdx'))).startSeq).toBeGreaterThan(0)
  })
})

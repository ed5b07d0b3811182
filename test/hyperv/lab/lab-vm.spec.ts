// A lab VM's life through the TypeScript API, with real guest processes and qemu-img as the
// independent reader of the disks it leaves.
import { copyFile, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  GuestError,
  GuestWriteError,
  readDiskRecords,
  VmConfigError,
  VmStateError,
} from '../../../src/hyperv/index.js'
import { hasTool, oracle, qemuImg } from '../../helpers/oracles.js'
import { type LabHost, MiB, makeLabHost, sleep, useBuildSnapshot, waitFor } from './helpers.js'

const HAS_QEMU = oracle('qemu-img', hasTool('qemu-img'))

describe('lab VM life cycle', () => {
  const build = useBuildSnapshot()
  let host: LabHost
  beforeEach(async () => {
    host = await makeLabHost(build().guestScript)
  })
  afterEach(async () => {
    await host.cleanup()
  })

  it.runIf(HAS_QEMU)(
    'created, started, written, stopped: qemu-img reads the bytes at the offset',
    async () => {
      const { hv } = host
      await hv.createVm('web1', { sizeBytes: 16 * MiB, disks: 2 })
      await hv.startVm('web1')
      const data = Buffer.from('replimesh lab write \u2713 '.repeat(300))
      const offset = 3 * MiB + 123
      await hv.writeVm('web1', 1, offset, data)
      await hv.stopVm('web1')

      const vm = await hv.getVm('web1')
      expect(vm.state).toBe('stopped')
      expect(vm.disks.map((d) => [d.format, d.virtualSize])).toEqual([
        ['vhdx', 16 * MiB],
        ['vhdx', 16 * MiB],
      ])
      for (const d of vm.disks) expect(qemuImg(['check', '-f', 'vhdx', d.path])).toContain('No errors')
      const raw = join(host.dir, 'disk1.raw')
      qemuImg(['convert', '-f', 'vhdx', '-O', 'raw', vm.disks[1].path, raw])
      const bytes = await readFile(raw)
      expect(bytes.length).toBe(16 * MiB)
      expect(bytes.subarray(offset, offset + data.length).equals(data)).toBe(true)
      expect(bytes.subarray(offset - 512, offset).every((b) => b === 0)).toBe(true)
    },
  )

  it('the record stream: each run continues the sequence and remembers where it began', async () => {
    const { hv } = host
    await hv.createVm('rec', { sizeBytes: 8 * MiB, recordIntervalMs: 20 })
    const disk0 = (await hv.getVm('rec')).disks[0].path
    expect(await readDiskRecords(disk0)).toEqual({ lastSeq: 0, lastTime: 0, startSeq: 0, startTime: 0 })

    const t0 = Date.now()
    await hv.startVm('rec')
    const written = async () => (await hv.vmStatus('rec')).records.lastSeq
    await waitFor('a few records written', async () => (await written()) > 5)
    // A copy taken while the VM runs reports the last record it holds.
    const vm = await hv.getVm('rec')
    const before = (await hv.vmStatus('rec')).seq
    const copy = join(host.dir, 'copy.vhdx')
    await copyFile(disk0, copy)
    const after = (await hv.vmStatus('rec')).seq
    const copied = await readDiskRecords(copy)
    expect(copied.lastSeq).toBeGreaterThanOrEqual(before - 2)
    expect(copied.lastSeq).toBeLessThanOrEqual(after)
    await hv.stopVm('rec')

    const first = await readDiskRecords(disk0)
    expect(first.lastSeq).toBeGreaterThan(5)
    expect(first.lastTime).toBeGreaterThanOrEqual(t0)
    expect(first).toMatchObject({ startSeq: 0, startTime: 0 })
    // Every disk carries the same stream.
    expect(await readDiskRecords(vm.disks[0].path)).toEqual(first)

    await hv.startVm('rec')
    await waitFor('a record of the second run written', async () => (await written()) > first.lastSeq)
    await hv.stopVm('rec')
    const second = await readDiskRecords(disk0)
    expect(second.startSeq).toBe(first.lastSeq)
    expect(second.startTime).toBe(first.lastTime)
    expect(second.lastSeq).toBeGreaterThan(first.lastSeq)
  })

  it('gives clear errors: bad vm.json, missing disk, writes it refuses, a VM that is not running', async () => {
    const { hv } = host
    const { dir } = await hv.createVm('bad', { sizeBytes: 8 * MiB })
    await expect(hv.writeVm('bad', 0, 0, Buffer.alloc(1))).rejects.toBeInstanceOf(VmStateError)

    await hv.startVm('bad')
    const region = await hv.writeVm('bad', 0, 8 * MiB - 1000, Buffer.alloc(10)).catch((e) => e)
    expect(region).toBeInstanceOf(GuestWriteError)
    expect(region.message).toMatch(/record stream/)
    await expect(hv.writeVm('bad', 3, 0, Buffer.alloc(1))).rejects.toThrow(/disk 3 does not exist/)
    await hv.stopVm('bad')

    const vmJson = join(dir, 'vm.json')
    const good = await readFile(vmJson, 'utf8')
    await writeFile(vmJson, good.replace('"cpus": 1', '"cpus": "many"'))
    const err = await hv.getVm('bad').catch((e) => e)
    expect(err).toBeInstanceOf(VmConfigError)
    expect(err.message).toContain(vmJson)
    expect(err.message).toContain('cpus')
    await writeFile(vmJson, '{ not json')
    await expect(hv.startVm('bad')).rejects.toThrow(/not JSON/)
    expect((await hv.listVms()).map((v) => v.name)).not.toContain('bad') // skipped, not fatal

    await writeFile(vmJson, good)
    await rm(join(dir, 'disk0.vhdx'))
    const missing = await hv.startVm('bad').catch((e) => e)
    expect(missing).toBeInstanceOf(GuestError)
    expect(missing.message).toContain('disk0.vhdx')
    expect((await hv.getVm('bad')).state).toBe('stopped')
  })

  it('a second start refuses while the first still runs, also from another node process', async () => {
    const { hv } = host
    await hv.createVm('twice', { sizeBytes: 8 * MiB })
    await hv.startVm('twice')
    await expect(hv.startVm('twice')).rejects.toBeInstanceOf(VmStateError)
    // A second hypervisor on the same folder (without start(), which would stop the guest).
    const { createLabHypervisor } = await import('../../../src/hyperv/index.js')
    const other = createLabHypervisor({ vmsDir: host.vmsDir, guestScript: build().guestScript })
    expect((await other.getVm('twice')).state).toBe('running')
    await expect(other.startVm('twice')).rejects.toBeInstanceOf(VmStateError)
    await hv.stopVm('twice')
    await waitFor('stopped', async () => (await other.getVm('twice')).state === 'stopped')
  })

  it('a gated start (a failover waiting out a lease): the guest loads meanwhile but runs only after the gate', async () => {
    const { hv } = host
    await hv.createVm('held', { sizeBytes: 8 * MiB, recordIntervalMs: 20 })
    const vmDir = join(host.vmsDir, 'held')
    const disk0 = (await hv.getVm('held')).disks[0].path
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    const pidOf = async () => JSON.parse(await readFile(join(vmDir, 'guest.pid'), 'utf8')).pid as number

    // The gate is entered once the guest process has its disks open; while it waits, the VM is
    // 'starting' and writes no record. Its first record comes after the gate resolved.
    let heldPid = 0
    await hv.startVm('held', {
      gate: async () => {
        heldPid = await pidOf()
        expect(alive(heldPid)).toBe(true)
        expect((await hv.getVm('held')).state).toBe('starting')
        // Time is the subject here: no record appears while the gate holds (15 record intervals).
        await sleep(300)
        expect((await readDiskRecords(disk0)).lastSeq).toBe(0)
      },
    })
    expect((await hv.getVm('held')).state).toBe('running')
    expect(await pidOf()).toBe(heldPid)
    await waitFor('records after the gate', async () => (await hv.vmStatus('held')).records.lastSeq > 2)
    await hv.stopVm('held')
    const run = await readDiskRecords(disk0)
    expect(run.lastSeq).toBeGreaterThan(2)
    expect(run.startSeq).toBe(0)

    // A gate that rejects: startVm rejects with its error, the guest is gone, nothing was written.
    await expect(
      hv.startVm('held', {
        gate: async () => {
          heldPid = await pidOf()
          throw new Error('a newer epoch was promised meanwhile')
        },
      }),
    ).rejects.toThrow('a newer epoch was promised meanwhile')
    expect(alive(heldPid)).toBe(false)
    expect((await hv.getVm('held')).state).toBe('stopped')
    expect(await readDiskRecords(disk0)).toEqual(run)
    // A guest that dies while its start waits at the gate: startVm says so once the gate ends.
    const died = await hv
      .startVm('held', {
        gate: async () => {
          heldPid = await pidOf()
          process.kill(heldPid, 'SIGKILL')
          await waitFor('the guest is gone', async () => !alive(heldPid))
        },
      })
      .catch((e: Error) => e)
    expect(died).toBeInstanceOf(GuestError)
    // Said as soon as the gate ended, not by the 20 s ready timeout (whose message this is not).
    expect((died as Error).message).not.toMatch(/did not (become ready|load) within/)
    expect((await hv.getVm('held')).state).toBe('stopped')
    expect(await readDiskRecords(disk0)).toEqual(run)
    // The rejected starts left the stream as it was: the next run continues it.
    await hv.startVm('held')
    await hv.stopVm('held')
    const next = await readDiskRecords(disk0)
    expect(next.startSeq).toBe(run.lastSeq)
  })

  it('re-IP rewrites vm.json addresses; register keeps disks where they are; events append', async () => {
    const { hv } = host
    await hv.createVm('net', {
      sizeBytes: 8 * MiB,
      workload: { rateBytesPerSec: 12345 },
      recordIntervalMs: 70,
    })
    const nic = (await hv.getVm('net')).nics[0]
    await hv.applyNetworkMapping('net', [
      { nic: nic.name, addresses: ['192.168.50.7/24'], gateway: '192.168.50.1' },
    ])
    const after = await hv.getVm('net')
    expect(after.nics[0]).toMatchObject({
      addresses: ['192.168.50.7/24'],
      gateway: '192.168.50.1',
      switch: 'lab',
    })
    const json = JSON.parse(await readFile(after.configPath as string, 'utf8'))
    expect(json.nics[0].addresses).toEqual(['192.168.50.7/24'])

    const copy = await hv.registerVm(after, [after.disks[0].path], { name: 'net-test', newId: true })
    expect(copy.disks[0].path).toBe(after.disks[0].path)
    expect(copy.nics[0].mac).not.toBe(nic.mac)
    // The lab's settings travel with the replicated configuration (JSON, as in a point header).
    const carried = await hv.registerVm(JSON.parse(JSON.stringify(after)), [after.disks[0].path], {
      name: 'net-failover',
      newId: true,
    })
    const carriedJson = JSON.parse(await readFile(carried.configPath as string, 'utf8'))
    expect(carriedJson.workload.rateBytesPerSec).toBe(12345)
    expect(carriedJson.recordIntervalMs).toBe(70)
    await hv.writeEvent({ level: 'error', eventId: 4100, message: 'site down' })
    expect((await host.readEvents()).at(-1)).toMatchObject({
      level: 'error',
      eventId: 4100,
      source: 'replimesh',
    })
  })
})

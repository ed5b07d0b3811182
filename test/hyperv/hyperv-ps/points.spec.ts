// The RCT point cycle of the Hyper-V adapter against the fake powershell host: full points,
// exact changed ranges since a reference, GetVirtualDiskChanges resumed on ProcessedByteLength,
// the fallbacks to changed=null, cleanup after failures and after a crashed run.
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { HyperVAccessDeniedError, HyperVError, HyperVJobError } from '../../../src/hyperv/hyperv-ps/index.js'
import { encodeReference } from '../../../src/hyperv/hyperv-ps/reference.js'
import { FakeHost, type Json, WEB01 } from './fake-host.js'

const GiB = 1024 ** 3
let host: FakeHost

beforeEach(() => {
  host = new FakeHost()
})
afterEach(async () => {
  const rejected = host.rejections()
  await host.cleanup()
  expect(rejected).toEqual([])
})

describe('points and change tracking', () => {
  it('a full point, then exactly the ranges written since its reference', async () => {
    const hv = host.adapter()
    const full = await hv.createPoint('web01', { consistency: 'application' })
    expect(full).toMatchObject({ vmId: WEB01, time: 1_750_000_000_000, consistency: 'application' })
    expect(full.disks).toEqual([
      { index: 0, virtualSize: 64 * GiB, changed: null },
      { index: 1, virtualSize: 100 * GiB, changed: null },
    ])
    const created = host.calls('create-point')[0]
    expect(created.params).toMatchObject({ vm: 'web01', consistency: 1 })
    // During the point the VM writes to AVHDX children of the frozen files.
    const during = await hv.getVm('web01')
    expect(during.disks[0].path).toMatch(/\.avhdx$/)
    expect(during.disks[0].parents[0]).toBe('C:\\VMs\\web01\\web01-os.vhdx')
    host.guestWrite('web01', 0, 5 * GiB, 4096) // lands after the freeze: next point's
    const ref = await hv.releasePoint(full)
    expect((await hv.getVm('web01')).disks[0].path).toBe('C:\\VMs\\web01\\web01-os.vhdx')

    host.guestWrite('web01', 0, 1_048_576, 65_536)
    host.guestWrite('web01', 0, 1_048_576 + 65_536, 4096)
    host.guestWrite('web01', 1, 99 * GiB, 512)
    const delta = await hv.createPoint('web01', { sinceReference: ref })
    expect(delta.consistency).toBe('crash')
    expect(delta.disks.map((d) => d.changed)).toEqual([
      [
        { offset: 1_048_576, length: 69_632 },
        { offset: 5 * GiB, length: 4096 },
      ],
      [{ offset: 99 * GiB, length: 512 }],
    ])
    const q = host.calls('disk-changes')[0].params.requests
    expect(q).toEqual([
      {
        path: 'C:\\VMs\\web01\\web01-os.vhdx',
        limitId: expect.stringMatching(/^rctX:/),
        offset: 0,
        length: 64 * GiB,
      },
      {
        path: 'C:\\VMs\\web01\\web01-data.vhdx',
        limitId: expect.stringMatching(/^rctX:/),
        offset: 0,
        length: 100 * GiB,
      },
    ])
    const ref2 = await hv.releasePoint(delta)
    const again = await hv.createPoint('web01', { sinceReference: ref2 })
    expect(again.disks.map((d) => d.changed)).toEqual([[], []])
    await hv.releasePoint(again)
    // Older reference points are destroyed; the newest and the one it was built from stay.
    expect(host.read().referencePoints.length).toBeLessThanOrEqual(2)
    expect(host.read().snapshots).toEqual([])
  })

  it('loops GetVirtualDiskChanges on ProcessedByteLength across scripts', async () => {
    const hv = host.adapter()
    const ref = await hv.releasePoint(await hv.createPoint('web01'))
    host.update((s) => {
      s.changeChunkBytes = 16 * GiB
    })
    host.guestWrite('web01', 0, 16 * GiB - 1024, 2048) // straddles the first chunk's end
    host.guestWrite('web01', 1, 90 * GiB, 1)
    const p = await hv.createPoint('web01', { sinceReference: ref })
    expect(p.disks[0].changed).toEqual([{ offset: 16 * GiB - 1024, length: 2048 }])
    expect(p.disks[1].changed).toEqual([{ offset: 90 * GiB, length: 1 }])
    const rounds = host
      .calls('disk-changes')
      .map((c: Json) => c.params.requests.map((r: Json) => r.offset / GiB))
    expect(rounds).toEqual([[0, 0], [16, 16], [32, 32], [48, 48], [64], [80], [96]])
    await hv.releasePoint(p)
  })

  it('falls back to changed=null: configuration 5.0, unknown RCT id, another VM’s or a foreign reference', async () => {
    const hv = host.adapter()
    const legacyRef = await hv.releasePoint(await hv.createPoint('legacy01'))
    expect(host.read().referencePoints).toEqual([])
    const legacy = await hv.createPoint('legacy01', { sinceReference: legacyRef })
    expect(legacy.disks[0].changed).toBeNull()
    expect(host.read().snapshots[0].type).toBe(2)
    await hv.releasePoint(legacy)
    expect(host.calls('disk-changes')).toEqual([])

    const webRef = await hv.releasePoint(await hv.createPoint('web01'))
    const forged = encodeReference({
      vmId: WEB01,
      referencePointId: null,
      disks: [
        { index: 0, rctId: 'rctX:not-a-real-id:1' },
        { index: 1, rctId: JSON.parse(Buffer.from(webRef.slice(7), 'base64url').toString()).disks[1].rctId },
      ],
    })
    const p = await hv.createPoint('web01', { sinceReference: forged })
    expect(p.disks[0].changed).toBeNull()
    expect(p.disks[1].changed).toEqual([])
    await hv.releasePoint(p)
    const other = await hv.createPoint('db01', { sinceReference: webRef, consistency: 'application' })
    expect(other.disks[0].changed).toBeNull()
    expect(other.consistency).toBe('crash') // db01's VSS integration service is off
    await hv.releasePoint(other)
    const foreign = await hv.createPoint('web01', { sinceReference: 'lab1:unknown' })
    expect(foreign.disks.map((d) => d.changed)).toEqual([null, null])
    await hv.releasePoint(foreign)
  })

  it('removes the checkpoint when reading changes fails, and names a failed WMI job', async () => {
    const hv = host.adapter()
    const ref = await hv.releasePoint(await hv.createPoint('web01'))
    host.fault('disk-changes', {
      error: 'Access is denied.',
      cmdlet: 'Get-WmiObject',
      category: 'NotSpecified',
    })
    const err = await hv.createPoint('web01', { sinceReference: ref }).catch((e) => e)
    expect(err).toBeInstanceOf(HyperVAccessDeniedError)
    expect(host.read().snapshots).toEqual([])
    expect((await hv.getVm('web01')).disks[0].path).toBe('C:\\VMs\\web01\\web01-os.vhdx')

    const p = await hv.createPoint('web01')
    host.fault('release-point:job', { returnValue: 32768, message: 'The merge failed.' })
    const job = await hv.releasePoint(p).catch((e) => e)
    expect(job).toBeInstanceOf(HyperVJobError)
    expect(job).toMatchObject({ method: 'ConvertToReferencePoint', returnValue: 32768, jobState: 10 })
    expect(job.message).toBe(
      'ConvertToReferencePoint: WMI return code 32768 (Failed), job state 10: The merge failed.',
    )
    await expect(hv.openPointDisk({ ...p, id: 'hvpoint:nope' }, 0)).rejects.toBeInstanceOf(HyperVError)
    // An operator deleted the checkpoint meanwhile: one clear error naming it.
    host.update((s) => {
      s.snapshots = []
    })
    await expect(hv.releasePoint(p)).rejects.toThrow(
      /release-point: checkpoint 'Microsoft:[0-9A-F-]+' of VM 'web01' no longer exists/,
    )
  })

  it('a restarted adapter removes the checkpoints an earlier run left, and deltas stay exact', async () => {
    const first = host.adapter()
    const ref = await first.releasePoint(await first.createPoint('web01'))
    host.guestWrite('web01', 0, 8192, 512)
    await first.createPoint('web01', { sinceReference: ref }) // then the node "crashes"
    expect(host.read().snapshots).toHaveLength(1)
    expect(host.calls('create-point')[1].params.marker).toBe('replimesh point')
    const warnings: object[] = []
    const second = host.adapter({ logger: { info() {}, warn: (o: object) => warnings.push(o) } })
    await second.start()
    expect(host.read().snapshots).toEqual([])
    expect((await second.getVm('web01')).disks[0].path).toBe('C:\\VMs\\web01\\web01-os.vhdx')
    expect(warnings).toEqual([
      { vmId: WEB01.toUpperCase(), checkpoint: expect.stringMatching(/^Microsoft:/) },
    ])
    // The old reference still holds: the abandoned point's writes come in the next delta.
    const p = await second.createPoint('web01', { sinceReference: ref })
    expect(p.disks[0].changed).toEqual([{ offset: 8192, length: 512 }])
    await second.releasePoint(p)
  })

  it('a second recovery checkpoint of the same VM is a WMI error, not a crash', async () => {
    const hv = host.adapter()
    const p = await hv.createPoint('web01')
    const err = await hv.createPoint('web01').catch((e) => e)
    expect(err).toBeInstanceOf(HyperVJobError)
    expect(err.returnValue).toBe(32775)
    await hv.releasePoint(p)
  })
})

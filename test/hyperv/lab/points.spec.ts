// Consistency points of lab VMs: one frozen instant across all disks while the guest keeps
// writing, changed ranges checked byte by byte against the frozen images, persistence of the
// dirty map across a node restart, and the "unknown -> read everything" fallback after a crash.
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { ChangedRange, ConsistencyPoint, LabHypervisor } from '../../../src/hyperv/index.js'
import { RECORD_REGION_BYTES } from '../../../src/hyperv/index.js'
import { newestRecord } from '../../../src/hyperv/lab/records.js'
import { hasTool, oracle, qemuImg } from '../../helpers/oracles.js'
import { type LabHost, MiB, makeLabHost, useBuildSnapshot, waitFor } from './helpers.js'

const HAS_QEMU = oracle('qemu-img', hasTool('qemu-img'))
const BLOCK = 64 * 1024

async function readPoint(hv: LabHypervisor, point: ConsistencyPoint): Promise<Buffer[]> {
  const out: Buffer[] = []
  for (const d of point.disks) {
    const view = await hv.openPointDisk(point, d.index)
    const buf = Buffer.alloc(view.virtualSize)
    await view.read(buf, 0)
    await view.close()
    out.push(buf)
  }
  return out
}

/** Tracking blocks whose bytes differ between two images. */
function differingBlocks(a: Buffer, b: Buffer): Set<number> {
  const out = new Set<number>()
  for (let off = 0; off < a.length; off += BLOCK)
    if (!a.subarray(off, off + BLOCK).equals(b.subarray(off, off + BLOCK))) out.add(off / BLOCK)
  return out
}

function blocksOf(ranges: ChangedRange[]): Set<number> {
  const out = new Set<number>()
  for (const r of ranges) {
    expect(r.offset % BLOCK).toBe(0)
    for (let off = r.offset; off < r.offset + r.length; off += BLOCK) out.add(off / BLOCK)
  }
  return out
}

/** The map covers every changed byte (no block missing) and nothing that did not change. */
function expectExactChanges(before: Buffer[], after: Buffer[], point: ConsistencyPoint): number {
  let changedBlocks = 0
  for (const d of point.disks) {
    expect(d.changed).not.toBeNull()
    const want = differingBlocks(before[d.index], after[d.index])
    const got = blocksOf(d.changed ?? [])
    expect([...want].filter((b) => !got.has(b))).toEqual([]) // every write covered
    expect([...got].filter((b) => !want.has(b))).toEqual([]) // and little else: nothing unchanged
    changedBlocks += want.size
  }
  return changedBlocks
}

/** Waits until the guest's workload completed `bytes` more writes than when called. */
async function workloadWrites(hv: LabHypervisor, vm: string, bytes: number): Promise<void> {
  const base = (await hv.vmStatus(vm)).bytesWritten
  await waitFor(
    `${bytes} more bytes of ${vm}'s workload`,
    async () => (await hv.vmStatus(vm)).bytesWritten >= base + bytes,
  )
}

describe('lab consistency points', () => {
  const build = useBuildSnapshot()
  let host: LabHost
  beforeEach(async () => {
    host = await makeLabHost(build().guestScript)
  })
  afterEach(async () => {
    await host.cleanup()
  })

  it('the dirty map equals the byte-level difference of two points, and survives a node restart', async () => {
    let hv = host.hv
    await hv.createVm('dm', {
      sizeBytes: 8 * MiB,
      disks: 2,
      workload: { rateBytesPerSec: 2 * MiB, blockBytes: 4096, hotSetFraction: 0.5 },
    })
    await hv.startVm('dm')
    const p0 = await hv.createPoint('dm')
    const img0 = await readPoint(hv, p0)
    const ref0 = await hv.releasePoint(p0)
    await workloadWrites(hv, 'dm', 512 * 1024) // 128 writes of 4 KiB over 128 blocks
    const p1 = await hv.createPoint('dm', { sinceReference: ref0 })
    const img1 = await readPoint(hv, p1)
    const changed1 = expectExactChanges(img0, img1, p1)
    expect(changed1).toBeGreaterThan(10)
    const ref1 = await hv.releasePoint(p1)

    // More writes, a clean stop, a new node process on the same folder, more writes.
    await workloadWrites(hv, 'dm', 256 * 1024)
    await hv.stopVm('dm')
    hv = await host.restart()
    await hv.startVm('dm')
    await workloadWrites(hv, 'dm', 256 * 1024)
    const p2 = await hv.createPoint('dm', { sinceReference: ref1 })
    const img2 = await readPoint(hv, p2)
    expect(expectExactChanges(img1, img2, p2)).toBeGreaterThan(10)
    const ref2 = await hv.releasePoint(p2)

    // A guest killed outright cannot vouch for its map: the next point says "unknown".
    await hv.stopVm('dm', { force: true })
    await hv.startVm('dm')
    const p3 = await hv.createPoint('dm', { sinceReference: ref2 })
    expect(p3.disks.map((d) => d.changed)).toEqual([null, null])
    await hv.releasePoint(p3)
    await hv.stopVm('dm')
  })

  it('points of a stopped VM diff from the maps its guest saved, and the next run stays tracked', async () => {
    const { hv } = host
    await hv.createVm('st', { sizeBytes: 8 * MiB, disks: 2, workload: { rateBytesPerSec: MiB } })
    await hv.startVm('st')
    const p0 = await hv.createPoint('st')
    const img0 = await readPoint(hv, p0)
    const ref0 = await hv.releasePoint(p0)
    await workloadWrites(hv, 'st', 256 * 1024)
    await hv.stopVm('st')
    const p1 = await hv.createPoint('st', { sinceReference: ref0 })
    const img1 = await readPoint(hv, p1)
    expect(expectExactChanges(img0, img1, p1)).toBeGreaterThan(3)
    const ref1 = await hv.releasePoint(p1)
    // Nothing ran in between: nothing changed.
    const p2 = await hv.createPoint('st', { sinceReference: ref1 })
    expect(p2.disks.map((d) => d.changed)).toEqual([[], []])
    const ref2 = await hv.releasePoint(p2)
    await hv.startVm('st', { workload: { enabled: false } })
    await hv.writeVm('st', 1, 3 * MiB, Buffer.alloc(100, 7))
    await hv.stopVm('st')
    const p3 = await hv.createPoint('st', { sinceReference: ref2 })
    const img3 = await readPoint(hv, p3)
    expectExactChanges(img1, img3, p3)
    expect(blocksOf(p3.disks[1].changed ?? []).has((3 * MiB) / BLOCK)).toBe(true)
    await hv.releasePoint(p3)
  })

  it('a point is one instant on all disks while the guest writes heavily', async () => {
    const { hv } = host
    await hv.createVm('fz', {
      sizeBytes: 8 * MiB,
      disks: 2,
      recordIntervalMs: 5,
      workload: { rateBytesPerSec: 4 * MiB, blockBytes: 4096, hotSetFraction: 0.5 },
    })
    await hv.startVm('fz')
    // An outside writer: counter k goes to disk 0, then to disk 1, one after the other (above
    // the workload's hot set, so only this writer touches it).
    const at = 7 * MiB - 4096
    let k = 0
    let writing = true
    const writer = (async () => {
      while (writing) {
        k++
        const b = Buffer.alloc(512)
        b.writeUInt32LE(k, 0)
        await hv.writeVm('fz', 0, at, b)
        await hv.writeVm('fz', 1, at, b)
      }
    })()
    try {
      let lastSeq = 0
      for (let round = 0; round < 3; round++) {
        await waitFor('a newer record', async () => (await hv.vmStatus('fz')).records.lastSeq > lastSeq)
        const p = await hv.createPoint('fz')
        const first = await readPoint(hv, p)
        const r0 = newestRecord(first[0].subarray(first[0].length - RECORD_REGION_BYTES))
        const r1 = newestRecord(first[1].subarray(first[1].length - RECORD_REGION_BYTES))
        expect(r0?.seq).toBeGreaterThan(lastSeq)
        expect(r1?.seq).toBe(r0?.seq) // both disks stop at the same record
        const c0 = first[0].readUInt32LE(at)
        const c1 = first[1].readUInt32LE(at)
        expect([c0, c0 - 1]).toContain(c1) // never a later write on disk 1 than on disk 0
        lastSeq = r0?.seq ?? 0
        // The guest goes on writing (into the journal); the frozen view does not move.
        await waitFor('writes into the journal during the freeze', async () => {
          const status = await hv.vmStatus('fz')
          expect(status.frozen).toBe(true)
          return status.journalBytes > 16 * 1024
        })
        const again = await readPoint(hv, p)
        expect(again[0].equals(first[0]) && again[1].equals(first[1])).toBe(true)
        await hv.releasePoint(p)
      }
    } finally {
      writing = false
      await writer
    }
    const counter = k
    await hv.stopVm('fz')
    // After release the journal was merged: the live disks hold the newest writes.
    const p = await hv.createPoint('fz') // a stopped VM's point: full, read from the files
    const last = await readPoint(hv, p)
    await hv.releasePoint(p)
    expect(last[0].readUInt32LE(at)).toBe(counter)
    expect(last[1].readUInt32LE(at)).toBe(counter)
  })

  it.runIf(HAS_QEMU)(
    'a guest killed while frozen loses no completed write; the disks stay valid VHDX',
    async () => {
      const { hv } = host
      // The workload stays below 1.75 MiB; the checked write is at 2 MiB.
      await hv.createVm('cr', {
        sizeBytes: 8 * MiB,
        disks: 2,
        workload: { rateBytesPerSec: MiB, hotSetFraction: 0.25 },
      })
      await hv.startVm('cr')
      const p = await hv.createPoint('cr')
      const data = Buffer.alloc(8192, 0x5a)
      await hv.writeVm('cr', 1, 2 * MiB, data) // lands in the journal
      const frozen = await readPoint(hv, p)
      expect(frozen[1].subarray(2 * MiB, 2 * MiB + 8192).equals(data)).toBe(false)
      await hv.stopVm('cr', { force: true }) // pulled plug, mid-freeze
      expect(await hv.releasePoint(p)).toBe('lab1:unknown')
      await hv.startVm('cr') // replays the journal
      await hv.stopVm('cr')
      const vm = await hv.getVm('cr')
      const raw = join(host.dir, 'cr1.raw')
      qemuImg(['convert', '-f', 'vhdx', '-O', 'raw', vm.disks[1].path, raw])
      const { readFile } = await import('node:fs/promises')
      expect((await readFile(raw)).subarray(2 * MiB, 2 * MiB + 8192).equals(data)).toBe(true)
      for (const d of vm.disks) expect(qemuImg(['check', '-f', 'vhdx', d.path])).toContain('No errors')
    },
  )
})

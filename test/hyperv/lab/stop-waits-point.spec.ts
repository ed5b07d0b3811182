// An operator's `vm stop` / `vm start` while replication holds a consistency point: not refused,
// it waits for the release (and no new point opens meanwhile); bounded, with a clear error when
// the point is never released. Real guest processes from a snapshot of dist/.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { readDiskRecords, VmStateError } from '../../../src/hyperv/index.js'
import { type LabHost, MiB, makeLabHost, useBuildSnapshot, waitFor } from './helpers.js'

/** Settles a promise into a flag the test can look at without awaiting it. */
function track<T>(p: Promise<T>) {
  const t = { done: false, error: null as Error | null, promise: p }
  p.then(
    () => {
      t.done = true
    },
    (err: Error) => {
      t.done = true
      t.error = err
    },
  )
  return t
}

describe('lab stop and start wait for an open point', () => {
  const build = useBuildSnapshot()
  let host: LabHost | null = null
  /** What the hypervisor logged: a stop or start that waits for a point says so once it does. */
  let logged: string[] = []
  const logger = { info: (_: object, msg?: string) => logged.push(msg ?? ''), warn() {} }
  const waiting = (op: 'stop' | 'start') =>
    waitFor(`the ${op} to wait for the open point`, () => logged.includes(`${op} waits for an open point`))

  afterEach(async () => {
    await host?.cleanup()
    host = null
    logged = []
  })

  it('stop of a running VM waits for the point, blocks new points, then stops cleanly', async () => {
    host = await makeLabHost(build().guestScript, { logger })
    const { hv } = host
    const { dir } = await hv.createVm('w', { sizeBytes: 8 * MiB })
    await hv.startVm('w')
    const point = await hv.createPoint('w')
    const view = await hv.openPointDisk(point, 0)
    const stop = track(hv.stopVm('w'))
    await waiting('stop')
    expect(stop.done).toBe(false)
    expect((await hv.getVm('w')).state).toBe('running')
    // The reader still sees its frozen instant while the stop waits.
    const buf = Buffer.alloc(4096)
    await view.read(buf, 0)
    await expect(hv.createPoint('w')).rejects.toThrow(/already has an open point/)
    await view.close()
    const reference = await hv.releasePoint(point)
    expect(reference).toMatch(/^lab1:/)
    await stop.promise
    expect((await hv.getVm('w')).state).toBe('stopped')
    const log = await readFile(join(dir, 'guest.log'), 'utf8')
    expect(log).toMatch(/stopped cleanly/)
    // The stream resumes after the last record on the next start: the stop was a clean one.
    const before = await readDiskRecords(join(dir, 'disk0.vhdx'))
    await hv.startVm('w')
    await hv.stopVm('w')
    expect((await readDiskRecords(join(dir, 'disk0.vhdx'))).startSeq).toBe(before.lastSeq)
  })

  it('no new point opens while a stop waits for the release', async () => {
    host = await makeLabHost(build().guestScript, { logger })
    const { hv } = host
    await hv.createVm('n', { sizeBytes: 8 * MiB })
    await hv.startVm('n')
    const point = await hv.createPoint('n')
    const stop = track(hv.stopVm('n'))
    // The stop must be under way before the release (a fixed 100 ms did not ensure it under load:
    // a stop not yet begun would let the next point open: 'a point opened').
    await waiting('stop')
    // Release, then at once ask again (replication's next round): the stop wins, the point is refused.
    const released = hv.releasePoint(point)
    const next = hv.createPoint('n').then(
      (p) => ({ ok: true as const, p }),
      (err: Error) => ({ ok: false as const, err }),
    )
    await released
    const r = await next
    if (r.ok) await hv.releasePoint(r.p)
    expect(r.ok ? 'a point opened' : r.err.message).toMatch(/stopping|already has an open point/)
    await stop.promise
    expect(stop.error).toBeNull()
    expect((await hv.getVm('n')).state).toBe('stopped')
    // Stopped: replication's next point is a stopped VM's point again.
    await hv.releasePoint(await hv.createPoint('n'))
  })

  it('start of a stopped VM waits for the point replication reads', async () => {
    host = await makeLabHost(build().guestScript, { logger })
    const { hv } = host
    await hv.createVm('s', { sizeBytes: 8 * MiB })
    const point = await hv.createPoint('s') // a stopped VM's point: its disks, read in place
    const start = track(hv.startVm('s'))
    await waiting('start')
    expect(start.done).toBe(false)
    expect((await hv.getVm('s')).state).toBe('starting')
    await hv.releasePoint(point)
    await start.promise
    expect(start.error).toBeNull()
    expect((await hv.getVm('s')).state).toBe('running')
    await hv.stopVm('s')
  })

  it('gives up with a clear error when the point is never released', async () => {
    host = await makeLabHost(build().guestScript, { pointReleaseWaitMs: 500 })
    const { hv } = host
    await hv.createVm('g', { sizeBytes: 8 * MiB })
    await hv.startVm('g')
    const point = await hv.createPoint('g')
    const t0 = Date.now()
    const err = await hv.stopVm('g').catch((e: Error) => e)
    expect(err).toBeInstanceOf(VmStateError)
    expect((err as Error).message).toMatch(/cannot stop it: consistency point .* stayed open for 500 ms/)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450)
    expect((await hv.getVm('g')).state).toBe('running')
    // The refusal left nothing behind: points open again, and a forced stop is never held up.
    await hv.releasePoint(point)
    await hv.releasePoint(await hv.createPoint('g'))
    const again = await hv.createPoint('g')
    await hv.stopVm('g', { force: true })
    expect((await hv.getVm('g')).state).toBe('stopped')
    await hv.releasePoint(again)
  })
})

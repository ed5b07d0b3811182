// Issue 6, end to end: kill -9 of the SOURCE mid-seed (its guest dies with it). After the node
// restarts and the VM is started again, the seed resumes: the target receives little more than
// what it was missing (counted in bytes on the target), its committed points verify, and the last
// point equals the source's disk as qemu-img reads it (independent oracle).
import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest'
import { createTestMesh, type TestMesh, type TestNode, waitFor } from '../helpers/nodes.js'
import { hasTool, oracle, qemuImg } from '../helpers/oracles.js'
import { cli, points, RELAXED_ENV, replicationLogs, runningVm, vmWrite } from './replication-helpers.js'

const MiB = 1024 * 1024

interface Receiver {
  chunksStored: number
  bytesStored: number
  rejected: number
}
interface Progress {
  targets: Array<{ peer: string; seq: number | null; payloadBytes: number; chunksSent: number }>
}

describe.runIf(oracle('qemu-img', hasTool('qemu-img')))(
  'seeding resumes after kill -9 of the source (real processes)',
  () => {
    let mesh: TestMesh
    let a: TestNode
    let b: TestNode
    beforeAll(async () => {
      mesh = await createTestMesh(['paris', 'lyon'], { env: RELAXED_ENV })
      ;[a, b] = mesh.nodes
      await runningVm(a, 'big', '256M')
      for (let i = 0; i < 3; i++) await vmWrite(a, 'big', 8 * MiB + i * 64 * MiB, randomBytes(60 * MiB))
    }, 240_000)
    afterAll(async () => {
      await mesh?.teardown()
    })

    it('resumes from what the target holds; committed points verify and equal the source disk', async () => {
      onTestFailed(() => console.log(replicationLogs(mesh.nodes)))
      const total = 180 * MiB
      const r = await cli(['protect', '--dir', a.dir, 'big', '--rpo', '30s', '--rto', '5m', '--to', b.peerId])
      expect(r.code, r.stderr).toBe(0)
      await waitFor(
        'the target to hold about a third of the seed',
        async () => (await b.call<Receiver>('GET', '/replication/receiver')).bytesStored >= total / 3,
        120_000,
        50,
      )
      await a.kill()
      // What the target stored once the dead source's last frames are in: the base for "missing".
      await new Promise((r) => setTimeout(r, 1000))
      const atKill = await b.call<Receiver>('GET', '/replication/receiver')
      expect(atKill.bytesStored).toBeLessThan(total)
      expect(await points(b, 'big')).toEqual([])
      console.log(`source killed; the target held ${(atKill.bytesStored / MiB).toFixed(1)} MiB`)

      await a.start()
      // The protector may be reading the stopped VM's disks (a point is open): the start waits
      // for it (the lab hypervisor), it is not refused.
      const startedAt = Date.now()
      const started = await cli(['vm', 'start', '--dir', a.dir, 'big', '--no-workload'])
      expect(started.code, started.stderr).toBe(0)
      console.log(`vm start succeeded ${Date.now() - startedAt} ms after the node restarted`)
      const seeded = await waitFor(
        'the seed to commit after the restart',
        async () => (await points(b, 'big'))[0],
        240_000,
        500,
      )
      // What the source went through after its restart (warnings and commits), for the record.
      console.log(replicationLogs([a, b], 8))
      const afterSeed = await b.call<Receiver>('GET', '/replication/receiver')
      const resent = afterSeed.bytesStored - atKill.bytesStored
      const missing = total - atKill.bytesStored
      const progress = await a.call<Progress>('GET', '/replication/vms/big')
      console.log(
        `after the restart the target stored ${(resent / MiB).toFixed(1)} MiB for ${(missing / MiB).toFixed(1)} MiB missing (point ${seeded.seq}); the restarted source sent ${(progress.targets[0].payloadBytes / MiB).toFixed(1)} MiB of payload`,
      )
      // Little more than what was missing: the record ring (last MiB) and chunks in flight.
      expect(resent).toBeLessThan(missing + 8 * MiB)
      expect(progress.targets[0].payloadBytes).toBeLessThan(missing + 8 * MiB)

      // A final point of the stopped VM is exactly its disk file: compare with qemu-img's reading.
      // While the protector holds a point of the running VM, the stop waits for its release.
      const stopped = await cli(['vm', 'stop', '--dir', a.dir, 'big'])
      expect(stopped.code, stopped.stderr).toBe(0)
      const stoppedAt = Date.now()
      const last = await waitFor(
        'a point frozen after the VM stopped',
        async () => (await points(b, 'big')).find((p) => p.time >= stoppedAt),
        120_000,
        500,
      )
      const restored = join(b.dir, 'restored.raw')
      const out = await cli([
        'restore',
        '--dir',
        b.dir,
        'big',
        '--point',
        String(last.seq),
        '--out',
        restored,
        '--to',
        'raw',
      ])
      expect(out.code, out.stderr).toBe(0)
      const sourceDisk = join(a.dir, 'vms', 'big', 'disk0.vhdx')
      // qemu-img compare exits 0 when the contents are identical (throws otherwise).
      expect(qemuImg(['compare', '-f', 'raw', '-F', 'vhdx', restored, sourceDisk])).toMatch(/identical/i)
      await rm(restored, { force: true })

      // Every committed point on the target verifies (the store is opened by `store verify`).
      // Both daemons stop cleanly on SIGTERM with protection running (exit 0, not the SIGKILL deadline).
      expect(await a.stop()).toBe(0)
      expect(await b.stop()).toBe(0)
      const verify = await cli(['store', 'verify', '--store', join(b.dir, 'store'), '--json'])
      expect(verify.code, verify.stdout + verify.stderr).toBe(0)
      const held = await points(b, 'big')
      expect(held.map((p) => p.seq)).toContain(seeded.seq)
    }, 600_000)
  },
)

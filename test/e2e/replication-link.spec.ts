// Issue 6, end to end with real node processes: a per-link limit set with `replimesh link set`
// on a running node holds the seed's rate, shows in `link ls`, and `protect` on a terminal (a
// pseudo-terminal from script(1)) draws a progress bar until the seed is committed; without a
// terminal, `protect --wait` prints log lines instead.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest'
import { createTestMesh, type TestMesh, type TestNode } from '../helpers/nodes.js'
import { hasTool, oracle } from '../helpers/oracles.js'
import { points, RELAXED_ENV, replicationLogs, runningVm, vmWrite } from './replication-helpers.js'

const MiB = 1024 * 1024

/** Runs the mesh's CLI under a pseudo-terminal; resolves with everything it drew. */
function onTerminal(
  mesh: TestMesh,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number; out: string }> {
  const command = [process.execPath, mesh.bin, ...args].map((a) => `'${a}'`).join(' ')
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], {
      env: RELAXED_ENV,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? -1, out })
    })
  })
}

describe.runIf(oracle('script', hasTool('script', ['--version'])))(
  'per-link limit and seed progress (real processes)',
  () => {
    let mesh: TestMesh
    let a: TestNode
    let b: TestNode
    beforeAll(async () => {
      mesh = await createTestMesh(['paris', 'lyon'], { env: RELAXED_ENV })
      ;[a, b] = mesh.nodes
      await runningVm(a, 'web', '64M')
      await vmWrite(a, 'web', 4 * MiB, randomBytes(24 * MiB))
      await runningVm(a, 'db', '64M')
      await vmWrite(a, 'db', 4 * MiB, randomBytes(8 * MiB))
    }, 240_000)
    afterAll(async () => {
      await mesh?.teardown()
    })

    it('holds a 4 MiB/s limit on the site link, shows it, and draws a progress bar on a terminal', async () => {
      onTestFailed(() => console.log(replicationLogs(mesh.nodes)))
      const set = await mesh.cli([
        'link',
        'set',
        '--dir',
        a.dir,
        'lyon',
        '--limit',
        '4M',
        '--compress',
        'off',
      ])
      expect(set.code, set.stderr).toBe(0)
      // `link set` has the running node re-read links.json before it returns.
      expect(set.stdout).toMatch(/^link lyon: limit 4M, compression off \(applied by the running node\)$/m)
      const bad = await mesh.cli(['link', 'set', '--dir', a.dir, 'lyon', '--limit', '08:00-18:61 4M'])
      expect(bad.code).toBe(2)
      expect(bad.stderr.trim().split('\n')).toHaveLength(1)
      expect(bad.stderr).toMatch(/^replimesh: --limit: '18:61' in '08:00-18:61 4M' is not a time of day/)
      const started = Date.now()
      const tty = await onTerminal(
        mesh,
        ['protect', '--dir', a.dir, 'web', '--rpo', '30s', '--rto', '5m', '--to', 'lyon'],
        180_000,
      )
      const seconds = (Date.now() - started) / 1000
      expect(tty.code, tty.out).toBe(0)
      // cli-progress redraws one line: a bar with a percentage, then the commit.
      expect(tty.out).toMatch(/\|[█░]+\| \d+% \d+\/\d+ MiB/)
      expect(tty.out).toMatch(/point \d+ committed/)
      expect(tty.out).toMatch(/seeded web on \S+ \(point \d+\)/)
      const seeded = await points(b, 'web')
      expect(seeded.length).toBeGreaterThan(0)
      const ls = await mesh.cli(['link', 'ls', '--dir', a.dir, '--json'])
      expect(ls.code, ls.stderr).toBe(0)
      const { settings, live } = JSON.parse(ls.stdout)
      expect(settings).toEqual([{ to: 'lyon', limit: '4M', compress: 'off', wan: false }])
      const link = live.find((l: { name: string }) => l.name === 'lyon')
      expect(link).toMatchObject({ limit: '4M', limitBytesPerSecond: 4 * MiB, compression: false })
      const rate = link.bytesSent / seconds
      console.log(
        `seed of 24 MiB over a 4 MiB/s link: ${(link.bytesSent / MiB).toFixed(1)} MiB in ${seconds.toFixed(1)} s = ${(rate / MiB).toFixed(2)} MiB/s including start-up (machine loaded)`,
      )
      // Start-up, reading and commit are inside `seconds`: the limit is an upper bound here.
      expect(link.bytesSent).toBeGreaterThan(24 * MiB)
      expect(rate).toBeLessThan(4 * MiB * 1.15)

      // Without a terminal, --wait prints log lines and the final line.
      const logged = await mesh.cli(
        ['protect', '--dir', a.dir, 'db', '--rpo', '30s', '--rto', '5m', '--to', 'lyon', '--wait'],
        180_000,
      )
      expect(logged.code, logged.stderr).toBe(0)
      expect(logged.stderr).toMatch(/db → \S+: seeded, point \d+ committed/)
      expect(logged.stdout).toMatch(/seeded db on \S+ \(point \d+\)/)
    }, 480_000)
  },
)

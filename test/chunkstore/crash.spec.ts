// kill -9 of `store put` at random instants: committed points are never lost or damaged.
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { materialise, openChunkStore, verifyStore } from '../../src/chunkstore/index.js'
import { createDisk } from '../../src/hyperv/index.js'
import { build, MiB, makeRawDisk, scribble, snapshotBuild, tempDir } from './helpers.js'

const ROUNDS = 15
const children = new Set<ChildProcess>()
let tmp: ReturnType<typeof tempDir> | null = null
let dropBuild: () => void
beforeAll(() => {
  dropBuild = snapshotBuild()
})
afterAll(() => dropBuild())
afterEach(() => {
  for (const c of children) c.kill('SIGKILL')
  children.clear()
  tmp?.cleanup()
})

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

/** Runs `store put`, SIGKILLs it after `killAfterMs`; resolves how it ended (deadline 60 s). */
function putAndKill(store: string, disk: string, killAfterMs: number): Promise<'killed' | 'done'> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [build.bin, 'store', 'put', '--store', store, disk, '--json'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    children.add(child)
    let stderr = ''
    child.stderr?.on('data', (d) => {
      stderr += d
    })
    const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs)
    const deadline = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error('store put did not end within 60 s'))
    }, 60_000)
    child.on('exit', (code, signal) => {
      clearTimeout(killer)
      clearTimeout(deadline)
      children.delete(child)
      if (signal === 'SIGKILL') resolve('killed')
      else if (code === 0) resolve('done')
      else reject(new Error(`store put exited with ${code}: ${stderr}`))
    })
  })
}

async function pointContent(dir: string, storeDir: string, name: string): Promise<string> {
  const store = await openChunkStore({ dir: storeDir })
  try {
    const point = await store.getPoint(name)
    const out = join(dir, `check-${Date.now()}.raw`)
    const target = await createDisk(out, { format: 'raw', virtualSize: point.disks[0].virtualSize })
    try {
      await materialise(store, point, 0, target, { targetIsZero: true })
    } finally {
      await target.close()
    }
    return sha(readFileSync(out))
  } finally {
    await store.close()
  }
}

describe('kill -9 during store put', () => {
  it(`never loses or damages a committed point (${ROUNDS} random kills)`, { timeout: 420_000 }, async () => {
    tmp = tempDir('crash')
    const storeDir = join(tmp.dir, 'st')
    const disk = join(tmp.dir, 'vm.raw')
    makeRawDisk(disk, 32 * MiB, 32 * MiB, false)
    const started = Date.now()
    expect(await putAndKill(storeDir, disk, 60_000)).toBe('done')
    const fullPutMs = Date.now() - started
    const expected = new Map<string, string>([['vm@1', sha(readFileSync(disk))]])
    let killed = 0
    for (let round = 0; round < ROUNDS; round++) {
      // 12 MiB of new content per round, so every put has real work to be killed in.
      const base = (round % 3) * 10 * MiB
      for (let at = base; at < base + 12 * MiB; at += MiB) scribble(disk, [at], MiB)
      const content = sha(readFileSync(disk))
      const outcome = await putAndKill(storeDir, disk, Math.random() * fullPutMs * 1.2)
      if (outcome === 'killed') killed++

      const store = await openChunkStore({ dir: storeDir })
      let names: string[]
      try {
        names = (await store.listPoints('vm')).map((p) => `vm@${p.seq}`)
        const report = await verifyStore(store)
        expect(report.damaged, `round ${round}`).toEqual([])
        expect(report.ok).toBe(true)
      } finally {
        await store.close()
      }
      // Every point committed before is still there, in order, and at most one new one.
      const before = [...expected.keys()]
      expect(names.slice(0, before.length)).toEqual(before)
      expect(names.length - before.length).toBeLessThanOrEqual(1)
      if (outcome === 'done') expect(names.length).toBe(before.length + 1)
      const fresh = names[before.length]
      if (fresh) {
        expected.set(fresh, content)
        expect(await pointContent(tmp.dir, storeDir, fresh)).toBe(content)
      }
      // And one older point, chosen at random, still reads back exactly.
      const old = before[Math.floor(Math.random() * before.length)]
      expect(await pointContent(tmp.dir, storeDir, old)).toBe(expected.get(old))
    }
    expect(killed).toBeGreaterThanOrEqual(3)
  })
})

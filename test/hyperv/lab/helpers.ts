// A lab host in a temporary folder for tests: the hypervisor runs in the test process and forks
// real guest processes (from dist/, so build first). Everything is stopped and removed after.
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll } from 'vitest'
import { createLabHypervisor, type LabHypervisor, type LabLogger } from '../../../src/hyperv/index.js'
import { snapshotBuild } from '../../helpers/nodes.js'

export interface BuildSnapshot {
  /** The copied build's bin/replimesh.js. */
  bin: string
  /** Its guest program. */
  guestScript: string
  /** Its dist/src/hyperv/index.js, for fixture processes. */
  hypervIndex: string
}

/**
 * A private copy of dist/ for this spec file (other helpers' builds rewrite dist/ while tests
 * run; a guest forked from a half-written dist/ cannot load). Registers its own hooks.
 */
export function useBuildSnapshot(): () => BuildSnapshot {
  let snap: BuildSnapshot | null = null
  let remove: (() => Promise<void>) | null = null
  beforeAll(async () => {
    const s = await snapshotBuild()
    remove = s.remove
    const root = join(s.bin, '..', '..')
    snap = {
      bin: s.bin,
      guestScript: join(root, 'dist/src/hyperv/lab/guest-main.js'),
      hypervIndex: join(root, 'dist/src/hyperv/index.js'),
    }
  }, 120_000)
  afterAll(async () => {
    await remove?.()
  })
  return () => {
    if (!snap) throw new Error('the build snapshot is made in beforeAll')
    return snap
  }
}

export interface LabHost {
  dir: string
  vmsDir: string
  hv: LabHypervisor
  /** A second hypervisor on the same folder: a restarted node. */
  restart(): Promise<LabHypervisor>
  readEvents(): Promise<Array<Record<string, unknown>>>
  cleanup(): Promise<void>
}

export async function makeLabHost(
  guestScript?: string,
  options: { pointReleaseWaitMs?: number; logger?: LabLogger } = {},
): Promise<LabHost> {
  const dir = await mkdtemp(join(tmpdir(), 'replimesh-lab-'))
  const vmsDir = join(dir, 'vms')
  const all: LabHypervisor[] = []
  const make = async () => {
    const hv = createLabHypervisor({ vmsDir, guestScript, ...options })
    all.push(hv)
    await hv.start()
    return hv
  }
  const host: LabHost = {
    dir,
    vmsDir,
    hv: await make(),
    async restart() {
      await host.hv.stop()
      host.hv = await make()
      return host.hv
    },
    async readEvents() {
      const text = await readFile(join(dir, 'host-events.log'), 'utf8').catch(() => '')
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
    },
    async cleanup() {
      for (const hv of all) await hv.stop().catch(() => undefined)
      await rm(dir, { recursive: true, force: true })
    },
  }
  return host
}

/** Polls `check` until it returns true or the deadline passes (then fails with `what`). */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export const MiB = 1024 * 1024

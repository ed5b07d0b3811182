// Independent oracles (qemu-img, libvhdi, snmptrapd...). Outside CI a missing tool skips its
// tests with a visible warning; in CI (REPLIMESH_REQUIRE_ORACLES=1) it fails them.
import { execFileSync, spawnSync } from 'node:child_process'

const REQUIRED = process.env.REPLIMESH_REQUIRE_ORACLES === '1'

export function hasTool(command: string, args: string[] = ['--version']): boolean {
  const r = spawnSync(command, args, { stdio: 'ignore' })
  return r.error === undefined && r.status !== null
}

/** The system python that can import libvhdi's `pyvhdi` (not the pyenv one on PATH). */
export const SYSTEM_PYTHON = '/usr/bin/python3'

export function hasPyvhdi(): boolean {
  const r = spawnSync(SYSTEM_PYTHON, ['-c', 'import pyvhdi'], { stdio: 'ignore' })
  return r.status === 0
}

/**
 * Returns true when the oracle is present. When absent: throws in CI, warns and returns false
 * elsewhere (use with `describe.skipIf(!oracle(...))` or `it.runIf`).
 */
export function oracle(name: string, present: boolean): boolean {
  if (present) return true
  if (REQUIRED) throw new Error(`oracle '${name}' is missing but REPLIMESH_REQUIRE_ORACLES=1`)
  console.warn(`WARNING: oracle '${name}' is not installed; its tests are skipped`)
  return false
}

export function qemuImg(args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
}

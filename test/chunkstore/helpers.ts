// Test data for the chunk store tests: made at test time under os.tmpdir(), removed afterwards.
import { spawnSync } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import {
  closeSync,
  copyFileSync,
  cpSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  rmSync,
  statSync,
  symlinkSync,
  writeSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..')
export const BIN = join(REPO, 'bin', 'replimesh.js')
export const MiB = 1024 * 1024

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `replimesh-${prefix}-`))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * A raw disk of `size` bytes: random data in `dataBytes` at the start (in 1 MiB pieces, every
 * fourth left as a hole so the disk has zero chunks too), the rest sparse.
 */
export function makeRawDisk(path: string, size: number, dataBytes: number, holes = true): void {
  const fd = openSync(path, 'w')
  try {
    ftruncateSync(fd, size)
    const piece = Buffer.alloc(MiB)
    for (let at = 0, i = 0; at < dataBytes; at += MiB, i++) {
      if (holes && i % 4 === 3) continue
      randomFillSync(piece)
      writeSync(fd, piece, 0, Math.min(MiB, dataBytes - at), at)
    }
  } finally {
    closeSync(fd)
  }
}

/** Writes random bytes at the given offsets of a raw file. */
export function scribble(path: string, offsets: number[], length = 4096): void {
  const fd = openSync(path, 'r+')
  try {
    for (const at of offsets) writeSync(fd, randomFillSync(Buffer.alloc(length)), 0, length, at)
  } finally {
    closeSync(fd)
  }
}

export function run(command: string, args: string[], timeoutMs = 60_000) {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * MiB })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** The CLI the tests run: a private copy of the build (see snapshotBuild), else bin/ itself. */
export const build = { bin: BIN }

/** Runs the built CLI (`npx tsc -p .` first). */
export function cli(args: string[], timeoutMs = 60_000) {
  return run(process.execPath, [build.bin, ...args], timeoutMs)
}

/**
 * Copies dist/ and bin/ to a private directory and points `build.bin` there, so another
 * process rebuilding dist/ mid-test cannot hand us half-written modules. Retries until the copy
 * passes a smoke run. Returns the cleanup.
 */
export function snapshotBuild(): () => void {
  assertBuilt()
  for (let attempt = 0; ; attempt++) {
    const root = mkdtempSync(join(tmpdir(), 'replimesh-build-'))
    cpSync(join(REPO, 'dist'), join(root, 'dist'), { recursive: true })
    cpSync(join(REPO, 'bin'), join(root, 'bin'), { recursive: true })
    copyFileSync(join(REPO, 'package.json'), join(root, 'package.json'))
    symlinkSync(join(REPO, 'node_modules'), join(root, 'node_modules'))
    const bin = join(root, 'bin', 'replimesh.js')
    const smoke = spawnSync(
      process.execPath,
      [bin, 'store', 'ls', '--store', join(root, 'smoke'), '--json'],
      {
        timeout: 30_000,
      },
    )
    if (smoke.status === 0) {
      build.bin = bin
      return () => {
        build.bin = BIN
        rmSync(root, { recursive: true, force: true })
      }
    }
    rmSync(root, { recursive: true, force: true })
    if (attempt >= 4) throw new Error(`the build does not run: ${smoke.stderr}`)
    spawnSync('sleep', ['2'])
  }
}

/** The CLI tests run dist/ (`npx tsc -p .` or `npm test` builds it). */
export function assertBuilt(): void {
  try {
    statSync(join(REPO, 'dist', 'src', 'node', 'cli', 'store.js'))
  } catch {
    throw new Error('dist/ is missing: run `npx tsc -p .` first')
  }
}

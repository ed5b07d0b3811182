// Shared helpers of the VHD tests: temp dirs, whole-disk reads, qemu and libvhdi runners.
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { VirtualDisk } from '../../../src/hyperv/disk/index.js'
import { SYSTEM_PYTHON } from '../../helpers/oracles.js'

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `replimesh-${prefix}-`))
}

export async function readAll(disk: VirtualDisk): Promise<Buffer> {
  const out = Buffer.alloc(disk.virtualSize)
  await disk.read(out, 0)
  return out
}

export function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
}

export function qemuRaw(file: string, format: string, out: string): Buffer {
  run('qemu-img', ['convert', '-f', format, '-O', 'raw', file, out])
  return readFileSync(out)
}

export function qemuVirtualSize(file: string, format: string): number {
  return JSON.parse(run('qemu-img', ['info', '--output=json', '-f', format, file]))['virtual-size']
}

const PYVHDI_READ = `
import sys, pyvhdi
files = []
for p in sys.argv[2:]:
    f = pyvhdi.file(); f.open(p); files.append(f)
for child, parent in zip(files, files[1:]):
    child.set_parent(parent)
top = files[0]
size = top.get_media_size()
with open(sys.argv[1], 'wb') as out:
    off = 0
    while off < size:
        n = min(4 << 20, size - off)
        out.write(top.read_buffer_at_offset(n, off))
        off += n
`

/** The chain's virtual bytes as libvhdi reads them; `chain` is child first. */
export function pyvhdiRead(chain: string[], out: string): Buffer {
  const script = `${out}.py`
  writeFileSync(script, PYVHDI_READ)
  execFileSync(SYSTEM_PYTHON, [script, out, ...chain], { stdio: ['ignore', 'ignore', 'pipe'] })
  return readFileSync(out)
}

/** Deterministic bytes for a pattern id, so expected content is easy to build. */
export function pattern(id: number, length: number): Buffer {
  const b = Buffer.alloc(length)
  for (let i = 0; i < length; i++) b[i] = (id * 31 + i * 7 + (i >> 9)) & 0xff
  return b
}

// Shared helpers of the VHDX tests: temporary directories, the oracles (qemu-img, qemu-io,
// pyvhdi) wrapped for buffers, a seeded PRNG, and a tiny independent parser of the BAT
// (written from MS-VHDX, not from our code) so fixtures can find blocks in a file.
import { execFileSync } from 'node:child_process'
import { createCipheriv } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { VirtualDisk } from '../../../src/hyperv/disk/types.js'
import { openVhdx } from '../../../src/hyperv/disk/vhdx/index.js'
import { hasPyvhdi, hasTool, oracle, SYSTEM_PYTHON } from '../../helpers/oracles.js'

export const MiB = 1024 * 1024

export const HAVE_QEMU =
  oracle('qemu-img', hasTool('qemu-img')) && oracle('qemu-io', hasTool('qemu-io', ['--version']))
export const HAVE_PYVHDI = oracle('pyvhdi', hasPyvhdi())

export function tempDir(prefix: string): { dir: string; path: (name: string) => string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `replimesh-${prefix}-`))
  return { dir, path: (name) => join(dir, name), remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Parents open read-only through the same reader (what the dispatcher does for VHDX). */
export const openParent = (path: string): Promise<VirtualDisk> =>
  openVhdx(path, { readOnly: true, openParent })

export async function openRead(path: string): Promise<VirtualDisk> {
  return openVhdx(path, { readOnly: true, openParent })
}

export async function readAll(disk: VirtualDisk): Promise<Buffer> {
  const buf = Buffer.alloc(disk.virtualSize)
  const step = 4 * MiB
  for (let at = 0; at < disk.virtualSize; at += step) {
    await disk.read(buf, at, Math.min(step, disk.virtualSize - at), at)
  }
  return buf
}

export function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, stdio: ['ignore', 'pipe', 'pipe'] })
}

export function qemuRaw(image: string, rawPath: string): Buffer {
  run('qemu-img', ['convert', '-O', 'raw', image, rawPath])
  const buf = readFileSync(rawPath)
  rmSync(rawPath)
  return buf
}

export function qemuVirtualSize(image: string): number {
  return JSON.parse(run('qemu-img', ['info', '--output=json', image]))['virtual-size']
}

/** The whole virtual disk as libvhdi reads it; `chain` is child first, base last. */
export function pyvhdiRead(chain: string[]): Buffer {
  const script = `
import pyvhdi, sys
files = []
for p in sys.argv[1:]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for i in range(len(files) - 1):
    files[i].set_parent(files[i + 1])
f = files[0]
size = f.get_media_size()
out = sys.stdout.buffer
at = 0
while at < size:
    n = min(4 << 20, size - at)
    out.write(f.read_buffer_at_offset(n, at))
    at += n
`
  return execFileSync(SYSTEM_PYTHON, ['-c', script, ...chain], { maxBuffer: 1024 * MiB })
}

/** Ranges [offset, length] of the virtual disk as libvhdi reads them, concatenated. */
export function pyvhdiReadRanges(chain: string[], ranges: [number, number][]): Buffer {
  const script = `
import pyvhdi, sys, json
files = []
for p in sys.argv[2:]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for i in range(len(files) - 1):
    files[i].set_parent(files[i + 1])
for off, n in json.loads(sys.argv[1]):
    sys.stdout.buffer.write(files[0].read_buffer_at_offset(n, off))
`
  return execFileSync(SYSTEM_PYTHON, ['-c', script, JSON.stringify(ranges), ...chain], {
    maxBuffer: 1024 * MiB,
  })
}

export function pyvhdiInfo(path: string): {
  mediaSize: number
  bytesPerSector: number
  parentIdentifier: string | null
} {
  const script = `
import pyvhdi, sys, json
f = pyvhdi.file()
f.open(sys.argv[1])
pid = None
try:
    pid = str(f.get_parent_identifier()) if f.get_parent_identifier() else None
except Exception:
    pass
print(json.dumps({"mediaSize": f.get_media_size(), "bytesPerSector": f.get_bytes_per_sector(), "parentIdentifier": pid}))
`
  return JSON.parse(execFileSync(SYSTEM_PYTHON, ['-c', script, path], { encoding: 'utf8' }))
}

export { prng } from '../../helpers/prng.js'

/** `length` pseudo-random bytes keyed by the PRNG (AES-CTR: fast and replayable). */
export function randomBytes(rand: () => number, length: number): Buffer {
  const key = Buffer.alloc(16)
  for (let i = 0; i < 16; i++) key[i] = (rand() * 256) | 0
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(length))
}

/** The first `length` bytes of a file (enough for its headers, metadata and BAT). */
export function readHead(path: string, length: number): Buffer {
  const fd = openSync(path, 'r')
  try {
    const buf = Buffer.alloc(length)
    return buf.subarray(0, readSync(fd, buf, 0, length, 0))
  } finally {
    closeSync(fd)
  }
}

const BAT_GUID = Buffer.from('6677c22d23f600429d64115e9bfd4a08', 'hex')

/** Independent of src/: the BAT's file offset from region table 1 (MS-VHDX §2.2.3). */
export function batOffsetOf(file: Buffer): number {
  const table = file.subarray(192 * 1024, 256 * 1024)
  const count = table.readUInt32LE(8)
  for (let i = 0; i < count; i++) {
    const e = table.subarray(16 + i * 32, 48 + i * 32)
    if (e.subarray(0, 16).equals(BAT_GUID)) return Number(e.readBigUInt64LE(16))
  }
  throw new Error('no BAT region')
}

/** BAT entry `index` as {state, fileOffset} (MS-VHDX §2.5). */
export function batEntry(file: Buffer, index: number): { state: number; fileOffset: number } {
  const v = file.readBigUInt64LE(batOffsetOf(file) + index * 8)
  return { state: Number(v & 7n), fileOffset: Number(v & ~0xfffffn) }
}

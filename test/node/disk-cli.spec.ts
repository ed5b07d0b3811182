// `replimesh disk …` as an operator runs it: real processes on the built CLI, qemu-img and
// libvhdi as the independent readers.
import { execFileSync, spawnSync } from 'node:child_process'
import { cpSync, existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm, truncate } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hasTool, oracle } from '../helpers/oracles.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
/** The CLI under test: a snapshot of the built dist (see snapshotDist). */
let BIN = join(ROOT, 'bin', 'replimesh.js')
const HAVE_QEMU = oracle('qemu-img', hasTool('qemu-img'))
const MiB = 1024 * 1024

interface Run {
  status: number | null
  stdout: Buffer
  stderr: string
}

function cli(args: string[], input?: Buffer): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    cwd: dir,
    input,
    maxBuffer: 256 * MiB,
    timeout: 60_000,
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() }
}

function ok(args: string[], input?: Buffer): Buffer {
  const r = cli(args, input)
  if (r.status !== 0) throw new Error(`replimesh ${args.join(' ')} exited ${r.status}: ${r.stderr}`)
  return r.stdout
}

function json(args: string[]) {
  return JSON.parse(ok([...args, '--json']).toString())
}

function qemu(args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' })
}

/** One line on stderr naming the problem, no stack trace. */
function expectOneLineError(r: Run, status: number, pattern: RegExp) {
  expect(r.status).toBe(status)
  const lines = r.stderr.trim().split('\n')
  expect(lines).toHaveLength(1)
  expect(lines[0]).toMatch(/^replimesh: /)
  expect(lines[0]).toMatch(pattern)
  expect(r.stderr).not.toMatch(/\n\s+at /)
}

/**
 * Copies dist/ and the launcher into `into` and checks the copy runs (the VHDX module included).
 * Other work may rebuild dist/ while these tests run; a copy caught half-written fails its
 * check and is taken again, so the tests see one whole build.
 */
async function snapshotDist(into: string): Promise<string> {
  const deadline = Date.now() + 45_000
  for (let attempt = 1; ; attempt++) {
    const root = join(into, `cli-${attempt}`)
    cpSync(join(ROOT, 'dist'), join(root, 'dist'), { recursive: true })
    cpSync(join(ROOT, 'bin'), join(root, 'bin'), { recursive: true })
    writeFileSync(join(root, 'package.json'), '{"type":"module"}')
    symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'))
    const bin = join(root, 'bin', 'replimesh.js')
    const probe = spawnSync(
      'sh',
      ['-c', `node "${bin}" disk create p.vhdx --size 1M --json && node "${bin}" disk info p.vhdx --json`],
      { cwd: root, timeout: 30_000 },
    )
    if (probe.status === 0) return bin
    if (Date.now() > deadline) throw new Error(`the built CLI does not run: ${probe.stderr}`)
    await new Promise((r) => setTimeout(r, 3000))
  }
}

let dir: string
beforeAll(async () => {
  if (!existsSync(join(ROOT, 'dist', 'src', 'node', 'cli', 'disk.js')))
    execFileSync('npx', ['tsc', '-p', '.'], { cwd: ROOT, stdio: 'ignore' })
  dir = await mkdtemp(join(tmpdir(), 'replimesh-disk-cli-'))
  BIN = await snapshotDist(await mkdtemp(join(tmpdir(), 'replimesh-disk-cli-bin-')))
}, 180_000)
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
  if (BIN.startsWith(tmpdir())) await rm(resolve(BIN, '..', '..', '..'), { recursive: true, force: true })
})

describe.runIf(HAVE_QEMU)('disk commands on qemu-made images', () => {
  beforeAll(() => {
    qemu(['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', join(dir, 'dyn.vhd'), '24M']) // CHS-rounded
    execFileSync(
      'qemu-io',
      ['-f', 'vpc', '-c', 'write -P 0x61 3M 1500k', '-c', 'write -P 0x62 0 4k', 'dyn.vhd'],
      {
        cwd: dir,
      },
    )
    qemu(['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', join(dir, 'fix.vhd'), '6M'])
    execFileSync('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x63 1M 5k', 'fix.vhd'], { cwd: dir })
    qemu([
      'create',
      '-q',
      '-f',
      'vpc',
      '-o',
      'subformat=dynamic,force_size=on',
      join(dir, 'dyn-exact.vhd'),
      '9M',
    ])
    qemu(['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', join(dir, 'fix-chs.vhd'), '7M'])
    for (const f of ['dyn-exact.vhd', 'fix-chs.vhd'])
      execFileSync(
        'qemu-io',
        ['-f', 'vpc', '-c', 'write -P 0x66 2047k 2k', '-c', 'write -P 0x67 6M 100k', f],
        {
          cwd: dir,
        },
      )
    qemu([
      'create',
      '-q',
      '-f',
      'vhdx',
      '-o',
      'subformat=dynamic,block_size=1M',
      join(dir, 'dyn.vhdx'),
      '20M',
    ])
    execFileSync(
      'qemu-io',
      ['-f', 'vhdx', '-c', 'write -P 0x64 2M 3M', '-c', 'write -P 0x65 19M 4k', 'dyn.vhdx'],
      {
        cwd: dir,
      },
    )
  })

  function qemuInfo(file: string, fmt: string) {
    return JSON.parse(qemu(['info', '--output=json', '-f', fmt, join(dir, file)]))
  }

  it('info --json reports the format and qemu-img’s virtual size', () => {
    const info = json(['disk', 'info', 'dyn.vhd'])
    expect(info).toEqual({
      format: 'vhd',
      subformat: 'dynamic',
      virtualSize: qemuInfo('dyn.vhd', 'vpc')['virtual-size'],
      blockSize: 2 * MiB,
      logicalSectorSize: 512,
      physicalSectorSize: 512,
      parent: null,
      allocatedBytes: 3 * 2 * MiB, // blocks 0, 1 and 2
    })
    expect(info.virtualSize).not.toBe(24 * MiB) // CHS rounding, as qemu reads it
    expect(json(['disk', 'info', 'fix.vhd'])).toMatchObject({ subformat: 'fixed', virtualSize: 6 * MiB })
    // --format skips detection: the same file as raw is its data plus the 512-byte footer.
    expect(json(['disk', 'info', 'fix.vhd', '--format', 'raw'])).toMatchObject({
      format: 'raw',
      virtualSize: 6 * MiB + 512,
    })
    const vhdx = json(['disk', 'info', 'dyn.vhdx'])
    expect(vhdx).toMatchObject({ format: 'vhdx', subformat: 'dynamic', blockSize: MiB })
    expect(vhdx.virtualSize).toBe(qemuInfo('dyn.vhdx', 'vhdx')['virtual-size'])
    expect(ok(['disk', 'info', 'dyn.vhd']).toString()).toMatch(/format\s+vhd \(dynamic\)/)
  })

  it('map --json lists data and zero extents covering the disk', () => {
    const map = json(['disk', 'map', 'dyn.vhd']) as Array<{ start: number; length: number; state: string }>
    const size = qemuInfo('dyn.vhd', 'vpc')['virtual-size']
    expect(map[0]).toEqual({ start: 0, length: 6 * MiB, state: 'data' })
    expect(map[1]).toEqual({ start: 6 * MiB, length: size - 6 * MiB, state: 'zero' })
    expect(ok(['disk', 'map', 'dyn.vhd']).toString()).toMatch(/start\s+length\s+state/)
    // VHDX: qemu-io's writes made blocks 2–4 and 19 (1 MiB blocks) present.
    expect(json(['disk', 'map', 'dyn.vhdx'])).toEqual([
      { start: 0, length: 2 * MiB, state: 'zero' },
      { start: 2 * MiB, length: 3 * MiB, state: 'data' },
      { start: 5 * MiB, length: 14 * MiB, state: 'zero' },
      { start: 19 * MiB, length: MiB, state: 'data' },
    ])
  })

  it.each([
    ['dyn.vhd', 'vpc'],
    ['dyn-exact.vhd', 'vpc'],
    ['fix.vhd', 'vpc'],
    ['fix-chs.vhd', 'vpc'],
    ['dyn.vhdx', 'vhdx'],
  ])('cat %s equals qemu-img convert -O raw byte for byte; info has its size', (file, fmt) => {
    const raw = join(dir, `${file}.qemu.raw`)
    qemu(['convert', '-f', fmt, '-O', 'raw', join(dir, file), raw])
    const ours = ok(['disk', 'cat', file])
    expect(ours.equals(readFileSync(raw))).toBe(true)
    expect(json(['disk', 'info', file]).virtualSize).toBe(qemuInfo(file, fmt)['virtual-size'])
  })

  it('cat into a reader that stops early ends quietly', () => {
    const r = spawnSync('sh', ['-c', `node "${BIN}" disk cat dyn.vhd | head -c 1000 > /dev/null; echo $?`], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 30_000,
    })
    expect(r.stderr).toBe('')
  })

  it('write puts stdin at the offset; qemu-img sees the result', () => {
    ok(['disk', 'convert', 'dyn.vhd', 'w.vhd', '--to', 'vhd'])
    const payload = Buffer.alloc(700 * 1024, 0x7a)
    const out = JSON.parse(ok(['disk', 'write', 'w.vhd', '--offset', '10M', '--json'], payload).toString())
    expect(out).toEqual({ offset: 10 * MiB, bytesWritten: payload.length })
    const expected = ok(['disk', 'cat', 'dyn.vhd'])
    payload.copy(expected, 10 * MiB)
    writeFileSync(join(dir, 'w.expected'), expected)
    expect(qemu(['compare', '-f', 'vpc', '-F', 'raw', join(dir, 'w.vhd'), join(dir, 'w.expected')])).toMatch(
      /identical/,
    )
  })

  it('convert vhd → vhdx → raw round-trips, each step equal under qemu-img compare', () => {
    const a = json(['disk', 'convert', 'dyn.vhd', 'rt.vhdx', '--to', 'vhdx', '--block-size', '1M'])
    expect(a.format).toBe('vhdx')
    expect(json(['disk', 'info', 'rt.vhdx'])).toMatchObject({ format: 'vhdx', blockSize: MiB })
    ok(['disk', 'convert', 'rt.vhdx', 'rt.raw', '--to', 'raw'])
    ok(['disk', 'convert', 'rt.raw', 'rt-fixed.vhd', '--to', 'vhd', '--subformat', 'fixed'])
    const p = (f: string) => join(dir, f)
    expect(qemu(['compare', '-f', 'vpc', '-F', 'vhdx', p('dyn.vhd'), p('rt.vhdx')])).toMatch(/identical/)
    expect(qemu(['compare', '-f', 'vhdx', '-F', 'raw', p('rt.vhdx'), p('rt.raw')])).toMatch(/identical/)
    expect(qemu(['compare', '-f', 'vpc', '-F', 'raw', p('rt-fixed.vhd'), p('rt.raw')])).toMatch(/identical/)
    // Zeros are not copied: only the three written blocks are allocated in the dynamic output.
    ok(['disk', 'convert', 'rt.raw', 'rt-dyn.vhd', '--to', 'vhd'])
    expect(json(['disk', 'info', 'rt-dyn.vhd']).allocatedBytes).toBe(3 * 2 * MiB)
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([])
  })

  it('create makes fixed, dynamic and differencing disks that qemu and our reader accept', () => {
    expect(
      json(['disk', 'create', 'c-fixed.vhd', '--size', '3M', '--to', 'vhd', '--subformat', 'fixed']),
    ).toMatchObject({
      format: 'vhd',
      subformat: 'fixed',
      virtualSize: 3 * MiB,
    })
    expect(qemuInfo('c-fixed.vhd', 'vpc')['virtual-size']).toBe(3 * MiB)
    ok(['disk', 'create', 'c-base.vhd', '--size', '8M']) // format from the extension
    ok(['disk', 'write', 'c-base.vhd', '--offset', '0'], Buffer.alloc(3 * MiB, 0x31))
    expect(json(['disk', 'info', 'c-base.vhd'])).toMatchObject({ format: 'vhd', subformat: 'dynamic' })
    const child = json(['disk', 'create', 'c-child.vhd', '--parent', 'c-base.vhd'])
    expect(child).toMatchObject({ format: 'vhd', subformat: 'differencing', parent: join(dir, 'c-base.vhd') })
    ok(['disk', 'write', 'c-child.vhd', '--offset', '1000'], Buffer.alloc(5000, 0x32))
    const bytes = ok(['disk', 'cat', 'c-child.vhd'])
    const expected = Buffer.alloc(8 * MiB)
    expected.fill(0x31, 0, 3 * MiB)
    expected.fill(0x32, 1000, 6000)
    expect(bytes.equals(expected)).toBe(true)
    const map = json(['disk', 'map', 'c-child.vhd'])
    expect(map.map((e: { state: string }) => e.state)).toEqual(['parent', 'data', 'parent'])
    // The chain flattens into one image; --resolve leaves no parent extents.
    const resolved = json(['disk', 'map', 'c-child.vhd', '--resolve']) as Array<{ state: string }>
    expect(resolved.some((e) => e.state === 'parent')).toBe(false)
    ok(['disk', 'convert', 'c-child.vhd', 'c-flat.vhdx', '--to', 'vhdx'])
    writeFileSync(join(dir, 'c-child.expected'), expected)
    const p = (f: string) => join(dir, f)
    expect(qemu(['compare', '-f', 'vhdx', '-F', 'raw', p('c-flat.vhdx'), p('c-child.expected')])).toMatch(
      /identical/,
    )

    const vhdx = json(['disk', 'create', 'c.vhdx', '--size', '16M', '--block-size', '1M'])
    expect(vhdx).toMatchObject({
      format: 'vhdx',
      subformat: 'dynamic',
      virtualSize: 16 * MiB,
      blockSize: MiB,
    })
    expect(qemuInfo('c.vhdx', 'vhdx')['virtual-size']).toBe(16 * MiB)
    ok(['disk', 'write', 'c.vhdx', '--offset', '5M'], Buffer.alloc(MiB + 100, 0x41))
    const vchild = json(['disk', 'create', 'c-child.vhdx', '--parent', 'c.vhdx'])
    expect(vchild).toMatchObject({ format: 'vhdx', subformat: 'differencing', virtualSize: 16 * MiB })
    ok(['disk', 'write', 'c-child.vhdx', '--offset', '6M'], Buffer.alloc(4096, 0x42))
    const vexpected = Buffer.alloc(16 * MiB)
    vexpected.fill(0x41, 5 * MiB, 6 * MiB + 100)
    vexpected.fill(0x42, 6 * MiB, 6 * MiB + 4096)
    expect(ok(['disk', 'cat', 'c-child.vhdx']).equals(vexpected)).toBe(true)
    vexpected.fill(0x41, 6 * MiB, 6 * MiB + 100).fill(0, 6 * MiB + 100, 6 * MiB + 4096) // the parent alone
    writeFileSync(p('c.expected'), vexpected)
    expect(qemu(['compare', '-f', 'vhdx', '-F', 'raw', p('c.vhdx'), p('c.expected')])).toMatch(/identical/)
  })
})

describe.runIf(HAVE_QEMU)('disk cat to a file', () => {
  // stdout a file: the synchronous path (blocking reads into one buffer, writeSync), checked
  // against the pipe path, itself checked against qemu-img above. Runs after the chains exist.
  it.each(['dyn.vhdx', 'fix.vhd', 'c-child.vhdx', 'c-child.vhd'])('%s: the same bytes as to a pipe', (f) => {
    const r = spawnSync('sh', ['-c', `node "${BIN}" disk cat "${f}" > "${f}.cat"`], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 60_000,
    })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(readFileSync(join(dir, `${f}.cat`)).equals(ok(['disk', 'cat', f]))).toBe(true)
  })
})

describe('disk commands on bad input', () => {
  it('a missing file: one line naming it, exit 1', () => {
    expectOneLineError(cli(['disk', 'info', 'missing.vhd']), 1, /missing\.vhd: no such file/)
  })

  it('garbage with a VHD cookie: one line, exit 1', () => {
    const junk = Buffer.alloc(64 * 1024)
    for (let i = 0; i < junk.length; i++) junk[i] = (i * 2654435761) >>> 24
    junk.write('conectix', 0, 'latin1')
    writeFileSync(join(dir, 'junk.vhd'), junk)
    expectOneLineError(cli(['disk', 'info', 'junk.vhd']), 1, /junk\.vhd: .*checksum/)
    expectOneLineError(cli(['disk', 'cat', 'junk.vhd']), 1, /junk\.vhd/)
  })

  it('garbage with a VHDX signature: one line, exit 1', () => {
    const junk = Buffer.alloc(2 * MiB, 0x5a)
    junk.write('vhdxfile', 0, 'latin1')
    writeFileSync(join(dir, 'junk.vhdx'), junk)
    expectOneLineError(cli(['disk', 'info', 'junk.vhdx']), 1, /junk\.vhdx/)
  })

  it('a truncated dynamic VHD: one line naming the damage, exit 1', async () => {
    ok(['disk', 'create', 'trunc.vhd', '--size', '8M', '--to', 'vhd'])
    ok(['disk', 'write', 'trunc.vhd', '--offset', '0'], Buffer.alloc(3 * MiB, 1))
    await truncate(join(dir, 'trunc.vhd'), 2 * MiB)
    expectOneLineError(cli(['disk', 'info', 'trunc.vhd']), 1, /trunc\.vhd: BAT entry \d+ points past the end/)
  })

  it('a bad --size is a command-line error (exit 2) and creates nothing', () => {
    const r = cli(['disk', 'create', 'bad.vhd', '--size', 'lots', '--to', 'vhd'])
    expect(r.status).toBe(2)
    expect(r.stderr.split('\n')[0]).toMatch(/'lots' is not a size/)
    expect(r.stderr).not.toMatch(/\n\s+at /)
    expectOneLineError(
      cli(['disk', 'create', 'bad.vhd', '--size', '1000', '--to', 'vhd']),
      1,
      /multiple of 512/,
    )
    expect(existsSync(join(dir, 'bad.vhd'))).toBe(false)
  })

  it('convert of a bad input writes nothing, not even a temporary file', () => {
    expectOneLineError(
      cli(['disk', 'convert', 'missing.vhd', 'conv.vhdx', '--to', 'vhdx']),
      1,
      /missing\.vhd/,
    )
    const odd = join(dir, 'odd.raw')
    writeFileSync(odd, Buffer.alloc(1000, 1))
    expectOneLineError(cli(['disk', 'convert', 'odd.raw', 'conv.vhd', '--to', 'vhd']), 1, /multiple of 512/)
    expect(readdirSync(dir).filter((f) => f.startsWith('conv'))).toEqual([])
  })

  it('create refuses to replace an existing file', () => {
    writeFileSync(join(dir, 'exists.vhd'), 'keep me')
    expectOneLineError(
      cli(['disk', 'create', 'exists.vhd', '--size', '1M', '--to', 'vhd']),
      1,
      /already exists/,
    )
    expect(readFileSync(join(dir, 'exists.vhd'), 'utf8')).toBe('keep me')
  })

  it('write past the end of the disk is refused before writing', () => {
    ok(['disk', 'create', 'small.raw', '--size', '4096', '--to', 'raw'])
    writeFileSync(join(dir, 'big.bin'), Buffer.alloc(5000, 9))
    const r = spawnSync('sh', ['-c', `node "${BIN}" disk write small.raw --offset 0 < big.bin`], {
      cwd: dir,
      encoding: 'utf8',
    })
    expect(r.status).toBe(2)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(readFileSync(join(dir, 'small.raw')).every((b) => b === 0)).toBe(true)
  })
})

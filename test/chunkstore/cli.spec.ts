// `replimesh store ...` as an operator runs it: real processes on the built CLI.
import { closeSync, existsSync, openSync, readFileSync, readSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { hasTool, oracle, qemuImg } from '../helpers/oracles.js'
import { cli, MiB, makeRawDisk, snapshotBuild, tempDir } from './helpers.js'

const haveQemu = oracle('qemu-img', hasTool('qemu-img'))

let tmp: ReturnType<typeof tempDir>
let dropBuild: () => void
beforeAll(() => {
  dropBuild = snapshotBuild()
})
afterAll(() => dropBuild())
beforeEach(() => {
  tmp = tempDir('cli')
})
afterEach(() => tmp.cleanup())

const json = (r: { status: number | null; stdout: string; stderr: string }) => {
  expect(r.stderr).toBe('')
  expect(r.status).toBe(0)
  return JSON.parse(r.stdout)
}

describe('store put / get / ls', () => {
  it.runIf(haveQemu)('round-trips a disk to raw and to a VHDX that qemu-img checks', () => {
    const store = join(tmp.dir, 'st')
    const src = join(tmp.dir, 'web01.raw')
    makeRawDisk(src, 20 * MiB, 16 * MiB)
    const first = json(cli(['store', 'put', '--store', store, src, '--json']))
    expect(first).toEqual({
      point: 'web01@1',
      root: expect.stringMatching(/^[0-9a-f]{64}$/),
      chunks: 80,
      newChunks: expect.any(Number),
      newBytes: expect.any(Number),
    })
    expect(first.newBytes).toBeGreaterThan(12 * MiB)
    const vhdx = join(tmp.dir, 'web01.vhdx')
    qemuImg(['convert', '-f', 'raw', '-O', 'vhdx', src, vhdx])
    const second = json(cli(['store', 'put', '--store', store, vhdx, '--vm', 'web01', '--json']))
    expect(second).toMatchObject({ point: 'web01@2', root: first.root, newChunks: 0, newBytes: 0 })
    const ls = json(cli(['store', 'ls', '--store', store, '--json']))
    expect(ls).toEqual([
      { point: 'web01@1', time: expect.any(Number), virtualSize: 20 * MiB, root: first.root },
      { point: 'web01@2', time: expect.any(Number), virtualSize: 20 * MiB, root: first.root },
    ])
    const outRaw = join(tmp.dir, 'out.raw')
    expect(cli(['store', 'get', '--store', store, 'web01@1', '--out', outRaw]).status).toBe(0)
    expect(readFileSync(outRaw).equals(readFileSync(src))).toBe(true)
    const outVhdx = join(tmp.dir, 'out.vhdx')
    expect(cli(['store', 'get', '--store', store, 'web01@2', '--out', outVhdx, '--to', 'vhdx']).status).toBe(
      0,
    )
    qemuImg(['check', '-f', 'vhdx', outVhdx])
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'vhdx', src, outVhdx])).toMatch(/identical/)
  })

  it('reports bad input in one line with the right exit code', () => {
    const store = join(tmp.dir, 'st')
    const src = join(tmp.dir, 'a.raw')
    makeRawDisk(src, MiB, MiB)
    const cases: [string[], number, RegExp][] = [
      [['store', 'get', '--store', store, 'a@1'], 2, /--out/],
      [['store', 'get', '--store', store, 'a@1', '--out', join(tmp.dir, 'x'), '--to', 'vhd'], 2, /vhd/],
      [['store', 'put', '--store', store, src, '--chunk-size', 'lots'], 2, /not a size/],
      [['store', 'put', '--store', store, src, '--chunk-size', '3000'], 1, /power of two/],
      [['store', 'put', '--store', store, join(tmp.dir, 'nope.raw')], 1, /nope\.raw/],
      [['store', 'get', '--store', store, 'a@9', '--out', join(tmp.dir, 'x')], 1, /no recovery point a@9/],
      [['store', 'get', '--store', store, 'no-seq', '--out', join(tmp.dir, 'x')], 1, /not a point name/],
      [['store', 'gc', '--store', store, '--keep', '0'], 2, /at least 1/],
    ]
    for (const [args, code, message] of cases) {
      const r = cli(args)
      expect(r.status, args.join(' ')).toBe(code)
      expect(r.stderr).toMatch(message)
      // Operation failures are one line; commander adds a usage hint to command-line errors.
      if (code === 1) expect(r.stderr.trim().split('\n')).toHaveLength(1)
      expect(r.stderr).not.toMatch(/\n\s+at /)
    }
  })
})

describe('store verify / gc', () => {
  it('names a flipped byte in a pack (exit 1) and get fails with a named error', () => {
    const store = join(tmp.dir, 'st')
    const src = join(tmp.dir, 'db.raw')
    makeRawDisk(src, 8 * MiB, 8 * MiB)
    json(cli(['store', 'put', '--store', store, src, '--json']))
    expect(json(cli(['store', 'verify', '--store', store, '--json'])).ok).toBe(true)
    const pack = join(store, 'packs', '00000001.pack')
    const fd = openSync(pack, 'r+')
    const header = Buffer.alloc(48)
    readSync(fd, header, 0, 48, 0)
    const chunk = header.subarray(16, 48).toString('hex')
    const b = Buffer.alloc(1)
    readSync(fd, b, 0, 1, 5000)
    b[0] ^= 1
    writeSync(fd, b, 0, 1, 5000)
    closeSync(fd)
    const v = cli(['store', 'verify', '--store', store])
    expect(v.status).toBe(1)
    expect(v.stdout).toContain(`damaged chunk ${chunk}`)
    expect(v.stdout).toContain('damaged point db@1')
    expect(v.stderr).toContain(chunk)
    const vj = cli(['store', 'verify', '--store', store, '--json'])
    expect(vj.status).toBe(1)
    expect(JSON.parse(vj.stdout)).toMatchObject({
      ok: false,
      damaged: [{ chunk, pack: '00000001.pack' }],
      damagedPoints: ['db@1'],
    })
    const g = cli(['store', 'get', '--store', store, 'db@1', '--out', join(tmp.dir, 'out.raw')])
    expect(g.status).toBe(1)
    expect(g.stderr).toBe(
      `replimesh: chunk ${chunk} in 00000001.pack at offset 0: content does not match its hash\n`,
    )
    expect(existsSync(join(tmp.dir, 'out.raw'))).toBe(false)
  })

  it('gc --keep 1 drops older points and frees their chunks', () => {
    const store = join(tmp.dir, 'st')
    const src = join(tmp.dir, 'app.raw')
    makeRawDisk(src, 4 * MiB, 4 * MiB, false)
    json(cli(['store', 'put', '--store', store, src, '--json']))
    makeRawDisk(src, 4 * MiB, 4 * MiB, false)
    json(cli(['store', 'put', '--store', store, src, '--json']))
    const r = json(cli(['store', 'gc', '--store', store, '--keep', '1', '--json']))
    expect(r.deletedPoints).toEqual(['app@1'])
    expect(r.freedChunks).toBe(16 + 1)
    expect(
      json(cli(['store', 'ls', '--store', store, '--json'])).map((p: { point: string }) => p.point),
    ).toEqual(['app@2'])
    expect(cli(['store', 'verify', '--store', store]).status).toBe(0)
  })
})

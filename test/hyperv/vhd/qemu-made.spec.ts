// VHDs made by qemu-img and written by qemu-io read exactly as qemu reads them.
import { execFileSync } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { detectFormat, openDisk } from '../../../src/hyperv/disk/index.js'
import { hasTool, oracle } from '../../helpers/oracles.js'
import { qemuRaw, qemuVirtualSize, readAll, run, tempDir } from './fixtures.js'

const HAVE_QEMU = oracle('qemu-img', hasTool('qemu-img'))

const CASES = [
  { name: 'dynamic-exact', opts: 'subformat=dynamic,force_size=on', size: '37M' },
  { name: 'dynamic-chs', opts: 'subformat=dynamic', size: '64M' },
  { name: 'fixed-exact', opts: 'subformat=fixed,force_size=on', size: '5M' },
  { name: 'fixed-chs', opts: 'subformat=fixed', size: '21M' },
]

describe.runIf(HAVE_QEMU)('VHDs made by qemu-img', () => {
  let dir: string
  beforeAll(async () => {
    dir = await tempDir('vhd-qemu')
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it.each(CASES)(
    '$name: our bytes and size equal qemu-img convert and info',
    async ({ name, opts, size }) => {
      const file = join(dir, `${name}.vhd`)
      run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', opts, file, size])
      execFileSync('qemu-io', [
        '-f',
        'vpc',
        '-c',
        'write -P 0xab 1000k 3000k',
        '-c',
        'write -P 0x11 0 512',
        '-c',
        'write -P 0x5c 4095k 2k',
        file,
      ])
      expect(await detectFormat(file)).toBe('vhd')
      const disk = await openDisk(file)
      try {
        expect(disk.virtualSize).toBe(qemuVirtualSize(file, 'vpc'))
        const ours = await readAll(disk)
        const theirs = qemuRaw(file, 'vpc', join(dir, `${name}.raw`))
        expect(ours.length).toBe(theirs.length)
        expect(ours.equals(theirs)).toBe(true)
        expect(disk.info().subformat).toBe(opts.includes('fixed') ? 'fixed' : 'dynamic')
      } finally {
        await disk.close()
      }
    },
  )

  it('maps a dynamic VHD like qemu-img map: allocated blocks are data, the rest zero', async () => {
    const file = join(dir, 'map.vhd')
    run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'force_size=on', file, '20M'])
    execFileSync('qemu-io', ['-f', 'vpc', '-c', 'write -P 1 5M 10k', '-c', 'write -P 2 18M 1M', file])
    const qemu = JSON.parse(run('qemu-img', ['map', '--output=json', '-f', 'vpc', file])) as Array<{
      start: number
      length: number
      data: boolean
    }>
    const disk = await openDisk(file)
    const map = await disk.map()
    await disk.close()
    const dataBytes = (s: number) =>
      map.some((e) => e.state === 'data' && s >= e.start && s < e.start + e.length)
    for (const e of qemu) {
      expect(dataBytes(e.start)).toBe(e.data)
      expect(dataBytes(e.start + e.length - 1)).toBe(e.data)
    }
    expect(map.map((e) => e.state)).toEqual(['zero', 'data', 'zero', 'data'])
    expect(map.reduce((n, e) => n + e.length, 0)).toBe(20 << 20)
  })
})

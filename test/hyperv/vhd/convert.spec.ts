// convertDisk: streams only data, leaves zeros unallocated, and leaves nothing behind on failure.
import { existsSync, readdirSync } from 'node:fs'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { convertDisk, createDisk, openDisk } from '../../../src/hyperv/disk/index.js'
import { pattern, readAll, tempDir } from './fixtures.js'

const MiB = 1024 * 1024
let dir: string
let source: string
const content = Buffer.alloc(12 * MiB)

beforeAll(async () => {
  dir = await tempDir('convert')
  pattern(1, 100).copy(content, 5) // one 64 KiB slice
  pattern(2, 3 * MiB).copy(content, 6 * MiB + 4096) // 49 slices, across two 2 MiB blocks
  source = join(dir, 'src.raw')
  await writeFile(source, content)
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('convertDisk', () => {
  it('raw → dynamic VHD writes only non-zero slices and allocates only their blocks', async () => {
    const out = join(dir, 'out.vhd')
    const progress: number[] = []
    const result = await convertDisk(source, out, { to: 'vhd', onProgress: (done) => progress.push(done) })
    expect(result.virtualSize).toBe(content.length)
    expect(result.writtenBytes).toBe(50 * 64 * 1024)
    expect(progress.at(-1)).toBe(content.length)
    const d = await openDisk(out)
    expect((await readAll(d)).equals(content)).toBe(true)
    expect(d.info().allocatedBytes).toBe(3 * 2 * MiB) // blocks 0, 3 and 4
    await d.close()
  })

  it('VHD chain → raw flattens the chain', async () => {
    const base = join(dir, 'base.vhd')
    const child = join(dir, 'child.vhd')
    await convertDisk(source, base, { to: 'vhd' })
    const c = await createDisk(child, { format: 'vhd', parent: base })
    await c.write(pattern(3, 1000), 7 * MiB)
    await c.close()
    const expected = Buffer.from(content)
    pattern(3, 1000).copy(expected, 7 * MiB)
    await convertDisk(child, join(dir, 'flat.raw'), { to: 'raw' })
    expect((await readFile(join(dir, 'flat.raw'))).equals(expected)).toBe(true)
  })

  it('an aborted conversion leaves neither the output nor its temporary file', async () => {
    const out = join(dir, 'aborted.vhd')
    const ac = new AbortController()
    const run = convertDisk(source, out, {
      to: 'vhd',
      signal: ac.signal,
      onProgress: (done) => {
        if (done > 0) ac.abort()
      },
    })
    await expect(run).rejects.toThrow()
    expect(existsSync(out)).toBe(false)
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([])
  })

  it('replaces an existing output only when the conversion succeeds', async () => {
    const out = join(dir, 'keep.vhd')
    await writeFile(out, 'old contents')
    await expect(convertDisk(join(dir, 'missing.raw'), out, { to: 'vhd' })).rejects.toThrow(/missing\.raw/)
    expect(await readFile(out, 'utf8')).toBe('old contents')
    await convertDisk(source, out, { to: 'vhd', subformat: 'fixed' })
    const d = await openDisk(out)
    expect(d.subformat).toBe('fixed')
    await d.close()
  })
})

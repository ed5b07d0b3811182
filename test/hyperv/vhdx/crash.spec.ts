// Crash-safe write ordering: a write that stops at any file operation (injected failure of
// the N-th pwrite or fdatasync) leaves a file that opens, passes qemu-img check, and reads
// each block as either its old or its new content, never a BAT entry pointing at unwritten
// data or a bitmap naming sectors that were not written.
import { open } from 'node:fs/promises'
import { afterAll, describe, expect, it, vi } from 'vitest'
import { createVhdx, openVhdx } from '../../../src/hyperv/disk/vhdx/index.js'
import { HAVE_QEMU, MiB, openParent, openRead, readAll, run, tempDir } from './fixtures.js'

const tmp = tempDir('vhdx-crash')
afterAll(() => tmp.remove())

type Method = 'write' | 'datasync'

async function fileHandleProto(): Promise<Record<Method, (...args: unknown[]) => Promise<unknown>>> {
  const probe = await open(tmp.path('probe'), 'w')
  const proto = Object.getPrototypeOf(probe)
  await probe.close()
  return proto
}

/** Runs `action` with the `failAt`-th call of `method` failing; returns whether it failed. */
async function withFailure(method: Method, failAt: number, action: () => Promise<void>): Promise<boolean> {
  const proto = await fileHandleProto()
  const original = proto[method]
  let calls = 0
  const spy = vi.spyOn(proto, method).mockImplementation(function (this: unknown, ...args: unknown[]) {
    calls++
    if (calls === failAt) return Promise.reject(new Error('injected crash'))
    return original.apply(this, args)
  })
  try {
    await action()
    return false
  } catch (e) {
    if ((e as Error).message !== 'injected crash') throw e
    return true
  } finally {
    spy.mockRestore()
  }
}

describe('VHDX write ordering under injected crashes', () => {
  it.each(['write', 'datasync'] as Method[])(
    'dynamic: a crash at any %s leaves old or new blocks',
    async (method) => {
      const size = 8 * MiB
      const data = Buffer.alloc(3 * MiB, 0x5a) // blocks 1..3 (new), inside block 4 (existing)
      let completed = false
      for (let failAt = 1; failAt < 40; failAt++) {
        const path = tmp.path(`dyn-${method}-${failAt}.vhdx`)
        const d = await createVhdx(path, { format: 'vhdx', virtualSize: size, blockSize: MiB }, openParent)
        await d.write(Buffer.alloc(MiB, 0x11), 4 * MiB)
        await d.close()
        const w = await openVhdx(path, { readOnly: false, openParent })
        const failed = await withFailure(method, failAt, () => w.write(data, MiB + 512 * 1024))
        await w.close().catch(() => undefined)
        const r = await openRead(path)
        const content = await readAll(r)
        await r.close()
        for (let block = 1; block <= 4; block++) {
          const part = content.subarray(block * MiB, (block + 1) * MiB)
          const from = block === 1 ? 512 * 1024 : 0
          const to = block === 4 ? 512 * 1024 : MiB
          const written = part.subarray(from, to)
          const old = block === 4 ? 0x11 : 0
          const isOld = written.every((x) => x === old)
          const isNew = written.every((x) => x === 0x5a)
          expect(isOld || isNew, `${method} #${failAt}, block ${block}`).toBe(true)
          if (block < 4) expect(part.subarray(0, from).every((x) => x === 0)).toBe(true)
        }
        if (HAVE_QEMU) expect(run('qemu-img', ['check', path])).toMatch(/No errors were found/)
        if (!failed) {
          completed = true
          break
        }
      }
      expect(completed).toBe(true)
    },
  )

  it('differencing: a crash at any write leaves each sector from the parent or new', async () => {
    const size = 4 * MiB
    const base = tmp.path('crash-base.vhdx')
    const b = await createVhdx(base, { format: 'vhdx', virtualSize: size, blockSize: MiB }, openParent)
    await b.write(Buffer.alloc(size, 0x22), 0)
    await b.close()
    let completed = false
    for (let failAt = 1; failAt < 40; failAt++) {
      const child = tmp.path(`crash-child-${failAt}.vhdx`)
      const c = await createVhdx(child, { format: 'vhdx', parent: base, blockSize: MiB }, openParent)
      await c.close()
      const w = await openVhdx(child, { readOnly: false, openParent })
      const failed = await withFailure('write', failAt, () => w.write(Buffer.alloc(3000, 0x77), MiB - 1000))
      await w.close().catch(() => undefined)
      const r = await openRead(child)
      const content = await readAll(r)
      await r.close()
      const lo = MiB - 1000
      const hi = MiB + 2000
      const parentBytes = Buffer.alloc(size, 0x22)
      // Outside the sectors the write touched: the parent, untouched.
      const first = Math.floor(lo / 512) * 512
      const last = Math.ceil(hi / 512) * 512
      expect(content.subarray(0, first).equals(parentBytes.subarray(0, first))).toBe(true)
      expect(content.subarray(last).equals(parentBytes.subarray(last))).toBe(true)
      expect(content.subarray(first, lo).every((x) => x === 0x22)).toBe(true)
      expect(content.subarray(hi, last).every((x) => x === 0x22)).toBe(true)
      // Inside: each sector is wholly old or wholly new.
      for (let at = first; at < last; at += 512) {
        const mid = content.subarray(Math.max(at, lo), Math.min(at + 512, hi))
        expect(mid.every((x) => x === 0x22) || mid.every((x) => x === 0x77), `#${failAt} at ${at}`).toBe(true)
      }
      if (!failed) {
        completed = true
        break
      }
    }
    expect(completed).toBe(true)
  })
})

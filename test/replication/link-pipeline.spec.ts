// Per-link limits and compression in the replication engine, in one process (real chunk stores,
// fake hypervisor, in-memory network): a 10 MiB/s limit on a site holds the rate put on the wire
// by two VMs seeding at once; compression shrinks compressible chunks, leaves random ones, and
// the receiver still stores exactly the source's bytes (verified by restore).
import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { hashFunction } from '../../src/chunkstore/index.js'
import { openDisk } from '../../src/hyperv/index.js'
import { Link, TargetSession } from '../../src/replication/index.js'
import { type TestNode as Node, TestNodes, until } from './helpers/nodes.js'

const MiB = 1024 * 1024

let cluster: TestNodes

const quiet = { info: () => {}, warn: () => {} }

const makeNode = (name: string, site: string, withHv: boolean, links?: unknown) =>
  cluster.node(name, { site, hypervisor: withHv, links })

async function restored(n: Node, vm: string, length: number): Promise<Buffer> {
  const out = join(n.dir, `restore-${vm}.raw`)
  await n.service.restore(vm, { out, format: 'raw' })
  const d = await openDisk(out, { format: 'raw' })
  const b = Buffer.alloc(length)
  await d.read(b, 0, length)
  await d.close()
  await rm(out)
  return b
}

/** Bytes per second between the first and the last change of a sampled byte counter. */
function rateOf(samples: Array<[number, number]>): number {
  const moving = samples.filter(([, bytes], i) => i > 0 && bytes !== samples[i - 1][1])
  const first = moving[0]
  const last = moving.at(-1)!
  return ((last[1] - first[1]) / (last[0] - first[0])) * 1000
}

const protect = (n: Node, vm: string, to: string) =>
  n.service.protect({ vm, rpoSeconds: 60, rtoSeconds: 120, to: [to], chain: false, copies: null })

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-link-')
})

afterEach(() => cluster.close())

describe('per-link limits and compression (in process)', () => {
  it('a 10 MiB/s limit holds the rate two senders put on one link within ±15% (measured on the receiver)', async () => {
    // Senders whose chunks are in memory, so the limit and not the disk read is the bottleneck.
    const a = cluster.net.node('A', 'paris')
    const b = await makeNode('B', 'lyon', false)
    const link = new Link('lyon', { to: 'lyon', limit: '10M', compress: 'off', wan: false })
    const hash = hashFunction(b.store.hashAlgorithm)
    const chunks = Array.from({ length: 2 }, () =>
      Array.from({ length: 80 }, () => {
        const bytes = randomBytes(256 * 1024)
        return { id: hash(bytes).toString('hex'), length: bytes.length, load: async () => bytes }
      }),
    )
    const samples: Array<[number, number]> = []
    const sampler = setInterval(
      () => samples.push([performance.now(), b.service.receiverStats.bytesStored]),
      20,
    )
    try {
      await Promise.all(
        chunks.map(async (items, i) => {
          const session = await TargetSession.open({
            network: a,
            peer: 'B',
            vm: `vm${i}`,
            vmId: `id${i}`,
            logger: quiet,
            link,
          })
          await session.offer(items)
          await session.settle()
          await session.close()
        }),
      )
    } finally {
      clearInterval(sampler)
    }
    const rate = rateOf(samples)
    console.log(
      `two senders over one 10 MiB/s link: ${(rate / MiB).toFixed(2)} MiB/s measured on the receiver (machine loaded)`,
    )
    expect(b.service.receiverStats.bytesStored).toBe(40 * MiB)
    expect(rate).toBeGreaterThan(10 * MiB * 0.85)
    expect(rate).toBeLessThan(10 * MiB * 1.15)
  }, 120_000)

  it('a limit on a site caps two VMs seeding over it, and shows in the status', async () => {
    const a = await makeNode('A', 'paris', true, { links: [{ to: 'lyon', limit: '10M', compress: 'off' }] })
    const b = await makeNode('B', 'lyon', false)
    for (const vm of ['one', 'two']) {
      await cluster.hv.createVm(vm, [12 * MiB])
      await cluster.hv.write(vm, 0, 0, randomBytes(12 * MiB))
    }
    const samples: Array<[number, number]> = []
    const sampler = setInterval(
      () => samples.push([performance.now(), b.service.receiverStats.bytesStored]),
      20,
    )
    try {
      await Promise.all([protect(a, 'one', 'B'), protect(a, 'two', 'B')])
      for (const vm of ['one', 'two']) await until(`seed of ${vm}`, async () => b.store.lastPoint(vm), 60_000)
    } finally {
      clearInterval(sampler)
    }
    const rate = rateOf(samples)
    console.log(
      `two VMs seeding over a 10 MiB/s site link: ${(rate / MiB).toFixed(2)} MiB/s (machine loaded)`,
    )
    // The pipeline may be slower than the limit on a loaded machine; it is never faster.
    expect(rate).toBeLessThan(10 * MiB * 1.15)
    const status = a.service.linkStatus().find((s) => s.name === 'lyon')
    expect(status).toMatchObject({ limit: '10M', limitBytesPerSecond: 10 * MiB, compression: false })
    expect(status?.bytesSent).toBeGreaterThan(24 * MiB)
    expect(a.service.protection('one').targets[0].link).toMatchObject({ name: 'lyon', limit: '10M' })
  }, 120_000)

  it('compresses compressible chunks on a WAN link, not random ones; restores are exact', async () => {
    const a = await makeNode('A', 'paris', true, { links: [{ to: 'B', wan: true }] })
    const b = await makeNode('B', 'lyon', false)
    await cluster.hv.createVm('mixed', [16 * MiB])
    // 8 MiB of log-like text (varied lines), then 8 MiB of random bytes.
    const lines: string[] = []
    for (let i = 0, length = 0; length < 8 * MiB; i++, length += lines.at(-1)!.length)
      lines.push(
        `${new Date(1_700_000_000_000 + i * 137).toISOString()} INFO req=${i} user=u${i % 97} path=/api/v1/items/${(i * 7919) % 10_000} status=200 ms=${i % 53}\n`,
      )
    const text = Buffer.from(lines.join('')).subarray(0, 8 * MiB)
    const random = randomBytes(8 * MiB)
    await cluster.hv.write('mixed', 0, 0, text)
    await cluster.hv.write('mixed', 0, 8 * MiB, random)
    const started = performance.now()
    await protect(a, 'mixed', 'B')
    await until('seed of mixed', async () => b.store.lastPoint('mixed'), 60_000)
    const seedMs = performance.now() - started
    const t = a.service.protection('mixed').targets[0]
    const link = t.link!
    const s = link.compressionStats
    const ratio = s.wireBytes / s.rawBytes
    console.log(
      `compression (brotli q0): ${s.compressed} chunks ${(s.rawBytes / MiB).toFixed(1)} MiB → ${(s.wireBytes / MiB).toFixed(2)} MiB (ratio ${ratio.toFixed(3)}); ${s.notWorth} tried and sent raw, ${s.skipped} not tried; ${s.cpuMs} ms of compression for 16 MiB, seed took ${Math.round(seedMs)} ms (machine loaded)`,
    )
    expect(link.compression).toBe(true)
    expect(s.compressed).toBe(32)
    expect(ratio).toBeLessThan(0.5)
    expect(s.notWorth + s.skipped).toBe(32)
    expect(t.compressedChunks).toBe(32)
    expect(t.payloadBytes).toBeLessThan(8 * MiB + 8 * MiB * 0.5)
    const got = await restored(b, 'mixed', 16 * MiB)
    expect(got.subarray(0, 8 * MiB).equals(text)).toBe(true)
    expect(got.subarray(8 * MiB).equals(random)).toBe(true)
  }, 120_000)

  it('leaves a LAN link uncompressed and unlimited by default', async () => {
    const a = await makeNode('A', 'paris', true)
    const b = await makeNode('B', 'paris', false)
    await cluster.hv.createVm('lan', [4 * MiB])
    await cluster.hv.write('lan', 0, 0, Buffer.alloc(4 * MiB, 'same text again and again '))
    await protect(a, 'lan', 'B')
    await until('seed of lan', async () => b.store.lastPoint('lan'), 60_000)
    const link = a.service.protection('lan').targets[0].link!
    expect(link).toMatchObject({ name: 'B', limitBytesPerSecond: null, compression: false })
    expect(link.compressionStats.compressed).toBe(0)
  }, 60_000)
})

// The release contract of OfferItem (session.ts), on which the source's reused read buffers rest
// (protector.ts ReadBuffers): a session releases each item it is given exactly once, only when
// it is done with the item's bytes (stored on the target, held there already, or a repeat), a
// rejected chunk only after its resend is stored, and never an item still in flight when the
// session fails. And a commit's manifest goes out a frame at a time from a list made as it is
// read. A real receiver and chunk store over the in-memory network.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type ChunkStore, hashFunction, openChunkStore } from '../../src/chunkstore/index.js'
import { MAX_ENTRIES_PER_FRAME } from '../../src/replication/constants.js'
import {
  CHUNKS_PROTOCOL,
  type CommitRefusedError,
  type ManifestEntry,
  type OfferItem,
  POINTS_PROTOCOL,
  type PointHeader,
  PointReceiver,
  TargetSession,
} from '../../src/replication/index.js'
import { MemoryNetwork } from './helpers/memory-network.js'

const quiet = { info: () => {}, warn: () => {} }

let root: string
let store: ChunkStore
let net: MemoryNetwork

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'replimesh-release-'))
  store = await openChunkStore({ dir: join(root, 'store') })
  net = new MemoryNetwork()
  const b = net.node('B', 'lyon')
  const receiver = new PointReceiver({ store, logger: quiet, onCommitted() {} })
  b.handle(CHUNKS_PROTOCOL, (s, ctx) => receiver.handleChunks(s, ctx))
  b.handle(POINTS_PROTOCOL, (s, ctx) => receiver.handlePoints(s, ctx))
})

afterEach(async () => {
  await store.close()
  await rm(root, { recursive: true, force: true })
})

interface Tracked {
  item: OfferItem
  bytes: Buffer
  loads: number
  /** Loads seen at each release. */
  releases: number[]
}

function tracked(bytes: Buffer): Tracked {
  const t: Tracked = {
    bytes,
    loads: 0,
    releases: [],
    item: {
      id: hashFunction(store.hashAlgorithm)(bytes).toString('hex'),
      length: bytes.length,
      load: async () => {
        t.loads++
        return bytes
      },
      release: () => {
        t.releases.push(t.loads)
      },
    },
  }
  return t
}

const open = (corruptChunks?: number) =>
  TargetSession.open({
    network: net.node('A', 'paris'),
    peer: 'B',
    vm: 'vm',
    vmId: 'vm-id',
    logger: quiet,
    corruptChunks,
  })

describe('OfferItem release (session.ts)', () => {
  it('releases each item once: stored ones after their ack, held ones and repeats at once', async () => {
    const held = tracked(randomBytes(64 * 1024))
    await store.putChunk(held.item.id, held.bytes)
    await store.flush()
    const fresh = Array.from({ length: 6 }, () => tracked(randomBytes(64 * 1024)))
    const repeat = tracked(fresh[0].bytes)
    const session = await open()
    await session.offer([held.item, ...fresh.map((t) => t.item), repeat.item])
    await session.settle()
    expect(held.releases).toEqual([0])
    expect(repeat.releases).toEqual([0])
    for (const t of fresh) expect(t.releases).toEqual([1])
    // An id offered again in a later batch of the same session is not sent, only released.
    const again = tracked(fresh[1].bytes)
    await session.offer([again.item])
    expect(again.releases).toEqual([0])
    await session.close()
    expect(session.stats.chunksSent).toBe(6)
  })

  it('a rejected chunk is released once, after its resend is stored', async () => {
    const items = Array.from({ length: 3 }, () => tracked(randomBytes(64 * 1024)))
    const session = await open(1)
    await session.offer(items.map((t) => t.item))
    await session.settle()
    await session.close()
    expect(session.stats.resent).toBe(1)
    // The first chunk went out corrupted: loaded twice, released once, after the second load.
    expect(items[0].loads).toBe(2)
    expect(items[0].releases).toEqual([2])
    expect(items[1].releases).toEqual([1])
    expect(items[2].releases).toEqual([1])
  })

  it('never releases an item still in flight when the session fails', async () => {
    // The target stores nothing (its store hangs), so no chunk is ever acknowledged.
    store.putChunks = () => new Promise(() => {})
    const items = Array.from({ length: 4 }, () => tracked(randomBytes(64 * 1024)))
    const session = await open()
    const offered = session.offer(items.map((t) => t.item))
    offered.catch(() => {})
    const deadline = Date.now() + 10_000
    while (items.some((t) => t.loads === 0) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10))
    expect(items.every((t) => t.loads === 1)).toBe(true)
    session.abort(new Error('test: target gone'))
    await expect(session.settle()).rejects.toThrow('target gone')
    await new Promise((r) => setTimeout(r, 50))
    for (const t of items) expect(t.releases).toEqual([])
  })
})

describe('TargetSession.commit', () => {
  const chunkSize = 256 * 1024
  const header = (seq: number, virtualSize: number, entries: number): PointHeader => ({
    vm: 'vm',
    vmId: 'vm-id',
    seq,
    epoch: 0,
    time: Date.now(),
    consistency: 'crash',
    baseSeq: null,
    alg: store.hashAlgorithm,
    source: 'A',
    rpoSeconds: 60,
    forward: [],
    config: {},
    disks: [{ index: 0, virtualSize, chunkSize, entries }],
  })
  async function stored(): Promise<string> {
    const bytes = randomBytes(64 * 1024)
    const id = hashFunction(store.hashAlgorithm)(bytes).toString('hex')
    await store.putChunk(id, bytes)
    await store.flush()
    return id
  }

  it('sends a full manifest of more entries than a frame holds from a lazy list, a frame at a time', async () => {
    const id = await stored()
    const count = MAX_ENTRIES_PER_FRAME + 4464 // two frames
    let made = 0
    function* entries(): Generator<ManifestEntry> {
      // Every other chunk holds the one stored chunk; the rest are zero and not listed.
      for (let index = 0; index < 2 * count; index += 2) {
        made++
        yield { index, id }
      }
    }
    const session = await open()
    await session.commit(header(1, 2 * count * chunkSize, count), [entries()])
    await session.close()
    expect(made).toBe(count)
    const point = await store.lastPoint('vm')
    expect(point?.seq).toBe(1)
    let at = 0
    for await (const held of store.readManifest(point!.disks[0])) {
      expect(held === id, `entry ${at}`).toBe(at % 2 === 0)
      at++
    }
    expect(at).toBe(2 * count)
  })

  it('refuses a manifest that names chunks past its disk, too many chunks, or chunks not held; then commits a good one', async () => {
    const id = await stored()
    const session = await open()
    const refused = (p: Promise<void>) =>
      p.then(
        () => null,
        (err: CommitRefusedError) => [err.reason, err.message],
      )
    expect(await refused(session.commit(header(1, 4 * chunkSize, 1), [[{ index: 4, id }]]))).toEqual([
      'invalid',
      expect.stringMatching(/disk 0: entry for chunk 4 past its 4 chunks/),
    ])
    expect(await refused(session.commit(header(2, 2 ** 50, 0), [[]]))).toEqual([
      'invalid',
      expect.stringMatching(/disk 0 has 4294967296 chunks, more than any disk/),
    ])
    const absent = '11'.repeat(32)
    expect(
      await refused(
        session.commit(header(3, 4 * chunkSize, 2), [
          [
            { index: 0, id },
            { index: 1, id: absent },
          ],
        ]),
      ),
    ).toEqual(['missing-chunks', expect.stringMatching(/1 chunk\(s\) not stored here/)])
    expect(await store.lastPoint('vm')).toBeUndefined()
    // The receiver still serves this stream: a good point commits.
    await session.commit(header(4, 4 * chunkSize, 1), [[{ index: 3, id }]])
    await session.close()
    expect((await store.lastPoint('vm'))?.seq).toBe(4)
  })
})

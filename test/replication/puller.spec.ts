// Pulling chunks from several peers at once: real chunk stores, in-memory network. Work spreads
// over the peers that hold the chunks; a peer sending bad chunks or lacking some is worked around;
// what nobody holds is reported missing.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type ChunkStore, hashFunction, openChunkStore } from '../../src/chunkstore/index.js'
import {
  CHUNKS_PROTOCOL_1_0,
  type ChunksMessage,
  decodeChunksMessage,
  encodeChunksMessage,
  MessageChannel,
  pullChunks,
  ReplicationService,
} from '../../src/replication/index.js'
import { MemoryNetwork } from './helpers/memory-network.js'

let root: string
let net: MemoryNetwork
const stores: ChunkStore[] = []
const services: ReplicationService[] = []
const logs: string[] = []
const logger = { info: () => {}, warn: (_: object, msg?: string) => logs.push(msg ?? '') }

async function holder(name: string, chunks: Array<{ id: string; bytes: Buffer }>): Promise<void> {
  const store = await openChunkStore({ dir: join(root, name, 'store') })
  stores.push(store)
  for (const c of chunks) await store.putChunk(c.id, c.bytes)
  const service = new ReplicationService({
    dir: join(root, name),
    mesh: net.node(name, name),
    store,
    hypervisor: null,
    logger,
  })
  await service.start()
  services.push(service)
}

/** A peer that answers every get with corrupted bytes of the chunks it names. */
function liar(name: string, chunks: Map<string, Buffer>): void {
  net.node(name, name).handle(CHUNKS_PROTOCOL_1_0, async (stream) => {
    const ch = new MessageChannel<ChunksMessage>(stream, encodeChunksMessage, decodeChunksMessage)
    for (;;) {
      const m = await ch.next()
      if (m === null) break
      if (m.type !== 'get') continue
      for (const id of m.ids) {
        const bytes = Buffer.from(chunks.get(id) as Buffer)
        bytes[7] ^= 0x5a
        await ch.send({ type: 'chunk', id, bytes })
      }
      await ch.send({ type: 'missing', req: m.req, ids: [] })
    }
    await ch.end()
  })
}

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'replimesh-pull-'))
  net = new MemoryNetwork()
  logs.length = 0
})

afterEach(async () => {
  for (const s of services.splice(0)) await s.stop()
  for (const s of stores.splice(0)) await s.close()
  await rm(root, { recursive: true, force: true })
})

describe('pullChunks', () => {
  it('pulls from several holders at once, around a peer that sends bad chunks', async () => {
    const hash = hashFunction('blake3')
    const chunks = Array.from({ length: 48 }, () => {
      const bytes = randomBytes(256 * 1024)
      return { id: hash(bytes).toString('hex'), bytes }
    })
    // Chunks 0-15 only B holds, 32-47 only C: both must serve.
    await holder('B', chunks.slice(0, 32))
    await holder('C', chunks.slice(16))
    liar('E', new Map(chunks.map((c) => [c.id, c.bytes])))
    const store = await openChunkStore({ dir: join(root, 'D', 'store') })
    stores.push(store)
    const d = net.node('D', 'D')
    const lease = store.lease()
    const r = await pullChunks(
      chunks.map((c) => c.id),
      { network: d, store, peers: ['E', 'C', 'B'], logger, lease },
    )
    lease.release()
    console.log(`pulled ${r.fetched} chunks: ${JSON.stringify(r.byPeer)}`)
    expect(r.missing).toEqual([])
    expect(r.fetched).toBe(48)
    expect(await store.has(chunks.map((c) => c.id))).toEqual([])
    for (const c of chunks.slice(0, 5)) expect((await store.getChunk(c.id)).equals(c.bytes)).toBe(true)
    expect(r.byPeer.B.chunks).toBeGreaterThanOrEqual(16)
    expect(r.byPeer.C.chunks).toBeGreaterThanOrEqual(16)
    // Both honest holders served; the liar's chunks all failed verification and were asked again.
    expect(r.byPeer.B.chunks).toBeGreaterThan(0)
    expect(r.byPeer.C.chunks).toBeGreaterThan(0)
    expect(r.byPeer.E.chunks).toBe(0)
    expect(r.byPeer.E.bad).toBeGreaterThan(0)
    expect(r.byPeer.B.chunks + r.byPeer.C.chunks).toBe(48)
    expect(logs.some((l) => /from E failed verification/.test(l))).toBe(true)
  })

  it('reports what no peer holds, and goes on without a peer it cannot reach', async () => {
    const hash = hashFunction('blake3')
    const chunks = Array.from({ length: 6 }, () => {
      const bytes = randomBytes(64 * 1024)
      return { id: hash(bytes).toString('hex'), bytes }
    })
    await holder('B', chunks.slice(0, 5))
    const gone = net.node('X', 'X')
    gone.down = true
    const store = await openChunkStore({ dir: join(root, 'D', 'store') })
    stores.push(store)
    const r = await pullChunks(
      chunks.map((c) => c.id),
      { network: net.node('D', 'D'), store, peers: ['X', 'B'], logger },
    )
    expect(r.fetched).toBe(5)
    expect(r.missing).toEqual([chunks[5].id])
    expect(r.byPeer.B.lacked).toBe(1)
    expect(r.byPeer.X.error).not.toBeNull()
  })
})

// restore of a point nobody holds: the error says where it was looked for (this node and how
// many peers), not only "on this node" (real chunk store, the in-memory network).
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type ChunkStore, openChunkStore } from '../../src/chunkstore/index.js'
import {
  decodePointsMessage,
  encodePointsMessage,
  MessageChannel,
  POINTS_PROTOCOL,
  PointNotFoundError,
  type PointsMessage,
  ReplicationService,
} from '../../src/replication/index.js'
import { MemoryNetwork } from './helpers/memory-network.js'

let root: string
let net: MemoryNetwork
let services: Array<{ service: ReplicationService; store: ChunkStore }>

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'replimesh-notfound-'))
  net = new MemoryNetwork()
  services = []
})

afterEach(async () => {
  for (const s of services) {
    await s.service.stop()
    await s.store.close()
  }
  await rm(root, { recursive: true, force: true })
})

async function restorer(): Promise<ReplicationService> {
  const dir = join(root, 'E')
  const store = await openChunkStore({ dir: join(dir, 'store') })
  const service = new ReplicationService({
    dir,
    mesh: net.node('E', 'site-E'),
    store,
    hypervisor: null,
    logger: { info: () => {}, warn: () => {} },
  })
  await service.start()
  services.push({ service, store })
  return service
}

/** A member that gossips a point of `vm` (seq 3) but answers every fetch with a nack. */
function emptyHolder(name: string, vm: string): { fetches: number } {
  const counter = { fetches: 0 }
  const node = net.node(name, `site-${name}`)
  node.setReplicas([{ vm, lastPoint: { seq: 3, time: Date.now() }, epoch: 0 }])
  node.handle(POINTS_PROTOCOL, async (stream) => {
    const ch = new MessageChannel<PointsMessage>(stream, encodePointsMessage, decodePointsMessage)
    const m = await ch.next()
    if (m?.type === 'fetch') {
      counter.fetches++
      await ch.send({ type: 'nack', seq: m.seq ?? 0, reason: 'error', message: 'not here', missing: [] })
    }
    await ch.end()
  })
  return counter
}

const restore = (s: ReplicationService, seq?: number) =>
  s.restore('web', { ...(seq === undefined ? {} : { seq }), out: join(root, 'x.raw'), format: 'raw' })

describe('restore of a point held nowhere', () => {
  it('no peer holds the VM: looked for on this node and on 0 peers', async () => {
    const e = await restorer()
    net.node('B', 'site-B')
    const err = await restore(e).catch((x: Error) => x)
    expect(err).toBeInstanceOf(PointNotFoundError)
    expect((err as Error).message).toBe(
      "no recovery point of VM 'web': looked for on this node and on 0 peers (no peer holds a point of it)",
    )
  })

  it('two peers gossip a point but answer the fetch with a nack: both are named in the count', async () => {
    const e = await restorer()
    const b = emptyHolder('B', 'web')
    const c = emptyHolder('C', 'web')
    await expect(restore(e)).rejects.toThrow(
      /^no recovery point of VM 'web': looked for on this node and on 2 peers$/,
    )
    await expect(restore(e, 2)).rejects.toThrow(
      /^no recovery point 2 of VM 'web': looked for on this node and on 2 peers$/,
    )
    expect(b.fetches).toBe(2)
    expect(c.fetches).toBe(2)
    // A point newer than any holder gossips: no peer is asked.
    await expect(restore(e, 9)).rejects.toThrow(
      /^no recovery point 9 of VM 'web': looked for on this node and on 0 peers \(no peer holds that point of it\)$/,
    )
  })
})

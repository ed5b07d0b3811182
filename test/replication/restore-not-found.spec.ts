// restore of a point nobody holds: the error says where it was looked for (this node and how
// many peers), not only "on this node" (real chunk store, the in-memory network).
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  decodePointsMessage,
  encodePointsMessage,
  MessageChannel,
  POINTS_PROTOCOL,
  PointNotFoundError,
  type PointsMessage,
  type ReplicationService,
} from '../../src/replication/index.js'
import { TestNodes } from './helpers/nodes.js'

let cluster: TestNodes

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-notfound-')
})

afterEach(() => cluster.close())

async function restorer(): Promise<ReplicationService> {
  return (await cluster.node('E')).service
}

/** A member that gossips a point of `vm` (seq 3) but answers every fetch with a nack. */
function emptyHolder(name: string, vm: string): { fetches: number } {
  const counter = { fetches: 0 }
  const node = cluster.net.node(name, `site-${name}`)
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
  s.restore('web', { ...(seq === undefined ? {} : { seq }), out: join(cluster.root, 'x.raw'), format: 'raw' })

describe('restore of a point held nowhere', () => {
  it('no peer holds the VM: looked for on this node and on 0 peers', async () => {
    const e = await restorer()
    cluster.net.node('B', 'site-B')
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
  it("a holder's header naming a disk of more chunks than any disk is refused before anything is held", async () => {
    const e = await restorer()
    const node = cluster.net.node('B', 'site-B')
    node.setReplicas([{ vm: 'web', lastPoint: { seq: 3, time: Date.now() }, epoch: 0 }])
    node.handle(POINTS_PROTOCOL, async (stream) => {
      const ch = new MessageChannel<PointsMessage>(stream, encodePointsMessage, decodePointsMessage)
      if ((await ch.next())?.type !== 'fetch') return ch.end()
      // 2^50 bytes in 4 KiB chunks: 2^38 chunks, whose packed manifest would need 8 TiB.
      await ch.send({
        type: 'point',
        point: {
          vm: 'web',
          vmId: 'web',
          seq: 3,
          epoch: 0,
          time: Date.now(),
          consistency: 'crash',
          baseSeq: null,
          alg: 'blake3',
          source: 'A',
          rpoSeconds: 1,
          forward: [],
          config: {},
          disks: [{ index: 0, virtualSize: 2 ** 50, chunkSize: 4096, entries: 0 }],
        },
      })
      await ch.end()
    })
    await expect(restore(e)).rejects.toThrow(/disk 0 has 274877906944 chunks, more than any disk/)
  })
})

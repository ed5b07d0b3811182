// Pings must never starve or fail the replimesh protocols. libp2p allows one outbound ping stream
// per connection; libp2p's own connection monitor used to ping every 10 s on top of MeshNode's
// liveness pings, and on a failed ping ("Too many outbound protocol streams … 2/1", or a timeout
// under load) it aborted the whole connection, failing every chunks/points stream on it.
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { afterEach, describe, expect, it } from 'vitest'
import type { MeshNode } from '../../src/mesh/index.js'
import type { TransportNode } from '../../src/mesh/transport.js'
import { FAST_TIMING, makeNode, waitFor } from './helpers.js'

const PING = '/ipfs/ping/1.0.0'
const ECHO = '/replimesh/test-echo/1.0.0'

function libp2pOf(node: MeshNode): TransportNode {
  return (node as unknown as { libp2p: TransportNode }).libp2p
}

async function echo(stream: Stream, payload: Uint8Array): Promise<Uint8Array> {
  stream.send(payload)
  await stream.close()
  const parts: Uint8Array[] = []
  for await (const part of stream) parts.push(part.subarray())
  return Buffer.concat(parts)
}

describe('liveness pings and other protocols (in process, loopback)', () => {
  const nodes: MeshNode[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.stop()))
  })

  it('a peer that stalls every ping: timed-out ping streams are aborted, the connection and a protocol stream on it live on', {
    timeout: 60_000,
  }, async () => {
    const meshKey = await generateKeyPair('Ed25519')
    // A ping is always in flight (timeout 400 ms > interval 100 ms) and always times out.
    const timing = { pingIntervalMs: 100, pingTimeoutMs: 400, suspectAfterMs: 20_000, downAfterMs: 30_000 }
    const a = await makeNode(meshKey, 'a', { timing: { ...FAST_TIMING, ...timing } })
    nodes.push(a)
    await a.start()
    const b = await makeNode(meshKey, 'b', { bootstrap: a.addrs(), timing: { ...FAST_TIMING, ...timing } })
    nodes.push(b)
    b.handle(ECHO, async (stream) => {
      for await (const part of stream) stream.send(part)
      await stream.close()
    })
    await b.start()
    // b reads ping streams and never answers.
    const bNode = libp2pOf(b)
    await bNode.unhandle(PING)
    let stalled = 0
    await bNode.handle(
      PING,
      () => {
        stalled++
      },
      { maxInboundStreams: 2 },
    )
    await waitFor('a and b proven', () => a.peers().some((p) => p.peerId === b.peerId && p.connected))

    const aNode = libp2pOf(a)
    const bId = peerIdFromString(b.peerId)
    const [connection] = aNode.getConnections(bId)
    expect(connection).toBeDefined()
    let closedWith: string | null = null
    connection.addEventListener('close', (evt) => {
      closedWith = (evt as unknown as { error?: Error }).error?.message ?? 'closed'
    })

    // Past libp2p's connection monitor interval (10 s): it would have pinged next to our ping
    // in flight (2/1) or timed out, and aborted the connection.
    let maxOutboundPings = 0
    let echoes = 0
    const failures: string[] = []
    const until = Date.now() + 12_000
    while (Date.now() < until) {
      for (const c of aNode.getConnections(bId)) {
        const pings = c.streams.filter((s) => s.direction === 'outbound' && s.protocol === PING).length
        maxOutboundPings = Math.max(maxOutboundPings, pings)
      }
      try {
        const payload = new TextEncoder().encode(`echo ${echoes}`)
        const back = await echo(
          await a.dialProtocol(b.peerId, ECHO, { signal: AbortSignal.timeout(5000) }),
          payload,
        )
        expect(Buffer.from(back).toString()).toBe(`echo ${echoes}`)
        echoes++
      } catch (err) {
        failures.push((err as Error).message)
      }
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(failures).toEqual([])
    expect(closedWith).toBeNull()
    expect(connection.status).toBe('open')
    expect(aNode.getConnections(bId)).toContain(connection)
    // Many pings were sent and timed out; at no time more than one ping stream from a, and the
    // timed-out ones were aborted (b does not keep them).
    expect(stalled).toBeGreaterThan(10)
    expect(maxOutboundPings).toBeLessThanOrEqual(1)
    const bInboundPings = bNode
      .getConnections(peerIdFromString(a.peerId))
      .flatMap((c) => c.streams)
      .filter((s) => s.direction === 'inbound' && s.protocol === PING).length
    expect(bInboundPings).toBeLessThanOrEqual(1)
    expect(echoes).toBeGreaterThan(10)
  })
})

// Malformed frames on every replimesh protocol a node answers close that stream, are logged, and
// the node keeps serving. The fuzzer is an in-process member (certificate signed with the mesh key
// read from the creator's folder), so the membership guard lets its streams through.
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeFrame, encodeJsonFrame, issueCertificate, MeshNode } from '../../src/mesh/index.js'
import { createTestMesh, TEST_TIMING, type TestMesh, waitFor } from '../helpers/nodes.js'

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n)
  return b
}

/** Malformed inputs: each must make the receiver close the stream and log why. */
function fuzzCases(seed: number): Array<{ name: string; bytes: Uint8Array }> {
  const text = new TextEncoder()
  return [
    { name: 'length beyond any limit', bytes: u32(0xffffffff) },
    { name: 'length over the frame limit', bytes: Uint8Array.from([...u32(16 * 1024 * 1024), 1, 2, 3]) },
    { name: 'truncated body', bytes: Uint8Array.from([...u32(100), 1, 2, 3]) },
    { name: 'truncated header', bytes: Uint8Array.from([0, 0]) },
    { name: 'not JSON', bytes: encodeFrame(randomBytes(64)) },
    { name: 'invalid UTF-8', bytes: encodeFrame(Uint8Array.from([0x7b, 0xff, 0xfe, 0x7d])) },
    { name: 'JSON of the wrong shape', bytes: encodeJsonFrame({ type: 'state', hello: seed }) },
    { name: 'JSON null', bytes: encodeFrame(text.encode('null')) },
    {
      name: 'signed document with a bad signature',
      bytes: encodeJsonFrame({
        type: 'state',
        state: { payload: '{}', signature: 'AAAA' },
        certificate: { payload: '{}', signature: 'AAAA' },
      }),
    },
    { name: 'random bytes', bytes: Uint8Array.from([...u32(40), ...randomBytes(40)]) },
  ]
}

describe('fuzzed frames on every replimesh protocol', { timeout: 180_000 }, () => {
  let mesh: TestMesh
  let fuzzer: MeshNode
  beforeAll(async () => {
    mesh = await createTestMesh(['north', 'south'])
    const meshKey = privateKeyFromProtobuf(
      new Uint8Array(await readFile(join(mesh.nodes[0].dir, 'mesh.key'))),
    )
    const privateKey = await generateKeyPair('Ed25519')
    const certificate = await issueCertificate(meshKey, peerIdFromPrivateKey(privateKey).toString(), 'fuzz')
    fuzzer = new MeshNode({
      privateKey,
      site: 'fuzz',
      meshKey: meshKey.publicKey,
      certificate,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      mdns: false,
      timing: TEST_TIMING,
      capacity: async () => ({
        diskFreeBytes: 1,
        diskTotalBytes: 1,
        cpus: 1,
        memoryTotalBytes: 1,
        memoryFreeBytes: 1,
      }),
    })
    await fuzzer.start()
  }, 300_000)
  afterAll(async () => {
    await fuzzer?.stop()
    await mesh?.teardown()
  })

  it('closes the stream, logs the reason and keeps serving', async () => {
    const target = mesh.nodes[0]
    await fuzzer.connect((await target.status()).addrs[0])
    const protocols = await target.call<string[]>('GET', '/mesh/protocols')
    expect(protocols).toEqual(
      expect.arrayContaining([
        '/replimesh/gossip/1.0.0',
        '/replimesh/membership/1.0.0',
        '/replimesh/redeem/1.0.0',
      ]),
    )
    let seed = 0
    for (const protocol of protocols) {
      for (const c of fuzzCases(seed++)) {
        const logged = () =>
          target
            .jsonLogs()
            .filter((l) => l.protocol === protocol && String(l.msg).startsWith('closed stream')).length
        const before = logged()
        // A fresh stream can already be closing when the previous case's reset is still in
        // flight on a loaded machine: dial again (bounded) until one is open.
        let stream = await fuzzer.dialProtocol(target.peerId, protocol)
        for (let attempt = 0; stream.status !== 'open' && attempt < 5; attempt++) {
          await new Promise((r) => setTimeout(r, 200))
          stream = await fuzzer.dialProtocol(target.peerId, protocol)
        }
        if (stream.status !== 'open')
          throw new Error(`${protocol} / ${c.name}: stream ${stream.status} before sending`)
        stream.send(c.bytes)
        await stream.close().catch(() => {})
        // The receiver ends the stream: reading it finishes (or fails) within the deadline.
        await waitFor(
          `${protocol} closes the stream on ${c.name}`,
          async () => {
            try {
              for await (const _ of stream) {
              }
            } catch {}
            return true
          },
          10_000,
        )
        await waitFor(`${target.name} logs ${protocol} / ${c.name}`, () => logged() > before, 10_000)
      }
    }
    // Still serving: its API answers, the fuzzer is still a member, the other node is alive.
    const s = await target.status()
    expect(s.peers.find((p) => p.peerId === mesh.nodes[1].peerId)?.state).toBe('alive')
    expect(fuzzer.peers().find((p) => p.peerId === target.peerId)?.state).toBe('alive')
    const reasons = new Set(
      target
        .jsonLogs()
        .filter((l) => String(l.msg).startsWith('closed stream'))
        .map((l) => String(l.reason).slice(0, 40)),
    )
    console.log(
      `${protocols.length} protocols × ${fuzzCases(0).length} cases; distinct logged reasons: ${reasons.size}`,
    )
  })
})

// Signed recovery points (DESIGN.md §3), in one process: real chunk stores, the in-memory network
// with real Ed25519 keys and real peer ids. A receiver commits a point only when its declared
// source (a current member) signed exactly that header and those manifest roots; a chain hop
// forwards the owner's signature, not its own.
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { hashFunction, type RecoveryPoint } from '../../src/chunkstore/index.js'
import { openEnvelope } from '../../src/mesh/index.js'
import {
  CommitRefusedError,
  type ManifestEntry,
  manifestRoot,
  POINT_SIGNATURE_KIND,
  type PointHeader,
  signedFields,
  summarisePoints,
  TargetSession,
} from '../../src/replication/index.js'
import { signedPointSchema } from '../../src/replication/point-signature.js'
import { runCli, testEnv } from '../helpers/nodes.js'
import type { MemoryNode } from './helpers/memory-network.js'
import { type TestNode as Node, TestNodes, until } from './helpers/nodes.js'

const MiB = 1024 * 1024
const CHUNK = 64 * 1024

interface TestNode extends Node {
  id: string
  key: PrivateKey
}

let cluster: TestNodes

async function makeNode(site: string, withHv: boolean): Promise<TestNode> {
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  const n = await cluster.node(id, { site, hypervisor: withHv, key })
  return Object.assign(n, { id, key })
}

/** The replica disk was brought to `seq` (nothing is left writing under the test folder). */
async function applied(n: TestNode, vm: string, seq: number): Promise<void> {
  await until(
    `replica disk of ${vm} at ${seq}`,
    async () => (await n.service.replicas.read(vm))?.appliedSeq === seq,
  )
  await n.service.idle()
}

beforeEach(async () => {
  cluster = await TestNodes.create('replimesh-sig-')
})

afterEach(() => cluster.close())

/** A point of 4 chunks of 64 KiB, built by hand as a source would (ids, entries, roots). */
async function handPoint(alg: 'blake3' | 'sha256', seed = randomBytes(4 * CHUNK)) {
  const hash = hashFunction(alg)
  const chunks = [0, 1, 2, 3].map((i) => seed.subarray(i * CHUNK, (i + 1) * CHUNK))
  const ids = chunks.map((c) => hash(c).toString('hex'))
  const entries: ManifestEntry[] = ids.map((id, index) => ({ index, id }))
  const root = await manifestRoot(4 * CHUNK, CHUNK, ids, alg)
  return { chunks, ids, entries, root }
}

/** Pushes the chunks, then the point; resolves on ack, rejects with CommitRefusedError on a nack. */
async function send(
  from: MemoryNode,
  to: TestNode,
  header: PointHeader,
  p: Awaited<ReturnType<typeof handPoint>>,
): Promise<void> {
  const session = await TargetSession.open({
    network: from,
    peer: to.id,
    vm: header.vm,
    vmId: header.vmId,
    logger: { info() {}, warn() {} },
  })
  try {
    await session.offer(p.ids.map((id, i) => ({ id, length: CHUNK, load: async () => p.chunks[i] })))
    await session.commit(header, [p.entries])
  } finally {
    await session.close().catch(() => {})
  }
}

function header(source: string, seq: number, over: Partial<PointHeader> = {}): PointHeader {
  return {
    vm: 'db',
    vmId: 'vm-db',
    seq,
    epoch: 2,
    time: 1_760_000_000_000 + seq,
    consistency: 'crash',
    baseSeq: null,
    alg: 'blake3',
    source,
    rpoSeconds: 5,
    forward: [],
    config: { name: 'db', memoryMiB: 512, cpus: 2 },
    disks: [{ index: 0, virtualSize: 4 * CHUNK, chunkSize: CHUNK, entries: 4 }],
    ...over,
  }
}

async function signed(mesh: MemoryNode, h: PointHeader, root: string): Promise<PointHeader> {
  const fields = signedFields(h, [{ virtualSize: 4 * CHUNK, chunkSize: CHUNK, root }])
  return { ...h, signed: await mesh.sign(POINT_SIGNATURE_KIND, fields) }
}

async function refusal(p: Promise<void>): Promise<string> {
  const err = await p.then(
    () => null,
    (e: Error) => e,
  )
  expect(err).toBeInstanceOf(CommitRefusedError)
  return (err as Error).message
}

describe('signed recovery points (in process)', () => {
  it('commits a point signed by its source; refuses tampered, foreign-key, unsigned and non-member points, and keeps serving', async () => {
    const b = await makeNode('s2', false)
    const aKey = await generateKeyPair('Ed25519')
    const aId = peerIdFromPrivateKey(aKey).toString()
    const a = cluster.net.node(aId, 's1', aKey)
    const alg = b.store.hashAlgorithm
    expect(alg).toBe('blake3')

    // A good point: committed, stored with its signature, listed as signed by A and verified.
    const p1 = await handPoint(alg)
    const good = await signed(a, header(aId, 1), p1.root)
    await send(a, b, good, p1)
    const stored = (await b.store.lastPoint('db')) as RecoveryPoint
    expect(stored.seq).toBe(1)
    expect(stored.disks[0].root).toBe(p1.root)
    expect(stored.signed).toEqual(good.signed)
    const [row] = await b.service.points('db')
    expect(row.signature).toEqual({ signer: aId, verified: true })

    // Tampered root: the signature is over another manifest than the one sent.
    const p2 = await handPoint(alg)
    const other = await handPoint(alg)
    const wrongRoot = await signed(a, header(aId, 2), other.root)
    expect(await refusal(send(a, b, wrongRoot, p2))).toMatch(/disk 0 does not have the signed root/)

    // Tampered epoch (and, separately, config): signed as epoch 2, sent as epoch 3.
    const bumped = { ...(await signed(a, header(aId, 2), p2.root)), epoch: 3 }
    expect(await refusal(send(a, b, bumped, p2))).toMatch(/signed header differs in epoch/)
    const reconfigured = await signed(a, header(aId, 2), p2.root)
    reconfigured.config = { ...reconfigured.config, memoryMiB: 64 * 1024 }
    expect(await refusal(send(a, b, reconfigured, p2))).toMatch(/differs in config/)

    // Signed by another key while naming A as its source (an impostor, or a hop signing itself).
    a.signWith = await generateKeyPair('Ed25519')
    const impostor = await signed(a, header(aId, 2), p2.root)
    a.signWith = null
    expect(await refusal(send(a, b, impostor, p2))).toMatch(new RegExp(`not by its source ${aId}`))

    // A point naming a source that is not the signer: signed by A, claims to come from B.
    const claimsB = await signed(a, header(b.id, 2), p2.root)
    expect(await refusal(send(a, b, claimsB, p2))).toMatch(/not by its source/)

    // Unsigned.
    const unsigned = header(aId, 2)
    expect(await refusal(send(a, b, unsigned, p2))).toMatch(/not signed/)

    // Signed correctly, but A's membership was revoked.
    a.revoked = true
    const revoked = await signed(a, header(aId, 2), p2.root)
    expect(await refusal(send(a, b, revoked, p2))).toMatch(/not a current member/)
    a.revoked = false

    // Nothing of the refused points was committed; each refusal names the sender.
    expect((await b.store.listPoints('db')).map((p) => p.seq)).toEqual([1])
    const warnings = b.logs.filter((l) => l.level === 'warn' && /refused point db@2/.test(l.msg ?? ''))
    expect(warnings.length).toBe(7)
    for (const w of warnings) expect(w.obj).toMatchObject({ peer: aId, point: 'db@2' })

    // The node still serves: the honest point 2 commits after all that.
    await send(a, b, await signed(a, header(aId, 2), p2.root), p2)
    expect((await b.store.listPoints('db')).map((p) => p.seq)).toEqual([1, 2])
    await applied(b, 'db', 2)
    const rows = await b.service.points('db')
    expect(rows.map((r) => r.signature)).toEqual([
      { signer: aId, verified: true },
      { signer: aId, verified: true },
    ])
  })

  it('a point whose stored fields no longer match its signature is listed as not verified; old unsigned points still load', async () => {
    const b = await makeNode('s2', false)
    const aKey = await generateKeyPair('Ed25519')
    const aId = peerIdFromPrivateKey(aKey).toString()
    const a = cluster.net.node(aId, 's1', aKey)
    const p = await handPoint(b.store.hashAlgorithm)
    const h = await signed(a, header(aId, 1), p.root)
    await send(a, b, h, p)
    const held = (await b.store.lastPoint('db')) as RecoveryPoint
    await applied(b, 'db', 1)
    const notAPeer = {
      ...held,
      signed: { ...(held.signed as NonNullable<RecoveryPoint['signed']>), payload: '{"source":"local"}' },
    }
    const [ok, altered, unsigned, odd] = await summarisePoints([
      held,
      { ...held, epoch: 9 },
      { ...held, signed: undefined },
      notAPeer,
    ])
    expect(odd.signature).toMatchObject({ signer: 'local', verified: false })
    expect(ok.signature).toEqual({ signer: aId, verified: true })
    expect(altered.signature).toMatchObject({
      signer: aId,
      verified: false,
      reason: expect.stringMatching(/epoch/),
    })
    expect(unsigned.signature).toMatchObject({ signer: null, verified: false })

    // A point committed without a signature (as stores written before signing hold) loads and lists.
    const lease = b.store.lease()
    try {
      const { signed: _drop, ...old } = held
      await b.store.commitPoint({ ...old, seq: 7 })
    } finally {
      lease.release()
    }
    const reloaded = await b.store.getPoint('db@7')
    expect(reloaded.signed).toBeUndefined()
    expect((await b.service.points('db')).find((r) => r.seq === 7)?.signature).toMatchObject({
      signer: null,
      verified: false,
    })
  })

  it('chain A→B→C: C holds A’s signature, forwarded unchanged by B, and verifies it', async () => {
    const a = await makeNode('s1', true)
    const b = await makeNode('s2', false)
    const c = await makeNode('s3', false)
    await cluster.hv.createVm('web', [4 * MiB])
    await cluster.hv.write('web', 0, MiB, randomBytes(MiB))
    await a.service.protect({
      vm: 'web',
      rpoSeconds: 1,
      rtoSeconds: 60,
      to: [b.id, c.id],
      chain: true,
      copies: null,
    })
    const onC = await until('a point on C', async () => c.store.lastPoint('web'))
    await b.service.idle()
    const onB = (await b.store.getPoint(`web@${onC.seq}`)) as RecoveryPoint
    expect(onC.signed).toBeDefined()
    expect(onC.signed).toEqual(onB.signed)
    expect(onC.disks.map((d) => d.root)).toEqual(onB.disks.map((d) => d.root))
    // The signature is A's (it opens with A's key, not with B's) and names A as the source.
    const fields = await openEnvelope(
      POINT_SIGNATURE_KIND,
      onC.signed as NonNullable<RecoveryPoint['signed']>,
      a.key.publicKey,
      signedPointSchema,
    )
    expect(fields).toMatchObject({ vm: 'web', seq: onC.seq, epoch: 0, source: a.id })
    await expect(
      openEnvelope(
        POINT_SIGNATURE_KIND,
        onC.signed as NonNullable<RecoveryPoint['signed']>,
        b.key.publicKey,
        signedPointSchema,
      ),
    ).rejects.toThrow(/does not verify/)
    expect(
      (await c.service.points('web')).every((r) => r.signature?.signer === a.id && r.signature.verified),
    ).toBe(true)

    // A later write travels the chain too, still signed by A.
    await cluster.hv.write('web', 0, 3 * MiB, randomBytes(4096))
    const next = await until('a newer point on C', async () => {
      const p = await c.store.lastPoint('web')
      return p && p.seq > onC.seq ? p : null
    })
    expect(JSON.parse(next.signed?.payload ?? '{}').source).toBe(a.id)
    expect(c.logs.filter((l) => /refused point/.test(l.msg ?? ''))).toEqual([])

    // `replimesh points --json` on C's folder (no node running there: it reads the store) names
    // A as the signer of every point and says it verified; the text form says so too.
    await c.service.stop()
    await c.store.close()
    cluster.nodes.splice(cluster.nodes.indexOf(c), 1)
    const json = await runCli(['points', '--dir', c.dir, 'web', '--json'], {
      env: testEnv(),
      timeoutMs: 60_000,
    })
    expect(json.code, json.stderr).toBe(0)
    const rows = JSON.parse(json.stdout) as Array<{ seq: number; source: string; signature: unknown }>
    expect(rows.length).toBeGreaterThanOrEqual(2)
    for (const r of rows)
      expect(r).toMatchObject({ source: a.id, signature: { signer: a.id, verified: true } })
    const text = await runCli(['points', '--dir', c.dir, 'web'], { env: testEnv(), timeoutMs: 60_000 })
    expect(
      text.stdout
        .trim()
        .split('\n')
        .every((l) => l.endsWith(`signed by ${a.id}`)),
    ).toBe(true)
  })
})

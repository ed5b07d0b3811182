// Joining: init checks the token's signature and expiry before it writes anything; tokens are
// one-time; a good token yields a node that starts and is seen alive.
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTestMesh, type TestMesh, waitFor } from '../helpers/nodes.js'

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  )

/** Flips one character inside the token's signed payload (keeps it base64url). */
function tamper(token: string): string {
  const [prefix, payload, signature] = token.split('.')
  const i = Math.floor(payload.length / 2)
  const flipped = payload[i] === 'A' ? 'B' : 'A'
  return [prefix, payload.slice(0, i) + flipped + payload.slice(i + 1), signature].join('.')
}

describe('init --join', { timeout: 120_000 }, () => {
  let mesh: TestMesh
  beforeAll(async () => {
    mesh = await createTestMesh(['hq'])
  }, 180_000)
  afterAll(async () => {
    await mesh?.teardown()
  })

  const init = (name: string, token: string) =>
    mesh.cli([
      'init',
      '--dir',
      join(mesh.root, name),
      '--site',
      'branch',
      '--join',
      token,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
    ])

  it('refuses a tampered token with a clear error and writes nothing', async () => {
    const r = await init('tampered', tamper(await mesh.token()))
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^replimesh: the join token (has been altered|is damaged)/)
    expect(await exists(join(mesh.root, 'tampered'))).toBe(false)
    const garbage = await init('garbage', 'not-a-token')
    expect(garbage.code).toBe(1)
    expect(garbage.stderr).toMatch(/^replimesh: not a replimesh join token/)
    expect(await exists(join(mesh.root, 'garbage'))).toBe(false)
  })

  it('refuses an expired token with a clear error and writes nothing', async () => {
    const token = await mesh.token('1s')
    await new Promise((r) => setTimeout(r, 1500))
    const r = await init('expired', token)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^replimesh: the join token expired at \d{4}-/)
    expect(await exists(join(mesh.root, 'expired'))).toBe(false)
  })

  it('redeems a token once; the new node joins; the same token is refused afterwards', async () => {
    const token = await mesh.token()
    const first = await init('joined', token)
    expect(first.code, first.stderr).toBe(0)
    const files = ['node.json', 'identity.key', 'membership.json']
    for (const f of files) expect(await exists(join(mesh.root, 'joined', f))).toBe(true)
    expect((await stat(join(mesh.root, 'joined', 'identity.key'))).mode & 0o777).toBe(0o600)
    const again = await init('again', token)
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/already been used/)
    expect(await exists(join(mesh.root, 'again'))).toBe(false)
    const { TestNode } = await import('../helpers/nodes.js')
    const node = new TestNode('joined', join(mesh.root, 'joined'), 'branch', mesh.env, mesh.bin)
    mesh.nodes.push(node)
    await node.start()
    await waitFor('hq sees the new node alive', async () => {
      const s = await mesh.nodes[0].status()
      return s.peers.some((p) => p.peerId === node.peerId && p.site === 'branch' && p.state === 'alive')
    })
  })

  it('stops cleanly on SIGTERM; a token whose issuer is not running is refused and nothing written', async () => {
    const token = await mesh.token()
    // SIGTERM stops the daemon cleanly: exit 0, api.json and the lock removed.
    expect(await mesh.nodes[0].stop()).toBe(0)
    for (const f of ['api.json', 'api.token', 'daemon.lock'])
      expect(await exists(join(mesh.nodes[0].dir, f))).toBe(false)
    try {
      const r = await init('offline', token)
      expect(r.code).toBe(1)
      expect(r.stderr).toMatch(/^replimesh: no bootstrap member could redeem the token/)
      expect(await exists(join(mesh.root, 'offline'))).toBe(false)
    } finally {
      await mesh.nodes[0].start()
    }
  })
})

import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { describe, expect, it } from 'vitest'
import { Membership } from '../../src/mesh/membership.js'

const silent = { info() {}, warn() {}, debug() {}, error() {} }

describe('Membership revocation', () => {
  it('refuses a revoked peer in the gater even when it was not connected at revocation time', async () => {
    const meshKey = await generateKeyPair('Ed25519')
    const revoked = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    const m = new Membership({
      meshKey: meshKey.publicKey,
      meshId: 'm',
      certificate: { kind: 'x', payload: '', signature: '', signer: '' } as never,
      logger: silent as never,
      timeoutMs: 5_000,
      onProven: () => {},
    })
    const waiting = m.waitProven(revoked.toString())
    m.setRevoked([revoked.toString()])
    // Before: only a peer connected or proven at that moment was refused, so this node could
    // redial it (its track outlives the member entry) and be taken as a member by it.
    expect(await m.gater.denyDialPeer!(revoked)).toBe(true)
    expect(await m.gater.denyInboundEncryptedConnection!(revoked, undefined as never)).toBe(true)
    expect(await waiting).toBe(false)
    expect(await m.waitProven(revoked.toString())).toBe(false)
    m.stop()
  })
})

import { generateKeyPair } from '@libp2p/crypto/keys'
import { describe, expect, it } from 'vitest'
import {
  InvalidTokenError,
  issueCertificate,
  issueJoinToken,
  NotMemberError,
  signRevocationList,
  TokenExpiredError,
  verifyCertificate,
  verifyJoinToken,
  verifyRevocationList,
} from '../../src/mesh/index.js'

const ADDR = '/ip4/127.0.0.1/tcp/4701/p2p/12D3KooWBLZv8uRXB9DvJVjGv2FBfkyFkQrX1aHz8sYSLuvgKqs2'

describe('join tokens', () => {
  it('round-trips and rejects tampering, expiry, a foreign signature and garbage', async () => {
    const key = await generateKeyPair('Ed25519')
    const issued = await issueJoinToken(key, [ADDR], 60_000, 1_000)
    const token = await verifyJoinToken(issued.text, 2_000)
    expect(token.bootstrap).toEqual([ADDR])
    expect(token.secret).toBe(issued.token.secret)
    await expect(verifyJoinToken(issued.text, 61_001)).rejects.toBeInstanceOf(TokenExpiredError)
    const [p, payload, sig] = issued.text.split('.')
    const body = JSON.parse(Buffer.from(payload, 'base64url').toString())
    const altered = Buffer.from(JSON.stringify({ ...body, expiresAt: body.expiresAt + 1e9 })).toString(
      'base64url',
    )
    await expect(verifyJoinToken([p, altered, sig].join('.'), 2_000)).rejects.toThrow(/altered/)
    const other = await issueJoinToken(await generateKeyPair('Ed25519'), [ADDR], 60_000, 1_000)
    await expect(verifyJoinToken([p, payload, other.text.split('.')[2]].join('.'), 2_000)).rejects.toThrow(
      /altered/,
    )
    for (const bad of [
      '',
      'rmj1',
      'rmj1.x.y',
      'rmj2.a.b',
      `rmj1.${Buffer.from('{}').toString('base64url')}.x`,
    ])
      await expect(verifyJoinToken(bad)).rejects.toBeInstanceOf(InvalidTokenError)
  })
})

describe('certificates and revocation', () => {
  it('accepts the named peer of this mesh only, and not once revoked', async () => {
    const key = await generateKeyPair('Ed25519')
    const other = await generateKeyPair('Ed25519')
    const peer = '12D3KooWBLZv8uRXB9DvJVjGv2FBfkyFkQrX1aHz8sYSLuvgKqs2'
    const cert = await issueCertificate(key, peer, 'paris')
    expect((await verifyCertificate(cert, key.publicKey, peer)).site).toBe('paris')
    await expect(verifyCertificate(cert, other.publicKey, peer)).rejects.toBeInstanceOf(NotMemberError)
    await expect(
      verifyCertificate(cert, key.publicKey, '12D3KooWGgZwSsQL6bYXCvMuXScSLWwqaK5W87TJJN63T2QTzbjP'),
    ).rejects.toThrow(/another peer/)
    await expect(verifyCertificate(cert, key.publicKey, peer, new Set([peer]))).rejects.toThrow(/revoked/)
    const forged = { ...cert, payload: cert.payload.replace('paris', 'lyon') }
    await expect(verifyCertificate(forged, key.publicKey, peer)).rejects.toBeInstanceOf(NotMemberError)
    const list = await signRevocationList(key, [peer], 3)
    expect((await verifyRevocationList(list, key.publicKey)).revoked).toEqual([peer])
    await expect(verifyRevocationList(list, other.publicKey)).rejects.toThrow()
  })
})

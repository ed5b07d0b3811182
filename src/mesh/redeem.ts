// Redeeming a join token (DESIGN.md §4). The joiner dials a bootstrap address from the token
// with its new identity and opens /replimesh/redeem/1.0.0: {meshId, secret, site}. The member
// that holds the mesh key (the node that ran `mesh create`) checks the secret against the ledger
// of tokens it issued, marks it used (one time), and answers with a certificate for the
// connection's authenticated peer id. This protocol is the one replimesh protocol a non-member
// may open; it answers one bounded frame and nothing else.
import type { Connection, PrivateKey, Stream } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { issueCertificate, type SignedEnvelope, verifyCertificate } from './certificate.js'
import { DIAL_TIMEOUT_MS, MAX_CONTROL_FRAME_BYTES, REDEEM_PROTOCOL } from './constants.js'
import { RedeemError } from './errors.js'
import { ByteReader, writeJsonFrame } from './frames.js'
import type { MeshLogger } from './logger.js'
import { withSignal } from './membership.js'
import { decodePublicKey } from './signed.js'
import { redeemReplySchema, redeemRequestSchema } from './state.js'
import type { JoinToken } from './token.js'
import { hashSecret } from './token.js'
import { createTransportNode } from './transport.js'

export type RedeemOutcome = 'ok' | 'unknown' | 'expired' | 'used'

/** The issuer's record of the tokens it issued; redeem() must be atomic per secret. */
export interface TokenLedger {
  redeem(secretHash: string, peerId: string, nowMs: number): Promise<RedeemOutcome>
}

export interface Issuer {
  meshKey: PrivateKey
  ledger: TokenLedger
}

const OUTCOME_TEXT: Record<Exclude<RedeemOutcome, 'ok'>, string> = {
  unknown: 'this member did not issue that token',
  expired: 'the token has expired',
  used: 'the token has already been used (tokens are one-time)',
}

export async function handleRedeem(
  stream: Stream,
  connection: Connection,
  ctx: { issuer: Issuer; meshId: string; logger: MeshLogger; onRedeemed: (peerId: string) => void },
): Promise<void> {
  const peerId = connection.remotePeer.toString()
  const signal = AbortSignal.timeout(DIAL_TIMEOUT_MS)
  const reader = new ByteReader(stream)
  const request = await withSignal(reader.expectJson(redeemRequestSchema, MAX_CONTROL_FRAME_BYTES), signal)
  if (request.meshId !== ctx.meshId) {
    await writeJsonFrame(stream, { ok: false, error: 'the token is for another mesh' })
    await stream.close().catch(() => {})
    return
  }
  const outcome = await ctx.issuer.ledger.redeem(hashSecret(request.secret), peerId, Date.now())
  if (outcome !== 'ok') {
    ctx.logger.warn({ peer: peerId, outcome }, 'join token refused')
    await writeJsonFrame(stream, { ok: false, error: OUTCOME_TEXT[outcome] })
    await stream.close().catch(() => {})
    return
  }
  const certificate = await issueCertificate(ctx.issuer.meshKey, peerId, request.site)
  ctx.onRedeemed(peerId)
  ctx.logger.info({ peer: peerId, site: request.site }, 'join token redeemed: certificate issued')
  await writeJsonFrame(stream, { ok: true, certificate }, { signal })
  await stream.close({ signal }).catch(() => {})
}

/**
 * Redeems `token` for a certificate naming the peer of `privateKey` at `site`: tries each
 * bootstrap address in turn. The certificate is verified before it is returned.
 */
export async function redeemJoinToken(options: {
  token: JoinToken
  privateKey: PrivateKey
  site: string
  signal?: AbortSignal
}): Promise<SignedEnvelope> {
  const node = await createTransportNode({ privateKey: options.privateKey, listen: [] })
  const peerId = peerIdFromPrivateKey(options.privateKey).toString()
  const failures: string[] = []
  try {
    for (const address of options.token.bootstrap) {
      const signal = AbortSignal.any([
        AbortSignal.timeout(DIAL_TIMEOUT_MS),
        ...(options.signal ? [options.signal] : []),
      ])
      try {
        const stream = await node.dialProtocol(multiaddr(address), REDEEM_PROTOCOL, { signal })
        const reader = new ByteReader(stream)
        await writeJsonFrame(stream, {
          meshId: options.token.meshId,
          secret: options.token.secret,
          site: options.site,
        })
        const reply = await withSignal(reader.expectJson(redeemReplySchema, MAX_CONTROL_FRAME_BYTES), signal)
        await stream.close().catch(() => {})
        if (!reply.ok) throw new RedeemError(`${address} refused the token: ${reply.error}`)
        await verifyCertificate(reply.certificate, decodePublicKey(options.token.meshKey), peerId)
        return reply.certificate
      } catch (err) {
        if (err instanceof RedeemError) throw err
        failures.push(`${address}: ${(err as Error).message}`)
      }
    }
  } finally {
    await node.stop()
  }
  throw new RedeemError(`no bootstrap member could redeem the token (${failures.join('; ')})`)
}

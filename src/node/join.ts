// `mesh create`, `mesh token`, `init --join` and `revoke`: the files a node needs to be a member.
// init checks the token completely before it writes anything, and writes nothing unless the
// token was redeemed for a certificate.
import { mkdir, readdir, stat } from 'node:fs/promises'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  encodePublicKey,
  issueCertificate,
  issueJoinToken,
  meshIdOf,
  redeemJoinToken,
  signRevocationList,
  siteSchema,
  verifyJoinToken,
  verifyRevocationList,
} from '../mesh/index.js'
import { UsageError } from './cli/output.js'
import { loadNodeConfig, type NodeConfig, writeNodeConfig } from './config.js'
import { dialableAddrs, parseListen, resolveListen } from './listen.js'
import {
  nodeFiles,
  readOptionalEnvelope,
  readPrivateKey,
  recordIssuedToken,
  writeEnvelope,
  writePrivateKey,
} from './node-files.js'

export const DEFAULT_LISTEN = '/ip4/0.0.0.0/tcp/0'
export const DEFAULT_TOKEN_TTL_MS = 3_600_000

function checkSite(site: string): string {
  const parsed = siteSchema.safeParse(site)
  if (!parsed.success) throw new UsageError(`'${site}' is not a site name: ${parsed.error.issues[0].message}`)
  return parsed.data
}

/** Refuses a folder that already holds a node (never overwrite an identity). */
async function checkEmptyNodeDir(dir: string): Promise<void> {
  const files = nodeFiles(dir)
  for (const file of [files.config, files.identity, files.certificate])
    if (
      await stat(file).then(
        () => true,
        () => false,
      )
    )
      throw new UsageError(`${dir} already holds a node (${file} exists); use another --dir`)
  const entries = await readdir(dir).catch(() => null)
  if (entries === null) return
}

export async function createMesh(options: { dir: string; site: string; listen?: string; ttlMs?: number }) {
  const site = checkSite(options.site)
  parseListen(options.listen ?? DEFAULT_LISTEN)
  await checkEmptyNodeDir(options.dir)
  const listen = await resolveListen(options.listen ?? DEFAULT_LISTEN)
  const meshKey = await generateKeyPair('Ed25519')
  const identity = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(identity).toString()
  const certificate = await issueCertificate(meshKey, peerId, site)
  const files = nodeFiles(options.dir)
  await mkdir(options.dir, { recursive: true })
  await writePrivateKey(files.meshKey, meshKey)
  await writePrivateKey(files.identity, identity)
  await writeEnvelope(files.certificate, certificate)
  const config: NodeConfig = {
    v: 1,
    site,
    meshId: meshIdOf(meshKey.publicKey),
    meshKey: encodePublicKey(meshKey.publicKey),
    listen: [listen],
    announce: [],
    bootstrap: [],
    mdns: true,
    timing: {},
    logLevel: 'info',
  }
  await writeNodeConfig(options.dir, config)
  const token = await makeToken(options.dir, options.ttlMs ?? DEFAULT_TOKEN_TTL_MS)
  return { meshId: config.meshId, peerId, site, listen, token: token.text, expiresAt: token.expiresAt }
}

export async function makeToken(dir: string, ttlMs: number) {
  const files = nodeFiles(dir)
  const config = await loadNodeConfig(dir, {})
  const meshKey = await readPrivateKey(files.meshKey).catch(() => {
    throw new UsageError(
      `${dir} does not hold the mesh key: only the node that ran 'mesh create' issues join tokens`,
    )
  })
  const identity = await readPrivateKey(files.identity)
  const peerId = peerIdFromPrivateKey(identity).toString()
  const bootstrap = dialableAddrs(config.announce.length ? config.announce : config.listen, peerId)
  const issued = await issueJoinToken(meshKey, bootstrap, ttlMs)
  await recordIssuedToken(dir, issued.secretHash, issued.token.expiresAt)
  return { text: issued.text, expiresAt: issued.token.expiresAt, bootstrap }
}

export async function joinMesh(options: { dir: string; site: string; token: string; listen?: string }) {
  // Everything is checked before the first byte is written.
  const site = checkSite(options.site)
  parseListen(options.listen ?? DEFAULT_LISTEN)
  const token = await verifyJoinToken(options.token)
  await checkEmptyNodeDir(options.dir)
  const identity = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(identity).toString()
  const certificate = await redeemJoinToken({
    token,
    privateKey: identity,
    site,
    signal: AbortSignal.timeout(30_000),
  })
  const listen = await resolveListen(options.listen ?? DEFAULT_LISTEN)
  const files = nodeFiles(options.dir)
  await mkdir(options.dir, { recursive: true })
  await writePrivateKey(files.identity, identity)
  await writeEnvelope(files.certificate, certificate)
  await writeNodeConfig(options.dir, {
    v: 1,
    site,
    meshId: token.meshId,
    meshKey: token.meshKey,
    listen: [listen],
    announce: [],
    bootstrap: token.bootstrap,
    mdns: true,
    timing: {},
    logLevel: 'info',
  })
  return { meshId: token.meshId, peerId, site, listen }
}

/** Adds peers to the revocation list (mesh key holder only); returns the new signed list. */
export async function revokePeers(dir: string, peers: string[]) {
  const files = nodeFiles(dir)
  const meshKey = await readPrivateKey(files.meshKey).catch(() => {
    throw new UsageError(`${dir} does not hold the mesh key: only the node that ran 'mesh create' can revoke`)
  })
  const current = await readOptionalEnvelope(files.revocation)
  const list = current
    ? await verifyRevocationList(current, meshKey.publicKey)
    : { seq: 0, revoked: [] as string[] }
  const revoked = [...new Set([...list.revoked, ...peers])]
  const envelope = await signRevocationList(meshKey, revoked, list.seq + 1)
  await writeEnvelope(files.revocation, envelope)
  return { envelope, seq: list.seq + 1, revoked }
}

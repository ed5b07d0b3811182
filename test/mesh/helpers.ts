// In-process mesh nodes for the mesh layer's own tests (the e2e tests use real processes).
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { issueCertificate, MeshNode, type MeshNodeInit, type MeshTiming } from '../../src/mesh/index.js'

export const FAST_TIMING: Partial<MeshTiming> = {
  pingIntervalMs: 200,
  pingTimeoutMs: 1000,
  suspectAfterMs: 2500,
  downAfterMs: 5000,
  gossipIntervalMs: 300,
  stateTtlMs: 5000,
  membershipTimeoutMs: 1500,
}

export const capacity = async () => ({
  diskFreeBytes: 1e9,
  diskTotalBytes: 2e9,
  cpus: 2,
  memoryTotalBytes: 4e9,
  memoryFreeBytes: 1e9,
})

export async function makeMesh() {
  return { meshKey: await generateKeyPair('Ed25519') }
}

export async function makeNode(
  meshKey: PrivateKey,
  site: string,
  extra: Partial<MeshNodeInit> = {},
): Promise<MeshNode> {
  const privateKey = await generateKeyPair('Ed25519')
  const certificate = await issueCertificate(meshKey, peerIdFromPrivateKey(privateKey).toString(), site)
  return new MeshNode({
    privateKey,
    site,
    meshKey: meshKey.publicKey,
    certificate,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    mdns: false,
    timing: FAST_TIMING,
    capacity,
    ...extra,
  })
}

export async function waitFor(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

// The node's key, certificate and token files: read and written here only, with 0600 for secrets.
// Files beyond paths.ts: tokens.json (issued join-token secrets, hashed; written by `mesh create`
// and `mesh token`), redeemed.json (used secrets; written by the running daemon only, so the two
// writers never race) and revocation.json (the newest verified revocation list).
import { randomUUID } from 'node:crypto'
import { open, readFile, rename } from 'node:fs/promises'
import { join } from 'node:path'
import { privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { z } from 'zod'
import {
  type RedeemOutcome,
  type SignedEnvelope,
  signedEnvelopeSchema,
  type TokenLedger,
} from '../mesh/index.js'
import { nodePaths } from './paths.js'

export const nodeFiles = (dir: string) => ({
  ...nodePaths(dir),
  tokens: join(dir, 'tokens.json'),
  redeemed: join(dir, 'redeemed.json'),
  revocation: join(dir, 'revocation.json'),
})

export class NodeFileError extends Error {
  override name = 'NodeFileError'
}

/** Writes a file atomically (temp + rename) with the given mode. */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = `${file}.${randomUUID()}.tmp`
  const handle = await open(tmp, 'wx', mode)
  try {
    await handle.writeFile(data)
    await handle.sync()
  } finally {
    await handle.close()
  }
  await rename(tmp, file)
}

export async function writePrivateKey(file: string, key: PrivateKey): Promise<void> {
  await writeFileAtomic(file, privateKeyToProtobuf(key), 0o600)
}

export async function readPrivateKey(file: string): Promise<PrivateKey> {
  let bytes: Buffer
  try {
    bytes = await readFile(file)
  } catch {
    throw new NodeFileError(`cannot read the key file ${file}`)
  }
  try {
    return privateKeyFromProtobuf(new Uint8Array(bytes))
  } catch {
    throw new NodeFileError(`${file} is not a valid private key file`)
  }
}

export async function readEnvelope(file: string): Promise<SignedEnvelope> {
  try {
    return signedEnvelopeSchema.parse(JSON.parse(await readFile(file, 'utf8')))
  } catch {
    throw new NodeFileError(`${file} is missing or not a signed document`)
  }
}

export async function readOptionalEnvelope(file: string): Promise<SignedEnvelope | null> {
  try {
    await readFile(file)
  } catch {
    return null
  }
  return readEnvelope(file)
}

const issuedSchema = z.array(
  z.object({ secretHash: z.string(), issuedAt: z.number(), expiresAt: z.number() }),
)
const redeemedSchema = z.record(z.string(), z.object({ peerId: z.string(), at: z.number() }))

async function readJsonOr<T>(file: string, schema: z.ZodType<T>, fallback: T): Promise<T> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    return fallback
  }
  const parsed = schema.safeParse(JSON.parse(text))
  if (!parsed.success) throw new NodeFileError(`${file} is damaged`)
  return parsed.data
}

/** Records an issued token's secret hash (the secret itself is never stored). */
export async function recordIssuedToken(dir: string, secretHash: string, expiresAt: number): Promise<void> {
  const file = nodeFiles(dir).tokens
  const now = Date.now()
  const list = (await readJsonOr(file, issuedSchema, [])).filter((t) => t.expiresAt > now)
  list.push({ secretHash, issuedAt: now, expiresAt })
  await writeFileAtomic(file, JSON.stringify(list, null, 2) + '\n', 0o600)
}

/** The creator's ledger: tokens.json (read) and redeemed.json (written by the daemon alone). */
export function fileTokenLedger(dir: string): TokenLedger {
  const files = nodeFiles(dir)
  let queue = Promise.resolve<unknown>(undefined)
  const redeem = async (secretHash: string, peerId: string, nowMs: number): Promise<RedeemOutcome> => {
    const issued = (await readJsonOr(files.tokens, issuedSchema, [])).find((t) => t.secretHash === secretHash)
    if (!issued) return 'unknown'
    if (issued.expiresAt <= nowMs) return 'expired'
    const redeemed = await readJsonOr(files.redeemed, redeemedSchema, {})
    if (redeemed[secretHash]) return 'used'
    redeemed[secretHash] = { peerId, at: nowMs }
    await writeFileAtomic(files.redeemed, JSON.stringify(redeemed, null, 2) + '\n', 0o600)
    return 'ok'
  }
  return {
    // One redemption at a time, so one secret can never be redeemed twice.
    redeem: (secretHash, peerId, nowMs) => {
      const result = queue.then(() => redeem(secretHash, peerId, nowMs))
      queue = result.catch(() => undefined)
      return result
    },
  }
}

export async function writeEnvelope(file: string, envelope: SignedEnvelope, mode = 0o644): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(envelope, null, 2) + '\n', mode)
}

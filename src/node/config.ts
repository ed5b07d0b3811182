// The node's configuration (node.json in its --dir), typed and checked once here (STYLE.md §13).
// Test harnesses shorten timers without editing files: REPLIMESH_TIMING (JSON, the fields of
// `timing`) and REPLIMESH_MDNS (0 or 1) override what node.json says.
import { readFile, writeFile } from 'node:fs/promises'
import { z } from 'zod'
import { nodePaths } from './paths.js'

const ms = z.number().int().positive()

export const timingSchema = z
  .object({
    /** How often peers are pinged and verdicts re-evaluated. Default 2000. */
    pingIntervalMs: ms,
    /** A ping slower than this counts as missed. Default 2000. */
    pingTimeoutMs: ms,
    /** Silence before a peer is suspect. Default 6000. */
    suspectAfterMs: ms,
    /** Silence before a peer is down (confirmed by another site when one exists). Default 15000. */
    downAfterMs: ms,
    /** How often the node gossips its state. Default 5000. */
    gossipIntervalMs: ms,
    /** A peer state not refreshed for this long expires. Default 60000. */
    stateTtlMs: ms,
    /** Unproven connections are closed after this long. Default 5000. */
    membershipTimeoutMs: ms,
  })
  .partial()

export const nodeConfigSchema = z.object({
  v: z.literal(1),
  site: z.string().min(1).max(64),
  /** The mesh this node belongs to: its id and public key (base64url protobuf). */
  meshId: z.string().min(1),
  meshKey: z.string().min(1),
  /** Multiaddrs to listen on (a concrete port, chosen at init when 0 was asked). */
  listen: z.array(z.string()).min(1),
  /** Multiaddrs to announce instead (NAT); default none. */
  announce: z.array(z.string()).default([]),
  /** Members to dial at start (from the join token). */
  bootstrap: z.array(z.string()).default([]),
  /** mDNS discovery on the LAN. Default true. */
  mdns: z.boolean().default(true),
  timing: timingSchema.default({}),
  /** pino level. Default info. */
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).default('info'),
})
export type NodeConfig = z.infer<typeof nodeConfigSchema>

export class NodeConfigError extends Error {
  override name = 'NodeConfigError'
}

export async function loadNodeConfig(dir: string, env: NodeJS.ProcessEnv = process.env): Promise<NodeConfig> {
  const file = nodePaths(dir).config
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    throw new NodeConfigError(
      `${dir} holds no node (no node.json): run replimesh mesh create or replimesh init first`,
    )
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw new NodeConfigError(`${file} is not valid JSON`)
  }
  const parsed = nodeConfigSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new NodeConfigError(`${file}: ${issue.path.join('.') || '(root)'}: ${issue.message}`)
  }
  const config = parsed.data
  if (env.REPLIMESH_TIMING) {
    let timing: unknown
    try {
      timing = JSON.parse(env.REPLIMESH_TIMING)
    } catch {
      throw new NodeConfigError('REPLIMESH_TIMING is not JSON')
    }
    const t = timingSchema.safeParse(timing)
    if (!t.success) throw new NodeConfigError(`REPLIMESH_TIMING: ${t.error.issues[0].message}`)
    config.timing = { ...config.timing, ...t.data }
  }
  if (env.REPLIMESH_MDNS === '0') config.mdns = false
  if (env.REPLIMESH_MDNS === '1') config.mdns = true
  return config
}

export async function writeNodeConfig(dir: string, config: NodeConfig): Promise<void> {
  await writeFile(nodePaths(dir).config, JSON.stringify(config, null, 2) + '\n', { mode: 0o644 })
}

// A node's state as it travels in gossip (DESIGN.md §4): site, addresses, capacity, VMs owned,
// replicas held with their last committed point, and its view of every peer's liveness; signed by
// the node's own key and accompanied by its membership certificate, so any member can check it
// whoever relayed it. A newer seq replaces an older one; a state older than its TTL expires.
import { z } from 'zod'
import { signedEnvelopeSchema, siteSchema } from './certificate.js'
import { MAX_STATE_ADDRS, MAX_STATE_VIEWS, MAX_STATE_VMS } from './constants.js'

const peerIdText = z.string().min(1).max(128)

export const capacitySchema = z.object({
  diskFreeBytes: z.number().nonnegative(),
  diskTotalBytes: z.number().nonnegative(),
  cpus: z.number().int().nonnegative(),
  memoryTotalBytes: z.number().nonnegative(),
  memoryFreeBytes: z.number().nonnegative(),
})
export type Capacity = z.infer<typeof capacitySchema>

export const ownedVmSchema = z.object({
  id: z.string().min(1).max(128),
  name: z.string().min(1).max(256),
  state: z.string().max(32),
  epoch: z.number().int().nonnegative(),
  /**
   * The VM's size, what placement needs to know before it runs it elsewhere: virtual CPUs,
   * memory, and the virtual size of all its disks. Optional: states of older nodes lack them.
   */
  cpus: z.number().int().nonnegative().optional(),
  memoryBytes: z.number().nonnegative().optional(),
  diskBytes: z.number().nonnegative().optional(),
})
export type OwnedVm = z.infer<typeof ownedVmSchema>

export const heldReplicaSchema = z.object({
  vm: z.string().min(1).max(128),
  /** The last recovery point committed on this node. */
  lastPoint: z
    .object({ seq: z.number().int().nonnegative(), time: z.number().int().nonnegative() })
    .nullable(),
  epoch: z.number().int().nonnegative(),
})
export type HeldReplica = z.infer<typeof heldReplicaSchema>

export const nodeStateSchema = z.object({
  v: z.literal(1),
  peerId: peerIdText,
  site: siteSchema,
  /** Rises with every state this node publishes (ms-based, so it survives restarts). */
  seq: z.number().int().nonnegative(),
  time: z.number().int().nonnegative(),
  addrs: z.array(z.string().max(512)).max(MAX_STATE_ADDRS),
  capacity: capacitySchema,
  vms: z.array(ownedVmSchema).max(MAX_STATE_VMS),
  replicas: z.array(heldReplicaSchema).max(MAX_STATE_VMS),
  views: z
    .array(z.object({ peerId: peerIdText, state: z.enum(['alive', 'suspect', 'down']) }))
    .max(MAX_STATE_VIEWS),
})
export type NodeState = z.infer<typeof nodeStateSchema>

export const NODE_STATE_KIND = 'node-state'

/** One gossip frame. */
export const gossipMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('state'), state: signedEnvelopeSchema, certificate: signedEnvelopeSchema }),
  z.object({ type: z.literal('revocation'), list: signedEnvelopeSchema }),
])
export type GossipMessage = z.infer<typeof gossipMessageSchema>

/** Membership handshake frames. */
export const membershipHelloSchema = z.object({
  meshId: z.string().min(1).max(128),
  certificate: signedEnvelopeSchema,
})
export const membershipReplySchema = z.union([
  membershipHelloSchema.extend({ ok: z.literal(true) }),
  z.object({ ok: z.literal(false), error: z.string().max(512) }),
])

/** Token redemption frames. */
export const redeemRequestSchema = z.object({
  meshId: z.string().min(1).max(128),
  secret: z.string().min(32).max(64),
  site: siteSchema,
})
export const redeemReplySchema = z.union([
  z.object({ ok: z.literal(true), certificate: signedEnvelopeSchema }),
  z.object({ ok: z.literal(false), error: z.string().max(512) }),
])

/** The newest verified state of every member, with expiry. Pure bookkeeping, no I/O. */
export class NodeStateTable {
  private readonly states = new Map<string, { state: NodeState; receivedAt: number }>()

  constructor(private readonly ttlMs: number) {}

  /** Stores state if it is newer than what is held; returns whether it was. */
  offer(state: NodeState, now: number): boolean {
    const held = this.states.get(state.peerId)
    if (held && held.state.seq >= state.seq) return false
    this.states.set(state.peerId, { state, receivedAt: now })
    return true
  }

  get(peerId: string, now: number): NodeState | undefined {
    const held = this.states.get(peerId)
    if (!held) return undefined
    if (now - held.receivedAt > this.ttlMs) return undefined
    return held.state
  }

  /** Every state that has not expired. */
  fresh(now: number): NodeState[] {
    return [...this.states.values()].filter((h) => now - h.receivedAt <= this.ttlMs).map((h) => h.state)
  }

  /** Seq of the newest state held for peerId, fresh or not (so an old state is never re-flooded). */
  seqOf(peerId: string): number {
    return this.states.get(peerId)?.state.seq ?? -1
  }

  /** Drops states long past their TTL. */
  prune(now: number): void {
    for (const [id, held] of this.states) if (now - held.receivedAt > 10 * this.ttlMs) this.states.delete(id)
  }

  delete(peerId: string): void {
    this.states.delete(peerId)
  }
}

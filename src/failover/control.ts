// The control protocol, /replimesh/control/2.0.0 (DESIGN.md §4): one request and one reply per
// stream, each a length-prefixed JSON frame checked against its schema before use. The stream's
// peer is authenticated by the mesh (Noise, then the membership proof), so a vote is the voter's.
// Requests: `prepare` and `accept` (the two phases of the Paxos instance that decides who owns
// epoch E of VM V, epoch.ts), `announce` (O won epoch E), `query` (what do you know of V?).
import type { Stream } from '@libp2p/interface'
import { z } from 'zod'
import { ByteReader, MAX_CONTROL_FRAME_BYTES, type MeshNode, writeJsonFrame } from '../mesh/index.js'
import { CONTROL_REQUEST_TIMEOUT_MS } from './constants.js'

/** 2.0.0: the epoch vote became two-phase (prepare/accept with ballots); 1.0.0 had one-phase promises. */
export const CONTROL_PROTOCOL = '/replimesh/control/2.0.0'

const claimSchema = z.object({
  vm: z.string().min(1).max(256),
  epoch: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  owner: z.string().min(1).max(128),
})

const ballotSchema = z.object({
  round: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  by: z.string().max(128),
})

const acceptedSchema = z.object({ ballot: ballotSchema, owner: z.string().min(1).max(128) })

const fromSchema = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)

export const controlRequestSchema = z.discriminatedUnion('type', [
  /**
   * Phase 1 at `ballot` of the instance deciding epoch `epoch` of `vm`. `from`: the epoch it
   * raises from (compare-and-set: a member votes only while the owner it knows is at `from`);
   * `base`: the announced claim at `from`, which a member that missed it learns first.
   */
  z.object({
    type: z.literal('prepare'),
    vm: z.string().min(1).max(256),
    epoch: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
    from: fromSchema,
    ballot: ballotSchema,
    base: claimSchema.optional(),
  }),
  /** Phase 2: accept `claim.owner` for `claim.epoch` at `ballot` (`from`, `base` as above). */
  z.object({
    type: z.literal('accept'),
    claim: claimSchema,
    from: fromSchema,
    ballot: ballotSchema,
    base: claimSchema.optional(),
  }),
  /** `previous`: the owner before, when the announcer knows it (where failback goes). */
  z.object({
    type: z.literal('announce'),
    claim: claimSchema,
    previous: z.string().min(1).max(128).optional(),
  }),
  z.object({ type: z.literal('query'), vm: z.string().min(1).max(256) }),
  /** A direct probe: how does the receiver see `peer` now (when gossip about it is stale)? */
  z.object({ type: z.literal('view'), peer: z.string().min(1).max(128) }),
  /** An operator asked another node to run `vm` (failover --to, failback, host/site plans). */
  z.object({
    type: z.literal('failover'),
    vm: z.string().min(1).max(256),
    mode: z.enum(['manual', 'test', 'failback', 'planned']),
    from: z.string().max(128).optional(),
    /** Planned, sent to the owner: the node to hand the VM over to. */
    to: z.string().min(1).max(128).optional(),
  }),
])
export type ControlRequest = z.infer<typeof controlRequestSchema>

export const controlReplySchema = z.discriminatedUnion('type', [
  /** Phase 1 granted: `accepted`, the owner this member accepted in the instance, if any. */
  z.object({ type: z.literal('promised'), ballot: ballotSchema, accepted: acceptedSchema.nullable() }),
  /** Phase 2 granted. */
  z.object({ type: z.literal('accepted'), ballot: ballotSchema, claim: claimSchema }),
  /**
   * `current`: the highest owner the member knows (announced, else accepted in the instance);
   * `committed`: its announced owner; `promised`/`accepted`: its state of the instance.
   */
  z.object({
    type: z.literal('refused'),
    why: z.enum(['decided', 'behind', 'ballot']),
    current: claimSchema,
    committed: claimSchema.optional(),
    promised: ballotSchema.optional(),
    accepted: acceptedSchema.optional(),
  }),
  z.object({ type: z.literal('learned'), result: z.enum(['newer', 'same', 'stale', 'conflict']) }),
  z.object({
    type: z.literal('known'),
    highest: z.number().int().nonnegative(),
    current: claimSchema.nullable(),
  }),
  z.object({
    type: z.literal('failed-over'),
    outcome: z.object({
      vm: z.string(),
      on: z.string(),
      name: z.string(),
      epoch: z.number().int().nullable(),
      pointSeq: z.number().int(),
      dataLossMs: z.number(),
      tookMs: z.number(),
    }),
  }),
  z.object({
    type: z.literal('seen'),
    peer: z.string(),
    state: z.enum(['alive', 'suspect', 'down']).nullable(),
  }),
  z.object({ type: z.literal('error'), message: z.string().max(1024) }),
])
export type ControlReply = z.infer<typeof controlReplySchema>

export interface ControlPeer {
  peerId: string
  site: string
}

/** How the coordinator talks to other members; the mesh implements it, tests use a fake. */
export interface ControlTransport {
  request(peerId: string, req: ControlRequest, options?: { signal?: AbortSignal }): Promise<ControlReply>
  serve(handler: (from: ControlPeer, req: ControlRequest) => Promise<ControlReply>): void
  close(): Promise<void>
}

/** The control protocol over the mesh's authenticated streams. */
export function meshControlTransport(
  mesh: Pick<MeshNode, 'handle' | 'unhandle' | 'dialProtocol'>,
): ControlTransport {
  return {
    async request(peerId, req, options = {}) {
      const signal = options.signal ?? AbortSignal.timeout(CONTROL_REQUEST_TIMEOUT_MS)
      const stream = await mesh.dialProtocol(peerId, CONTROL_PROTOCOL, { signal })
      try {
        await writeJsonFrame(stream, req, { signal, maxBytes: MAX_CONTROL_FRAME_BYTES })
        await stream.close({ signal })
        const reply = await new ByteReader(stream).expectJson(controlReplySchema, MAX_CONTROL_FRAME_BYTES)
        return reply
      } catch (err) {
        stream.abort(err as Error)
        throw err
      }
    },
    serve(handler) {
      mesh.handle(CONTROL_PROTOCOL, async (stream: Stream, ctx) => {
        const req = await new ByteReader(stream).expectJson(controlRequestSchema, MAX_CONTROL_FRAME_BYTES)
        const reply = await handler({ peerId: ctx.peerId, site: ctx.site }, req)
        await writeJsonFrame(stream, reply, { maxBytes: MAX_CONTROL_FRAME_BYTES })
        await stream.close()
      })
    },
    async close() {
      await mesh.unhandle(CONTROL_PROTOCOL)
    },
  }
}

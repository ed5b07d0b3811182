// Protection settings and the source's replication state, persisted in the node's folder
// (<dir>/replication/<vm>/), so protection survives restarts of the node. The state names the
// manifest files of its point; a new state is written only after its manifests are durable.
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { CHUNK_ID_BYTES } from './constants.js'
import type { ChunkId } from './ids.js'
import { idFromBytes, idToBytes, isZeroIdBytes } from './ids.js'

/** Changed-chunk history kept per VM, so a target a few points behind still gets an incremental. */
export const CHANGE_LOG_POINTS = 64
/**
 * Seqs a source reserves on disk at once (state.seqFloor is the end of the block): one fsync'd
 * state write per this many points instead of one per point. After a restart the next seq is
 * above the block, so a VM's seqs may jump by up to this much.
 */
export const SEQ_RESERVE_BLOCK = 64

export const protectionSchema = z.object({
  vm: z.string().min(1),
  vmId: z.string(),
  rpoSeconds: z.number().positive(),
  rtoSeconds: z.number().positive(),
  to: z.array(z.string()).nullable(),
  chain: z.boolean(),
  copies: z.number().int().positive().nullable(),
  /** Resolved targets, in chain order. */
  targets: z.array(z.string()).min(1),
  createdAt: z.number().int(),
})
export type Protection = z.infer<typeof protectionSchema>

const sourceStateSchema = z.object({
  seq: z.number().int().nonnegative().nullable(),
  epoch: z.number().int().nonnegative(),
  /** Epoch of point `seq` (a promoted owner starts from its predecessor's); absent: `epoch`. */
  seqEpoch: z.number().int().nonnegative().optional(),
  /** Hypervisor change-tracking reference returned by the last releasePoint. */
  reference: z.string().nullable(),
  time: z.number().int().nullable(),
  disks: z.array(z.object({ virtualSize: z.number().int(), chunkSize: z.number().int() })),
  changeLog: z.array(z.object({ seq: z.number().int(), indexes: z.array(z.array(z.number().int())) })),
  /** Last point each target acknowledged. */
  targets: z.record(z.string(), z.object({ seq: z.number().int(), time: z.number().int() })),
  /**
   * Every seq up to this one may name a point of this VM somewhere (one being sent, or one of an
   * earlier protection): the next point's seq is above it, so (vm, seq) never names two contents.
   * It is written before a point leaves and kept when protection is removed (remove()).
   */
  seqFloor: z.number().int().nonnegative().optional(),
})
export type SourceState = z.infer<typeof sourceStateSchema>

export function emptySourceState(): SourceState {
  return { seq: null, epoch: 0, reference: null, time: null, disks: [], changeLog: [], targets: {} }
}

/** The highest seq `state` knows may be in use for its VM: the next point's seq is above it. */
export function seqFloorOf(state: SourceState): number {
  return Math.max(state.seq ?? 0, state.seqFloor ?? 0)
}

export class ProtectionFiles {
  constructor(private readonly root: string) {}

  private dir(vm: string): string {
    return join(this.root, vm)
  }

  async list(): Promise<Protection[]> {
    let names: string[]
    try {
      names = await readdir(this.root)
    } catch {
      return []
    }
    const out: Protection[] = []
    for (const n of names) {
      const p = await this.readProtection(n)
      if (p) out.push(p)
    }
    return out
  }

  async readProtection(vm: string): Promise<Protection | null> {
    try {
      return protectionSchema.parse(JSON.parse(await readFile(join(this.dir(vm), 'protection.json'), 'utf8')))
    } catch {
      return null
    }
  }

  async writeProtection(p: Protection): Promise<void> {
    await this.atomicWrite(p.vm, 'protection.json', JSON.stringify(p, null, 2))
  }

  async readState(
    vm: string,
  ): Promise<{ state: SourceState; manifests: Array<Array<ChunkId | null>> | null }> {
    let state: SourceState
    try {
      state = sourceStateSchema.parse(JSON.parse(await readFile(join(this.dir(vm), 'state.json'), 'utf8')))
    } catch {
      return { state: emptySourceState(), manifests: null }
    }
    if (state.seq === null) return { state, manifests: null }
    try {
      const manifests: Array<Array<ChunkId | null>> = []
      for (let i = 0; i < state.disks.length; i++)
        manifests.push(unpackManifest(await readFile(this.manifestPath(vm, state.seq, i))))
      return { state, manifests }
    } catch {
      // A state without its manifests cannot be diffed against: the next point is a full read.
      return { state: { ...state, reference: null }, manifests: null }
    }
  }

  /** Writes the manifests of `state.seq`, then the state naming them, then drops older manifests. */
  async writeState(
    vm: string,
    state: SourceState,
    manifests: Array<Array<ChunkId | null>> | null,
  ): Promise<void> {
    const dir = this.dir(vm)
    await mkdir(dir, { recursive: true })
    if (manifests && state.seq !== null) {
      for (let i = 0; i < manifests.length; i++) {
        const path = this.manifestPath(vm, state.seq, i)
        await writeFile(`${path}.tmp`, packManifest(manifests[i]), { flush: true })
        await rename(`${path}.tmp`, path)
      }
    }
    await this.atomicWrite(vm, 'state.json', JSON.stringify(state))
    for (const name of await readdir(dir)) {
      const m = /^manifest-(\d+)-\d+\.bin$/.exec(name)
      if (m && Number(m[1]) !== state.seq) await rm(join(dir, name), { force: true })
    }
  }

  /**
   * Removes a VM's protection. Its points stay on the targets, so the highest seq used (and the
   * epoch) is kept in a bare state: protected again, the VM's seqs go on rising (DESIGN.md §3).
   */
  async remove(vm: string): Promise<void> {
    const { state } = await this.readState(vm)
    const floor = seqFloorOf(state)
    await rm(this.dir(vm), { recursive: true, force: true })
    if (floor > 0 || state.epoch > 0)
      await this.writeState(vm, { ...emptySourceState(), epoch: state.epoch, seqFloor: floor }, null)
  }

  private manifestPath(vm: string, seq: number, disk: number): string {
    return join(this.dir(vm), `manifest-${seq}-${disk}.bin`)
  }

  private async atomicWrite(vm: string, name: string, text: string): Promise<void> {
    const dir = this.dir(vm)
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, `${name}.tmp`), text, { flush: true })
    await rename(join(dir, `${name}.tmp`), join(dir, name))
  }
}

export function packManifest(ids: ReadonlyArray<ChunkId | null>): Uint8Array {
  const out = new Uint8Array(ids.length * CHUNK_ID_BYTES)
  ids.forEach((id, i) => {
    if (id !== null) idToBytes(id, out, i * CHUNK_ID_BYTES)
  })
  return out
}

export function unpackManifest(bytes: Uint8Array): Array<ChunkId | null> {
  const n = Math.floor(bytes.length / CHUNK_ID_BYTES)
  const out: Array<ChunkId | null> = new Array(n)
  for (let i = 0; i < n; i++)
    out[i] = isZeroIdBytes(bytes, i * CHUNK_ID_BYTES) ? null : idFromBytes(bytes, i * CHUNK_ID_BYTES)
  return out
}

// Protection settings and the source's replication state, persisted in the node's folder
// (<dir>/replication/<vm>/), so protection survives restarts of the node. The state names the
// point whose manifests are on disk; a new state is written only after they are durable.
//
// Manifests are a base (manifest-<seq>-<disk>.bin: 32 bytes per chunk, 12.5 MiB for a 100 GiB
// disk) and a change log beside it (changes-<seq>.log): each later point appends the entries it
// changed, so a point costs a write of its changes, not of every disk's whole manifest. When the
// log outgrows half the base, the next point writes a new base. A log record written before a
// crash and never named by state.json (its point's state was not saved) is ignored and cut off.

import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { z } from 'zod'
import { CHUNK_ID_BYTES } from './constants.js'
import { PAGE_ENTRIES, PackedManifest } from './packed-manifest.js'

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
  /**
   * Per point, per disk: the chunk indexes it changed, or null when it read the disk whole (a
   * first point, a new size): listing every index made state.json O(disk) for 64 points.
   */
  changeLog: z.array(
    z.object({ seq: z.number().int(), indexes: z.array(z.array(z.number().int()).nullable()) }),
  ),
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

/** A change log may grow to this fraction of its base's bytes; the next point writes a new base. */
const CHANGE_LOG_MAX_FRACTION = 0.5
/** Change log record: magic, body length, CRC-32 of the body; body: seq (f64), entry count (u32), entries. */
const LOG_MAGIC = 0x524d434c
const LOG_HEADER_BYTES = 12
/** The body's seq and entry count, before its entries. */
const LOG_BODY_HEAD_BYTES = 12
const LOG_ENTRY_BYTES = 2 + 4 + CHUNK_ID_BYTES

/** The manifest files of a VM as last written or read: a base at `base`, a log up to `seq`. */
interface ManifestFiles {
  base: number
  seq: number
  disks: number
  baseBytes: number
  /** Bytes of the log that hold records up to `seq` (anything after them is cut before an append). */
  logBytes: number
}

/** The point before: its seq and its manifests (what the files hold when they are at `fromSeq`). */
export interface ManifestChanges {
  fromSeq: number
  from: readonly PackedManifest[]
}

export function emptySourceState(): SourceState {
  return { seq: null, epoch: 0, reference: null, time: null, disks: [], changeLog: [], targets: {} }
}

/** The highest seq `state` knows may be in use for its VM: the next point's seq is above it. */
export function seqFloorOf(state: SourceState): number {
  return Math.max(state.seq ?? 0, state.seqFloor ?? 0)
}

export class ProtectionFiles {
  private readonly manifestFiles = new Map<string, ManifestFiles>()

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

  /** The state alone, without its manifests (an empty one when there is none or it is unreadable). */
  async readSourceState(vm: string): Promise<SourceState> {
    try {
      return sourceStateSchema.parse(JSON.parse(await readFile(join(this.dir(vm), 'state.json'), 'utf8')))
    } catch {
      return emptySourceState()
    }
  }

  async readState(vm: string): Promise<{ state: SourceState; manifests: PackedManifest[] | null }> {
    const state = await this.readSourceState(vm)
    if (state.seq === null) return { state, manifests: null }
    const found = await this.readManifests(vm, state.seq, state.disks.length)
    // A state without its manifests cannot be diffed against: the next point is a full read.
    if (!found) return { state: { ...state, reference: null }, manifests: null }
    // What this instance wrote since is newer than what it just read.
    const known = this.manifestFiles.get(vm)
    if (!known || known.seq <= found.files.seq) this.manifestFiles.set(vm, found.files)
    return { state, manifests: found.manifests }
  }

  /**
   * The manifests of point `seq`: the newest base at or below it, rolled forward by its log's
   * records up to `seq`. Null when they cannot be rebuilt (missing files, a torn log short of `seq`).
   */
  private async readManifests(
    vm: string,
    seq: number,
    disks: number,
  ): Promise<{ manifests: PackedManifest[]; files: ManifestFiles } | null> {
    let names: string[]
    try {
      names = await readdir(this.dir(vm))
    } catch {
      return null
    }
    const bases = [
      ...new Set(
        names.flatMap((n) => {
          const m = /^manifest-(\d+)-\d+\.bin$/.exec(n)
          return m && Number(m[1]) <= seq ? [Number(m[1])] : []
        }),
      ),
    ].sort((a, b) => b - a)
    for (const base of bases) {
      try {
        const manifests: PackedManifest[] = []
        let baseBytes = 0
        for (let i = 0; i < disks; i++) {
          const m = await readManifestFile(this.manifestPath(vm, base, i))
          baseBytes += m.length * CHUNK_ID_BYTES
          manifests.push(m)
        }
        const files: ManifestFiles = { base, seq: base, disks, baseBytes, logBytes: 0 }
        if (base < seq) {
          let log: Buffer
          try {
            log = await readFile(this.logPath(vm, base))
          } catch {
            continue
          }
          for (const r of readLogRecords(log)) {
            if (r.seq > seq || r.seq <= files.seq) break
            if (!applyLogRecord(manifests, r.body)) break
            files.seq = r.seq
            files.logBytes = r.end
          }
          if (files.seq !== seq) continue
        }
        return { manifests, files }
      } catch {
        // A base missing a disk's file or unreadable: an older one may still rebuild the point.
      }
    }
    return null
  }

  /**
   * Makes the manifests of `state.seq` durable (a record of `changes` appended to the log when
   * the files on disk hold `changes.fromSeq` and the log has room, else a new base), then the
   * state naming them, then drops the files of other bases.
   */
  async writeState(
    vm: string,
    state: SourceState,
    manifests: readonly PackedManifest[] | null,
    changes?: ManifestChanges,
  ): Promise<void> {
    const dir = this.dir(vm)
    await mkdir(dir, { recursive: true })
    if (manifests && state.seq !== null) {
      const cur = this.manifestFiles.get(vm)
      const record =
        changes && cur && cur.seq === changes.fromSeq && cur.disks === manifests.length && state.seq > cur.seq
          ? changeRecord(state.seq, changes.from, manifests)
          : null
      if (
        cur &&
        record &&
        cur.logBytes + record.length <= cur.baseBytes * CHANGE_LOG_MAX_FRACTION &&
        (await this.appendLog(vm, cur, record))
      )
        Object.assign(cur, { seq: state.seq, logBytes: cur.logBytes + record.length })
      else {
        let baseBytes = 0
        for (let i = 0; i < manifests.length; i++) {
          const m = manifests[i]
          baseBytes += m.length * CHUNK_ID_BYTES
          await this.atomicWrite(vm, manifestName(state.seq, i), manifestPages(m))
        }
        // A log of an earlier use of this seq as a base must not extend the new one.
        await rm(this.logPath(vm, state.seq), { force: true })
        this.manifestFiles.set(vm, {
          base: state.seq,
          seq: state.seq,
          disks: manifests.length,
          baseBytes,
          logBytes: 0,
        })
      }
    }
    await this.atomicWrite(vm, 'state.json', JSON.stringify(state))
    const keep = state.seq === null ? null : (this.manifestFiles.get(vm)?.base ?? state.seq)
    for (const name of await readdir(dir)) {
      const m = /^(?:manifest-(\d+)-\d+\.bin|changes-(\d+)\.log)$/.exec(name)
      if (m && Number(m[1] ?? m[2]) !== keep) await rm(join(dir, name), { force: true })
    }
  }

  /**
   * Removes a VM's protection. Its points stay on the targets, so the highest seq used (and the
   * epoch) is kept in a bare state: protected again, the VM's seqs go on rising (DESIGN.md §3).
   */
  async remove(vm: string): Promise<void> {
    const state = await this.readSourceState(vm)
    const floor = seqFloorOf(state)
    await rm(this.dir(vm), { recursive: true, force: true })
    this.manifestFiles.delete(vm)
    if (floor > 0 || state.epoch > 0)
      await this.writeState(vm, { ...emptySourceState(), epoch: state.epoch, seqFloor: floor }, null)
  }

  private manifestPath(vm: string, seq: number, disk: number): string {
    return join(this.dir(vm), manifestName(seq, disk))
  }

  /** Appends a record after the log's valid bytes; false (a new base is written instead) on error. */
  private async appendLog(vm: string, cur: ManifestFiles, record: Buffer): Promise<boolean> {
    try {
      const fh = await open(this.logPath(vm, cur.base), cur.logBytes === 0 ? 'w' : 'r+')
      try {
        await fh.truncate(cur.logBytes)
        await fh.write(record, 0, record.length, cur.logBytes)
        await fh.datasync()
      } finally {
        await fh.close()
      }
      return true
    } catch {
      return false
    }
  }

  private logPath(vm: string, base: number): string {
    return join(this.dir(vm), `changes-${base}.log`)
  }

  private async atomicWrite(
    vm: string,
    name: string,
    data: string | Uint8Array | Iterable<Uint8Array>,
  ): Promise<void> {
    const dir = this.dir(vm)
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, `${name}.tmp`), data, { flush: true })
    await rename(join(dir, `${name}.tmp`), join(dir, name))
  }
}

/** A manifest's file bytes, a page at a time (no copy of the whole manifest). */
function* manifestPages(m: PackedManifest): Generator<Uint8Array> {
  for (let p = 0; p < m.pageCount; p++) yield m.pageBytes(p)
}

/** A manifest file read a page at a time (pages of zeros are held as none). */
async function readManifestFile(path: string): Promise<PackedManifest> {
  const fh = await open(path, 'r')
  try {
    const { size } = await fh.stat()
    const m = PackedManifest.zeros(Math.floor(size / CHUNK_ID_BYTES))
    const page = Buffer.alloc(PAGE_ENTRIES * CHUNK_ID_BYTES)
    for (let p = 0; p < m.pageCount; p++) {
      const want = m.pageBytes(p).length
      const { bytesRead } = await fh.read(page, 0, want, p * page.length)
      if (bytesRead !== want) throw new Error(`${path}: ${bytesRead} bytes of page ${p}, expected ${want}`)
      m.setPage(p, page.subarray(0, want))
    }
    return m
  } finally {
    await fh.close()
  }
}

function manifestName(seq: number, disk: number): string {
  return `manifest-${seq}-${disk}.bin`
}

/** The log record taking `from` to `to` (null when a disk changed size: a new base then). */
function changeRecord(
  seq: number,
  from: readonly PackedManifest[],
  to: readonly PackedManifest[],
): Buffer | null {
  if (from.length !== to.length || from.some((m, i) => m.length !== to[i].length)) return null
  return encodeLogRecord(
    seq,
    to,
    to.map((m, disk) => m.differences(from[disk])),
  )
}

/** One log record: the entries of `indexes` (per disk) as they are in `manifests`, for point `seq`. */
function encodeLogRecord(seq: number, manifests: readonly PackedManifest[], indexes: number[][]): Buffer {
  const count = indexes.reduce((n, list) => n + list.length, 0)
  const out = Buffer.alloc(LOG_HEADER_BYTES + LOG_BODY_HEAD_BYTES + count * LOG_ENTRY_BYTES)
  const body = out.subarray(LOG_HEADER_BYTES)
  body.writeDoubleLE(seq, 0)
  body.writeUInt32LE(count, 8)
  let at = LOG_BODY_HEAD_BYTES
  indexes.forEach((list, disk) => {
    for (const index of list) {
      body.writeUInt16LE(disk, at)
      body.writeUInt32LE(index, at + 2)
      manifests[disk].copyEntry(index, body, at + 6)
      at += LOG_ENTRY_BYTES
    }
  })
  out.writeUInt32LE(LOG_MAGIC, 0)
  out.writeUInt32LE(body.length, 4)
  out.writeUInt32LE(crc32(body), 8)
  return out
}

/** The whole records of a log, in order, up to the first torn or corrupt one. */
function* readLogRecords(log: Buffer): Generator<{ seq: number; body: Buffer; end: number }> {
  let at = 0
  while (at + LOG_HEADER_BYTES <= log.length) {
    if (log.readUInt32LE(at) !== LOG_MAGIC) return
    const length = log.readUInt32LE(at + 4)
    const end = at + LOG_HEADER_BYTES + length
    if (length < LOG_BODY_HEAD_BYTES || end > log.length) return
    const body = log.subarray(at + LOG_HEADER_BYTES, end)
    if (crc32(body) !== log.readUInt32LE(at + 8)) return
    if (LOG_BODY_HEAD_BYTES + body.readUInt32LE(8) * LOG_ENTRY_BYTES !== length) return
    yield { seq: body.readDoubleLE(0), body, end }
    at = end
  }
}

/** Applies a record's entries; false if one falls outside the manifests (a log of other disks). */
function applyLogRecord(manifests: PackedManifest[], body: Buffer): boolean {
  const count = body.readUInt32LE(8)
  for (let i = 0, at = LOG_BODY_HEAD_BYTES; i < count; i++, at += LOG_ENTRY_BYTES) {
    const disk = body.readUInt16LE(at)
    const index = body.readUInt32LE(at + 2)
    if (disk >= manifests.length || index >= manifests[disk].length) return false
    manifests[disk].setBytes(index, body.subarray(at + 6, at + 6 + CHUNK_ID_BYTES))
  }
  return true
}

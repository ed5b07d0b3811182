// The persistent dirty-range map of one disk: what Resilient Change Tracking is on Hyper-V.
//
// Every tracked block (trackingBlockBytes of virtual disk) holds the generation in which it was
// last written. A consistency point ends generation G; "changed since reference G" is the blocks
// whose generation is above G. The map file is trusted only when it was saved cleanly by the
// guest that last had the disk open AND the disk file still has the size and mtime recorded at
// that save. Anything else (a guest killed mid-run, a disk written by someone else, a torn or
// missing file) starts a new tracking id, so every older reference answers "unknown", which
// means "read everything": changes are never silently lost.
import { randomBytes } from 'node:crypto'
import { open, readFile, rename, stat } from 'node:fs/promises'
import { crc32 } from 'node:zlib'
import type { ChangedRange } from '../hypervisor.js'

const MAGIC = 'RMDIRTY1'
const VERSION = 1
const HEADER_BYTES = 128

export interface DirtyMapGeometry {
  virtualSize: number
  blockBytes: number
}

/** Why a map file was not trusted (null when it was). */
export type MapDistrust = 'missing' | 'corrupt' | 'not-clean' | 'geometry' | 'disk-changed' | null

interface LoadedMap {
  distrust: MapDistrust
  generation: number
  trackingId: string
  generations: Uint32Array
}

interface DiskStamp {
  size: bigint
  mtimeNs: bigint
}

async function stampOf(diskFile: string): Promise<DiskStamp> {
  const st = await stat(diskFile, { bigint: true })
  return { size: st.size, mtimeNs: st.mtimeNs }
}

/** Coalesced ranges of the blocks whose generation is above `since`, clipped to the disk. */
export function changedRanges(
  generations: Uint32Array,
  since: number,
  blockBytes: number,
  virtualSize: number,
): ChangedRange[] {
  const out: ChangedRange[] = []
  let start = -1
  for (let b = 0; b <= generations.length; b++) {
    const dirty = b < generations.length && generations[b] > since
    if (dirty && start < 0) start = b
    else if (!dirty && start >= 0) {
      const offset = start * blockBytes
      out.push({ offset, length: Math.min(b * blockBytes, virtualSize) - offset })
      start = -1
    }
  }
  return out
}

export class DirtyMap {
  private constructor(
    readonly file: string,
    readonly geometry: DirtyMapGeometry,
    readonly trackingId: string,
    private gen: number,
    private readonly generations: Uint32Array,
    /** Why the file on disk was not trusted at open, or null. */
    readonly distrust: MapDistrust,
  ) {}

  get generation(): number {
    return this.gen
  }

  get blockCount(): number {
    return this.generations.length
  }

  /**
   * Loads the map of `diskFile` (trusting it only as explained above) and marks the file
   * not-clean before returning, so a crash from now on is detected at the next open.
   */
  static async open(file: string, diskFile: string, geometry: DirtyMapGeometry): Promise<DirtyMap> {
    const blocks = Math.ceil(geometry.virtualSize / geometry.blockBytes)
    const loaded = await DirtyMap.load(file, diskFile, geometry, blocks)
    const map =
      loaded.distrust === null
        ? new DirtyMap(file, geometry, loaded.trackingId, loaded.generation, loaded.generations, null)
        : new DirtyMap(
            file,
            geometry,
            randomBytes(8).toString('hex'),
            loaded.generation,
            new Uint32Array(blocks),
            loaded.distrust,
          )
    await map.persist(false, { size: 0n, mtimeNs: 0n })
    return map
  }

  /**
   * The map of a disk nobody has open (a stopped VM), without marking it in use: null unless it
   * is trusted. A caller that changes it saves it clean again (the disk file is unchanged).
   */
  static async peek(file: string, diskFile: string, geometry: DirtyMapGeometry): Promise<DirtyMap | null> {
    const blocks = Math.ceil(geometry.virtualSize / geometry.blockBytes)
    const loaded = await DirtyMap.load(file, diskFile, geometry, blocks)
    if (loaded.distrust !== null) return null
    return new DirtyMap(file, geometry, loaded.trackingId, loaded.generation, loaded.generations, null)
  }

  private static async load(
    file: string,
    diskFile: string,
    geometry: DirtyMapGeometry,
    blocks: number,
  ): Promise<LoadedMap> {
    const none: LoadedMap = {
      distrust: 'missing',
      generation: 0,
      trackingId: '',
      generations: new Uint32Array(0),
    }
    let buf: Buffer
    try {
      buf = await readFile(file)
    } catch {
      return none
    }
    if (buf.length < HEADER_BYTES || buf.toString('latin1', 0, 8) !== MAGIC)
      return { ...none, distrust: 'corrupt' }
    if (buf.readUInt32LE(84) !== crc32(buf.subarray(0, 84))) return { ...none, distrust: 'corrupt' }
    const generation = buf.readUInt32LE(32)
    const fail = (distrust: MapDistrust) => ({ ...none, distrust: distrust as MapDistrust, generation })
    if (buf.readUInt32LE(8) !== VERSION) return fail('corrupt')
    if (buf.readUInt32LE(12) !== 1) return fail('not-clean')
    if (
      buf.readUInt32LE(16) !== geometry.blockBytes ||
      Number(buf.readBigUInt64LE(24)) !== blocks ||
      Number(buf.readBigUInt64LE(40)) !== geometry.virtualSize
    )
      return fail('geometry')
    if (buf.length !== HEADER_BYTES + blocks * 4) return fail('corrupt')
    const body = buf.subarray(HEADER_BYTES)
    if (buf.readUInt32LE(80) !== crc32(body)) return fail('corrupt')
    let now: DiskStamp
    try {
      now = await stampOf(diskFile)
    } catch {
      return fail('disk-changed')
    }
    if (now.mtimeNs !== buf.readBigUInt64LE(48) || now.size !== buf.readBigUInt64LE(56))
      return fail('disk-changed')
    const generations = new Uint32Array(blocks)
    for (let i = 0; i < blocks; i++) generations[i] = body.readUInt32LE(i * 4)
    return { distrust: null as MapDistrust, generation, trackingId: buf.toString('hex', 64, 72), generations }
  }

  /** All disks of a VM share one generation counter: the highest of their maps. */
  setGeneration(gen: number): void {
    if (gen < this.gen) throw new RangeError(`generation may only rise (${this.gen} -> ${gen})`)
    this.gen = gen
  }

  /** Records a write of [offset, offset+length) in generation `gen` (default: the current one). */
  mark(offset: number, length: number, gen = this.gen): void {
    if (length <= 0) return
    const first = Math.floor(offset / this.geometry.blockBytes)
    const last = Math.min(
      Math.floor((offset + length - 1) / this.geometry.blockBytes),
      this.generations.length - 1,
    )
    for (let b = first; b <= last; b++) if (this.generations[b] < gen) this.generations[b] = gen
  }

  /** Ranges written after generation `since` ended. */
  changedSince(since: number): ChangedRange[] {
    return changedRanges(this.generations, since, this.geometry.blockBytes, this.geometry.virtualSize)
  }

  /** Saves the map as clean, stamped with the disk file's size and mtime (call after closing it). */
  async saveClean(diskFile: string): Promise<void> {
    await this.persist(true, await stampOf(diskFile))
  }

  private async persist(clean: boolean, stamp: DiskStamp): Promise<void> {
    const blocks = this.generations.length
    const buf = Buffer.alloc(HEADER_BYTES + blocks * 4)
    const body = buf.subarray(HEADER_BYTES)
    for (let i = 0; i < blocks; i++) body.writeUInt32LE(this.generations[i], i * 4)
    buf.write(MAGIC, 0, 'latin1')
    buf.writeUInt32LE(VERSION, 8)
    buf.writeUInt32LE(clean ? 1 : 0, 12)
    buf.writeUInt32LE(this.geometry.blockBytes, 16)
    buf.writeBigUInt64LE(BigInt(blocks), 24)
    buf.writeUInt32LE(this.gen, 32)
    buf.writeBigUInt64LE(BigInt(this.geometry.virtualSize), 40)
    buf.writeBigUInt64LE(stamp.mtimeNs, 48)
    buf.writeBigUInt64LE(stamp.size, 56)
    buf.write(this.trackingId, 64, 'hex')
    buf.writeUInt32LE(crc32(body), 80)
    buf.writeUInt32LE(crc32(buf.subarray(0, 84)), 84)
    const tmp = `${this.file}.tmp`
    const fh = await open(tmp, 'w')
    try {
      await fh.writeFile(buf)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(tmp, this.file)
  }
}

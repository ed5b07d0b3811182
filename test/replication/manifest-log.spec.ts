// The source's manifests on disk: a base plus a change log. A point writes its changes, not every
// disk's whole manifest; a restart rebuilds exactly the manifests of the point state.json names,
// whatever was cut short by a crash.
import { createHash } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { ChunkId } from '../../src/replication/ids.js'
import { PackedManifest } from '../../src/replication/packed-manifest.js'
import { emptySourceState, ProtectionFiles, type SourceState } from '../../src/replication/settings.js'

/** Manifests in the tests' notation: hex ids, null for zero; packed where they meet the files. */
type Manifests = Array<Array<ChunkId | null>>

const id = (s: string): ChunkId => createHash('sha256').update(s).digest('hex')
const VM = 'db1'

let root: string
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'replimesh-manifest-log-'))
})
afterEach(() => rm(root, { recursive: true, force: true }))

const stateAt = (seq: number, m: Manifests): SourceState => ({
  ...emptySourceState(),
  seq,
  time: seq,
  disks: m.map((d) => ({ virtualSize: d.length * 262144, chunkSize: 262144 })),
})

/** Two disks of 4096 and 1024 chunks (a 128 KiB + 32 KiB base). */
function initial(): Manifests {
  return [
    Array.from({ length: 4096 }, (_, i) => (i % 5 === 0 ? null : id(`a${i}`))),
    Array.from({ length: 1024 }, (_, i) => id(`b${i}`)),
  ]
}

function change(m: Manifests, entries: Array<[number, number, ChunkId | null]>): Manifests {
  const out = m.map((d) => [...d])
  for (const [disk, index, v] of entries) out[disk][index] = v
  return out
}

const files = () => readdir(join(root, VM))

const pack = (m: Manifests) => m.map((d) => PackedManifest.fromIds(d))

/** ProtectionFiles, spoken to in the tests' notation. */
class Files {
  private readonly f = new ProtectionFiles(root)
  writeState(
    vm: string,
    state: SourceState,
    m: Manifests | null,
    changes?: { fromSeq: number; from: Manifests },
  ) {
    return this.f.writeState(
      vm,
      state,
      m && pack(m),
      changes && { fromSeq: changes.fromSeq, from: pack(changes.from) },
    )
  }
  async readState(vm: string): Promise<{ state: SourceState; manifests: Manifests | null }> {
    const { state, manifests } = await this.f.readState(vm)
    return { state, manifests: manifests?.map((d) => d.toArray()) ?? null }
  }
}

/** Point 1 written as a base, point 2 (one entry changed) as a log record. */
async function twoPoints() {
  const f = new Files()
  const m1 = initial()
  await f.writeState(VM, stateAt(1, m1), m1)
  const m2 = change(m1, [[0, 1, id('two')]])
  await f.writeState(VM, stateAt(2, m2), m2, { fromSeq: 1, from: m1 })
  return { f, m1, m2 }
}
const fresh = () => new Files()

describe('manifests as a base and a change log', () => {
  it('a point of a few changes appends them (bytes of the changes, not of the manifests); a restart rebuilds it', async () => {
    const f = fresh()
    const m1 = initial()
    await f.writeState(VM, stateAt(1, m1), m1)
    const m2 = change(m1, [
      [0, 7, id('x')],
      [0, 11, null],
      [1, 1023, id('y')],
    ])
    await f.writeState(VM, stateAt(2, m2), m2, { fromSeq: 1, from: m1 })
    expect((await files()).sort()).toEqual([
      'changes-1.log',
      'manifest-1-0.bin',
      'manifest-1-1.bin',
      'state.json',
    ])
    // 12-byte header, 12-byte body head, 38 bytes an entry.
    expect((await stat(join(root, VM, 'changes-1.log'))).size).toBe(12 + 12 + 3 * 38)
    const again = await fresh().readState(VM)
    expect(again.state.seq).toBe(2)
    expect(again.manifests).toEqual(m2)
  })

  it('a record written before a crash that state.json never named is ignored, then cut off', async () => {
    const { f, m1, m2 } = await twoPoints()
    const state2 = await readFile(join(root, VM, 'state.json'))
    const m3 = change(m2, [[0, 2, id('three')]])
    await f.writeState(VM, stateAt(3, m3), m3, { fromSeq: 2, from: m2 })
    // The crash: point 3's record is in the log, its state.json was never written.
    await writeFile(join(root, VM, 'state.json'), state2)
    const g = fresh()
    const back = await g.readState(VM)
    expect(back.state.seq).toBe(2)
    expect(back.manifests).toEqual(m2)
    // The next point (its seq above 3) follows point 2; the stale record must not come back.
    const m4 = change(m2, [[1, 5, id('four')]])
    await g.writeState(VM, stateAt(4, m4), m4, { fromSeq: 2, from: m2 })
    expect((await fresh().readState(VM)).manifests).toEqual(m4)
    expect((await fresh().readState(VM)).manifests?.[0][2]).toBe(m1[0][2])
  })

  it('a torn record is never applied: the point it held is read in full again', async () => {
    const { f, m2 } = await twoPoints()
    const log = join(root, VM, 'changes-1.log')
    await truncate(log, (await stat(log)).size - 5)
    const torn = await fresh().readState(VM)
    expect(torn.manifests, 'a manifest rebuilt from a torn record').toBeNull()
    expect(torn.state.reference).toBeNull()
    // A flipped byte fails the record's CRC the same way.
    await f.writeState(VM, stateAt(3, m2), m2) // a new base
    const m4 = change(m2, [[1, 9, id('four')]])
    await f.writeState(VM, stateAt(4, m4), m4, { fromSeq: 3, from: m2 })
    const bytes = await readFile(join(root, VM, 'changes-3.log'))
    bytes[bytes.length - 1] ^= 0xff
    await writeFile(join(root, VM, 'changes-3.log'), bytes)
    expect((await fresh().readState(VM)).manifests).toBeNull()
  })

  it('a log outgrowing half its base is replaced by a new base; files of other bases go', async () => {
    const f = fresh()
    let m = initial()
    await f.writeState(VM, stateAt(1, m), m)
    // 200 changed entries a point (7.6 KiB): the 160 KiB base takes 10 records, then a new base.
    let bases = new Set<string>()
    for (let seq = 2; seq <= 30; seq++) {
      const next = change(
        m,
        Array.from({ length: 200 }, (_, k): [number, number, ChunkId] => [
          0,
          (seq * 200 + k) % 4096,
          id(`${seq}.${k}`),
        ]),
      )
      await f.writeState(VM, stateAt(seq, next), next, { fromSeq: seq - 1, from: m })
      m = next
      const names = await files()
      bases = new Set([...bases, ...names.filter((n) => n.startsWith('manifest-') && n.endsWith('-0.bin'))])
      expect(names.filter((n) => n.endsWith('-0.bin')).length, 'one base on disk').toBe(1)
      const log = names.find((n) => n.startsWith('changes-'))
      if (log) expect((await stat(join(root, VM, log))).size).toBeLessThanOrEqual(160 * 1024 * 0.5)
      expect((await fresh().readState(VM)).manifests).toEqual(m)
    }
    expect(bases.size, 'new bases were written').toBeGreaterThan(1)
  })

  it('changes from a point the files do not hold are written as a new base', async () => {
    const f = fresh()
    const m1 = initial()
    await f.writeState(VM, stateAt(1, m1), m1)
    const m2 = change(m1, [[0, 3, id('x')]])
    // The caller believes the files hold point 7: they hold 1.
    await f.writeState(VM, stateAt(2, m2), m2, { fromSeq: 7, from: m1 })
    expect((await files()).sort()).toEqual(['manifest-2-0.bin', 'manifest-2-1.bin', 'state.json'])
    expect((await fresh().readState(VM)).manifests).toEqual(m2)
  })

  it('random points, restarts and crashes: what is read back is always the named point', async () => {
    let seed = 42
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed % n
    }
    let f = fresh()
    let m = initial()
    let seq = 1
    await f.writeState(VM, stateAt(seq, m), m)
    let named = { seq, m }
    let crashes = 0
    let appends = 0
    for (let step = 0; step < 120; step++) {
      const next = change(
        m,
        Array.from({ length: 1 + rand(300) }, (): [number, number, ChunkId | null] => {
          const disk = rand(2)
          return [disk, rand(disk === 0 ? 4096 : 1024), rand(4) === 0 ? null : id(`r${step}.${rand(1e6)}`)]
        }),
      )
      seq += 1 + rand(3)
      const before = await readFile(join(root, VM, 'state.json'))
      const baseBefore = (await files()).find((n) => n.endsWith('-0.bin'))
      await f.writeState(VM, stateAt(seq, next), next, { fromSeq: named.seq, from: named.m })
      // A crash just before state.json is written: the record is in the log, the state names the
      // point before. (After a new base, the old one was dropped once the state named the new one:
      // no crash leaves that.)
      const appended = (await files()).find((n) => n.endsWith('-0.bin')) === baseBefore
      const crashed = appended && rand(5) === 0
      if (appended) appends++
      if (crashed) crashes++
      if (crashed) await writeFile(join(root, VM, 'state.json'), before)
      else named = { seq, m: next }
      m = named.m
      if (crashed || rand(4) === 0) {
        f = fresh() // a restart: everything known comes from the files
        const back = await f.readState(VM)
        expect(back.state.seq).toBe(named.seq)
        expect(back.manifests).toEqual(named.m)
      }
    }
    expect(appends, 'points written as log records').toBeGreaterThan(20)
    expect(crashes, 'crashes simulated').toBeGreaterThan(3)
  })
})

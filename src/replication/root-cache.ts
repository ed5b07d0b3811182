// Manifest roots at the cost of the change (DESIGN.md §3: "a small change costs a small
// comparison"). The source signs every point with each disk's Merkle root; hashing the whole tree
// each point costs O(disk) (0.3 s for 2 GiB). RootCache keeps, per manifest it computed, the ids of
// the tree's nodes at every level (not the leaves: those are the manifest itself, which the
// protector holds anyway), and computes the next manifest's root by rehashing only the nodes on
// the paths from changed chunks to the root.
//
// Memory: ceil(chunks / FANOUT) level-0 node ids of 32 bytes plus the (FANOUT times smaller)
// levels above: a 100 GiB disk at 256 KiB chunks (409,600 chunks, fanout 1024) holds 400 ids,
// 12.8 KiB. Trees are keyed weakly by the manifest array they describe, so a manifest the
// protector dropped takes its tree with it; a cycle that failed leaves the committed manifest's
// tree in place for the next one.
import {
  type HashAlgorithm,
  hashFunction,
  MERKLE_FANOUT,
  packedNodeId,
  treeShape,
  ZERO_HEX,
} from '../chunkstore/index.js'
import { PAGE_ENTRIES, type PackedManifest } from './packed-manifest.js'

const ID = 32

export type Manifest = PackedManifest

interface Tree {
  alg: HashAlgorithm
  chunkSize: number
  chunkCount: number
  /** levels[k]: node ids of level k, packed (level depth-1 holds the root alone). */
  levels: Buffer[]
  root: string
}

export interface RootStats {
  /** Nodes hashed by the last call (full build: every node). */
  nodesHashed: number
  incremental: boolean
}

export class RootCache {
  private readonly trees = new WeakMap<Manifest, Tree>()
  private readonly hash
  readonly stats: RootStats = { nodesHashed: 0, incremental: false }

  constructor(
    private readonly alg: HashAlgorithm,
    private readonly fanout = MERKLE_FANOUT,
  ) {
    this.hash = hashFunction(alg)
  }

  /**
   * The root of `ids` (a disk of `virtualSize` bytes in chunks of `chunkSize`). With `base`, a
   * manifest this cache computed before and `changed`, every index at which `ids` differs from it
   * (more is harmless), only the branches over those indexes are rehashed; growth or shrinking of
   * the disk is handled too. Without them, or when `base` is unknown here, the tree is built whole.
   */
  root(
    virtualSize: number,
    chunkSize: number,
    ids: Manifest,
    base?: { ids: Manifest; changed: Iterable<number> } | null,
  ): string {
    const prior = base ? this.trees.get(base.ids) : undefined
    const tree =
      prior && base && prior.chunkSize === chunkSize && prior.alg === this.alg
        ? this.update(prior, virtualSize, chunkSize, ids, base.changed)
        : this.build(virtualSize, chunkSize, ids)
    this.trees.set(ids, tree)
    return tree.root
  }

  /** Whether a tree of `ids` is held (tests). */
  has(ids: Manifest): boolean {
    return this.trees.has(ids)
  }

  private build(virtualSize: number, chunkSize: number, ids: Manifest): Tree {
    const shape = treeShape(virtualSize, chunkSize, this.fanout)
    const counts = levelCounts(shape.chunkCount, shape.depth, this.fanout)
    const levels = counts.map((n) => Buffer.alloc(n * ID))
    const all = (n: number) => Array.from({ length: n }, (_, j) => j)
    this.stats.nodesHashed = 0
    this.stats.incremental = false
    for (let k = 0; k < shape.depth; k++) this.rehash(levels, k, all(counts[k]), ids, shape.chunkCount)
    return this.finish(chunkSize, shape.chunkCount, levels)
  }

  private update(
    prior: Tree,
    virtualSize: number,
    chunkSize: number,
    ids: Manifest,
    changed: Iterable<number>,
  ): Tree {
    const shape = treeShape(virtualSize, chunkSize, this.fanout)
    const count = shape.chunkCount
    const counts = levelCounts(count, shape.depth, this.fanout)
    // Copy on write: the prior tree stays valid for its own manifest.
    const levels = counts.map((n, k) => {
      const b = Buffer.alloc(n * ID)
      prior.levels[k]?.copy(b, 0, 0, Math.min(b.length, prior.levels[k].length))
      return b
    })
    this.stats.nodesHashed = 0
    this.stats.incremental = true
    // Chunks whose node changed: the listed ones and, when the size changed, the last chunk both
    // sizes share onwards (its node's entry count differs; new nodes cover the rest).
    let dirty = new Set<number>()
    for (const i of changed) if (i >= 0 && i < count) dirty.add(Math.floor(i / this.fanout))
    if (count !== prior.chunkCount && count > 0) {
      const from = Math.floor(Math.max(0, Math.min(count, prior.chunkCount) - 1) / this.fanout)
      for (let j = from; j < counts[0]; j++) dirty.add(j)
    }
    const priorDepth = prior.levels.length
    for (let k = 0; k < shape.depth; k++) {
      // A level that was the prior root or above it: every node may differ.
      if (k >= priorDepth - 1 && count !== prior.chunkCount) for (let j = 0; j < counts[k]; j++) dirty.add(j)
      const nodes = [...dirty].sort((a, b) => a - b)
      this.rehash(levels, k, nodes, ids, count)
      dirty = new Set(nodes.map((j) => Math.floor(j / this.fanout)))
    }
    return this.finish(chunkSize, count, levels)
  }

  /** Recomputes the ids of `nodes` at level k from their entries (chunk ids or level k-1 ids). */
  private rehash(levels: Buffer[], k: number, nodes: number[], ids: Manifest, chunkCount: number): void {
    const entries = k === 0 ? chunkCount : levels[k - 1].length / ID
    for (const j of nodes) {
      const from = j * this.fanout
      const to = Math.min(entries, from + this.fanout)
      if (from >= to) continue
      let packed: Buffer
      if (k > 0) packed = levels[k - 1].subarray(from * ID, to * ID)
      else {
        // A level-0 node's entries: a run of one page of the manifest (at the default fanout, the
        // page itself); a page of zeros is a zero node, unhashed.
        const run = to <= ids.length && samePage(from, to) ? ids.run(from, to) : runOf(ids, from, to)
        if (run === null) {
          levels[k].fill(0, j * ID, (j + 1) * ID)
          this.stats.nodesHashed++
          continue
        }
        packed = run
      }
      packedNodeId(k, packed, this.hash).copy(levels[k], j * ID)
      this.stats.nodesHashed++
    }
  }

  private finish(chunkSize: number, chunkCount: number, levels: Buffer[]): Tree {
    const top = levels[levels.length - 1]
    const root = chunkCount === 0 || top.length === 0 ? ZERO_HEX : top.subarray(0, ID).toString('hex')
    return { alg: this.alg, chunkSize, chunkCount, levels, root }
  }
}

function samePage(from: number, to: number): boolean {
  return Math.floor(from / PAGE_ENTRIES) === Math.floor((to - 1) / PAGE_ENTRIES)
}

/** Entries [from, to) of a manifest across pages, in file layout (zeros past its end). */
function runOf(ids: Manifest, from: number, to: number): Buffer {
  const out = Buffer.alloc((to - from) * ID)
  for (let i = from; i < Math.min(to, ids.length); i++) ids.copyEntry(i, out, (i - from) * ID)
  return out
}

function levelCounts(chunkCount: number, depth: number, fanout: number): number[] {
  const out: number[] = []
  let n = chunkCount
  for (let k = 0; k < depth; k++) {
    n = Math.ceil(n / fanout)
    out.push(n)
  }
  return out
}

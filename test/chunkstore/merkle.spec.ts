import { describe, expect, it } from 'vitest'
import { hashFunction, ZERO_ID } from '../../src/chunkstore/hash.js'
import {
  decodeNode,
  diffTrees,
  leaves,
  packedNodeId,
  patchTree,
  TreeBuilder,
  treeShape,
} from '../../src/chunkstore/merkle.js'

const hash = hashFunction('blake3')

/** Builds a tree over `ids` with an in-memory node store; returns root and the node map. */
async function build(ids: Buffer[], fanout: number) {
  const shape = treeShape(ids.length, 1, fanout)
  const nodes = new Map<string, Buffer>()
  const b = new TreeBuilder(shape, hash, async (id, bytes) => {
    nodes.set(id.toString('hex'), bytes)
  })
  for (const id of ids) await b.push(id)
  const root = await b.finish()
  const read = async (id: Buffer) => {
    const n = nodes.get(id.toString('hex'))
    if (!n) throw new Error('missing node')
    return n
  }
  return { shape, root, nodes, read }
}

const idOf = (n: number) => (n === 0 ? ZERO_ID : hash(Buffer.from(`chunk ${n}`)))

describe('treeShape', () => {
  it.each([
    [0, 4, 0, 1],
    [1, 4, 1, 1],
    [4, 4, 4, 1],
    [5, 4, 5, 2],
    [16, 4, 16, 2],
    [17, 4, 17, 3],
    [8192, 1024, 8192, 2],
    [1024, 1024, 1024, 1],
  ])('%i chunks, fanout %i -> count %i, depth %i', (chunks, fanout, count, depth) => {
    expect(treeShape(chunks, 1, fanout)).toEqual({ chunkCount: count, fanout, depth })
  })
  it('rounds a partial last chunk up', () => {
    expect(treeShape(10 * 4096 + 1, 4096, 1024).chunkCount).toBe(11)
  })
})

describe('TreeBuilder and leaves', () => {
  it.each([1, 3, 4, 5, 16, 17, 63, 64, 65, 200])('round-trips %i chunk ids (fanout 4)', async (n) => {
    const ids = Array.from({ length: n }, (_, i) => idOf(i % 7 === 3 ? 0 : i + 1))
    const t = await build(ids, 4)
    const back: Buffer[] = []
    for await (const id of leaves(t.shape, t.read, t.root)) back.push(id)
    expect(back.map((b) => b.toString('hex'))).toEqual(ids.map((b) => b.toString('hex')))
  })

  it('an all-zero disk has the zero root and stores no node', async () => {
    const t = await build(
      Array.from({ length: 100 }, () => ZERO_ID),
      4,
    )
    expect(t.root.equals(ZERO_ID)).toBe(true)
    expect(t.nodes.size).toBe(0)
  })

  it('zero subtrees are not stored', async () => {
    const ids = Array.from({ length: 64 }, (_, i) => (i < 16 ? idOf(i + 1) : ZERO_ID))
    const t = await build(ids, 4)
    // 4 leaf nodes + 1 level-1 node + root: the 12 all-zero leaf nodes and 3 level-1 nodes are flags.
    expect(t.nodes.size).toBe(6)
  })

  it('refuses too few or too many ids', async () => {
    const shape = treeShape(3, 1, 4)
    const b = new TreeBuilder(shape, hash, async () => {})
    await b.push(idOf(1))
    await expect(b.finish()).rejects.toThrow(/1 of 3/)
    const c = new TreeBuilder(treeShape(1, 1, 4), hash, async () => {})
    await c.push(idOf(1))
    await expect(c.push(idOf(2))).rejects.toThrow(/more chunks/)
  })
})

describe('diffTrees', () => {
  const cases: [string, number, number[]][] = [
    ['nothing changed', 100, []],
    ['first chunk', 100, [0]],
    ['last chunk', 100, [99]],
    ['scattered', 300, [1, 17, 64, 65, 200, 299]],
    ['a whole subtree', 64, [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]],
  ]
  it.each(cases)('%s', async (_name, n, changed) => {
    const a = Array.from({ length: n }, (_, i) => idOf(i + 1))
    const b = a.map((id, i) => (changed.includes(i) ? idOf(10_000 + i) : id))
    const ta = await build(a, 4)
    const tb = await build(b, 4)
    const read = async (id: Buffer) => (await ta.read(id).catch(() => tb.read(id))) as Buffer
    const got: number[] = []
    for await (const c of diffTrees(ta.shape, read, ta.root, tb.root)) {
      got.push(c.index)
      expect(c.before.equals(a[c.index])).toBe(true)
      expect(c.after.equals(b[c.index])).toBe(true)
    }
    expect(got).toEqual(changed)
  })

  it('diffs against an all-zero tree and reads only differing subtrees', async () => {
    const n = 256
    const zero = Array.from({ length: n }, () => ZERO_ID)
    const some = zero.map((z, i) => (i === 5 || i === 200 ? idOf(i + 1) : z))
    const ta = await build(zero, 4)
    const tb = await build(some, 4)
    let reads = 0
    const read = async (id: Buffer) => {
      reads++
      return tb.read(id)
    }
    const got: number[] = []
    for await (const c of diffTrees(tb.shape, read, ta.root, tb.root)) got.push(c.index)
    expect(got).toEqual([5, 200])
    // Two paths of depth 4 below the root: root + 2 x 3 nodes.
    expect(reads).toBe(7)
  })
})

describe('patchTree', () => {
  const cases: [string, number, Array<[number, number]>][] = [
    ['one chunk of a one-node tree', 3, [[1, 50]]],
    [
      'first and last chunk',
      100,
      [
        [0, 500],
        [99, 501],
      ],
    ],
    [
      'scattered, some to zero',
      300,
      [
        [1, 0],
        [17, 502],
        [64, 0],
        [65, 503],
        [200, 504],
        [299, 0],
      ],
    ],
    ['a whole subtree to zero', 64, Array.from({ length: 16 }, (_, k): [number, number] => [16 + k, 0])],
    [
      'zero chunks to data',
      65,
      [
        [3, 505],
        [64, 506],
      ],
    ],
    ['everything to zero', 20, Array.from({ length: 20 }, (_, k): [number, number] => [k, 0])],
  ]
  it.each(cases)(
    '%s: the root TreeBuilder gives the changed manifest; only changed paths are read',
    async (_name, n, changes) => {
      // Every 3rd chunk zero, so zero nodes and zero entries are on the paths too.
      const before = Array.from({ length: n }, (_, i) => idOf(i % 3 === 2 ? 0 : i + 1))
      const after = [...before]
      for (const [i, v] of changes) after[i] = idOf(v)
      const ta = await build(before, 4)
      const tb = await build(after, 4)
      const reads: string[] = []
      const stored = new Map<string, Buffer>()
      const root = await patchTree(
        ta.shape,
        async (id) => {
          reads.push(id.toString('hex'))
          return ta.read(id)
        },
        hash,
        async (id, bytes) => {
          stored.set(id.toString('hex'), bytes)
        },
        ta.root,
        new Map(changes.map(([i, v]) => [i, idOf(v)])),
      )
      expect(root.toString('hex')).toBe(tb.root.toString('hex'))
      // What it stored are exactly the nodes of the new tree that the old one lacks, and with the
      // old ones they make a tree whose leaves are the changed manifest.
      const fresh = [...tb.nodes.keys()].filter((k) => !ta.nodes.has(k))
      expect([...stored.keys()].filter((k) => !ta.nodes.has(k)).sort()).toEqual(fresh.sort())
      const both = async (id: Buffer) => stored.get(id.toString('hex')) ?? ta.read(id)
      const back: string[] = []
      for await (const id of leaves(ta.shape, both, root)) back.push(id.toString('hex'))
      expect(back).toEqual(after.map((b) => b.toString('hex')))
      // Reads: at most one node per level for each changed chunk (fanout 4: depth of the tree).
      expect(reads.length).toBeLessThanOrEqual(changes.length * ta.shape.depth)
    },
  )

  it('reads one path for one change in a large tree', async () => {
    const ids = Array.from({ length: 4096 }, (_, i) => idOf(i + 1))
    const t = await build(ids, 4) // depth 6
    let reads = 0
    await patchTree(
      t.shape,
      async (id) => {
        reads++
        return t.read(id)
      },
      hash,
      async () => {},
      t.root,
      new Map([[1234, idOf(99_999)]]),
    )
    expect(reads).toBe(t.shape.depth)
  })

  it('refuses a change past the disk', async () => {
    const t = await build(
      Array.from({ length: 10 }, (_, i) => idOf(i + 1)),
      4,
    )
    await expect(
      patchTree(t.shape, t.read, hash, async () => {}, t.root, new Map([[10, idOf(1)]])),
    ).rejects.toThrow(/outside the disk/)
  })
})

describe('packedNodeId', () => {
  it('gives every node the id TreeBuilder stored it under (the same header), and ZERO_ID for zeros', async () => {
    const ids = Array.from({ length: 70 }, (_, i) => idOf(i % 5 === 2 ? 0 : i + 1))
    const t = await build(ids, 4)
    expect(t.nodes.size).toBeGreaterThan(20)
    for (const [hex, bytes] of t.nodes) {
      const node = decodeNode(bytes)
      expect(packedNodeId(node.level, Buffer.concat(node.ids), hash).toString('hex')).toBe(hex)
    }
    expect(packedNodeId(1, Buffer.concat([ZERO_ID, ZERO_ID]), hash).equals(ZERO_ID)).toBe(true)
  })
})

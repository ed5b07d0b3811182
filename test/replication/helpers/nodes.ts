// In-process replication nodes for tests: a real chunk store under a temp folder, a node of an
// in-memory network, optionally the shared fake hypervisor, and a started ReplicationService.
// One TestNodes per test (create in beforeEach, close in afterEach).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { type ChunkStore, openChunkStore } from '../../../src/chunkstore/index.js'
import { LINKS_FILE, ReplicationService } from '../../../src/replication/index.js'
import { FakeHypervisor } from './fake-hypervisor.js'
import { MemoryNetwork, type MemoryNode } from './memory-network.js'

export interface LogEntry {
  level: 'info' | 'warn'
  obj: Record<string, unknown>
  msg?: string
}

export interface TestNode {
  name: string
  mesh: MemoryNode
  store: ChunkStore
  service: ReplicationService
  /** Everything the node's service logged. */
  logs: LogEntry[]
  dir: string
}

export interface NodeOptions {
  /** The node's site; `site-<name>` by default. */
  site?: string
  /** Give the service the shared fake hypervisor (a source); none by default (a target). */
  hypervisor?: boolean
  /** The node's mesh key (signed gossip and points). */
  key?: PrivateKey
  /** Written to the node's links file before the service starts. */
  links?: unknown
  corruptChunks?: number
}

export class TestNodes {
  readonly net = new MemoryNetwork()
  readonly hv: FakeHypervisor
  readonly nodes: TestNode[] = []

  private constructor(readonly root: string) {
    this.hv = new FakeHypervisor(root)
  }

  /** A fresh temp folder named `<prefix>…`, an empty network and hypervisor. */
  static async create(prefix: string): Promise<TestNodes> {
    return new TestNodes(await mkdtemp(join(tmpdir(), prefix)))
  }

  /** A started node in `<root>/<name>` (stopped by close()). */
  async node(name: string, opts: NodeOptions = {}): Promise<TestNode> {
    const dir = join(this.root, name)
    if (opts.links) {
      await mkdir(dir, { recursive: true })
      await writeFile(join(dir, LINKS_FILE), JSON.stringify(opts.links))
    }
    const mesh = this.net.node(name, opts.site ?? `site-${name}`, opts.key)
    const store = await openChunkStore({ dir: join(dir, 'store') })
    const logs: LogEntry[] = []
    const service = new ReplicationService({
      dir,
      mesh,
      store,
      hypervisor: opts.hypervisor ? this.hv.asHypervisor() : null,
      logger: {
        info: (obj: object, msg?: string) =>
          logs.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
        warn: (obj: object, msg?: string) =>
          logs.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
      },
      corruptChunks: opts.corruptChunks,
    })
    await service.start()
    const n = { name, mesh, store, service, logs, dir }
    this.nodes.push(n)
    return n
  }

  /** Stops every node's service and store, then deletes the temp folder. */
  async close(): Promise<void> {
    for (const n of this.nodes.splice(0)) {
      await n.service.stop()
      await n.store.close()
    }
    await rm(this.root, { recursive: true, force: true })
  }
}

/** Polls `fn` until it returns something truthy (returned), or throws after `timeoutMs`. */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 20_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

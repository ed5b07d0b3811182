// The receiving node of bench/replication.bench.ts, in its own process: a libp2p node (TCP,
// Noise, Yamux) that answers the raw reference protocol (a credit stream it drains) and the
// replication protocols into a chunk store. Prints {peerId, addr} on its first stdout line.
import '../src/node/polyfill.js'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { openChunkStore } from '../src/chunkstore/index.js'
import { CreditStream, createTransportNode } from '../src/mesh/index.js'
import { CHUNKS_PROTOCOL, POINTS_PROTOCOL, PointReceiver } from '../src/replication/index.js'

export const RAW_PROTOCOL = '/replimesh/bench-raw/1.0.0'

const storeDir = process.argv[2]
// REPLIMESH_BENCH_PEER_GC=<file>: append one line per garbage collection (monotonic µs, kind,
// ms), to set beside the sender's phase marks (profiling runs).
const gcLog = process.env.REPLIMESH_BENCH_PEER_GC
if (gcLog) {
  const { PerformanceObserver } = await import('node:perf_hooks')
  const { appendFileSync } = await import('node:fs')
  const lines: string[] = []
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind
      lines.push(`${process.hrtime.bigint() / 1000n} ${kind} ${e.duration.toFixed(2)}`)
    }
  }).observe({ entryTypes: ['gc'] })
  process.on('exit', () => appendFileSync(gcLog, `${lines.join('\n')}\n`))
}
const store = await openChunkStore({ dir: storeDir })
const node = await createTransportNode({
  privateKey: await generateKeyPair('Ed25519'),
  listen: ['/ip4/127.0.0.1/tcp/0'],
})
await node.start()
const silent = { info() {}, warn() {} }
const receiver = new PointReceiver({ store, logger: silent, onCommitted() {} })
const opts = { maxInboundStreams: 64 }
await node.handle(
  CHUNKS_PROTOCOL,
  (stream, connection) => {
    receiver
      .handleChunks(stream, { peerId: connection.remotePeer.toString() })
      .catch((err) => stream.abort(err))
  },
  opts,
)
await node.handle(
  POINTS_PROTOCOL,
  (stream, connection) => {
    receiver
      .handlePoints(stream, { peerId: connection.remotePeer.toString() })
      .catch((err) => stream.abort(err))
  },
  opts,
)
await node.handle(
  RAW_PROTOCOL,
  (stream) => {
    const credit = new CreditStream(stream)
    ;(async () => {
      for await (const _ of credit) {
      }
      await credit.end()
    })().catch((err) => stream.abort(err))
  },
  opts,
)
process.stdout.write(
  `${JSON.stringify({ peerId: node.peerId.toString(), addr: node.getMultiaddrs()[0].toString() })}\n`,
)
process.stdin.resume()
process.stdin.on('end', async () => {
  await node.stop()
  await store.close()
  process.exit(0)
})

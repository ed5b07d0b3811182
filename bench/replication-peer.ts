// The receiving node of bench/replication.bench.ts, in its own process: a libp2p node (TCP,
// Noise, Yamux) that answers the raw reference protocol (a credit stream it drains) and the
// replication protocols into a chunk store. Prints {peerId, addr} on its first stdout line.
import '../src/node/polyfill.js'
import { unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { hashFunction, nodeStoreFs, openChunkStore } from '../src/chunkstore/index.js'
import { CreditStream, createTransportNode } from '../src/mesh/index.js'
import { CHUNKS_PROTOCOL, POINTS_PROTOCOL, PointReceiver } from '../src/replication/index.js'

export const RAW_PROTOCOL = '/replimesh/bench-raw/1.0.0'
/**
 * The least work any seed must do on the receiving end, as a protocol: each message is a chunk's
 * 32-byte id then its bytes; the chunk is hashed and checked against its id, appended to a file
 * past the page cache (as packs are), and the file is made durable when the sender ends. No index,
 * no manifest, no commit: the bench's ceiling for the seed.
 */
export const RAW_STORE_PROTOCOL = '/replimesh/bench-raw-store/1.0.0'
/** RAW_STORE_PROTOCOL without the file: chunks are hashed, checked and dropped. */
export const RAW_HASH_PROTOCOL = '/replimesh/bench-raw-hash/1.0.0'
/** Bytes of received chunks the raw store lets its file writes run behind (as a PointReceiver). */
const RAW_STORE_AHEAD_BYTES = 32 * 1024 * 1024
const RAW_STORE_BATCH_BYTES = 4 * 1024 * 1024

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
let rawStores = 0
/**
 * Serves RAW_STORE_PROTOCOL; with `store` false (RAW_HASH_PROTOCOL) every chunk is checked and
 * dropped, nothing written: the ceiling without its durable write.
 */
function rawStore(store: boolean) {
  return (stream: Parameters<Parameters<typeof node.handle>[1]>[0]) => {
    const credit = new CreditStream(stream, { pooled: true })
    const path = join(storeDir, `raw-store-${++rawStores}.bin`)
    ;(async () => {
      const hash = hashFunction('blake3')
      const file = store ? await nodeStoreFs.open(path, 'wx', { direct: true }) : null
      try {
        let position = 0
        let batch: Uint8Array[] = []
        let batchBytes = 0
        let behind = 0
        let writing: Promise<void> = Promise.resolve()
        const flush = () => {
          const [parts, bytes, at] = [batch, batchBytes, position]
          position += bytes
          behind += bytes
          batch = []
          batchBytes = 0
          writing = writing.then(async () => {
            await file?.writev(
              parts.map((m) => m.subarray(32)),
              at,
            )
            for (const m of parts) credit.release(m)
            behind -= bytes
          })
        }
        for await (const message of credit) {
          if (!hash(message.subarray(32)).equals(message.subarray(0, 32)))
            throw new Error(`chunk at ${position + batchBytes} does not match its id`)
          batch.push(message)
          batchBytes += message.byteLength - 32
          if (batchBytes >= RAW_STORE_BATCH_BYTES) flush()
          while (behind > RAW_STORE_AHEAD_BYTES) await writing
        }
        flush()
        await writing
        await file?.sync()
        await credit.send(Buffer.from(String(position)))
        await credit.end()
      } finally {
        if (file) {
          await file.close()
          await unlink(path)
        }
      }
    })().catch((err) => stream.abort(err))
  }
}
await node.handle(RAW_STORE_PROTOCOL, rawStore(true), opts)
await node.handle(RAW_HASH_PROTOCOL, rawStore(false), opts)
process.stdout.write(
  `${JSON.stringify({ peerId: node.peerId.toString(), addr: node.getMultiaddrs()[0].toString() })}\n`,
)
process.stdin.resume()
process.stdin.on('end', async () => {
  await node.stop()
  await store.close()
  process.exit(0)
})

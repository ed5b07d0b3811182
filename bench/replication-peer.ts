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

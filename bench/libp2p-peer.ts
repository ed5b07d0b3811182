// The receiving process of bench/libp2p.bench.ts: `node libp2p-peer.js tcp|libp2p|libp2p-raw`.
// Prints {"address": ...} on its first stdout line, counts every byte of one incoming stream,
// answers the count (8 bytes) when the sender ends, and exits when its stdin closes.
import '../src/node/polyfill.js'
import { createServer } from 'node:net'

export const BENCH_PROTOCOL = '/replimesh/bench/1.0.0'

const count = (n: number) => {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(n))
  return b
}

async function main(mode: string): Promise<void> {
  if (mode === 'tcp') {
    const server = createServer((socket) => {
      let bytes = 0
      socket.on('data', (d) => (bytes += d.length))
      socket.on('end', () => socket.end(count(bytes)))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const a = server.address()
    process.stdout.write(JSON.stringify({ address: typeof a === 'object' && a ? a.port : 0 }) + '\n')
    process.stdin.resume()
    process.stdin.on('end', () => process.exit(0))
    return
  }
  // libp2p is loaded only for the libp2p modes: the raw TCP reference runs without it.
  const { generateKeyPair } = await import('@libp2p/crypto/keys')
  const { CreditStream, createTransportNode } = await import('../src/mesh/index.js')
  const node = await createTransportNode({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
  })
  await node.handle(BENCH_PROTOCOL, async (stream) => {
    let bytes = 0
    if (mode === 'libp2p') {
      const credit = new CreditStream(stream)
      for await (const m of credit) bytes += m.byteLength
      await credit.send(count(bytes))
      await credit.end()
    } else {
      for await (const m of stream) bytes += m.byteLength
      stream.send(count(bytes))
      await stream.close()
    }
  })
  process.stdout.write(JSON.stringify({ address: node.getMultiaddrs()[0].toString() }) + '\n')
  process.stdin.resume()
  process.stdin.on('end', async () => {
    await node.stop()
    process.exit(0)
  })
}

if (process.argv[1]?.endsWith('libp2p-peer.js')) await main(process.argv[2] ?? 'libp2p')

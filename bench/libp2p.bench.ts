// The mesh's reference figure (issue 5): one libp2p stream (Noise + Yamux, with our credit flow
// control) between two node processes on loopback, against raw TCP in the same run. Every later
// transfer figure is divided by the libp2p row. A libp2p stream without credits (send/onDrain
// only) is shown too, so the cost of the flow control itself is visible.
import '../src/node/polyfill.js'
import { type ChildProcess, spawn } from 'node:child_process'
import { connect } from 'node:net'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { CreditStream, createTransportNode } from '../src/mesh/index.js'
import type { BenchContext, BenchRow } from './types.js'

const MiB = 1024 * 1024
const MESSAGE_BYTES = 256 * 1024
const TOTAL_BYTES = 512 * MiB
const PROTOCOL = '/replimesh/bench/1.0.0'
const RUNS = 3

async function startPeer(mode: string): Promise<{ child: ChildProcess; address: string | number }> {
  const child = spawn(process.execPath, [join(import.meta.dirname, 'libp2p-peer.js'), mode], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const address = await new Promise<string | number>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`${mode} peer did not start`)), 60_000)
    child.stdout!.on('data', (d) => {
      out += d
      const line = out.split('\n')[0]
      if (out.includes('\n')) {
        clearTimeout(timer)
        resolve(JSON.parse(line).address)
      }
    })
    child.on('exit', (code) => reject(new Error(`${mode} peer exited with ${code}`)))
  })
  return { child, address }
}

function stopPeer(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve())
    child.stdin!.end()
    setTimeout(() => child.kill('SIGKILL'), 5000).unref()
  })
}

const readCount = (b: Uint8Array) => Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0))

async function tcpOnce(port: number, payload: Uint8Array): Promise<number> {
  const socket = connect(port, '127.0.0.1')
  await new Promise<void>((r, j) => socket.once('connect', r).once('error', j))
  const t = performance.now()
  for (let sent = 0; sent < TOTAL_BYTES; sent += payload.byteLength)
    if (!socket.write(payload)) await new Promise((r) => socket.once('drain', r))
  socket.end()
  const chunks: Buffer[] = []
  for await (const c of socket) chunks.push(c as Buffer)
  const ms = performance.now() - t
  if (readCount(Buffer.concat(chunks)) !== TOTAL_BYTES) throw new Error('raw TCP lost bytes')
  return ms
}

async function libp2pOnce(
  node: Awaited<ReturnType<typeof createTransportNode>>,
  address: string,
  payload: Uint8Array,
  credit: boolean,
): Promise<number> {
  const stream = await node.dialProtocol(multiaddr(address), PROTOCOL)
  const t = performance.now()
  let received: number
  if (credit) {
    const s = new CreditStream(stream)
    for (let sent = 0; sent < TOTAL_BYTES; sent += payload.byteLength) await s.send(payload)
    await s.end()
    const replies: Uint8Array[] = []
    for await (const m of s) replies.push(m)
    received = readCount(replies[0])
  } else {
    for (let sent = 0; sent < TOTAL_BYTES; sent += payload.byteLength)
      if (!stream.send(payload)) await stream.onDrain()
    await stream.close()
    const parts: Uint8Array[] = []
    for await (const m of stream) parts.push(m instanceof Uint8Array ? m : m.subarray())
    received = readCount(Buffer.concat(parts))
  }
  const ms = performance.now() - t
  if (received !== TOTAL_BYTES) throw new Error(`libp2p stream delivered ${received} of ${TOTAL_BYTES} bytes`)
  return ms
}

export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const payload = new Uint8Array(MESSAGE_BYTES).fill(7)
  const mbps = (ms: number) => TOTAL_BYTES / MiB / (ms / 1000)
  const best = async (fn: () => Promise<number>) => {
    let ms = Number.POSITIVE_INFINITY
    for (let i = 0; i < RUNS; i++) ms = Math.min(ms, await fn())
    return mbps(ms)
  }

  ctx.log(`raw TCP, ${TOTAL_BYTES / MiB} MiB × ${RUNS}`)
  const tcpPeer = await startPeer('tcp')
  const tcp = await best(() => tcpOnce(tcpPeer.address as number, payload)).finally(() =>
    stopPeer(tcpPeer.child),
  )

  const node = await createTransportNode({ privateKey: await generateKeyPair('Ed25519'), listen: [] })
  try {
    ctx.log('libp2p stream with credit flow control')
    const creditPeer = await startPeer('libp2p')
    const withCredit = await best(() =>
      libp2pOnce(node, creditPeer.address as string, payload, true),
    ).finally(() => stopPeer(creditPeer.child))
    ctx.log('libp2p stream, send/onDrain only')
    const rawPeer = await startPeer('libp2p-raw')
    const raw = await best(() => libp2pOnce(node, rawPeer.address as string, payload, false)).finally(() =>
      stopPeer(rawPeer.child),
    )
    return [
      {
        name: 'raw TCP, one socket, loopback',
        value: tcp,
        unit: 'MiB/s',
        note: 'the limit the libp2p rows divide by',
      },
      {
        name: 'libp2p stream (Noise+Yamux) with credit flow control',
        value: withCredit,
        unit: 'MiB/s',
        limit: tcp,
        ratio: withCredit / tcp,
        note: `256 KiB messages, 8 MiB window, best of ${RUNS} × ${TOTAL_BYTES / MiB} MiB; the reference for every transfer figure`,
      },
      {
        name: 'libp2p stream (Noise+Yamux), send/onDrain only',
        value: raw,
        unit: 'MiB/s',
        limit: tcp,
        ratio: raw / tcp,
        note: 'no credits: shows what the flow control costs',
      },
    ]
  } finally {
    await node.stop()
  }
}

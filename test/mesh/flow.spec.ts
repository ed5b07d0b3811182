// CreditStream and frames over a real libp2p stream (Noise + Yamux on loopback).
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  ByteReader,
  CreditStream,
  createTransportNode,
  encodeFrame,
  FrameTooLargeError,
  type TransportNode,
  TruncatedFrameError,
} from '../../src/mesh/index.js'

const PROTOCOL = '/replimesh/test-flow/1.0.0'

describe('credit flow control over libp2p', () => {
  let a: TransportNode
  let b: TransportNode
  let onStream: (stream: Stream) => void = () => {}
  beforeAll(async () => {
    a = await createTransportNode({
      privateKey: await generateKeyPair('Ed25519'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
    })
    b = await createTransportNode({
      privateKey: await generateKeyPair('Ed25519'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
    })
    await b.handle(PROTOCOL, (stream) => onStream(stream))
  })
  afterAll(async () => {
    await a?.stop()
    await b?.stop()
  })

  it('never has more than the window in flight while a slow reader consumes', async () => {
    const window = 256 * 1024
    const messageBytes = 32 * 1024
    const count = 64
    const received: Promise<{ bytes: number; maxBuffered: number }> = new Promise((resolve, reject) => {
      onStream = (stream) => {
        const credit = new CreditStream(stream, { windowBytes: window, maxMessageBytes: messageBytes })
        ;(async () => {
          let bytes = 0
          let maxBuffered = 0
          let n = 0
          for await (const m of credit) {
            bytes += m.byteLength
            expect(m[0]).toBe(n++ % 256)
            maxBuffered = Math.max(maxBuffered, stream.readBufferLength)
            await new Promise((r) => setTimeout(r, 2))
          }
          await credit.end()
          resolve({ bytes, maxBuffered })
        })().catch(reject)
      }
    })
    const stream = await a.dialProtocol(b.getMultiaddrs()[0], PROTOCOL)
    const sender = new CreditStream(stream, { windowBytes: window, maxMessageBytes: messageBytes })
    let maxInFlight = 0
    for (let i = 0; i < count; i++) {
      const m = new Uint8Array(messageBytes).fill(i % 256)
      await sender.send(m)
      maxInFlight = Math.max(maxInFlight, window - sender.creditAvailable)
    }
    await sender.end()
    const r = await received
    expect(r.bytes).toBe(count * messageBytes)
    expect(maxInFlight).toBeLessThanOrEqual(window)
    await sender.done
  })

  it('pooled: held messages stay intact while the buffers of released ones are reused', async () => {
    const messageBytes = 200 * 1024
    const count = 300
    const fill = (m: Uint8Array, i: number) => {
      for (let k = 0; k < m.length; k += 1024) m[k] = (i * 7 + k / 1024) % 256
      m[m.length - 1] = i % 256
    }
    const intact = (m: Uint8Array, i: number) => {
      for (let k = 0; k < m.length; k += 1024) if (m[k] !== (i * 7 + k / 1024) % 256) return false
      return m[m.length - 1] === i % 256
    }
    const received: Promise<{ n: number; bad: number }> = new Promise((resolve, reject) => {
      onStream = (stream) => {
        const credit = new CreditStream(stream, { pooled: true })
        ;(async () => {
          // Holds the last 40 messages (8 MiB: more than one pooled buffer) before releasing each.
          const held: Array<{ m: Uint8Array; i: number }> = []
          let n = 0
          let bad = 0
          for await (const m of credit) {
            held.push({ m, i: n++ })
            if (held.length > 40) {
              const h = held.shift()!
              if (!intact(h.m, h.i)) bad++
              credit.release(h.m)
            }
          }
          for (const h of held) if (!intact(h.m, h.i)) bad++
          await credit.end()
          resolve({ n, bad })
        })().catch(reject)
      }
    })
    const stream = await a.dialProtocol(b.getMultiaddrs()[0], PROTOCOL)
    const sender = new CreditStream(stream)
    for (let i = 0; i < count; i++) {
      const m = new Uint8Array(messageBytes)
      fill(m, i)
      await sender.send(m)
    }
    await sender.end()
    expect(await received).toEqual({ n: count, bad: 0 })
    await sender.done
  })

  it('aborts a stream whose sender overruns its credit', async () => {
    const failed: Promise<Error> = new Promise((resolve) => {
      onStream = (stream) => {
        const credit = new CreditStream(stream, { windowBytes: 64 * 1024, maxMessageBytes: 64 * 1024 })
        ;(async () => {
          try {
            await new Promise((r) => setTimeout(r, 200))
            for await (const _ of credit) {
            }
          } catch (err) {
            resolve(err as Error)
          }
        })()
      }
    })
    const stream = await a.dialProtocol(b.getMultiaddrs()[0], PROTOCOL)
    // Raw DATA frames, ignoring credit: 3 × 32 KiB > a 64 KiB window.
    for (let i = 0; i < 3; i++) {
      const header = new Uint8Array(5)
      new DataView(header.buffer).setUint32(1, 32 * 1024)
      stream.send(header)
      stream.send(new Uint8Array(32 * 1024))
    }
    expect((await failed).message).toMatch(/overran its credit/)
  })
})

describe('ByteReader', () => {
  async function* chunks(...parts: number[][]) {
    for (const p of parts) yield Uint8Array.from(p)
  }
  it('reads frames split across chunks and bounds their size', async () => {
    const f = encodeFrame(Uint8Array.from([1, 2, 3, 4, 5]))
    const r = new ByteReader(chunks([...f.slice(0, 2)], [...f.slice(2, 6)], [...f.slice(6)]))
    expect([...((await r.readFrame(10)) ?? [])]).toEqual([1, 2, 3, 4, 5])
    expect(await r.readFrame(10)).toBeNull()
    await expect(new ByteReader(chunks([...f])).readFrame(4)).rejects.toBeInstanceOf(FrameTooLargeError)
    await expect(new ByteReader(chunks([...f.slice(0, 7)])).readFrame(10)).rejects.toBeInstanceOf(
      TruncatedFrameError,
    )
  })
})

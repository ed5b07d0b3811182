// Length-prefixed frames (4-byte big-endian length, then the body) over a libp2p stream.
// Every frame is bounded before it is buffered and validated before it is used (DESIGN.md §4):
// a frame that breaks the rules throws a FrameError, and the caller aborts that stream only.
import type { z } from 'zod'
import { FRAME_HEADER_BYTES } from './constants.js'
import { FrameError, FrameTooLargeError, TruncatedFrameError } from './errors.js'

type Chunk = Uint8Array | { subarray(): Uint8Array }

/** The writable half of a libp2p 3.x stream, as frames need it. */
export interface FrameSink {
  send(data: Uint8Array): boolean
  onDrain(options?: { signal?: AbortSignal }): Promise<void>
}

/** Reads exact byte counts and whole frames from an async iterable of byte chunks. */
export class ByteReader {
  private readonly source: AsyncIterator<Chunk>
  private chunks: Uint8Array[] = []
  private buffered = 0
  private ended = false

  constructor(source: AsyncIterable<Chunk>) {
    this.source = source[Symbol.asyncIterator]()
  }

  /** Bytes received and not yet read. */
  get bufferedBytes(): number {
    return this.buffered
  }

  private async fill(n: number): Promise<boolean> {
    while (this.buffered < n && !this.ended) {
      const next = await this.source.next()
      if (next.done) {
        this.ended = true
        break
      }
      const value = next.value
      if (value instanceof Uint8Array) this.push(value)
      // A list of pieces (libp2p's Uint8ArrayList) is taken piece by piece: its subarray() would
      // join them into a fresh buffer, one more copy and allocation per received piece.
      else if (Symbol.iterator in value) for (const piece of value as Iterable<Uint8Array>) this.push(piece)
      else this.push(value.subarray())
    }
    return this.buffered >= n
  }

  private push(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) return
    this.chunks.push(bytes)
    this.buffered += bytes.byteLength
  }

  private take(n: number, alloc?: (n: number) => Uint8Array): Uint8Array {
    const first = this.chunks[0]
    if (first.byteLength === n) {
      this.chunks.shift()
      this.buffered -= n
      return first
    }
    if (first.byteLength > n) {
      this.chunks[0] = first.subarray(n)
      this.buffered -= n
      return first.subarray(0, n)
    }
    // Every byte is overwritten below: no zero-fill (a 256 KiB message spans several pieces).
    const out = alloc ? alloc(n) : Buffer.allocUnsafe(n)
    let at = 0
    while (at < n) {
      const c = this.chunks[0]
      const want = Math.min(n - at, c.byteLength)
      out.set(c.subarray(0, want), at)
      at += want
      if (want === c.byteLength) this.chunks.shift()
      else this.chunks[0] = c.subarray(want)
    }
    this.buffered -= n
    return out
  }

  /**
   * Exactly n bytes, or null if the stream ended cleanly before the first byte. `alloc` gives
   * the buffer when the bytes span several received pieces (default: a fresh one).
   */
  async readExactly(n: number, alloc?: (n: number) => Uint8Array): Promise<Uint8Array | null> {
    if (n === 0) return new Uint8Array(0)
    if (!(await this.fill(n))) {
      if (this.buffered === 0) return null
      throw new TruncatedFrameError(`stream ended after ${this.buffered} of ${n} expected bytes`)
    }
    return this.take(n, alloc)
  }

  /** The next frame's body, or null at a clean end of stream. */
  async readFrame(maxBytes: number): Promise<Uint8Array | null> {
    const header = await this.readExactly(FRAME_HEADER_BYTES)
    if (header === null) return null
    const length = new DataView(header.buffer, header.byteOffset, 4).getUint32(0)
    if (length > maxBytes) throw new FrameTooLargeError(length, maxBytes)
    const body = await this.readExactly(length)
    if (body === null) throw new TruncatedFrameError(`stream ended before a frame body of ${length} bytes`)
    return body
  }

  /** The next frame parsed as JSON and checked against schema; null at a clean end. */
  async readJson<T>(schema: z.ZodType<T>, maxBytes: number): Promise<T | null> {
    const body = await this.readFrame(maxBytes)
    if (body === null) return null
    return parseJsonFrame(body, schema)
  }

  /** Like readJson, but a clean end of stream is an error too. */
  async expectJson<T>(schema: z.ZodType<T>, maxBytes: number): Promise<T> {
    const value = await this.readJson(schema, maxBytes)
    if (value === null) throw new TruncatedFrameError('stream ended before the expected frame')
    return value
  }
}

const decoder = new TextDecoder('utf-8', { fatal: true })
const encoder = new TextEncoder()

export function parseJsonFrame<T>(body: Uint8Array, schema: z.ZodType<T>): T {
  let value: unknown
  try {
    value = JSON.parse(decoder.decode(body))
  } catch {
    throw new FrameError(`frame of ${body.byteLength} bytes is not UTF-8 JSON`)
  }
  const result = schema.safeParse(value)
  if (!result.success) {
    const issue = result.error.issues[0]
    throw new FrameError(
      `frame does not match its schema: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`,
    )
  }
  return result.data
}

/** Prefixes body with its 4-byte big-endian length. */
export function encodeFrame(body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(FRAME_HEADER_BYTES + body.byteLength)
  new DataView(frame.buffer).setUint32(0, body.byteLength)
  frame.set(body, FRAME_HEADER_BYTES)
  return frame
}

export function encodeJsonFrame(value: unknown): Uint8Array {
  return encodeFrame(encoder.encode(JSON.stringify(value)))
}

/** Sends bytes and waits for the stream to drain when its write buffer is full (DESIGN.md §9). */
export async function sendWithBackpressure(
  sink: FrameSink,
  bytes: Uint8Array,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  if (!sink.send(bytes)) await sink.onDrain({ signal: options.signal })
}

export async function writeJsonFrame(
  sink: FrameSink,
  value: unknown,
  options: { signal?: AbortSignal; maxBytes?: number } = {},
): Promise<void> {
  const frame = encodeJsonFrame(value)
  if (options.maxBytes !== undefined && frame.byteLength - FRAME_HEADER_BYTES > options.maxBytes)
    throw new FrameTooLargeError(frame.byteLength - FRAME_HEADER_BYTES, options.maxBytes)
  await sendWithBackpressure(sink, frame, options)
}

// The frame layer under both replication protocols. A frame is
//
//   u32 BE  length of what follows
//   u8      kind (per protocol)
//   u32 BE  header length
//   ...     header: UTF-8 JSON (absent when the length is 0)
//   ...     payload: raw bytes (chunk data, packed ids, manifest entries)
//
// JSON keeps headers readable and validated by zod; bulk data stays binary so a 256 KiB chunk
// costs 9 bytes of framing plus its id. Every length is checked against a named limit before
// anything is allocated, so a hostile peer cannot make us buffer more than one bounded frame.
import { MAX_FRAME_BYTES, MAX_HEADER_BYTES } from './constants.js'
import { FrameError } from './errors.js'

export const FRAME_PREFIX_BYTES = 4
const KIND_AND_HEADER_LEN_BYTES = 5

export interface RawFrame {
  kind: number
  /** Parsed JSON header, or null when the frame has none. */
  header: unknown
  payload: Uint8Array
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

/** Encodes one frame. `payload` may be given as several parts to avoid a copy by the caller. */
export function encodeFrame(kind: number, header: unknown, ...payload: Uint8Array[]): Uint8Array {
  const headerBytes =
    header === null || header === undefined ? new Uint8Array(0) : encoder.encode(JSON.stringify(header))
  if (headerBytes.length > MAX_HEADER_BYTES)
    throw new FrameError(`frame header of ${headerBytes.length} bytes exceeds ${MAX_HEADER_BYTES}`)
  let payloadBytes = 0
  for (const p of payload) payloadBytes += p.length
  const bodyBytes = KIND_AND_HEADER_LEN_BYTES + headerBytes.length + payloadBytes
  if (bodyBytes > MAX_FRAME_BYTES)
    throw new FrameError(`frame of ${bodyBytes} bytes exceeds ${MAX_FRAME_BYTES}`)
  const out = new Uint8Array(FRAME_PREFIX_BYTES + bodyBytes)
  const view = new DataView(out.buffer)
  view.setUint32(0, bodyBytes)
  out[4] = kind
  view.setUint32(5, headerBytes.length)
  out.set(headerBytes, 9)
  let at = 9 + headerBytes.length
  for (const p of payload) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/**
 * The frame of encodeFrame without its length prefix (a credit-stream message), as parts: the
 * kind, header and small payload parts in one buffer, then each payload part of at least
 * `copyBelow` bytes as given (no copy of a chunk's bytes).
 */
export function encodeFrameBodyParts(kind: number, header: unknown, ...payload: Uint8Array[]): Uint8Array[] {
  const headerBytes =
    header === null || header === undefined ? new Uint8Array(0) : encoder.encode(JSON.stringify(header))
  if (headerBytes.length > MAX_HEADER_BYTES)
    throw new FrameError(`frame header of ${headerBytes.length} bytes exceeds ${MAX_HEADER_BYTES}`)
  let payloadBytes = 0
  let small = 0
  let k = 0
  for (const p of payload) payloadBytes += p.length
  while (k < payload.length && payload[k].length < COPY_BELOW_BYTES) small += payload[k++].length
  const bodyBytes = KIND_AND_HEADER_LEN_BYTES + headerBytes.length + payloadBytes
  if (bodyBytes > MAX_FRAME_BYTES)
    throw new FrameError(`frame of ${bodyBytes} bytes exceeds ${MAX_FRAME_BYTES}`)
  const head = new Uint8Array(KIND_AND_HEADER_LEN_BYTES + headerBytes.length + small)
  head[0] = kind
  new DataView(head.buffer).setUint32(1, headerBytes.length)
  head.set(headerBytes, KIND_AND_HEADER_LEN_BYTES)
  let at = KIND_AND_HEADER_LEN_BYTES + headerBytes.length
  for (let i = 0; i < k; i++) {
    head.set(payload[i], at)
    at += payload[i].length
  }
  return [head, ...payload.slice(k)]
}

/** Payload parts smaller than this are copied into a frame's head by encodeFrameBodyParts. */
const COPY_BELOW_BYTES = 1024

/**
 * Reassembles frames from a byte stream cut anywhere. push() a received piece, then drain
 * frames with next() until it returns null. Throws FrameError on a malformed or oversized frame;
 * the caller closes the stream (never the node).
 */
export class FrameDecoder {
  private parts: Uint8Array[] = []
  private buffered = 0
  private need = -1

  constructor(private readonly maxFrameBytes = MAX_FRAME_BYTES) {}

  /** Bytes held but not yet returned as frames. */
  get bufferedBytes(): number {
    return this.buffered
  }

  push(piece: Uint8Array): void {
    if (piece.length === 0) return
    this.parts.push(piece)
    this.buffered += piece.length
  }

  next(): RawFrame | null {
    if (this.need < 0) {
      if (this.buffered < FRAME_PREFIX_BYTES) return null
      const prefix = this.take(FRAME_PREFIX_BYTES)
      const length = new DataView(prefix.buffer, prefix.byteOffset, 4).getUint32(0)
      if (length < KIND_AND_HEADER_LEN_BYTES)
        throw new FrameError(`frame length ${length} is shorter than its fixed fields`)
      if (length > this.maxFrameBytes)
        throw new FrameError(`frame of ${length} bytes exceeds the limit of ${this.maxFrameBytes}`)
      this.need = length
    }
    if (this.buffered < this.need) return null
    const body = this.take(this.need)
    this.need = -1
    return decodeFrameBody(body)
  }

  /** Takes exactly n bytes from the front, copying only when they span several pieces. */
  private take(n: number): Uint8Array {
    const first = this.parts[0]
    if (first.length >= n) {
      this.buffered -= n
      if (first.length === n) this.parts.shift()
      else this.parts[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    const out = new Uint8Array(n)
    let at = 0
    while (at < n) {
      const p = this.parts[0]
      const use = Math.min(p.length, n - at)
      out.set(p.subarray(0, use), at)
      at += use
      if (use === p.length) this.parts.shift()
      else this.parts[0] = p.subarray(use)
    }
    this.buffered -= n
    return out
  }
}

/** Decodes one frame without its length prefix (a message of a credit stream). */
export function decodeFrameBody(body: Uint8Array): RawFrame {
  if (body.length < KIND_AND_HEADER_LEN_BYTES)
    throw new FrameError(`frame of ${body.length} bytes is shorter than its fixed fields`)
  if (body.length > MAX_FRAME_BYTES)
    throw new FrameError(`frame of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`)
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength)
  const kind = body[0]
  const headerLength = view.getUint32(1)
  if (headerLength > MAX_HEADER_BYTES)
    throw new FrameError(`frame header of ${headerLength} bytes exceeds ${MAX_HEADER_BYTES}`)
  if (KIND_AND_HEADER_LEN_BYTES + headerLength > body.length)
    throw new FrameError(`frame header length ${headerLength} runs past the frame's ${body.length} bytes`)
  let header: unknown = null
  if (headerLength > 0) {
    try {
      header = JSON.parse(decoder.decode(body.subarray(5, 5 + headerLength)))
    } catch {
      throw new FrameError('frame header is not valid UTF-8 JSON')
    }
  }
  return { kind, header, payload: body.subarray(5 + headerLength) }
}

// Credit-based flow control over one libp2p stream (DESIGN.md §9: `for await` on a libp2p 3.x
// stream has no backpressure and pause() resets past 4 MiB, so the bound must be ours).
//
// Wire: frames of [type u8][length u32 BE][body]. DATA carries one message; CREDIT carries a
// u32 count of payload bytes the receiver grants. Each side opens by granting its whole window;
// a sender never has more payload bytes in flight than the credit it holds, and the receiver
// grants credit back as the application consumes messages. A sender that overruns its credit
// breaks the protocol: the stream is aborted with a FrameError. Both directions work at once.
import { DEFAULT_CREDIT_WINDOW_BYTES, MAX_DATA_FRAME_BYTES } from './constants.js'
import { FrameError, FrameTooLargeError, MeshError } from './errors.js'
import { ByteReader } from './frames.js'

const DATA = 0
const CREDIT = 1
const HEADER_BYTES = 5
/** Leading parts up to this size are copied into the frame header's buffer (one small send). */
const SMALL_PART_BYTES = 1024

/** What CreditStream needs of a libp2p 3.x Stream (a real Stream satisfies it). */
export interface DuplexByteStream extends AsyncIterable<Uint8Array | { subarray(): Uint8Array }> {
  send(data: Uint8Array): boolean
  onDrain(options?: { signal?: AbortSignal }): Promise<void>
  close(options?: { signal?: AbortSignal }): Promise<void>
  abort(err: Error): void
}

export interface CreditStreamInit {
  /** Payload bytes this side lets the remote have in flight towards it. Default 8 MiB. */
  windowBytes?: number
  /** Largest single message accepted or sent. Default 4 MiB + 1 KiB. */
  maxMessageBytes?: number
  /** Called once when the stream fails (malformed frame, overrun, remote reset). */
  onError?: (err: Error) => void
  /**
   * Large received messages go into reused buffers (see release()): a receiver that holds each
   * message a while (a chunk until it is stored) then makes no garbage that outlives a young
   * collection, where a fresh buffer per message cost it a full collection every few MiB.
   */
  pooled?: boolean
}

/** Messages of at least this many bytes go into pooled buffers (smaller ones are not worth it). */
const POOLED_MIN_BYTES = 16 * 1024
/** Size of a pooled receive buffer; messages are placed back to back in it. */
const SLAB_BYTES = 8 * 1024 * 1024
/** Free slabs kept for reuse; beyond that a freed slab is left to the garbage collector. */
const SPARE_SLABS = 4

interface Slab {
  buf: Buffer
  used: number
  /** Messages placed in it and not yet released. */
  live: number
}

/**
 * Reused receive buffers: messages are placed back to back in 8 MiB slabs; a slab is reused once
 * every message in it is released. A message never released only keeps its slab from reuse (it
 * is then garbage like any buffer): forgetting release() costs memory churn, never correctness.
 */
class SlabPool {
  private current: Slab | null = null
  private readonly spare: Slab[] = []
  private readonly slabs = new WeakMap<ArrayBufferLike, Slab>()

  alloc(n: number): Uint8Array {
    let c = this.current
    if (c && c.live === 0) c.used = 0
    if (!c || c.used + n > c.buf.length) {
      if (c && c.live === 0 && this.spare.length < SPARE_SLABS) this.spare.push(c)
      c = this.spare.pop() ?? null
      if (!c || c.buf.length < n) {
        c = { buf: Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, n)), used: 0, live: 0 }
        this.slabs.set(c.buf.buffer, c)
      }
      c.used = 0
      this.current = c
    }
    const out = c.buf.subarray(c.used, c.used + n)
    c.used += n
    c.live++
    return out
  }

  release(bytes: Uint8Array): void {
    const s = this.slabs.get(bytes.buffer)
    if (!s) return
    s.live--
    if (s.live === 0 && s !== this.current && this.spare.length < SPARE_SLABS) this.spare.push(s)
  }
}

export class StreamClosedError extends MeshError {
  override name = 'StreamClosedError'
}

type Waiter = { resolve: () => void; reject: (err: Error) => void }

export class CreditStream implements AsyncIterable<Uint8Array> {
  readonly windowBytes: number
  readonly maxMessageBytes: number
  private readonly reader: ByteReader
  private sendCredit = 0
  private creditWaiters: Waiter[] = []
  private received: Uint8Array[] = []
  private receivedBytes = 0
  private readWaiter: Waiter | null = null
  private consumedSinceGrant = 0
  private remoteEnded = false
  private failure: Error | null = null
  private readonly pumping: Promise<void>
  private readonly pool: SlabPool | null
  private readonly allocBody: ((n: number) => Uint8Array) | undefined

  constructor(
    private readonly stream: DuplexByteStream,
    private readonly init: CreditStreamInit = {},
  ) {
    this.windowBytes = init.windowBytes ?? DEFAULT_CREDIT_WINDOW_BYTES
    this.maxMessageBytes = init.maxMessageBytes ?? MAX_DATA_FRAME_BYTES
    if (this.maxMessageBytes > this.windowBytes)
      throw new RangeError('a credit window must hold at least one largest message')
    this.reader = new ByteReader(stream)
    this.pool = init.pooled ? new SlabPool() : null
    const pool = this.pool
    this.allocBody = pool ? (n) => pool.alloc(n) : undefined
    this.sendControl(CREDIT, this.windowBytes)
    this.pumping = this.pump()
  }

  /** Messages received and not yet read (a reader may batch its replies until this is 0). */
  get bufferedMessages(): number {
    return this.received.length
  }

  /** Payload bytes sent and not yet acknowledged by a credit grant. */
  get creditAvailable(): number {
    return this.sendCredit
  }

  /** Sends one message; waits while the remote has not granted room for it. */
  async send(payload: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.sendParts([payload], options)
  }

  /**
   * Sends one message made of several parts, without joining them: the small leading parts go
   * out with the frame header in one buffer, and each large part is handed to the stream as it
   * is (a chunk's bytes are never copied into a frame buffer).
   */
  async sendParts(parts: Uint8Array[], options: { signal?: AbortSignal } = {}): Promise<void> {
    let length = 0
    for (const p of parts) length += p.byteLength
    if (length > this.maxMessageBytes) throw new FrameTooLargeError(length, this.maxMessageBytes)
    await this.waitForCredit(length, options)
    this.sendCredit -= length
    let small = HEADER_BYTES
    let k = 0
    while (k < parts.length && parts[k].byteLength <= SMALL_PART_BYTES) small += parts[k++].byteLength
    const head = new Uint8Array(small)
    head[0] = DATA
    new DataView(head.buffer).setUint32(1, length)
    let at = HEADER_BYTES
    for (let i = 0; i < k; i++) {
      head.set(parts[i], at)
      at += parts[i].byteLength
    }
    let ok = this.stream.send(head)
    for (; k < parts.length; k++) if (parts[k].byteLength > 0) ok = this.stream.send(parts[k])
    if (!ok) await this.stream.onDrain({ signal: options.signal })
  }

  private async waitForCredit(length: number, options: { signal?: AbortSignal }): Promise<void> {
    while (this.sendCredit < length) {
      if (this.failure) throw this.failure
      options.signal?.throwIfAborted()
      const signal = options.signal
      const onAbort = () => waiterReject?.(signal?.reason)
      let waiterReject: ((reason: unknown) => void) | undefined
      signal?.addEventListener('abort', onAbort, { once: true })
      try {
        await new Promise<void>((resolve, reject) => {
          waiterReject = reject
          this.creditWaiters.push({ resolve, reject })
        })
      } finally {
        // A long-lived signal must not collect one listener per wait.
        signal?.removeEventListener('abort', onAbort)
      }
    }
    if (this.failure) throw this.failure
  }

  /**
   * Hands back a received message (or any part of it) of a pooled stream: its buffer may be
   * reused for later messages. Call it once per message, only when nothing reads it any more.
   */
  release(message: Uint8Array): void {
    this.pool?.release(message)
  }

  /** Ends our sending half; messages from the remote can still arrive. */
  async end(options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.stream.close(options)
  }

  abort(err: Error): void {
    this.fail(err)
  }

  /** Resolves when the remote has ended its half and every message was read, or rejects on failure. */
  get done(): Promise<void> {
    return this.pumping.then(() => {
      if (this.failure) throw this.failure
    })
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      if (this.received.length > 0) {
        const message = this.received.shift()!
        this.receivedBytes -= message.byteLength
        this.consumed(message.byteLength)
        yield message
        continue
      }
      if (this.failure) throw this.failure
      if (this.remoteEnded) return
      await new Promise<void>((resolve, reject) => {
        this.readWaiter = { resolve, reject }
      })
    }
  }

  private consumed(bytes: number): void {
    this.consumedSinceGrant += bytes
    // Grant in batches of a quarter window: fewer frames, and the sender never stalls a round trip.
    if (this.consumedSinceGrant >= this.windowBytes / 4 && !this.failure) {
      const grant = this.consumedSinceGrant
      this.consumedSinceGrant = 0
      this.sendControl(CREDIT, grant)
    }
  }

  private sendControl(type: number, value: number): void {
    const frame = new Uint8Array(HEADER_BYTES + 4)
    const view = new DataView(frame.buffer)
    frame[0] = type
    view.setUint32(1, 4)
    view.setUint32(HEADER_BYTES, value)
    try {
      this.stream.send(frame)
    } catch (err) {
      this.fail(err as Error)
    }
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const header = await this.reader.readExactly(HEADER_BYTES)
        if (header === null) break
        const view = new DataView(header.buffer, header.byteOffset, HEADER_BYTES)
        const type = header[0]
        const length = view.getUint32(1)
        if (type === CREDIT) {
          if (length !== 4) throw new FrameError(`credit frame of ${length} bytes (expected 4)`)
          const body = await this.reader.readExactly(4)
          if (body === null) throw new FrameError('stream ended inside a credit frame')
          const grant = new DataView(body.buffer, body.byteOffset, 4).getUint32(0)
          if (this.sendCredit + grant > 2 ** 32) throw new FrameError('credit grant beyond any window')
          this.sendCredit += grant
          for (const w of this.creditWaiters.splice(0)) w.resolve()
        } else if (type === DATA) {
          if (length > this.maxMessageBytes) throw new FrameTooLargeError(length, this.maxMessageBytes)
          if (this.receivedBytes + this.consumedSinceGrant + length > this.windowBytes)
            throw new FrameError(
              `remote overran its credit: ${length} bytes beyond a window of ${this.windowBytes}`,
            )
          const body = await this.reader.readExactly(
            length,
            length >= POOLED_MIN_BYTES ? this.allocBody : undefined,
          )
          if (body === null) throw new FrameError('stream ended inside a data frame')
          this.received.push(body)
          this.receivedBytes += body.byteLength
          this.wakeReader()
        } else {
          throw new FrameError(`unknown frame type ${type}`)
        }
      }
      this.remoteEnded = true
      this.wakeReader()
    } catch (err) {
      this.fail(err as Error)
    }
  }

  private wakeReader(): void {
    const w = this.readWaiter
    this.readWaiter = null
    w?.resolve()
  }

  private fail(err: Error): void {
    if (this.failure) return
    this.failure = err instanceof Error ? err : new StreamClosedError(String(err))
    for (const w of this.creditWaiters.splice(0)) w.reject(this.failure)
    const r = this.readWaiter
    this.readWaiter = null
    r?.reject(this.failure)
    try {
      this.stream.abort(this.failure)
    } catch {}
    this.init.onError?.(this.failure)
  }
}

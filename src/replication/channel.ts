// A typed message channel over one libp2p stream: the mesh's CreditStream bounds the bytes in
// flight in both directions; each credit-stream message is one of our frames (without its length
// prefix, which the credit stream already carries). Counts wire bytes for the figures.
import { CreditStream, type DuplexByteStream } from '../mesh/index.js'
import { FrameError } from './errors.js'
import { decodeFrameBody, FRAME_PREFIX_BYTES, type RawFrame } from './frames.js'

/** Framing the credit stream adds to every message. */
const CREDIT_HEADER_BYTES = 5

export interface ChannelStats {
  bytesSent: number
  bytesReceived: number
}

export class MessageChannel<M> {
  readonly stats: ChannelStats = { bytesSent: 0, bytesReceived: 0 }
  private readonly credit: CreditStream
  private readonly iterator: AsyncIterator<Uint8Array>

  constructor(
    stream: DuplexByteStream,
    private readonly encode: (m: M) => Uint8Array,
    private readonly decode: (f: RawFrame) => M,
    windowBytes?: number,
    /** Encodes a message as the parts of one credit message (no prefix), when that saves a copy. */
    private readonly encodeParts?: (m: M) => Uint8Array[],
    /**
     * Receive large messages into reused buffers (CreditStream `pooled`): a message for which
     * this returns true is kept until the caller passes its bytes to release(); any other is
     * released as soon as it is decoded (decoding copies what it keeps).
     */
    private readonly keepPooled?: (m: M) => boolean,
  ) {
    this.credit = new CreditStream(stream, { windowBytes, onError: () => {}, pooled: !!keepPooled })
    this.iterator = this.credit[Symbol.asyncIterator]()
  }

  /**
   * Sends one message. The signal is checked, not handed to the credit stream (which would add
   * a listener per waiting send to a long-lived signal); abort the channel to cancel a wait.
   */
  async send(m: M, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    const parts = this.encodeParts ? this.encodeParts(m) : [this.encode(m).subarray(FRAME_PREFIX_BYTES)]
    for (const p of parts) this.stats.bytesSent += p.length
    this.stats.bytesSent += CREDIT_HEADER_BYTES
    await this.credit.sendParts(parts)
  }

  /** True when a next() would return at once (a message is already received). */
  get hasBuffered(): boolean {
    return this.credit.bufferedMessages > 0
  }

  /** The next message, or null when the remote ended its half. Throws FrameError on a bad frame. */
  async next(): Promise<M | null> {
    const r = await this.iterator.next()
    if (r.done) return null
    this.stats.bytesReceived += r.value.length + CREDIT_HEADER_BYTES
    const m = this.decode(decodeFrameBody(r.value))
    if (this.keepPooled) {
      if (this.keepPooled(m)) this.kept.set(m as object, r.value)
      else this.credit.release(r.value)
    }
    return m
  }

  /** A kept message of a pooled channel is done with: its buffer may be reused. */
  release(m: M): void {
    const body = this.kept.get(m as object)
    if (!body) return
    this.kept.delete(m as object)
    this.credit.release(body)
  }

  /** Bodies of kept messages (pooled channels), until release(). */
  private readonly kept = new WeakMap<object, Uint8Array>()

  /** The next message, which must exist and be of `type`. */
  async expect<T extends M & { type: string }>(type: T['type'], what: string): Promise<T> {
    const m = (await this.next()) as (M & { type: string }) | null
    if (m === null) throw new FrameError(`stream ended while waiting for ${what}`)
    if (m.type !== type) throw new FrameError(`expected ${what}, got a '${m.type}' frame`)
    return m as T
  }

  async end(): Promise<void> {
    await this.credit.end().catch(() => {})
  }

  abort(err: Error): void {
    this.credit.abort(err)
  }
}

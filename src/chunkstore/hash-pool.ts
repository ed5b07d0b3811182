// Hashing of a window of chunks on two threads: the main thread and one worker (hash-worker.ts)
// share the window's chunks through an atomic counter in shared memory, so the second core hashes
// whenever it is free and the main thread whenever it is not waiting on I/O. The window's bytes
// must live in a SharedArrayBuffer (see sharedBuffer); nothing is copied to the worker.
//
// The main thread never waits for a slow worker (on a loaded machine it may sit descheduled
// holding a chunk): once no chunk is left to claim, it takes over every chunk the worker claimed
// but has not finished and hashes it itself. Each chunk has a state word; the worker publishes
// an id only by moving its chunk from CLAIMED to WRITING, which fails once the main thread has
// taken the chunk over, so a late worker never writes into a finished window.
//
// Each chunk is first checked for all-zero bytes; a zero chunk keeps the all-zero id (ZERO_ID),
// which no real hash is. With one core, or where the compiled worker is not present (tests that
// run the TypeScript sources), the main thread hashes everything; the ids are the same.
import { existsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { type HashAlgorithm, type HashFn, ID_BYTES, isAllZero } from './hash.js'

/** One window to hash: chunk k is bytes [starts[k], starts[k] + lengths[k]) of `data`. */
export interface HashJob {
  algorithm: HashAlgorithm
  data: SharedArrayBuffer
  starts: Float64Array
  lengths: Float64Array
  /** Int32: [0] the next chunk to claim, then one state word per chunk. */
  control: SharedArrayBuffer
  /** 32 bytes per chunk, zero-filled: a zero chunk's slot is left as it is. */
  ids: SharedArrayBuffer
}

/** A window handed to the worker by begin(), to be completed by finish(). */
export interface HashTicket {
  data: Buffer
  starts: number[]
  lengths: number[]
  worker: Worker | null
  job: HashJob | null
  shared: Buffer | null
}

const NEXT = 0
const FREE = 0
const CLAIMED = 1
const WRITING = 2
const DONE = 3
const TAKEN = 4
/** How often a wait for the worker's last id (a 32-byte copy) checks that it is still alive. */
const WORKER_CHECK_MS = 100

function idOf(data: Buffer, job: HashJob, k: number, hash: HashFn): Buffer | null {
  const bytes = data.subarray(job.starts[k], job.starts[k] + job.lengths[k])
  return isAllZero(bytes) ? null : hash(bytes)
}

/** The worker's side: claims and hashes chunks until none is left. */
export function runJob(job: HashJob, hash: HashFn): void {
  const control = new Int32Array(job.control)
  const data = Buffer.from(job.data)
  const ids = Buffer.from(job.ids)
  const count = job.starts.length
  for (;;) {
    const k = Atomics.add(control, NEXT, 1)
    if (k >= count) return
    const state = 1 + k
    if (Atomics.compareExchange(control, state, FREE, CLAIMED) !== FREE) continue
    const id = idOf(data, job, k, hash)
    if (Atomics.compareExchange(control, state, CLAIMED, WRITING) !== CLAIMED) continue
    id?.copy(ids, k * ID_BYTES)
    Atomics.store(control, state, DONE)
    Atomics.notify(control, state)
  }
}

/** A Buffer over shared memory, which a ParallelHasher can hand to its worker without a copy. */
export function sharedBuffer(size: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(size))
}

// Node 16+ has Atomics.waitAsync; TypeScript's ES2022 library does not declare it.
type WaitAsync = (
  array: Int32Array,
  index: number,
  value: number,
  timeoutMs: number,
) => { async: boolean; value: Promise<string> | string }
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync

const WORKER_FILE = fileURLToPath(new URL('./hash-worker.js', import.meta.url))

export class ParallelHasher {
  private worker: Worker | null = null

  constructor(
    readonly algorithm: HashAlgorithm,
    private readonly hash: HashFn,
  ) {}

  /** Starts the worker (once) when a second core exists; harmless to call again. */
  start(): void {
    if (this.worker || availableParallelism() < 2 || !existsSync(WORKER_FILE)) return
    const worker = new Worker(WORKER_FILE)
    // Never keeps the process alive; an error leaves the main thread hashing alone.
    worker.unref()
    const gone = () => {
      if (this.worker === worker) this.worker = null
    }
    worker.on('error', gone)
    worker.on('exit', gone)
    this.worker = worker
  }

  /**
   * Ids of the chunks of `data` at `starts`/`lengths`, 32 bytes each: ZERO_ID (all zero) for an
   * all-zero chunk. With `data` in shared memory, the worker hashes side by side with this thread.
   */
  hashChunks(data: Buffer, starts: number[], lengths: number[]): Promise<Buffer> {
    return this.finish(this.begin(data, starts, lengths))
  }

  /**
   * Hands a window to the worker now (it works through windows in the order given); finish()
   * later hashes on this thread whatever the worker has not done. `data` must stay unchanged
   * until finish() returns.
   */
  begin(data: Buffer, starts: number[], lengths: number[]): HashTicket {
    const count = starts.length
    const worker = this.worker
    if (!(data.buffer instanceof SharedArrayBuffer) || !worker || count < 2)
      return { data, starts, lengths, worker: null, job: null, shared: null }
    const shared = Buffer.from(new SharedArrayBuffer(count * ID_BYTES))
    const job: HashJob = {
      algorithm: this.algorithm,
      data: data.buffer,
      starts: Float64Array.from(starts, (s) => s + data.byteOffset),
      lengths: Float64Array.from(lengths),
      control: new SharedArrayBuffer(4 * (1 + count)),
      ids: shared.buffer as SharedArrayBuffer,
    }
    worker.postMessage(job)
    return { data, starts, lengths, worker, job, shared }
  }

  async finish(ticket: HashTicket): Promise<Buffer> {
    const { data, starts, lengths, worker, job, shared } = ticket
    const count = starts.length
    const ids = Buffer.alloc(Math.max(1, count) * ID_BYTES)
    if (!worker || !job || !shared) {
      for (let k = 0; k < count; k++) {
        const bytes = data.subarray(starts[k], starts[k] + lengths[k])
        if (!isAllZero(bytes)) this.hash(bytes).copy(ids, k * ID_BYTES)
      }
      return ids
    }
    const control = new Int32Array(job.control)
    const source = Buffer.from(job.data)
    const own = (k: number) => idOf(source, job, k, this.hash)?.copy(ids, k * ID_BYTES)
    for (;;) {
      const k = Atomics.add(control, NEXT, 1)
      if (k >= count) break
      Atomics.store(control, 1 + k, TAKEN)
      own(k)
    }
    // Every chunk is claimed: take over those the worker has not finished.
    for (let k = 0; k < count; k++) {
      for (;;) {
        const state = Atomics.load(control, 1 + k)
        if (state === TAKEN) break
        if (state === DONE) {
          shared.copy(ids, k * ID_BYTES, k * ID_BYTES, (k + 1) * ID_BYTES)
          break
        }
        if (state === WRITING) {
          if (this.worker !== worker) {
            own(k)
            break
          }
          // A pending waitAsync does not keep the event loop alive; the worker does while ref'd.
          worker.ref()
          const waited = waitAsync(control, 1 + k, WRITING, WORKER_CHECK_MS)
          if (waited.async) await waited.value
          worker.unref()
          continue
        }
        if (Atomics.compareExchange(control, 1 + k, state, TAKEN) === state) {
          own(k)
          break
        }
      }
    }
    return ids
  }

  async close(): Promise<void> {
    const w = this.worker
    this.worker = null
    if (w) await w.terminate()
  }
}

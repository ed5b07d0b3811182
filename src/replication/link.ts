// One link to a peer or a site, shared by every VM replicating over it: a token bucket on the
// bytes put on the wire (its rate follows the link's schedule), a meter of the rate achieved, and
// per-chunk compression where it pays. LinkTable resolves a peer to its link (peer id, then site,
// then "*") from <dir>/links.json and re-reads the file when it changes, so `replimesh link set`
// takes effect on a running node at once (it asks the node to re-read the file) or, edited by
// hand, within LINKS_RELOAD_MS, without a restart.
//
// Compression: brotli at quality 0, measured on this machine kind against deflate level 1 and
// brotli 1 (Node 20 has no zstd): about the ratio of deflate 1 on binary content at 3-4x its
// speed, and it gives up on random content at ~230 MB/s where deflate crawls at ~30 MB/s. It runs
// on libuv's thread pool (async), off the event loop. A chunk goes compressed only if that saves
// at least COMPRESS_MIN_SAVING; a link whose recent chunks did not compress tries again only
// every COMPRESS_PROBE_EVERY chunks, so random data costs almost nothing.
import { readFile, stat } from 'node:fs/promises'
import { promisify } from 'node:util'
import { brotliCompress, constants as zlibConstants } from 'node:zlib'
import {
  compressionOn,
  type LinkEntry,
  type LinksFile,
  parseLinksFile,
  parseSchedule,
  type Rate,
  rateAt,
  type Schedule,
} from './link-settings.js'

const compress = promisify(brotliCompress)

/** The settings file in a node's folder. */
export const LINKS_FILE = 'links.json'
/** How often a running node looks for a changed links file. */
export const LINKS_RELOAD_MS = 2000
/** A compressed chunk is sent only when it is at most this fraction of the raw chunk. */
export const COMPRESS_MIN_SAVING = 0.1
/** After this many chunks in a row that did not compress, only every Nth is tried. */
export const COMPRESS_GIVE_UP_AFTER = 8
export const COMPRESS_PROBE_EVERY = 16
/** The bucket holds at most this long at the current rate (and never less than one large frame). */
const BURST_SECONDS = 0.05
const MIN_BURST_BYTES = 512 * 1024
/** A waiting sender re-reads the schedule at least this often (a window may open meanwhile). */
const MAX_WAIT_SLICE_MS = 250
/** The rate shown is measured over this window. */
const METER_WINDOW_MS = 5000

export interface Clock {
  now(): number
  sleep(ms: number, signal?: AbortSignal): Promise<void>
}

export const systemClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      signal?.throwIfAborted()
      const t = setTimeout(done, ms)
      function done() {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      }
      function onAbort() {
        clearTimeout(t)
        reject(signal?.reason)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
    }),
}

/**
 * Bytes per second from `rate()` (null: unlimited), with a small burst. Takers are served in
 * order, one at a time, so VMs sharing the link share it fairly by bytes.
 */
export class TokenBucket {
  private tokens = 0
  private last: number
  private queue: Promise<void> = Promise.resolve()

  constructor(
    private readonly rate: (nowMs: number) => Rate,
    private readonly clock: Clock = systemClock,
  ) {
    this.last = clock.now()
    const r = rate(this.last)
    this.tokens = r === null ? 0 : burstOf(r)
  }

  /** Resolves when `bytes` may be put on the wire. */
  take(bytes: number, signal?: AbortSignal): Promise<void> {
    const turn = this.queue.then(() => this.wait(bytes, signal))
    this.queue = turn.catch(() => {})
    return turn
  }

  private async wait(bytes: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      signal?.throwIfAborted()
      const now = this.clock.now()
      const rate = this.rate(now)
      if (rate === null) {
        this.last = now
        this.tokens = 0
        return
      }
      const burst = burstOf(rate)
      this.tokens = Math.min(burst, this.tokens + ((now - this.last) / 1000) * rate)
      this.last = now
      // A frame larger than the burst goes once the bucket is full, leaving a debt behind it.
      if (this.tokens >= Math.min(bytes, burst)) {
        this.tokens -= bytes
        return
      }
      const needMs = ((Math.min(bytes, burst) - this.tokens) / rate) * 1000
      await this.clock.sleep(Math.max(1, Math.min(MAX_WAIT_SLICE_MS, Math.ceil(needMs))), signal)
    }
  }
}

function burstOf(rate: number): number {
  return Math.max(MIN_BURST_BYTES, rate * BURST_SECONDS)
}

/** Bytes per second over the last few seconds. */
export class RateMeter {
  private samples: Array<[number, number]> = []
  total = 0

  constructor(private readonly clock: Clock = systemClock) {}

  add(bytes: number): void {
    const now = this.clock.now()
    this.total += bytes
    this.samples.push([now, bytes])
    this.trim(now)
  }

  bytesPerSecond(): number {
    const now = this.clock.now()
    this.trim(now)
    if (this.samples.length === 0) return 0
    const sum = this.samples.reduce((n, [, b]) => n + b, 0)
    const span = Math.max(1000, now - this.samples[0][0])
    return Math.round((sum / span) * 1000)
  }

  private trim(now: number): void {
    while (this.samples.length > 0 && now - this.samples[0][0] > METER_WINDOW_MS) this.samples.shift()
  }
}

export interface CompressionStats {
  /** Chunks that went compressed / were tried but sent raw / were not tried (link gave up). */
  compressed: number
  notWorth: number
  skipped: number
  /** Raw bytes of the chunks sent compressed, and what they took on the wire. */
  rawBytes: number
  wireBytes: number
  /** Thread-pool time spent compressing (attempts that did not pay included). */
  cpuMs: number
}

export interface LinkStatus {
  /** The settings entry (peer id, site or "*"), or the peer id when none matched. */
  name: string
  limit: string
  /** The limit in force now (bytes/s), null when unlimited. */
  limitBytesPerSecond: number | null
  rateBytesPerSecond: number
  bytesSent: number
  compression: boolean
  compressionStats: CompressionStats
}

export class Link {
  readonly bucket: TokenBucket
  readonly meter: RateMeter
  readonly compressionStats: CompressionStats = {
    compressed: 0,
    notWorth: 0,
    skipped: 0,
    rawBytes: 0,
    wireBytes: 0,
    cpuMs: 0,
  }
  private schedule: Schedule
  private compress: boolean
  private misses = 0
  private sinceProbe = 0

  constructor(
    readonly name: string,
    private entry: LinkEntry,
    private readonly clock: Clock = systemClock,
  ) {
    this.schedule = parseSchedule(entry.limit)
    this.compress = compressionOn(entry)
    this.bucket = new TokenBucket((now) => rateAt(this.schedule, new Date(now)), clock)
    this.meter = new RateMeter(clock)
  }

  /** New settings for the same link (the bucket and counters carry on). */
  update(entry: LinkEntry): void {
    this.entry = entry
    this.schedule = parseSchedule(entry.limit)
    this.compress = compressionOn(entry)
  }

  get compression(): boolean {
    return this.compress
  }

  /** Waits for room on the link, then counts the bytes as sent. */
  async send(bytes: number, signal?: AbortSignal): Promise<void> {
    await this.bucket.take(bytes, signal)
    this.meter.add(bytes)
  }

  /** The chunk compressed when compression is on for this link and pays; null to send it raw. */
  async maybeCompress(bytes: Uint8Array): Promise<Uint8Array | null> {
    if (!this.compress) return null
    const s = this.compressionStats
    if (this.misses >= COMPRESS_GIVE_UP_AFTER && ++this.sinceProbe % COMPRESS_PROBE_EVERY !== 0) {
      s.skipped++
      return null
    }
    const started = performance.now()
    const out = await compressChunk(bytes)
    s.cpuMs += performance.now() - started
    if (out.length > bytes.length * (1 - COMPRESS_MIN_SAVING)) {
      this.misses++
      s.notWorth++
      return null
    }
    this.misses = 0
    s.compressed++
    s.rawBytes += bytes.length
    s.wireBytes += out.length
    return out
  }

  status(): LinkStatus {
    return {
      name: this.name,
      limit: this.entry.limit,
      limitBytesPerSecond: rateAt(this.schedule, new Date(this.clock.now())),
      rateBytesPerSecond: this.meter.bytesPerSecond(),
      bytesSent: this.meter.total,
      compression: this.compress,
      compressionStats: { ...this.compressionStats, cpuMs: Math.round(this.compressionStats.cpuMs) },
    }
  }
}

/** Brotli quality 0 (see the opening comment; a size hint measured no faster). */
export function compressChunk(bytes: Uint8Array): Promise<Buffer> {
  return compress(bytes, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 0 } })
}

export interface LinkTableInit {
  /** The links file (<dir>/links.json); absent means every link is unlimited. */
  file: string
  /** The site of a peer, when the mesh knows it. */
  siteOf(peer: string): string | null
  logger: { warn(obj: object, msg?: string): void }
  clock?: Clock
}

const DEFAULT_ENTRY: LinkEntry = { to: '*', limit: 'unlimited', compress: 'auto', wan: false }

/** The links of one node, by settings entry; shared by every protection on the node. */
export class LinkTable {
  private settings: LinksFile = { links: [] }
  private readonly links = new Map<string, Link>()
  private mtimeMs = -1
  private timer: NodeJS.Timeout | null = null

  constructor(private readonly init: LinkTableInit) {}

  async start(): Promise<void> {
    await this.reload()
    this.timer = setInterval(() => void this.reload(), LINKS_RELOAD_MS)
    this.timer.unref?.()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /**
   * Re-reads the file if it changed (`force`: whatever its time stamp says, as `replimesh link
   * set` asks); a bad file is logged and the previous settings kept. Returns why it was ignored,
   * or null when the settings in effect are the file's.
   */
  async reload(force = false): Promise<string | null> {
    let mtimeMs: number
    try {
      mtimeMs = (await stat(this.init.file)).mtimeMs
    } catch {
      mtimeMs = 0
    }
    if (mtimeMs === this.mtimeMs && !force) return null
    this.mtimeMs = mtimeMs
    try {
      this.settings =
        mtimeMs === 0 ? { links: [] } : parseLinksFile(await readFile(this.init.file, 'utf8'), this.init.file)
    } catch (err) {
      const reason = (err as Error).message
      this.init.logger.warn({ reason }, 'links file ignored; previous link settings kept')
      return reason
    }
    for (const [name, link] of this.links) link.update(this.entryFor(name) ?? { ...DEFAULT_ENTRY, to: name })
    return null
  }

  /** The settings in effect (the file as last read). */
  get entries(): LinkEntry[] {
    return this.settings.links.map((l) => ({ ...l }))
  }

  /** The link a peer is reached over. */
  forPeer(peer: string): Link {
    const site = this.init.siteOf(peer)
    const entry =
      this.entryFor(peer) ?? (site === null ? undefined : this.entryFor(site)) ?? this.entryFor('*')
    const name = entry ? entry.to : peer
    let link = this.links.get(name)
    if (!link) {
      link = new Link(name, entry ?? { ...DEFAULT_ENTRY, to: peer }, this.init.clock)
      this.links.set(name, link)
    }
    return link
  }

  status(): LinkStatus[] {
    return [...this.links.values()].map((l) => l.status())
  }

  private entryFor(to: string): LinkEntry | undefined {
    return this.settings.links.find((l) => l.to === to)
  }
}

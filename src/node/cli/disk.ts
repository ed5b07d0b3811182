// `replimesh disk …`: inspect, stream, write, convert and create disk images (DESIGN.md §7).
// The disk layer is imported inside each action so other commands start without it.
import { fstatSync, writeSync } from 'node:fs'
import { extname } from 'node:path'
import { isatty } from 'node:tty'
import { type Command, Option } from 'commander'
import type { DiskInfo, Extent, VirtualDisk } from '../../hyperv/index.js'
import { parseCount, parseSize, printJson, UsageError } from './output.js'

/** Bytes per read when streaming a disk to stdout. */
const CAT_CHUNK_BYTES = 4 * 1024 * 1024
/** Buffers `disk cat` cycles through: one being read, one being written, one spare. */
const CAT_BUFFERS = 3
/** Bytes of stdin gathered before one write into the disk. */
const WRITE_BATCH_BYTES = 4 * 1024 * 1024

const FORMATS = ['vhdx', 'vhd', 'raw']
const SUBFORMATS = ['dynamic', 'fixed']

async function diskLayer() {
  return import('../../hyperv/index.js')
}

export function register(program: Command): void {
  const disk = program
    .command('disk')
    .description('inspect, convert and create VHDX, VHD and raw disk images')

  disk
    .command('info <file>')
    .description('format, sizes, parent and allocation of a disk image')
    .option('--json', 'print JSON {format, subformat, virtualSize, blockSize, …}')
    .addOption(formatOption())
    .action(async (file: string, opts: { json?: boolean; format?: Format }) => {
      const info = await withDisk(file, opts.format, async (d) => d.info())
      if (opts.json) printJson(info)
      else process.stdout.write(infoTable(file, info))
    })

  disk
    .command('map <file>')
    .description('allocation map: extents of data, zero, or parent (differencing disks)')
    .option('--json', 'print JSON [{start, length, state}]')
    .option('--resolve', 'resolve parent extents through the differencing chain')
    .addOption(formatOption())
    .action(async (file: string, opts: { json?: boolean; resolve?: boolean; format?: Format }) => {
      const map = await withDisk(file, opts.format, (d) => d.map({ resolveParents: opts.resolve }))
      if (opts.json) printJson(map)
      else process.stdout.write(mapTable(map))
    })

  disk
    .command('cat <file>')
    .description("write the virtual disk's bytes to stdout (parents resolved)")
    .addOption(formatOption())
    .action(async (file: string, opts: { format?: Format }) => {
      // To a file or /dev/null every write blocks anyway: read on this thread too, one buffer.
      if (stdoutIsSynchronous()) await withDisk(file, opts.format, catToSyncStdout, { blockingReads: true })
      else await withDisk(file, opts.format, catToStdout)
    })

  disk
    .command('write <file>')
    .description("write stdin's bytes into the disk at a virtual offset")
    .requiredOption('--offset <n>', 'virtual byte offset', parseSize)
    .option('--json', 'print JSON {offset, bytesWritten}')
    .addOption(formatOption())
    .action(async (file: string, opts: { offset: number; json?: boolean; format?: Format }) => {
      const { openDisk } = await diskLayer()
      const d = await openDisk(file, { readOnly: false, format: opts.format })
      let written = 0
      try {
        written = await stdinToDisk(d, opts.offset)
      } finally {
        await d.close()
      }
      if (opts.json) printJson({ offset: opts.offset, bytesWritten: written })
    })

  disk
    .command('convert <in> <out>')
    .description('convert a disk image (streaming; zeros are not written)')
    .addOption(new Option('--to <format>', 'output format').choices(FORMATS).makeOptionMandatory())
    .addOption(new Option('--subformat <kind>', 'dynamic or fixed (default dynamic)').choices(SUBFORMATS))
    .option('--block-size <n>', 'block size of the output (VHDX 1–256 MiB, VHD default 2 MiB)', parseSize)
    .option('--json', 'print JSON {format, virtualSize, writtenBytes}')
    .addOption(formatOption('format of <in>'))
    .action(
      async (
        input: string,
        output: string,
        opts: { to: string; subformat?: string; blockSize?: number; json?: boolean; format?: Format },
      ) => {
        const { convertDisk } = await diskLayer()
        const progress = terminalProgress(`converting ${input}`)
        const result = await convertDisk(input, output, {
          to: opts.to as 'vhdx' | 'vhd' | 'raw',
          subformat: opts.subformat as 'dynamic' | 'fixed' | undefined,
          blockSize: opts.blockSize,
          inputFormat: opts.format,
          onProgress: progress?.update,
        })
        progress?.done()
        if (opts.json) printJson({ format: opts.to, ...result })
      },
    )

  disk
    .command('create <out>')
    .description('create an empty disk image, or a differencing child of --parent')
    .option('--size <n>', 'virtual size (512M, 2G, bytes); defaults to the parent’s', parseSize)
    .addOption(
      new Option('--to <format>', "format (default: the parent's, else by extension, else vhdx)").choices(
        FORMATS,
      ),
    )
    .addOption(new Option('--subformat <kind>', 'dynamic or fixed (default dynamic)').choices(SUBFORMATS))
    .option('--parent <file>', 'make a differencing disk of this parent')
    .option('--block-size <n>', 'block size (VHDX 1–256 MiB, VHD default 2 MiB)', parseSize)
    .option('--logical-sector-size <n>', 'VHDX logical sector size: 512 or 4096', parseCount)
    .option('--json', 'print the new disk’s info as JSON')
    .action(async (out: string, opts: CreateFlags) => {
      const { createDisk, detectFormat } = await diskLayer()
      if (opts.size === undefined && !opts.parent)
        throw new UsageError('disk create needs --size (or --parent)')
      if (opts.parent && opts.subformat === 'fixed')
        throw new UsageError('a differencing disk (--parent) cannot be --subformat fixed')
      const format = (opts.to ??
        (opts.parent ? await detectFormat(opts.parent) : formatFromName(out))) as Format
      const d = await createDisk(out, {
        format,
        subformat: opts.subformat as 'dynamic' | 'fixed' | undefined,
        virtualSize: opts.size,
        blockSize: opts.blockSize,
        logicalSectorSize: opts.logicalSectorSize,
        parent: opts.parent,
      })
      const info = d.info()
      await d.close()
      if (opts.json) printJson(info)
      else process.stdout.write(infoTable(out, info))
    })
}

/** .vhd → vhd, .raw/.img/.bin → raw, anything else (.vhdx included) → vhdx. */
function formatFromName(file: string): 'vhdx' | 'vhd' | 'raw' {
  const ext = extname(file).toLowerCase()
  if (ext === '.vhd') return 'vhd'
  if (ext === '.raw' || ext === '.img' || ext === '.bin') return 'raw'
  return 'vhdx'
}

interface CreateFlags {
  size?: number
  to?: string
  subformat?: string
  parent?: string
  blockSize?: number
  logicalSectorSize?: number
  json?: boolean
}

type Format = 'vhdx' | 'vhd' | 'raw'

/** `--format`: skip detection (like qemu-img -f), for a raw image that happens to hold a footer. */
function formatOption(description = 'format of the file (default: detected)'): Option {
  return new Option('--format <format>', description).choices(FORMATS)
}

async function withDisk<T>(
  file: string,
  format: Format | undefined,
  fn: (d: VirtualDisk) => Promise<T> | T,
  options: { blockingReads?: boolean } = {},
) {
  const { openDisk } = await diskLayer()
  const d = await openDisk(file, { format, ...options })
  try {
    return await fn(d)
  } finally {
    await d.close()
  }
}

/**
 * True when stdout is a regular file or a character device that is not a terminal (/dev/null):
 * Node writes those synchronously (SyncWriteStream), so nothing can overlap a write.
 */
function stdoutIsSynchronous(): boolean {
  try {
    const st = fstatSync(1)
    return st.isFile() || (st.isCharacterDevice() && !isatty(1))
  } catch {
    return false
  }
}

/**
 * `disk cat` to a synchronous stdout: the disk is opened with blocking reads, and each piece is
 * read into one reused buffer and written with writeSync, the shape of a plain read loop.
 * Thread-pool reads and read-ahead buy nothing here (the write cannot overlap anything) and
 * cost two thread hand-offs per piece, about as much as the copy from the page cache itself.
 */
async function catToSyncStdout(d: VirtualDisk): Promise<void> {
  const buffer = Buffer.allocUnsafe(CAT_CHUNK_BYTES)
  let zeros: Buffer | null = null
  for (const p of catPieces(await d.map({ resolveParents: true }))) {
    let chunk: Buffer
    if (p.data) {
      await d.read(buffer, p.start, p.length, 0)
      chunk = buffer
    } else {
      zeros ??= Buffer.alloc(CAT_CHUNK_BYTES)
      chunk = zeros
    }
    for (let done = 0; done < p.length; ) done += writeSync(1, chunk, done, p.length - done)
  }
}

/**
 * Streams the disk to stdout, waiting for 'drain'; a closed reader (EPIPE) ends it quietly.
 * One read runs ahead: it proceeds in the thread pool while a pipe write blocks the loop.
 * Buffers come from a small pool and return to it when stdout has written them: fresh 4 MiB
 * buffers per chunk cost more in page faults than the reads themselves.
 */
async function catToStdout(d: VirtualDisk): Promise<void> {
  const out = process.stdout
  let closed = false
  let failure: Error | null = null
  const onError = (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') closed = true
    else failure = err
  }
  out.on('error', onError)
  const zeros = Buffer.alloc(CAT_CHUNK_BYTES)
  const pool = new BufferPool(CAT_BUFFERS, CAT_CHUNK_BYTES)
  const fetch = async (p: CatPiece): Promise<{ chunk: Buffer; pooled: Buffer | null }> => {
    if (!p.data) return { chunk: zeros.subarray(0, p.length), pooled: null }
    const pooled = await pool.acquire()
    try {
      await d.read(pooled, p.start, p.length, 0)
    } catch (err) {
      pool.release(pooled)
      throw err
    }
    return { chunk: pooled.subarray(0, p.length), pooled }
  }
  const pieces = catPieces(await d.map({ resolveParents: true }))
  let next = pieces.next()
  let pending = next.done ? null : fetch(next.value)
  try {
    while (pending && !closed) {
      const { chunk, pooled } = await pending
      next = pieces.next()
      pending = next.done ? null : fetch(next.value)
      if (failure) throw failure
      const ok = out.write(chunk, () => {
        if (pooled) pool.release(pooled)
      })
      if (!ok) await writable(out)
    }
    if (failure) throw failure
  } finally {
    await pending?.catch(() => {})
    out.off('error', onError)
    if (closed) out.on('error', () => {})
  }
}

/** A fixed set of equal buffers; acquire waits while all are out. */
class BufferPool {
  private readonly free: Buffer[] = []
  private readonly waiting: Array<(b: Buffer) => void> = []

  constructor(count: number, size: number) {
    for (let i = 0; i < count; i++) this.free.push(Buffer.allocUnsafe(size))
  }

  acquire(): Promise<Buffer> {
    const b = this.free.pop()
    return b ? Promise.resolve(b) : new Promise((resolve) => this.waiting.push(resolve))
  }

  release(b: Buffer): void {
    const waiter = this.waiting.shift()
    if (waiter) waiter(b)
    else this.free.push(b)
  }
}

interface CatPiece {
  start: number
  length: number
  data: boolean
}

function* catPieces(map: Extent[]): Generator<CatPiece> {
  for (const e of map) {
    for (let pos = e.start; pos < e.start + e.length; pos += CAT_CHUNK_BYTES)
      yield {
        start: pos,
        length: Math.min(CAT_CHUNK_BYTES, e.start + e.length - pos),
        data: e.state === 'data',
      }
  }
}

/** Resolves when the stream drains, closes or fails (the caller then checks which). */
function writable(out: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done)
      out.off('close', done)
      out.off('error', done)
      resolve()
    }
    out.on('drain', done)
    out.on('close', done)
    out.on('error', done)
  })
}

/** Writes stdin at `offset`; refuses up front when stdin is a file too big for the disk. */
async function stdinToDisk(d: VirtualDisk, offset: number): Promise<number> {
  if (offset > d.virtualSize)
    throw new UsageError(`--offset ${offset} is past the end of ${d.path} (${d.virtualSize} bytes)`)
  const st = fstatSync(0)
  if (st.isFile() && offset + st.size > d.virtualSize)
    throw new UsageError(
      `${st.size} bytes at offset ${offset} would run past the end of ${d.path} (${d.virtualSize} bytes)`,
    )
  // Pipe chunks are 64 KiB; gathering them into larger writes saves allocations and syncs.
  let pos = offset
  let parts: Buffer[] = []
  let held = 0
  const writeHeld = async () => {
    if (held === 0) return
    await d.write(parts.length === 1 ? parts[0] : Buffer.concat(parts, held), pos)
    pos += held
    parts = []
    held = 0
  }
  for await (const chunk of process.stdin) {
    parts.push(chunk as Buffer)
    held += (chunk as Buffer).length
    if (held >= WRITE_BATCH_BYTES) await writeHeld()
  }
  await writeHeld()
  return pos - offset
}

function terminalProgress(label: string) {
  if (!process.stderr.isTTY) return null
  let last = -1
  return {
    update: (done: number, total: number) => {
      const pct = total > 0 ? Math.floor((done / total) * 100) : 100
      if (pct === last) return
      last = pct
      process.stderr.write(`\r${label}: ${pct}% of ${human(total)}`)
    },
    done: () => process.stderr.write('\n'),
  }
}

function human(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = bytes
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${bytes} bytes` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`
}

function infoTable(file: string, i: DiskInfo): string {
  const rows: Array<[string, string]> = [
    ['file', file],
    ['format', `${i.format} (${i.subformat})`],
    ['virtual size', `${human(i.virtualSize)}${i.virtualSize >= 1024 ? ` (${i.virtualSize} bytes)` : ''}`],
    ['block size', i.blockSize ? human(i.blockSize) : '-'],
    ['sector size', `${i.logicalSectorSize} logical, ${i.physicalSectorSize} physical`],
    ['parent', i.parent ?? '-'],
    ['allocated', human(i.allocatedBytes)],
  ]
  return rows.map(([k, v]) => `${k.padEnd(14)}${v}\n`).join('')
}

function mapTable(map: Extent[]): string {
  const lines = [`${'start'.padStart(16)} ${'length'.padStart(16)}  state`]
  for (const e of map)
    lines.push(`${String(e.start).padStart(16)} ${String(e.length).padStart(16)}  ${e.state}`)
  return lines.join('\n') + '\n'
}

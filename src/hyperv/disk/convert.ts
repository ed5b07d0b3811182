// Streaming conversion between formats. Reads only the extents the source's resolved map calls
// data, through one bounded buffer, and writes only the non-zero parts: a new image reads as
// zeros everywhere already, so skipped zeros stay holes (dynamic) or sparse zeros (fixed, raw).
// The output is built as `<out>.tmp` and renamed into place only once complete and flushed, so
// a failure leaves nothing half-written under the output's name.
import { rename, unlink } from 'node:fs/promises'
import { DiskError } from './errors.js'
import { isZero } from './file-io.js'
import { createDisk, openDisk } from './open.js'
import type { DiskFormat, VirtualDisk } from './types.js'

/** Bytes read from the source per step: the conversion's memory bound. */
export const CONVERT_BUFFER_BYTES = 4 * 1024 * 1024
/** Granularity of zero detection: zero runs this long and aligned are not written. */
export const ZERO_SCAN_BYTES = 64 * 1024

export interface ConvertOptions {
  to: DiskFormat
  /** Format of the input; detected when absent. */
  inputFormat?: DiskFormat
  /** Default dynamic (raw is always fixed). */
  subformat?: 'dynamic' | 'fixed'
  blockSize?: number
  signal?: AbortSignal
  /** Called after each buffer with bytes of the virtual disk done and the total. */
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

export interface ConvertResult {
  virtualSize: number
  /** Bytes actually written to the output (non-zero data). */
  writtenBytes: number
}

export async function convertDisk(
  input: string,
  output: string,
  options: ConvertOptions,
): Promise<ConvertResult> {
  const source = await openDisk(input, { format: options.inputFormat })
  const tmp = `${output}.tmp`
  let target: VirtualDisk | undefined
  try {
    await unlink(tmp).catch(() => {})
    target = await createDisk(tmp, {
      format: options.to,
      subformat: options.to === 'raw' ? 'fixed' : (options.subformat ?? 'dynamic'),
      virtualSize: source.virtualSize,
      blockSize: options.blockSize,
      logicalSectorSize: options.to === 'vhdx' ? source.logicalSectorSize : undefined,
    })
    const writtenBytes = await copyExtents(source, target, options)
    await target.close()
    target = undefined
    await rename(tmp, output)
    return { virtualSize: source.virtualSize, writtenBytes }
  } catch (err) {
    await target?.close().catch(() => {})
    await unlink(tmp).catch(() => {})
    throw err instanceof DiskError && err.path === tmp
      ? new DiskError(err.message.replace(`${tmp}: `, ''), output)
      : err
  } finally {
    await source.close()
  }
}

/** Copies the data extents of `source` (parents resolved) into `target`; returns bytes written. */
export async function copyExtents(
  source: VirtualDisk,
  target: VirtualDisk,
  options: Pick<ConvertOptions, 'signal' | 'onProgress'> = {},
): Promise<number> {
  const buffer = Buffer.allocUnsafe(CONVERT_BUFFER_BYTES)
  const total = source.virtualSize
  let written = 0
  let done = 0
  for (const extent of await source.map({ resolveParents: true, signal: options.signal })) {
    if (extent.state !== 'data') {
      done += extent.length
      continue
    }
    const end = extent.start + extent.length
    for (let pos = extent.start; pos < end; ) {
      options.signal?.throwIfAborted()
      // Steps end on buffer-size boundaries of the virtual disk, so zero scans stay aligned.
      const n = Math.min(end - pos, CONVERT_BUFFER_BYTES - (pos % CONVERT_BUFFER_BYTES))
      await source.read(buffer, pos, n, 0)
      written += await writeNonZero(target, buffer.subarray(0, n), pos)
      pos += n
      done += n
      options.onProgress?.(done, total)
    }
  }
  options.onProgress?.(total, total)
  return written
}

/** Writes `data` at `offset` except aligned all-zero slices; coalesces the rest. */
async function writeNonZero(target: VirtualDisk, data: Buffer, offset: number): Promise<number> {
  let written = 0
  let runStart = -1
  const flushRun = async (until: number) => {
    if (runStart < 0) return
    await target.write(data.subarray(runStart, until), offset + runStart)
    written += until - runStart
    runStart = -1
  }
  for (let at = 0; at < data.length; ) {
    const sliceEnd = Math.min(data.length, at + ZERO_SCAN_BYTES - ((offset + at) % ZERO_SCAN_BYTES))
    if (isZero(data, at, sliceEnd)) await flushRun(at)
    else if (runStart < 0) runStart = at
    at = sliceEnd
  }
  await flushRun(data.length)
  return written
}

// Per-chunk compression, kept only when it pays (bench/store.bench.ts measures the cost).
import { promisify } from 'node:util'
import { deflateRaw as deflateRawCb, deflateRawSync, inflateRaw as inflateRawCb } from 'node:zlib'
import { COMPRESSION_MIN_SAVING, COMPRESSION_PROBE_BYTES } from './constants.js'

const deflateRaw = promisify(deflateRawCb)
export const inflateRaw = promisify(inflateRawCb)

/** Compresses when a probe of the chunk's start suggests it pays, keeps it only if it did. */
export async function compress(bytes: Uint8Array): Promise<Buffer | null> {
  const probe = bytes.subarray(0, COMPRESSION_PROBE_BYTES)
  if (deflateRawSync(probe, { level: 1 }).length > probe.byteLength * (1 - COMPRESSION_MIN_SAVING))
    return null
  const out = await deflateRaw(bytes, { level: 1 })
  return out.length <= bytes.byteLength * (1 - COMPRESSION_MIN_SAVING) ? out : null
}

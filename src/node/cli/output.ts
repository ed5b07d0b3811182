// What the CLI prints: JSON for programs, one clear line for people, never a stack trace.
import { InvalidArgumentError } from 'commander'

/** A bad value on the command line: reported as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError'
  readonly exitCode = 2
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n')
}

export function formatError(err: unknown): string {
  if (err instanceof Error) {
    const msg = err.message.split('\n')[0] || err.name
    return msg
  }
  return String(err)
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 1024,
  KB: 1024,
  KIB: 1024,
  M: 1024 ** 2,
  MB: 1024 ** 2,
  MIB: 1024 ** 2,
  G: 1024 ** 3,
  GB: 1024 ** 3,
  GIB: 1024 ** 3,
  T: 1024 ** 4,
  TB: 1024 ** 4,
  TIB: 1024 ** 4,
}

/** Parses `512M`, `2G`, `4096` (binary units) into bytes. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
  const unit = m ? SIZE_UNITS[m[2].toUpperCase()] : undefined
  if (!m || unit === undefined)
    throw new InvalidArgumentError(`'${text}' is not a size (examples: 4096, 512K, 512M, 2G)`)
  const bytes = Number(m[1]) * unit
  if (!Number.isSafeInteger(bytes)) throw new InvalidArgumentError(`'${text}' is not a whole number of bytes`)
  return bytes
}

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
}

/** Parses `30s`, `5m`, `1h`, `250ms`, or plain seconds, into milliseconds. */
export function parseDurationMs(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/.exec(text)
  if (!m) throw new InvalidArgumentError(`'${text}' is not a duration (examples: 500ms, 30s, 5m, 1h)`)
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2] ?? 's'])
}

/** Parses a non-negative integer option (offsets, counts). */
export function parseCount(text: string): number {
  if (!/^\d+$/.test(text.trim())) throw new InvalidArgumentError(`'${text}' is not a non-negative integer`)
  const n = Number(text)
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`'${text}' is too large`)
  return n
}

/** Reads all of standard input (for small inputs; large writes should stream). */
export async function readStdin(): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const part of process.stdin) parts.push(part as Buffer)
  return Buffer.concat(parts)
}

// Runs one script in a fresh PowerShell process and turns what it prints into a value or exactly
// one named error. Every run is bounded: in time (timeout, AbortSignal), in output bytes, and in
// how many PowerShell processes run at once.
import { type ChildProcess, spawn } from 'node:child_process'
import { VmNotFoundError, VmStateError } from '../hypervisor.js'
import {
  DEFAULT_EXECUTABLE,
  DEFAULT_MAX_CONCURRENT_RUNS,
  DEFAULT_TIMEOUT_MS,
  MAX_ENCODED_COMMAND_CHARS,
  MAX_OUTPUT_BYTES,
  POWERSHELL_ARGS,
} from './constants.js'
import {
  HyperVAccessDeniedError,
  HyperVCommandError,
  HyperVIncompatibleError,
  HyperVJobError,
  HyperVOutputError,
  HyperVTimeoutError,
} from './errors.js'
import { failureSchema, mapVmState, type ScriptFailure } from './parse.js'
import { buildScript, encodeCommand } from './script.js'

export interface RunnerInit {
  /** Default 'powershell.exe'. Tests point it at a fake (an executable Node script). */
  executable?: string
  /** Per run; default 180 s. */
  timeoutMs?: number
  /** stdout+stderr cap per run; default 16 MiB. */
  maxOutputBytes?: number
  /** PowerShell processes at once; default 3. */
  maxConcurrent?: number
  /** Extra environment for the child (tests pass the fake's state file). */
  env?: Record<string, string>
}

export interface RunOptions {
  signal?: AbortSignal
  timeoutMs?: number
  /** Extra PowerShell functions the body calls. */
  helpers?: string
}

export class PowerShellRunner {
  readonly executable: string
  private readonly timeoutMs: number
  private readonly maxOutputBytes: number
  private readonly maxConcurrent: number
  private readonly env: Record<string, string> | undefined
  private readonly running = new Set<ChildProcess>()
  private active = 0
  private readonly waiting: Array<() => void> = []

  constructor(init: RunnerInit = {}) {
    this.executable = init.executable ?? DEFAULT_EXECUTABLE
    this.timeoutMs = init.timeoutMs ?? DEFAULT_TIMEOUT_MS
    this.maxOutputBytes = init.maxOutputBytes ?? MAX_OUTPUT_BYTES
    this.maxConcurrent = init.maxConcurrent ?? DEFAULT_MAX_CONCURRENT_RUNS
    this.env = init.env
  }

  /** Runs `body` as operation `op` with `params`; resolves with the printed array. */
  async run(op: string, body: string, params: unknown, options: RunOptions = {}): Promise<unknown[]> {
    const encoded = encodeCommand(buildScript(op, body, params, options.helpers))
    if (encoded.length > MAX_ENCODED_COMMAND_CHARS)
      throw new HyperVOutputError(op, `script too long for a command line (${encoded.length} characters)`)
    options.signal?.throwIfAborted()
    await this.acquire(options.signal)
    try {
      return await this.spawnOnce(op, encoded, options)
    } finally {
      this.release()
    }
  }

  /** Kills every run in flight (their promises reject). */
  killAll(): void {
    for (const child of this.running) child.kill('SIGKILL')
  }

  private async acquire(signal?: AbortSignal): Promise<void> {
    if (this.active < this.maxConcurrent) {
      this.active++
      return
    }
    await new Promise<void>((resolve, reject) => {
      const go = () => {
        signal?.removeEventListener('abort', onAbort)
        this.active++
        resolve()
      }
      const onAbort = () => {
        const i = this.waiting.indexOf(go)
        if (i >= 0) this.waiting.splice(i, 1)
        reject(signal!.reason)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiting.push(go)
    })
  }

  private release(): void {
    this.active--
    this.waiting.shift()?.()
  }

  private spawnOnce(op: string, encoded: string, options: RunOptions): Promise<unknown[]> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs
    return new Promise((resolve, reject) => {
      const child = spawn(this.executable, [...POWERSHELL_ARGS, '-EncodedCommand', encoded], {
        stdio: ['ignore', 'pipe', 'pipe'],
        windowsHide: true,
        env: this.env ? { ...process.env, ...this.env } : process.env,
      })
      this.running.add(child)
      const out: Buffer[] = []
      const err: Buffer[] = []
      let bytes = 0
      let failure: Error | null = null
      const fail = (e: Error) => {
        if (!failure) failure = e
        child.kill('SIGKILL')
      }
      const collect = (into: Buffer[]) => (chunk: Buffer) => {
        bytes += chunk.length
        if (bytes > this.maxOutputBytes)
          return fail(new HyperVOutputError(op, `output exceeded ${this.maxOutputBytes} bytes (killed)`))
        into.push(chunk)
      }
      child.stdout!.on('data', collect(out))
      child.stderr!.on('data', collect(err))
      const timer = setTimeout(() => fail(new HyperVTimeoutError(op, timeoutMs)), timeoutMs)
      const onAbort = () => fail(options.signal!.reason)
      options.signal?.addEventListener('abort', onAbort, { once: true })
      const done = () => {
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort)
        this.running.delete(child)
      }
      child.on('error', (e: NodeJS.ErrnoException) => {
        done()
        reject(new HyperVOutputError(op, `cannot run ${this.executable}: ${e.code ?? e.message}`))
      })
      child.on('close', (code) => {
        done()
        if (failure) return reject(failure)
        try {
          resolve(
            interpret(op, code, Buffer.concat(out).toString('utf8'), Buffer.concat(err).toString('utf8')),
          )
        } catch (e) {
          reject(e)
        }
      })
    })
  }
}

/** The last line that is JSON (warnings may precede it on the host's stdout). */
function lastJsonLine(stdout: string): unknown {
  const lines = stdout.replace(/^\uFEFF/, '').split(/\r?\n/)
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i].trim()
    if (!line) continue
    if (line.startsWith('[') || line.startsWith('{')) {
      try {
        return JSON.parse(line)
      } catch {
        return undefined
      }
    }
  }
  return undefined
}

/** powershell.exe writes stderr as CLIXML when redirected; keep only the error text. */
export function readableStderr(stderr: string): string {
  if (!stderr.startsWith('#< CLIXML')) return stderr.trim()
  const parts = [...stderr.matchAll(/<S S="Error">([\s\S]*?)<\/S>/g)].map((m) =>
    m[1].replace(/_x([0-9A-Fa-f]{4})_/g, (_, h) => String.fromCharCode(Number.parseInt(h, 16))),
  )
  return parts.join('').trim()
}

const excerpt = (s: string) => (s.length > 400 ? `${s.slice(0, 400)}…` : s)

export function interpret(op: string, code: number | null, stdout: string, stderr: string): unknown[] {
  const parsed = lastJsonLine(stdout)
  if (code === 0 && Array.isArray(parsed)) return parsed
  if (parsed !== undefined && !Array.isArray(parsed)) {
    const f = failureSchema.safeParse(parsed)
    if (f.success) throw toError(op, f.data)
  }
  const why = readableStderr(stderr) || stdout.trim()
  throw new HyperVOutputError(
    op,
    `PowerShell exited with ${code ?? 'a signal'} without our result${why ? `: ${excerpt(why)}` : ''}`,
    code,
  )
}

const ACCESS_DENIED = /access (is )?denied|unauthorized|privilege|not have the required permission/i

export function toError(op: string, f: ScriptFailure): Error {
  const detail = f.error ?? 'failed'
  const data = f.data ?? {}
  switch (f.kind) {
    case 'vm-not-found':
      return new VmNotFoundError(String(data.vm ?? ''))
    case 'vm-state':
      return new VmStateError(String(data.vm ?? ''), mapVmState(data.state), detail)
    case 'wmi':
      return new HyperVJobError(
        op,
        String(data.method ?? f.cmdlet ?? op),
        Number(data.returnValue ?? 32768),
        data.jobState === null || data.jobState === undefined ? null : Number(data.jobState),
        detail,
      )
    case 'incompatible':
      return new HyperVIncompatibleError(op, 'Compare-VM', detail, f.category ?? null, f.errorId ?? null)
  }
  const cmdlet = f.cmdlet ?? null
  if (
    f.category === 'PermissionDenied' ||
    f.category === 'SecurityError' ||
    /AccessDenied|UnauthorizedAccess/i.test(f.errorId ?? '') ||
    ACCESS_DENIED.test(detail)
  )
    return new HyperVAccessDeniedError(op, cmdlet, detail, f.category ?? null, f.errorId ?? null)
  return new HyperVCommandError(op, cmdlet, detail, f.category ?? null, f.errorId ?? null)
}

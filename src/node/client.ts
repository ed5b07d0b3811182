// The CLI's side of the daemon's local HTTP API: finds the address and token in --dir and calls it.
import { readFile } from 'node:fs/promises'
import { nodePaths } from './paths.js'

export class DaemonUnavailableError extends Error {
  override name = 'DaemonUnavailableError'
}

/** An error the daemon answered with: {error: "one line"} and an HTTP status. */
export class DaemonRequestError extends Error {
  override name = 'DaemonRequestError'
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message)
  }
}

export interface DaemonCallOptions {
  body?: unknown
  signal?: AbortSignal
  timeoutMs?: number
}

/** Calls the node daemon running on `dir`. Throws DaemonUnavailableError if none is running. */
export async function callDaemon<T = unknown>(
  dir: string,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  path: string,
  options: DaemonCallOptions = {},
): Promise<T> {
  const paths = nodePaths(dir)
  let url: string
  let token: string
  try {
    url = JSON.parse(await readFile(paths.api, 'utf8')).url
    token = (await readFile(paths.apiToken, 'utf8')).trim()
  } catch {
    throw new DaemonUnavailableError(`no node is running on ${dir} (start it with: replimesh start --dir ${dir})`)
  }
  const signal = options.signal ?? AbortSignal.timeout(options.timeoutMs ?? 30_000)
  let res: Response
  try {
    res = await fetch(new URL(path, url), {
      method,
      signal,
      headers: {
        authorization: `Bearer ${token}`,
        ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    })
  } catch (err) {
    throw new DaemonUnavailableError(
      `the node on ${dir} does not answer at ${url} (${(err as Error).message}); is it running?`,
    )
  }
  const text = await res.text()
  const value = text ? JSON.parse(text) : undefined
  if (!res.ok) throw new DaemonRequestError(value?.error ?? `HTTP ${res.status}`, res.status)
  return value as T
}

// The CLI's side of the daemon's local HTTP API: finds the address and token in --dir and calls it.

import { readFile } from 'node:fs/promises'
import { request } from 'node:http'
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
    throw new DaemonUnavailableError(
      `no node is running on ${dir} (start it with: replimesh start --dir ${dir})`,
    )
  }
  const signal = options.signal ?? AbortSignal.timeout(options.timeoutMs ?? 30_000)
  let res: { status: number; text: string }
  try {
    res = await httpRequest(new URL(path, url), method, token, options.body, signal)
  } catch (err) {
    throw new DaemonUnavailableError(
      `the node on ${dir} does not answer at ${url} (${(err as Error).message}); is it running?`,
    )
  }
  const text = res.text
  const value = text ? JSON.parse(text) : undefined
  if (res.status >= 400) throw new DaemonRequestError(value?.error ?? `HTTP ${res.status}`, res.status)
  return value as T
}

/**
 * One HTTP request with node:http rather than fetch: undici keeps the CLI process alive for
 * ~0.3 s after the answer, and `status` must return fast (issue 5).
 */
function httpRequest(
  url: URL,
  method: string,
  token: string,
  body: unknown,
  signal: AbortSignal,
): Promise<{ status: number; text: string }> {
  const payload = body === undefined ? undefined : JSON.stringify(body)
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        signal,
        headers: {
          authorization: `Bearer ${token}`,
          ...(payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
        },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (part: string) => {
          text += part
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(payload)
  })
}

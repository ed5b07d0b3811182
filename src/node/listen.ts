// Listen addresses: a node keeps one concrete TCP port across restarts (so bootstrap addresses in
// tokens stay valid and peers can redial it), chosen at `mesh create`/`init` when 0 was asked.
import { createServer } from 'node:net'
import { networkInterfaces } from 'node:os'
import { UsageError } from './cli/output.js'

const TCP_ADDR = /^\/ip4\/(\d{1,3}(?:\.\d{1,3}){3})\/tcp\/(\d{1,5})$/

export function parseListen(address: string): { host: string; port: number } {
  const m = TCP_ADDR.exec(address.trim())
  if (!m || Number(m[2]) > 65535)
    throw new UsageError(`'${address}' is not a listen address (example: /ip4/0.0.0.0/tcp/4701)`)
  return { host: m[1], port: Number(m[2]) }
}

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, host, () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/** The listen address with port 0 replaced by a free port on that host. */
export async function resolveListen(address: string): Promise<string> {
  const { host, port } = parseListen(address)
  return `/ip4/${host}/tcp/${port === 0 ? await freePort(host) : port}`
}

/** Dialable addresses of a listen address (0.0.0.0 expands to this host's IPv4 addresses). */
export function dialableAddrs(listen: string[], peerId: string): string[] {
  const out: string[] = []
  for (const address of listen) {
    const { host, port } = parseListen(address)
    const hosts =
      host === '0.0.0.0'
        ? Object.values(networkInterfaces())
            .flat()
            .filter((i) => i && i.family === 'IPv4')
            .sort((a, b) => Number(a!.internal) - Number(b!.internal))
            .map((i) => i!.address)
        : [host]
    for (const h of hosts) out.push(`/ip4/${h}/tcp/${port}/p2p/${peerId}`)
  }
  return [...new Set(out)].slice(0, 16)
}

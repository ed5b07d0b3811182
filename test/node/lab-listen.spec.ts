// Lab and test nodes listen on a port below the kernel's ephemeral range: init picks the port and
// start binds it later, and ephemeral ports are what other processes' connections and tcp/0
// listeners take in between.
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { describe, expect, it } from 'vitest'
import { labListenAddress } from '../../src/node/lab-mesh.js'

describe('labListenAddress', () => {
  it('gives distinct bindable ports below the ephemeral range', async () => {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    const addrs = await Promise.all(Array.from({ length: 5 }, () => labListenAddress()))
    for (const a of addrs) {
      const m = /^\/ip4\/127\.0\.0\.1\/tcp\/(\d+)$/.exec(a)
      expect(m).not.toBeNull()
      const port = Number(m![1])
      expect(port).toBeGreaterThanOrEqual(20_000)
      expect(port).toBeLessThan(low)
      const server = createServer()
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, '127.0.0.1', () => resolve())
      })
      await new Promise((r) => server.close(r))
    }
    expect(await labListenAddress('10.9.8.7', '127.0.0.1')).toMatch(/^\/ip4\/10\.9\.8\.7\/tcp\/\d+$/)
  })
})

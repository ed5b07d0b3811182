// Syslog over a real UDP socket and a real unix stream socket (RFC 6587 octet counting), each
// message checked against the RFC 5424 §6 grammar written out here, independently of the encoder.
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import {
  createNotifier,
  EVENT_IDS,
  EventLogChannel,
  messages,
  parseNotifierConfig,
} from '../../src/failover/index.js'
import type { HostEvent } from '../../src/hyperv/index.js'

// RFC 5424: HEADER SP STRUCTURED-DATA [SP MSG]
const RFC5424 =
  /^<(\d{1,3})>1 (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})) ([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) ([\x21-\x7e]{1,32}) (-|(?:\[[^\s=\]"]{1,32}(?: [^\s=\]"]{1,32}="(?:[^"\\\]]|\\["\\\]])*")*\])+)(?: (.*))?$/s

/** The SD-PARAMs of the first SD-ELEMENT, unescaped per §6.3.3. */
function sdParams(sd: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const m of sd.matchAll(/ ([^\s=\]"]+)="((?:[^"\\\]]|\\["\\\]])*)"/g))
    out[m[1]] = m[2].replace(/\\(["\\\]])/g, '$1')
  return out
}

let udp: UdpSocket | null = null
let stream: Server | null = null
let dir: string | null = null
afterEach(async () => {
  udp?.close()
  udp = null
  await new Promise<void>((r) => (stream ? stream.close(() => r()) : r()))
  stream = null
  if (dir) await rm(dir, { recursive: true, force: true })
  dir = null
})

async function until(pred: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error('deadline passed')
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('syslog channel', () => {
  it('sends RFC 5424 over UDP with facility, severity and the three answers', async () => {
    const got: Buffer[] = []
    udp = createSocket('udp4')
    udp.on('message', (m) => got.push(m))
    await new Promise<void>((r) => udp!.bind(0, '127.0.0.1', r))
    const port = udp.address().port
    const notifier = createNotifier(
      parseNotifierConfig({ syslog: { port, facility: 'local3', minLevel: 'info' } }),
    )
    const n = messages.fenced(
      { node: 'hv2', site: 'B', id: 'sys-1', time: Date.UTC(2026, 0, 2, 3, 4, 5, 678) },
      { vm: 'we"b]1\\x', ownEpoch: 3, seenEpoch: 4, owner: 'hv3' },
    )
    expect(await notifier.notify(n)).toEqual([{ channel: 'syslog', result: 'sent' }])
    await until(() => got.length === 1)
    await notifier.stop()

    expect(got[0].subarray(0, 1).toString()).toBe('<')
    const text = got[0].toString('utf8')
    const m = RFC5424.exec(text)!
    expect(m).not.toBeNull()
    expect(Number(m[1])).toBe(19 * 8 + 4) // local3, warning
    expect(m[2]).toBe('2026-01-02T03:04:05.678Z')
    expect(m[4]).toBe('replimesh')
    expect(m[5]).toBe(String(process.pid))
    expect(m[6]).toBe('fenced')
    const sd = sdParams(m[7])
    expect(sd).toMatchObject({
      id: 'sys-1',
      kind: 'fenced',
      node: 'hv2',
      nodeSite: 'B',
      vm: 'we"b]1\\x',
      peer: 'hv3',
    })
    expect(sd.failed).toBe(n.failed)
    expect(sd.done).toBe(n.done)
    expect(sd.decide).toBe(n.decide)
    // MSG is UTF-8 with a BOM (RFC 5424 §6.4).
    expect(m[8].startsWith('\uFEFF')).toBe(true)
    expect(m[8]).toContain(n.title)
  })

  it('frames messages by octet counting over a unix stream socket, reconnecting after a drop', async () => {
    dir = await mkdtemp(join(tmpdir(), 'replimesh-syslog-'))
    const path = join(dir, 'log.sock')
    let data = Buffer.alloc(0)
    let connections = 0
    stream = createServer((sock) => {
      connections++
      sock.on('data', (d) => {
        data = Buffer.concat([data, d])
        if (connections === 1) sock.destroy() // drop the first connection after its first message
      })
    })
    await new Promise<void>((r) => stream!.listen(path, r))
    const notifier = createNotifier(
      parseNotifierConfig({ syslog: { transport: 'unix', path, minLevel: 'info' } }),
    )
    const a = messages.rpoBreach({ node: 'hv1', id: 'sys-a' }, { vm: 'web1', lagMs: 8000, rpoMs: 5000 })
    const b = messages.quorumLost(
      { node: 'hv1', id: 'sys-b' },
      { reachableSites: ['A'], neededSites: 2, vms: ['web1'] },
    )
    expect((await notifier.notify(a))[0].result).toBe('sent')
    await until(() => connections === 1 && data.length > 0)
    await new Promise((r) => setTimeout(r, 50))
    let second = await notifier.notify(b)
    // A write on a socket the peer just closed may be reported lost; the next send reconnects.
    if (second[0].result !== 'sent') second = await notifier.notify(b)
    expect(second[0].result).toBe('sent')
    await until(() => data.toString('utf8').includes('sys-b'))
    await notifier.stop()

    const frames: string[] = []
    let rest = data
    while (rest.length) {
      const sp = rest.indexOf(0x20)
      const len = Number(rest.subarray(0, sp).toString())
      frames.push(rest.subarray(sp + 1, sp + 1 + len).toString('utf8'))
      rest = rest.subarray(sp + 1 + len)
    }
    expect(frames.length).toBeGreaterThanOrEqual(2)
    for (const f of frames) expect(RFC5424.test(f)).toBe(true)
    expect(sdParams(RFC5424.exec(frames[0])![7]).id).toBe('sys-a')
    expect(sdParams(RFC5424.exec(frames.at(-1)!)![7]).id).toBe('sys-b')
    expect(Number(RFC5424.exec(frames.at(-1)!)![1])).toBe(3 * 8 + 2) // daemon, critical
    expect(connections).toBe(2)
  })

  it('reports a channel failure without failing the others', async () => {
    const events: HostEvent[] = []
    const notifier = createNotifier(
      parseNotifierConfig({
        syslog: { transport: 'tcp', port: 9, minLevel: 'info' },
        eventLog: { minLevel: 'info' },
      }),
      { hypervisor: { writeEvent: async (e) => void events.push(e) } },
    )
    const n = messages.hostDown(
      { node: 'hv1', id: 'sys-c' },
      { peer: 'hv2', site: 'B', confirmedBySites: ['A', 'C'], vms: [], automatic: [] },
    )
    const results = await notifier.notify(n)
    await notifier.stop()
    expect(results[0]).toMatchObject({ channel: 'syslog', result: 'failed' })
    expect(results[0].error).toMatch(/ECONNREFUSED/)
    expect(results[1]).toEqual({ channel: 'eventlog', result: 'sent' })
    expect(events).toEqual([
      {
        level: 'error',
        eventId: EVENT_IDS['host-down'],
        message: expect.stringContaining('What to decide:'),
      },
    ])
    expect(new EventLogChannel({ writeEvent: async () => {} }, { minLevel: 'info' }).name).toBe('eventlog')
  })
})

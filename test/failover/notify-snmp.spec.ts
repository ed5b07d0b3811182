// SNMP traps from the Notifier arrive at Debian's real snmptrapd, with every answer in a varbind.
import { type ChildProcess, spawn } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNotifier, EVENT_IDS, messages, parseNotifierConfig } from '../../src/failover/index.js'
import { hasTool, oracle } from '../helpers/oracles.js'

const ENTERPRISE = '1.3.6.1.4.1.32473.1'

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r))
  const { port } = s.address()
  await new Promise<void>((r) => s.close(r))
  return port
}

async function waitFor(pred: () => boolean, deadlineMs: number, what: string): Promise<void> {
  const end = Date.now() + deadlineMs
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

describe.runIf(oracle('snmptrapd', hasTool('snmptrapd', ['-v'])))(
  'SNMP trap channel against snmptrapd',
  () => {
    let dir: string
    let trapd: ChildProcess
    let output = ''
    let port: number

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'replimesh-snmp-'))
      port = await freeUdpPort()
      const conf = join(dir, 'snmptrapd.conf')
      await writeFile(conf, `disableAuthorization yes\nsnmpTrapdAddr udp:127.0.0.1:${port}\n`)
      // -f foreground, -Lo log to stdout, -C only our config, -n no DNS, -On numeric OIDs, no MIBs.
      trapd = spawn(
        'snmptrapd',
        ['-f', '-Lo', '-C', '-c', conf, '-n', '-On', '-M', '/dev/null', '-m', '', '-p', join(dir, 'pid')],
        {
          env: { ...process.env, SNMP_PERSISTENT_DIR: dir },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      )
      trapd.stdout!.on('data', (d) => (output += d))
      trapd.stderr!.on('data', (d) => (output += d))
      await waitFor(() => output.includes('NET-SNMP version'), 10_000, 'snmptrapd to start')
    })

    afterAll(async () => {
      // snmptrapd saves its persistent state into `dir` as it exits: remove the folder after.
      if (trapd && trapd.exitCode === null && trapd.signalCode === null) {
        const exited = new Promise<void>((resolve) => trapd.once('exit', () => resolve()))
        trapd.kill('SIGTERM')
        const deadline = setTimeout(() => trapd.kill('SIGKILL'), 5_000)
        await exited
        clearTimeout(deadline)
      }
      await rm(dir, { recursive: true, force: true })
    })

    it('delivers a host-down trap with what failed, what was done and what to decide', async () => {
      const config = parseNotifierConfig({ snmp: { targets: [{ host: '127.0.0.1', port }] } })
      const notifier = createNotifier(config)
      const n = messages.hostDown(
        { node: 'hv1', site: 'A', id: 'trap-test-1' },
        { peer: 'hv2', site: 'B', confirmedBySites: ['A', 'C'], vms: ['web1', 'db1'], automatic: ['web1'] },
      )
      const results = await notifier.notify(n)
      expect(results).toEqual([{ channel: 'snmp', result: 'sent' }])
      await waitFor(() => output.includes('trap-test-1'), 10_000, 'the trap in snmptrapd output')
      await notifier.stop()

      const line = output.split('\n').find((l) => l.includes('trap-test-1'))!
      expect(line).toContain(`.1.3.6.1.6.3.1.1.4.1.0 = OID: .${ENTERPRISE}.0.${EVENT_IDS['host-down']}`)
      expect(line).toContain(`.${ENTERPRISE}.1.1 = STRING: "host-down"`)
      expect(line).toContain(`.${ENTERPRISE}.1.2 = STRING: "critical"`)
      expect(line).toContain(`.${ENTERPRISE}.1.6 = STRING: "hv2"`)
      expect(line).toContain(`.${ENTERPRISE}.1.8 = STRING: "${n.failed}"`)
      expect(line).toContain(`.${ENTERPRISE}.1.9 = STRING: "${n.done}"`)
      expect(line).toContain(`.${ENTERPRISE}.1.10 = STRING: "${n.decide}"`)
    })

    it('skips notifications below the channel level', async () => {
      const notifier = createNotifier(
        parseNotifierConfig({ snmp: { targets: [{ host: '127.0.0.1', port }], minLevel: 'error' } }),
      )
      const n = messages.hostSuspected(
        { node: 'hv1', id: 'trap-test-2' },
        { peer: 'hv2', site: 'B', silentMs: 1500 },
      )
      expect(await notifier.notify(n)).toEqual([{ channel: 'snmp', result: 'skipped' }])
      await notifier.stop()
    })
  },
)

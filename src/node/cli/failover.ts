// `replimesh failover` and `replimesh failback` (DESIGN.md §7): one command for one VM, a host or
// a site, through the running node's API. The node that will run a VM does the promotion; the
// command waits for it and prints what happened (data loss, epoch, time taken).
import type { Command } from 'commander'
import type { FailoverOutcome as Outcome } from '../../failover/index.js'
import { printJson, UsageError } from './output.js'

interface FailoverOptions {
  dir: string
  to?: string
  test?: boolean
  planned?: boolean
  endTest?: boolean
  host?: string
  site?: string
  json?: boolean
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`

function outcomeLine(o: Outcome): string {
  const epoch = o.epoch === null ? 'epoch unchanged, isolated test copy' : `epoch ${o.epoch}`
  return `${o.name} runs on ${o.on} (${epoch}) from point ${o.pointSeq}; data loss ${secs(o.dataLossMs)}; took ${secs(o.tookMs)}\n`
}

/** Checks the combination of options; returns the API request it stands for. */
export function failoverRequest(
  vm: string | undefined,
  o: FailoverOptions,
): { path: string; body: Record<string, unknown> } {
  const targets = [vm !== undefined, o.host !== undefined, o.site !== undefined].filter(Boolean).length
  if (targets !== 1) throw new UsageError('name exactly one of: a VM, --host PEER, --site SITE')
  if (o.test && o.planned) throw new UsageError('--test and --planned cannot be combined')
  if (vm === undefined && (o.to || o.test || o.planned || o.endTest))
    throw new UsageError('--to, --test, --planned and --end-test apply to one VM')
  if (o.endTest && (o.to || o.test || o.planned)) throw new UsageError('--end-test takes only the VM')
  if (o.endTest) return { path: '/failover/test/end', body: { vm } }
  if (vm !== undefined) {
    const mode = o.test ? 'test' : o.planned ? 'planned' : 'manual'
    return { path: '/failover', body: { vm, ...(o.to ? { to: o.to } : {}), mode } }
  }
  return { path: '/failover', body: o.host !== undefined ? { host: o.host } : { site: o.site } }
}

const LONG_MS = 600_000

/** Registers `failover` and `failback`. */
export function register(program: Command): void {
  program
    .command('failover')
    .description('run a VM (or every VM of a host or site) on a replica, with quorum and fencing')
    .argument('[vm]', 'the VM to fail over')
    .requiredOption('--dir <dir>', 'node folder')
    .option('--to <peer>', 'peer id to run it on (default: the best holder of its newest point)')
    .option('--test', 'start an isolated copy; production keeps running')
    .option('--end-test', 'stop and remove the test copy of the VM')
    .option('--planned', 'final sync with the VM paused, no data loss')
    .option('--host <peer>', 'every VM of this host')
    .option('--site <site>', 'every VM of every host of this site')
    .option('--json', 'print JSON')
    .action(async (vm: string | undefined, o: FailoverOptions) => {
      const req = failoverRequest(vm, o)
      const { callDaemon } = await import('../client.js')
      const result = await callDaemon<unknown>(o.dir, 'POST', req.path, {
        body: req.body,
        timeoutMs: LONG_MS,
      })
      if (o.json) return printJson(result)
      if (req.path === '/failover/test/end') return void process.stdout.write(`test copy of ${vm} removed\n`)
      if (vm !== undefined) return void process.stdout.write(outcomeLine(result as Outcome))
      const r = result as {
        hosts: string[]
        vms: Array<{ vm: string; ok: boolean; on: string | null; error?: string; warning?: string }>
      }
      for (const row of r.vms)
        process.stdout.write(
          row.ok
            ? `${row.vm}: runs on ${row.on}${row.warning ? ` (WARNING: ${row.warning})` : ''}\n`
            : `${row.vm}: NOT failed over: ${row.error}\n`,
        )
      if (r.vms.some((row) => !row.ok)) process.exitCode = 1
    })

  program
    .command('failback')
    .description('bring a failed-over VM back to its previous host (or --to another)')
    .argument('<vm>', 'the VM to bring back')
    .requiredOption('--dir <dir>', 'node folder')
    .option('--to <peer>', 'peer id to run it on (default: its previous owner)')
    .option('--json', 'print JSON')
    .action(async (vm: string, o: { dir: string; to?: string; json?: boolean }) => {
      const { callDaemon } = await import('../client.js')
      const result = await callDaemon<Outcome>(o.dir, 'POST', '/failback', {
        body: { vm, ...(o.to ? { to: o.to } : {}) },
        timeoutMs: LONG_MS,
      })
      if (o.json) return printJson(result)
      process.stdout.write(outcomeLine(result))
    })
}

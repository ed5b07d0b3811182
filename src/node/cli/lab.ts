// `replimesh lab up | down` (DESIGN.md §7): a topology simulated on this one machine before any
// hardware is bought. `lab up` forms a mesh of N sites × M hosts (real node processes on loopback,
// one folder each under --dir, joined with real tokens), creates and starts K lab VMs per host and
// protects them as the topology says:
//   chain  a VM of site i goes along the next sites in turn (i+1 → i+2 → … wrapping), `--chain`
//   mesh   a VM goes to every other site at once (fan-out)
//   hub    every site's VMs go to site 1, the hub (over-subscribed up to --hub-ratio in each node's
//          failover.json), and the hub's own VMs to site 2
// A target site's host is the one with the same index (host j → host j mod M), so the layout is
// predictable. It waits until every target committed a point, prints a summary (--json: the same
// record it keeps in <dir>/lab.json), then stays in the foreground until Ctrl-C or SIGTERM and stops
// every node; with --detach it leaves them running and `lab down --dir DIR` stops them by the pids
// recorded in lab.json.
import { type Command, InvalidArgumentError, Option } from 'commander'
import { parseDurationMs, parseSize, printJson, UsageError } from './output.js'

export type Topology = 'chain' | 'mesh' | 'hub'

/** What `lab up` keeps in <dir>/lab.json and prints with --json. */
export interface LabRecord {
  v: 1
  topology: Topology
  sites: number
  hostsPerSite: number
  vmsPerHost: number
  hubRatio: number | null
  /** Simulated sizes each node gossips (REPLIMESH_CAPACITY), or null: this machine's own. */
  capacity: {
    hostMemoryBytes?: number
    hubMemoryBytes?: number
    hostCpus?: number
    hostDiskBytes?: number
  } | null
  dir: string
  createdAt: number
  /** The process that stays in the foreground for it; null once detached or stopped. */
  launcherPid: number | null
  detached: boolean
  nodes: Array<{ name: string; site: string; dir: string; pid: number; peerId: string }>
  vms: Array<{
    name: string
    node: string
    site: string
    chain: boolean
    targets: Array<{ node: string; site: string; peerId: string }>
  }>
  stoppedAt: number | null
}

export interface LabUpOptions {
  dir: string
  topology: Topology
  sites: number
  hostsPerSite: number
  vms: number
  vmSize: number
  rpoMs: number
  rtoMs: number
  hubRatio: number
  hostMemory?: number
  hubMemory?: number
  hostCpus?: number
  hostDisk?: number
  detach: boolean
  json: boolean
}

/** Bounds that keep a lab runnable on one machine (each node is a process with its own store). */
export const LAB_LIMITS = { sites: 16, hostsPerSite: 8, nodes: 32, vmsPerHost: 16 }

const intIn = (flag: string, min: number, max: number) => (text: string) => {
  if (!/^\d+$/.test(text.trim())) throw new InvalidArgumentError(`${flag} must be a whole number`)
  const n = Number(text)
  if (n < min || n > max) throw new InvalidArgumentError(`${flag} must be between ${min} and ${max}`)
  return n
}

const ratio = (text: string) => {
  const n = Number(text)
  if (!Number.isFinite(n) || n < 1 || n > 4)
    throw new InvalidArgumentError('--hub-ratio must be between 1 and 4')
  return n
}

const positiveMs = (flag: string) => (text: string) => {
  const ms = parseDurationMs(text)
  if (ms <= 0) throw new InvalidArgumentError(`${flag} must be a positive duration`)
  return ms
}

/** Site names are site1…siteN; node j of site i is site<i>-h<j>; its VM k is site<i>-h<j>-vm<k>. */
export const siteName = (i: number) => `site${i + 1}`

/** The target sites (indexes) of a VM at site `i` for a topology of `n` sites, in serving order. */
export function targetSites(topology: Topology, i: number, n: number): number[] {
  const others = Array.from({ length: n - 1 }, (_, k) => (i + 1 + k) % n)
  if (topology === 'hub') return [i === 0 ? 1 : 0]
  return others
}

export function register(program: Command): void {
  const lab = program
    .command('lab')
    .description('simulate a topology on this machine: real nodes on loopback, lab VMs, protection')
  lab
    .command('up')
    .description('build and start a lab mesh of N sites × M hosts with K protected lab VMs per host')
    .requiredOption('--dir <dir>', 'lab folder (new or empty): one node folder per host inside')
    .addOption(
      new Option('--topology <topology>', 'how VMs are protected across sites')
        .choices(['chain', 'mesh', 'hub'])
        .makeOptionMandatory(),
    )
    .requiredOption(
      '--sites <n>',
      `number of sites (2-${LAB_LIMITS.sites})`,
      intIn('--sites', 2, LAB_LIMITS.sites),
    )
    .option(
      '--hosts-per-site <m>',
      `hosts per site (1-${LAB_LIMITS.hostsPerSite})`,
      intIn('--hosts-per-site', 1, LAB_LIMITS.hostsPerSite),
      1,
    )
    .option(
      '--vms <k>',
      `lab VMs per host (0-${LAB_LIMITS.vmsPerHost})`,
      intIn('--vms', 0, LAB_LIMITS.vmsPerHost),
      1,
    )
    .option('--vm-size <size>', 'disk size of each lab VM (16M)', parseSize, 16 * 2 ** 20)
    .option('--rpo <duration>', 'RPO each VM is protected with (5s)', positiveMs('--rpo'), 5_000)
    .option('--rto <duration>', 'RTO each VM is protected with (2m)', positiveMs('--rto'), 120_000)
    .option(
      '--hub-ratio <ratio>',
      'hub topology: memory the hub may promise, times its total (1.5)',
      ratio,
      1.5,
    )
    .option('--host-memory <size>', 'simulated memory of each host (default: this machine’s)', parseSize)
    .option(
      '--hub-memory <size>',
      'hub topology: simulated memory of each site1 host (default --host-memory)',
      parseSize,
    )
    .option('--host-cpus <n>', 'simulated CPUs of each host', intIn('--host-cpus', 1, 4096))
    .option('--host-disk <size>', 'simulated disk of each host', parseSize)
    .option('--detach', 'leave the nodes running and return (stop them with lab down)')
    .option('--json', 'print the summary as JSON (progress goes to stderr)')
    .action(
      async (
        o: Omit<LabUpOptions, 'rpoMs' | 'rtoMs' | 'detach' | 'json'> & {
          rpo: number
          rto: number
          detach?: boolean
          json?: boolean
        },
      ) => {
        if (o.sites * o.hostsPerSite > LAB_LIMITS.nodes)
          throw new UsageError(
            `${o.sites} sites × ${o.hostsPerSite} hosts is ${o.sites * o.hostsPerSite} nodes; at most ${LAB_LIMITS.nodes} on one machine`,
          )
        if (o.vmSize < 2 ** 20) throw new UsageError('--vm-size must be at least 1M')
        for (const [flag, size] of [
          ['--host-memory', o.hostMemory],
          ['--hub-memory', o.hubMemory],
          ['--host-disk', o.hostDisk],
        ] as const)
          if (size !== undefined && size < 2 ** 20) throw new UsageError(`${flag} must be at least 1M`)
        if (o.hubMemory !== undefined && o.topology !== 'hub')
          throw new UsageError('--hub-memory needs --topology hub')
        const { labUp } = await import('./lab-run.js')
        await labUp({
          dir: o.dir,
          topology: o.topology,
          sites: o.sites,
          hostsPerSite: o.hostsPerSite,
          vms: o.vms,
          vmSize: o.vmSize,
          rpoMs: o.rpo,
          rtoMs: o.rto,
          hubRatio: o.hubRatio,
          hostMemory: o.hostMemory,
          hubMemory: o.hubMemory,
          hostCpus: o.hostCpus,
          hostDisk: o.hostDisk,
          detach: o.detach === true,
          json: o.json === true,
        })
      },
    )
  lab
    .command('down')
    .description('stop every node of a lab left running with lab up --detach')
    .requiredOption('--dir <dir>', 'the lab folder')
    .option('--json', 'print {stopped: [{name, pid, result}]}')
    .action(async (o: { dir: string; json?: boolean }) => {
      const { labDown } = await import('./lab-run.js')
      const stopped = await labDown(o.dir)
      if (o.json) printJson({ stopped })
      else for (const s of stopped) process.stdout.write(`${s.name}  pid ${s.pid}  ${s.result}\n`)
    })
}

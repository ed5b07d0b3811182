// `replimesh vm …`: the lab hypervisor's VMs (DESIGN.md §7). create, ls and records work on the
// node folder's files with or without a running node; start, stop and write go through the
// running node's API, because the node owns the guest processes.
import { type Command, InvalidArgumentError, Option } from 'commander'
import type { RecordSummary, VmInfo } from '../../hyperv/index.js'
import { parseCount, parseDurationMs, parseSize, printJson, readStdin, UsageError } from './output.js'

async function hyperv() {
  return import('../../hyperv/index.js')
}

async function client() {
  return import('../client.js')
}

async function vmsDirOf(dir: string): Promise<string> {
  const { nodePaths } = await import('../paths.js')
  return nodePaths(dir).vms
}

/** The offline view: the lab hypervisor over the folder, not started (it never stops guests). */
async function offlineHypervisor(dir: string) {
  const { createLabHypervisor } = await hyperv()
  return createLabHypervisor({ vmsDir: await vmsDirOf(dir) })
}

const parseFraction = (text: string) => {
  const n = Number(text)
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError(`'${text}' is not a fraction in (0, 1]`)
  return n
}

const lsRow = (vm: VmInfo) => ({
  name: vm.name,
  id: vm.id,
  state: vm.state,
  disks: vm.disks.map((d) => ({ path: d.path, format: d.format, virtualSize: d.virtualSize })),
  nics: vm.nics,
})

const iso = (ms: number) => (ms > 0 ? new Date(ms).toISOString() : 'never')

function recordsText(r: RecordSummary): string {
  if (r.lastSeq === 0) return 'no records on this disk\n'
  const begun = r.startSeq === 0 ? 'on an empty stream' : `after record #${r.startSeq} (${iso(r.startTime)})`
  return `last record #${r.lastSeq} at ${iso(r.lastTime)}; this run of the VM began ${begun}\n`
}

interface WorkloadFlags {
  rate?: number
  blockSize?: number
  pattern?: 'random' | 'sequential'
  hotSet?: number
  workload?: boolean
}

interface CreateOptions extends WorkloadFlags {
  dir: string
  size: number
  disks: number
  format: 'vhdx' | 'vhd' | 'raw'
  recordInterval?: number
  json?: boolean
}

interface StartOptions {
  dir: string
  rate?: number
  blockSize?: number
  pattern?: 'random' | 'sequential'
  hotSet?: number
  workload?: boolean
  json?: boolean
}

function workloadOf(o: WorkloadFlags) {
  const w = {
    ...(o.rate !== undefined ? { rateBytesPerSec: o.rate } : {}),
    ...(o.blockSize !== undefined ? { blockBytes: o.blockSize } : {}),
    ...(o.pattern !== undefined ? { pattern: o.pattern } : {}),
    ...(o.hotSet !== undefined ? { hotSetFraction: o.hotSet } : {}),
    ...(o.workload === false ? { enabled: false } : {}),
  }
  if (w.blockBytes !== undefined && w.blockBytes % 512 !== 0)
    throw new UsageError(`--block-size must be a multiple of 512, got ${w.blockBytes}`)
  return Object.keys(w).length > 0 ? w : undefined
}

export function register(program: Command): void {
  const vm = program.command('vm').description('lab hypervisor VMs: create, start, stop, write, records, ls')

  vm.command('create <name>')
    .description('create a lab VM: a folder with vm.json and new disks (no node needed)')
    .requiredOption('--dir <dir>', 'node folder')
    .requiredOption('--size <size>', 'size of each disk (512M, 2G)', parseSize)
    .option('--disks <n>', 'number of disks', parseCount, 1)
    .addOption(new Option('--format <format>', 'disk format').choices(['vhdx', 'vhd', 'raw']).default('vhdx'))
    .option('--rate <size>', 'workload bytes per second when it runs (default 0: records only)', parseSize)
    .option('--block-size <size>', 'workload write size (default 4K)', parseSize)
    .addOption(
      new Option('--pattern <pattern>', 'workload pattern (default random)').choices([
        'random',
        'sequential',
      ]),
    )
    .option('--hot-set <fraction>', 'fraction of each disk random writes hit (default 1)', parseFraction)
    .option(
      '--record-interval <duration>',
      'how often the guest appends a record (default 50ms)',
      parseDurationMs,
    )
    .option('--json', 'print the catalogue entry as JSON')
    .action(async (name: string, o: CreateOptions) => {
      const hv = await offlineHypervisor(o.dir)
      const workload = workloadOf(o)
      await hv.createVm(name, {
        sizeBytes: o.size,
        disks: o.disks,
        format: o.format,
        ...(workload ? { workload } : {}),
        ...(o.recordInterval ? { recordIntervalMs: o.recordInterval } : {}),
      })
      const info = await hv.getVm(name)
      if (o.json) printJson(lsRow(info))
      else
        process.stdout.write(
          `created VM ${info.name} (${info.id}): ${info.disks.map((d) => d.path).join(', ')}\n`,
        )
    })

  vm.command('start <name>')
    .description('start a lab VM on the running node (its guest process writes the workload)')
    .requiredOption('--dir <dir>', 'node folder')
    .option('--rate <size>', 'workload bytes per second (overrides vm.json for this run)', parseSize)
    .option('--block-size <size>', 'workload write size', parseSize)
    .addOption(new Option('--pattern <pattern>', 'workload pattern').choices(['random', 'sequential']))
    .option('--hot-set <fraction>', 'fraction of each disk random writes hit', parseFraction)
    .option('--no-workload', 'run with the record stream only')
    .option('--json', 'print the VM as JSON')
    .action(async (name: string, o: StartOptions) => {
      const { callDaemon } = await client()
      const workload = workloadOf(o)
      const info = await callDaemon<VmInfo>(o.dir, 'POST', `/vms/${encodeURIComponent(name)}/start`, {
        body: workload ? { workload } : {},
      })
      if (o.json) printJson(lsRow(info))
      else process.stdout.write(`VM ${info.name} is ${info.state}\n`)
    })

  vm.command('stop <name>')
    .description('stop a lab VM on the running node (--force: pull the plug, as a crash would)')
    .requiredOption('--dir <dir>', 'node folder')
    .option('--force', 'kill the guest instead of a clean shutdown')
    .option('--json', 'print the VM as JSON')
    .action(async (name: string, o: { dir: string; force?: boolean; json?: boolean }) => {
      const { callDaemon } = await client()
      const info = await callDaemon<VmInfo>(o.dir, 'POST', `/vms/${encodeURIComponent(name)}/stop`, {
        body: o.force ? { force: true } : {},
      })
      if (o.json) printJson(lsRow(info))
      else process.stdout.write(`VM ${info.name} is ${info.state}\n`)
    })

  vm.command('write <name>')
    .description("write stdin's bytes into a running VM's disk, through its guest")
    .requiredOption('--dir <dir>', 'node folder')
    .requiredOption('--offset <n>', 'virtual byte offset', parseCount)
    .option('--disk <i>', 'disk index', parseCount, 0)
    .option('--json', 'print {vm, disk, offset, bytes}')
    .action(async (name: string, o: { dir: string; offset: number; disk: number; json?: boolean }) => {
      const { callDaemon } = await client()
      const data = await readStdin()
      if (data.length === 0) throw new UsageError('nothing on stdin to write')
      const r = await callDaemon<{ bytes: number }>(o.dir, 'POST', `/vms/${encodeURIComponent(name)}/write`, {
        body: { disk: o.disk, offset: o.offset, data: data.toString('base64') },
        timeoutMs: 120_000,
      })
      if (o.json) printJson(r)
      else process.stdout.write(`wrote ${r.bytes} bytes to disk ${o.disk} of ${name} at offset ${o.offset}\n`)
    })

  vm.command('records [name]')
    .description("the guest's record stream as this node's copy of the disk holds it (no node needed)")
    .option('--dir <dir>', 'node folder (with <name>)')
    .option('--disk-file <file>', 'read this disk file instead (any copy of a lab disk)')
    .option('--json', 'print {lastSeq, lastTime, startSeq, startTime}')
    .action(async (name: string | undefined, o: { dir?: string; diskFile?: string; json?: boolean }) => {
      const { readDiskRecords } = await hyperv()
      let file = o.diskFile
      if (!file) {
        if (!name || !o.dir) throw new UsageError('give --dir DIR <name>, or --disk-file FILE')
        file = (await (await offlineHypervisor(o.dir)).getVm(name)).disks[0].path
      }
      const r = await readDiskRecords(file)
      if (o.json) printJson(r)
      else process.stdout.write(recordsText(r))
    })

  vm.command('ls')
    .description("this node's lab VMs (live state from the running node, else from the folder)")
    .requiredOption('--dir <dir>', 'node folder')
    .option('--json', 'print [{name, id, state, disks, nics}]')
    .action(async (o: { dir: string; json?: boolean }) => {
      const { callDaemon, DaemonUnavailableError } = await client()
      let vms: VmInfo[]
      try {
        vms = await callDaemon<VmInfo[]>(o.dir, 'GET', '/vms')
      } catch (err) {
        if (!(err instanceof DaemonUnavailableError)) throw err
        vms = await (await offlineHypervisor(o.dir)).listVms()
      }
      if (o.json) printJson(vms.map(lsRow))
      else if (vms.length === 0) process.stdout.write('no VMs\n')
      else
        for (const v of vms)
          process.stdout.write(
            `${v.name.padEnd(20)} ${v.state.padEnd(9)} ${v.id}  ${v.disks.map((d) => `${d.format}:${d.virtualSize}`).join(' ')}\n`,
          )
    })
}

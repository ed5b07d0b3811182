// `replimesh protect | points | restore` (DESIGN.md §7). protect asks the running node; points and
// restore ask it too, or open the node's store directly when no node runs on the folder.
import { type Command, InvalidArgumentError, Option } from 'commander'
import { parseCount, parseDurationMs, printJson } from './output.js'

interface PointRow {
  vm: string
  seq: number
  epoch: number
  time: number
  consistency: string
  source: string
  disks: Array<{ disk: number; virtualSize: number; chunkSize: number; root: string }>
}

const positiveSeconds = (text: string) => {
  const ms = parseDurationMs(text)
  if (ms <= 0) throw new InvalidArgumentError(`'${text}' must be a positive duration`)
  return ms / 1000
}

const targetList = (text: string) => {
  const list = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  if (list.length === 0) throw new InvalidArgumentError('--to needs at least one peer id or site')
  return list
}

const positiveCount = (text: string) => {
  const n = parseCount(text)
  if (n < 1) throw new InvalidArgumentError('--copies must be at least 1')
  return n
}

/** Calls the node on `dir`; when none runs, `offline` answers from the folder's store instead. */
async function withNode<T>(
  _dir: string,
  online: (call: typeof import('../client.js').callDaemon) => Promise<T>,
  offline?: () => Promise<T>,
): Promise<T> {
  const { callDaemon, DaemonUnavailableError } = await import('../client.js')
  try {
    return await online(callDaemon)
  } catch (err) {
    if (offline && err instanceof DaemonUnavailableError) return offline()
    throw err
  }
}

async function offlineStore(dir: string) {
  const [{ openChunkStore }, { nodePaths }] = await Promise.all([
    import('../../chunkstore/index.js'),
    import('../paths.js'),
  ])
  return openChunkStore({ dir: nodePaths(dir).store })
}

export function register(program: Command): void {
  program
    .command('protect <vm>')
    .description(
      'protect a VM of this node: replicate it continuously to peers, chosen by name, site or policy',
    )
    .requiredOption('--dir <dir>', 'node folder')
    .requiredOption('--rpo <duration>', 'most data the VM may lose (5s, 1m)', positiveSeconds)
    .requiredOption('--rto <duration>', 'how fast it must run again (2m)', positiveSeconds)
    .option(
      '--to <targets>',
      'comma-separated peer ids or sites (a site stands for its best peer)',
      targetList,
    )
    .option('--chain', 'forward along the targets (A→B→C) instead of fanning out from the source')
    .option(
      '--copies <n>',
      'copies by policy: N targets, at least one at another site, with room',
      positiveCount,
    )
    .option('--json', 'print JSON')
    .action(
      async (
        vm: string,
        o: {
          dir: string
          rpo: number
          rto: number
          to?: string[]
          chain?: boolean
          copies?: number
          json?: boolean
        },
      ) => {
        const r = await withNode(o.dir, (call) =>
          call<{ vm: string; targets: string[]; rpoSeconds: number; chain: boolean }>(
            o.dir,
            'POST',
            '/replication/protect',
            {
              body: {
                vm,
                rpoSeconds: o.rpo,
                rtoSeconds: o.rto,
                to: o.to ?? null,
                chain: o.chain ?? false,
                copies: o.copies ?? null,
              },
            },
          ),
        )
        if (o.json) printJson(r)
        else
          process.stdout.write(
            `protecting ${r.vm} (RPO ${r.rpoSeconds}s) ${r.chain ? 'along the chain' : 'to'} ${r.targets.join(r.chain ? ' → ' : ', ')}\n`,
          )
      },
    )

  program
    .command('points <vm>')
    .description('recovery points of a VM held on this node')
    .requiredOption('--dir <dir>', 'node folder')
    .option('--json', 'print JSON')
    .action(async (vm: string, o: { dir: string; json?: boolean }) => {
      const rows = await withNode<PointRow[]>(
        o.dir,
        (call) => call(o.dir, 'GET', `/replication/points/${encodeURIComponent(vm)}`),
        async () => {
          const store = await offlineStore(o.dir)
          try {
            const { pointSummary } = await import('../../replication/index.js')
            return (await store.listPoints(vm)).map(pointSummary)
          } finally {
            await store.close()
          }
        },
      )
      if (o.json) printJson(rows)
      else if (rows.length === 0) process.stdout.write(`no recovery points of ${vm} on this node\n`)
      else
        for (const p of rows)
          process.stdout.write(
            `${p.vm}@${p.seq}  ${new Date(p.time).toISOString()}  ${p.consistency}  from ${p.source}\n`,
          )
    })

  program
    .command('restore <vm>')
    .description('write one disk of a recovery point (default: the newest) to a new file')
    .requiredOption('--dir <dir>', 'node folder')
    .requiredOption('--out <file>', 'file to create')
    .option('--point <seq>', 'sequence number of the point', parseCount)
    .option('--disk <i>', 'disk index', parseCount, 0)
    .addOption(new Option('--to <format>', 'output format').choices(['raw', 'vhdx']).default('raw'))
    .option('--json', 'print JSON')
    .action(
      async (
        vm: string,
        o: { dir: string; out: string; point?: number; disk: number; to: 'raw' | 'vhdx'; json?: boolean },
      ) => {
        const { resolve } = await import('node:path')
        const out = resolve(o.out)
        const r = await withNode<{ point: { seq: number }; disk: number; bytesWritten: number }>(
          o.dir,
          (call) =>
            call(o.dir, 'POST', '/replication/restore', {
              body: { vm, seq: o.point, disk: o.disk, out, format: o.to },
              timeoutMs: 3_600_000,
            }),
          async () => {
            const [{ materialise }, { createDisk }] = await Promise.all([
              import('../../chunkstore/index.js'),
              import('../../hyperv/index.js'),
            ])
            const store = await offlineStore(o.dir)
            try {
              const point =
                o.point === undefined ? await store.lastPoint(vm) : await store.getPoint(`${vm}@${o.point}`)
              if (!point) throw new Error(`no recovery point of VM '${vm}' on this node`)
              const d = point.disks[o.disk]
              if (!d) throw new Error(`point ${vm}@${point.seq} has no disk ${o.disk}`)
              const target = await createDisk(out, { format: o.to, virtualSize: d.virtualSize })
              try {
                const m = await materialise(store, point, o.disk, target, { targetIsZero: true })
                return { point: { seq: point.seq }, disk: o.disk, bytesWritten: m.bytesWritten }
              } finally {
                await target.close()
              }
            } finally {
              await store.close()
            }
          },
        )
        if (o.json) printJson({ ...r, out })
        else process.stdout.write(`restored ${vm}@${r.point.seq} disk ${r.disk} to ${out}\n`)
      },
    )
}

// `replimesh protect | points | restore` (DESIGN.md §7). protect asks the running node; points and
// restore ask it too, or open the node's store directly when no node runs on the folder (offline, that
// store only; a running node fetches a point or chunks it lacks from the VM's holders).
import { type Command, InvalidArgumentError, Option } from 'commander'
import type { LinkStatus } from '../../replication/index.js'
import { parseCount, parseDurationMs, printJson, UsageError } from './output.js'

interface PointRow {
  vm: string
  seq: number
  epoch: number
  time: number
  consistency: string
  source: string
  disks: Array<{ disk: number; virtualSize: number; chunkSize: number; root: string }>
  /** Who signed the point (its producing node) and whether the signature verifies over it. */
  signature?: { signer: string | null; verified: boolean; reason?: string }
}

function signatureText(p: PointRow): string {
  const s = p.signature
  if (!s || s.signer === null) return 'unsigned'
  return s.verified ? `signed by ${s.signer}` : `signature NOT verified (${s.reason ?? 'no reason given'})`
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
    .option(
      '--wait',
      'wait until every target committed the seed (default on a terminal, with progress bars)',
    )
    .option('--no-wait', 'return as soon as protection is set up')
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
          wait?: boolean
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
        const tty = Boolean(process.stderr.isTTY) && !o.json
        if (!(o.wait ?? tty)) return
        const { callDaemon } = await import('../client.js')
        const { followSeed } = await import('./seed-progress.js')
        const lines = await followSeed(
          r.vm,
          async () =>
            (
              await callDaemon<{ targets: import('./seed-progress.js').TargetRow[] }>(
                o.dir,
                'GET',
                `/replication/vms/${encodeURIComponent(r.vm)}`,
              )
            ).targets,
          { tty },
        )
        if (!o.json)
          process.stdout.write(
            `seeded ${r.vm} on ${lines.map((l) => `${l.peer} (point ${l.seq})`).join(', ')}\n`,
          )
      },
    )

  registerLinks(program)

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
            const { summarisePoints } = await import('../../replication/index.js')
            return summarisePoints(await store.listPoints(vm))
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
            `${p.vm}@${p.seq}  ${new Date(p.time).toISOString()}  ${p.consistency}  from ${p.source}  ${signatureText(p)}\n`,
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
        const r = await withNode<{
          point: { seq: number }
          disk: number
          bytesWritten: number
          pulled?: { pointFrom: string | null; chunks: number; byPeer: Record<string, { chunks: number }> }
        }>(
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
        else {
          // A point or chunks this node lacked came from the VM's holders (the daemon fetched them).
          const from = r.pulled
            ? ` (${r.pulled.chunks} chunk(s) fetched from ${Object.values(r.pulled.byPeer).filter((p) => p.chunks > 0).length} peer(s)${r.pulled.pointFrom ? `, the point from ${r.pulled.pointFrom}` : ''})`
            : ''
          process.stdout.write(`restored ${vm}@${r.point.seq} disk ${r.disk} to ${out}${from}\n`)
        }
      },
    )
}

/** `replimesh link set|rm|ls`: per-link limits, schedules and compression in <dir>/links.json. */
function registerLinks(program: Command): void {
  const link = program
    .command('link')
    .description('bandwidth limits, schedules and compression per peer, site or * (<dir>/links.json)')

  link
    .command('set <to>')
    .description('set the link to a peer id, a site (one link shared by its peers) or * (any other peer)')
    .requiredOption('--dir <dir>', 'node folder')
    .option(
      '--limit <spec>',
      'a rate (20M = 20 MiB/s, 100mbit, unlimited) or a schedule: "mon-fri 08:00-18:00 20M, else unlimited"',
    )
    .addOption(
      new Option('--compress <mode>', 'compress chunks on the wire (auto: when limited or WAN)').choices([
        'auto',
        'on',
        'off',
      ]),
    )
    .option('--wan', 'the link crosses a WAN (compression pays even unlimited)')
    .option('--no-wan', 'the link is a LAN')
    .option('--json', 'print the entry as JSON')
    .action(
      async (
        to: string,
        o: { dir: string; limit?: string; compress?: 'auto' | 'on' | 'off'; wan?: boolean; json?: boolean },
      ) => {
        const { parseSchedule, LinkSettingsError } = await import('../../replication/index.js')
        if (o.limit !== undefined) {
          try {
            parseSchedule(o.limit)
          } catch (err) {
            if (err instanceof LinkSettingsError) throw new UsageError(`--limit: ${err.message}`)
            throw err
          }
        }
        const entry = await editLinks(o.dir, (links) => {
          const old = links.find((l) => l.to === to)
          const next = {
            to,
            limit: o.limit ?? old?.limit ?? 'unlimited',
            compress: o.compress ?? old?.compress ?? 'auto',
            wan: o.wan ?? old?.wan ?? false,
          }
          return { links: [...links.filter((l) => l.to !== to), next], result: next }
        })
        const applied = await applyLinks(o.dir)
        if (o.json) printJson({ ...entry, applied })
        else
          process.stdout.write(
            `link ${entry.to}: limit ${entry.limit}, compression ${entry.compress}${entry.wan ? ', WAN' : ''} (${applied ? 'applied by the running node' : 'the node applies it when it starts'})\n`,
          )
      },
    )

  link
    .command('rm <to>')
    .description('remove the settings of a link (it becomes unlimited, uncompressed)')
    .requiredOption('--dir <dir>', 'node folder')
    .action(async (to: string, o: { dir: string }) => {
      await editLinks(o.dir, (links) => {
        if (!links.some((l) => l.to === to)) throw new Error(`no link settings for '${to}' in ${o.dir}`)
        return { links: links.filter((l) => l.to !== to), result: null }
      })
      const applied = await applyLinks(o.dir)
      process.stdout.write(
        `link ${to}: settings removed (${applied ? 'applied by the running node' : 'the node applies it when it starts'})\n`,
      )
    })

  link
    .command('ls')
    .description('link settings, and what the running node measures on each link')
    .requiredOption('--dir <dir>', 'node folder')
    .option('--json', 'print JSON')
    .action(async (o: { dir: string; json?: boolean }) => {
      const { links } = await readLinks(o.dir)
      const live = await withNode<LinkStatus[] | null>(
        o.dir,
        (call) => call(o.dir, 'GET', '/replication/links'),
        async () => null,
      )
      if (o.json) return printJson({ settings: links, live })
      const MiB = 1024 * 1024
      if (links.length === 0)
        process.stdout.write('no link settings: every link is unlimited, uncompressed\n')
      for (const l of links)
        process.stdout.write(`${l.to}: limit ${l.limit}, compression ${l.compress}${l.wan ? ', WAN' : ''}\n`)
      for (const l of live ?? []) {
        const c = l.compressionStats
        const ratio =
          c.compressed > 0
            ? `, ${c.compressed} chunks sent compressed (${(c.rawBytes / MiB).toFixed(1)} → ${(c.wireBytes / MiB).toFixed(1)} MiB)`
            : ''
        const now =
          l.limitBytesPerSecond === null ? 'unlimited' : `${(l.limitBytesPerSecond / MiB).toFixed(1)} MiB/s`
        process.stdout.write(
          `  now ${l.name}: ${(l.rateBytesPerSecond / MiB).toFixed(1)} MiB/s (limit ${now}), ${(l.bytesSent / MiB).toFixed(0)} MiB sent${ratio}\n`,
        )
      }
    })
}

type LinkEntry = import('../../replication/index.js').LinkEntry

/** Asks the running node to re-read links.json; false when no node runs in `dir`. */
async function applyLinks(dir: string): Promise<boolean> {
  return withNode(
    dir,
    async (call) => {
      await call(dir, 'POST', '/replication/links/reload')
      return true
    },
    async () => false,
  )
}

async function readLinks(dir: string): Promise<{ file: string; links: LinkEntry[] }> {
  const [{ readFile, stat }, { join }, { LINKS_FILE, parseLinksFile }] = await Promise.all([
    import('node:fs/promises'),
    import('node:path'),
    import('../../replication/index.js'),
  ])
  const { nodePaths } = await import('../paths.js')
  try {
    await stat(nodePaths(dir).config)
  } catch {
    throw new Error(`${dir} holds no node (no node.json)`)
  }
  const file = join(dir, LINKS_FILE)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    return { file, links: [] }
  }
  return { file, links: parseLinksFile(text, file).links }
}

/** Reads, changes, validates as a whole and atomically rewrites <dir>/links.json. */
async function editLinks<R>(
  dir: string,
  change: (links: LinkEntry[]) => { links: LinkEntry[]; result: R },
): Promise<R> {
  const { file, links } = await readLinks(dir)
  const { links: next, result } = change(links)
  const { parseLinksFile } = await import('../../replication/index.js')
  const text = `${JSON.stringify({ links: next }, null, 2)}\n`
  parseLinksFile(text, file)
  const { writeFile, rename } = await import('node:fs/promises')
  await writeFile(`${file}.tmp`, text)
  await rename(`${file}.tmp`, file)
  return result
}

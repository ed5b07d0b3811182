// `replimesh store ...`: the chunk store on the command line (DESIGN.md §7). Points are named
// `<vm>@<seq>`. Heavy modules load inside the actions.
import { readFile, rm } from 'node:fs/promises'
import { basename, extname } from 'node:path'
import { type Command, InvalidArgumentError, Option } from 'commander'
import { parseCount, parseSize, printJson, UsageError } from './output.js'

interface StoreOpts {
  store: string
  json?: boolean
}

async function openStore(dir: string, compress = false) {
  const { openChunkStore } = await import('../../chunkstore/index.js')
  // One bulk ingest bound by the disk: the kernel's writeback is faster there (ChunkStoreInit).
  return openChunkStore({ dir, compression: compress ? 'deflate' : 'off', packWrites: 'buffered' })
}

/** A one-line progress meter on stderr, only for people at a terminal. */
function progress(enabled: boolean, label: string) {
  if (!enabled || !process.stderr.isTTY) return { update: (_d: number, _t: number) => {}, done: () => {} }
  let last = 0
  return {
    update(done: number, total: number) {
      const now = Date.now()
      if (now - last < 200) return
      last = now
      process.stderr.write(`\r${label} ${((100 * done) / Math.max(1, total)).toFixed(1)}%   `)
    },
    done: () => process.stderr.write('\r\x1b[K'),
  }
}

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`

function parseVmName(text: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(text))
    throw new InvalidArgumentError(`'${text}' is not a VM name (letters, digits, . _ -)`)
  return text
}

async function readRanges(file: string): Promise<{ start: number; length: number }[]> {
  let value: unknown
  try {
    value = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    throw new UsageError(`--changed-ranges ${file}: ${(err as Error).message}`)
  }
  const ok =
    Array.isArray(value) &&
    value.every(
      (r) =>
        Number.isSafeInteger(r?.start) && Number.isSafeInteger(r?.length) && r.start >= 0 && r.length >= 0,
    )
  if (!ok) throw new UsageError(`--changed-ranges ${file}: expected [{"start": N, "length": N}, ...]`)
  return value as { start: number; length: number }[]
}

function registerPut(store: Command): void {
  store
    .command('put')
    .description('store a disk (or the disks of one VM) as a new recovery point <vm>@<seq>')
    .requiredOption('--store <dir>', 'store directory (created if missing)')
    .argument('<disks...>', 'disk image(s): VHDX, VHD or raw')
    .option('--vm <name>', 'VM the point belongs to (default: the first disk file name)', parseVmName)
    .option('--chunk-size <size>', 'chunk size, a power of two (default 256K)', parseSize)
    .option('--changed-ranges <file>', "JSON [{start,length}] written since the VM's last point (one disk)")
    .option('--compress', 'deflate chunks that shrink by 10% or more (for WAN-bound stores)')
    .option('--json', 'print {point, root, chunks, newChunks, newBytes}')
    .action(
      async (
        paths: string[],
        opts: StoreOpts & { vm?: string; chunkSize?: number; changedRanges?: string; compress?: boolean },
      ) => {
        const vm =
          opts.vm ?? parseVmName(basename(paths[0], extname(paths[0])).replace(/[^A-Za-z0-9._-]/g, '_'))
        if (opts.changedRanges && paths.length !== 1)
          throw new UsageError('--changed-ranges takes exactly one disk')
        const ranges = opts.changedRanges ? [await readRanges(opts.changedRanges)] : undefined
        const { openDisk } = await import('../../hyperv/index.js')
        const { putDisks } = await import('../../chunkstore/index.js')
        const store = await openStore(opts.store, opts.compress)
        const disks = []
        try {
          for (const p of paths) disks.push(await openDisk(p))
          const meter = progress(!opts.json, 'put')
          const r = await putDisks(store, disks, {
            vm,
            chunkSize: opts.chunkSize,
            changedRanges: ranges,
            onProgress: meter.update,
          })
          meter.done()
          if (opts.json)
            printJson({
              point: r.point,
              root: r.root,
              chunks: r.chunks,
              newChunks: r.newChunks,
              newBytes: r.newBytes,
            })
          else
            process.stdout.write(
              `${r.point}  ${r.chunks} chunks, ${r.newChunks} new (${mib(r.newBytes)} stored)\n`,
            )
        } finally {
          for (const d of disks) await d.close()
          await store.close()
        }
      },
    )
}

function registerGet(store: Command): void {
  store
    .command('get')
    .description('write one disk of a recovery point to a new image file')
    .requiredOption('--store <dir>', 'store directory')
    .argument('<point>', 'point name <vm>@<seq>')
    .requiredOption('--out <file>', 'image to create (must not exist)')
    .addOption(new Option('--to <format>', 'output format').choices(['raw', 'vhdx']).default('raw'))
    .option('--disk <index>', 'which disk of the point (default 0)', parseCount, 0)
    .action(async (name: string, opts: StoreOpts & { out: string; to: 'raw' | 'vhdx'; disk: number }) => {
      const { createDisk } = await import('../../hyperv/index.js')
      const { materialise } = await import('../../chunkstore/index.js')
      const store = await openStore(opts.store)
      try {
        const point = await store.getPoint(name)
        const d = point.disks[opts.disk]
        if (!d)
          throw new UsageError(
            `point ${name} has ${point.disks.length} disk(s); --disk ${opts.disk} is out of range`,
          )
        const target = await createDisk(opts.out, { format: opts.to, virtualSize: d.virtualSize })
        try {
          await materialise(store, point, opts.disk, target, { targetIsZero: true })
          await target.close()
        } catch (err) {
          // Never leave a half-written image that looks like a good one.
          await target.close().catch(() => {})
          await rm(opts.out, { force: true })
          throw err
        }
      } finally {
        await store.close()
      }
    })
}

function registerLsVerifyGc(store: Command): void {
  store
    .command('ls')
    .description('list recovery points')
    .requiredOption('--store <dir>', 'store directory')
    .option('--vm <name>', 'only this VM', parseVmName)
    .option('--json', 'print [{point, time, virtualSize, root}]')
    .action(async (opts: StoreOpts & { vm?: string }) => {
      const { pointName } = await import('../../chunkstore/index.js')
      const store = await openStore(opts.store)
      try {
        const rows = (await store.listPoints(opts.vm)).map((p) => ({
          point: pointName(p),
          time: p.time,
          virtualSize: p.disks[0].virtualSize,
          root: p.disks[0].root,
          disks: p.disks.length,
        }))
        if (opts.json) printJson(rows.map(({ disks: _d, ...r }) => r))
        else
          for (const r of rows)
            process.stdout.write(
              `${r.point}\t${new Date(r.time).toISOString()}\t${r.virtualSize}\t${r.root}\n`,
            )
      } finally {
        await store.close()
      }
    })
  store
    .command('verify')
    .description('re-hash every chunk; exit 1 naming each damaged chunk and the points it hurts')
    .requiredOption('--store <dir>', 'store directory')
    .option('--json', 'print {ok, chunks, bytes, damaged: [{chunk, pack, offset, reason}], damagedPoints}')
    .action(async (opts: StoreOpts) => {
      const { verifyStore } = await import('../../chunkstore/index.js')
      const store = await openStore(opts.store)
      try {
        const report = await verifyStore(store)
        if (opts.json) printJson(report)
        else {
          for (const d of report.damaged) process.stdout.write(`damaged chunk ${d.chunk}: ${d.reason}\n`)
          for (const p of report.damagedPoints) process.stdout.write(`damaged point ${p}\n`)
          process.stdout.write(
            `${report.chunks} chunks (${mib(report.bytes)}) checked, ${report.damaged.length} damaged\n`,
          )
        }
        if (!report.ok) {
          process.stderr.write(
            `replimesh: ${report.damaged.length} damaged chunk(s): ${report.damaged.map((d) => d.chunk).join(', ')}\n`,
          )
          process.exitCode = 1
        }
      } finally {
        await store.close()
      }
    })
  store
    .command('gc')
    .description('apply retention, then free and compact space no point uses')
    .requiredOption('--store <dir>', 'store directory')
    .option('--keep <n>', 'keep the newest N points of each VM', parseCount)
    .option('--keep-hours <n>', 'keep every point younger than N hours', parseCount)
    .option('--hourly-days <n>', 'keep one point per hour for N days', parseCount)
    .option('--daily-weeks <n>', 'keep one point per day for N weeks', parseCount)
    .option('--json', 'print the GC report')
    .action(
      async (
        opts: StoreOpts & { keep?: number; keepHours?: number; hourlyDays?: number; dailyWeeks?: number },
      ) => {
        const { collectGarbage } = await import('../../chunkstore/index.js')
        const policy = {
          keepLast: opts.keep,
          keepAllHours: opts.keepHours,
          hourlyDays: opts.hourlyDays,
          dailyWeeks: opts.dailyWeeks,
        }
        const any = Object.values(policy).some((v) => v !== undefined)
        if (opts.keep === 0)
          throw new UsageError('--keep must be at least 1 (the newest point is always kept)')
        const store = await openStore(opts.store)
        try {
          const r = await collectGarbage(store, { policy: any ? policy : undefined })
          if (opts.json) printJson(r)
          else
            process.stdout.write(
              `${r.deletedPoints.length} point(s) deleted, ${r.freedChunks} chunk(s) freed, ` +
                `${r.compactedPacks.length} pack(s) compacted, ${mib(r.reclaimedBytes)} reclaimed\n`,
            )
        } finally {
          await store.close()
        }
      },
    )
}

/** Registers the `store` commands. */
export function register(program: Command): void {
  const store = program
    .command('store')
    .description('the chunk store: deduplicated, crash-safe disk versions')
  registerPut(store)
  registerGet(store)
  registerLsVerifyGc(store)
}

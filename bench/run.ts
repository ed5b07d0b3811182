// `npm run bench [-- --only a,b]`: runs every bench/*.bench.ts module (compiled to
// dist/bench/*.bench.js), prints one table, and writes the rows as JSON to
// bench/results/<timestamp>.json. A module exports `run(ctx)` (or a default function) that
// returns rows {name, value, unit, limit?, ratio?, note?}.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { BenchFunction, BenchRow } from './types.js'

const HERE = dirname(fileURLToPath(import.meta.url))
// dist/bench/run.js -> <repo>/bench/results
const RESULTS = resolve(HERE, '..', '..', 'bench', 'results')

interface ModuleResult {
  module: string
  rows: BenchRow[]
  error?: string
  seconds: number
}

function parseArgs(argv: string[]): { only: string[] | null } {
  const i = argv.indexOf('--only')
  if (i < 0) return { only: null }
  const value = argv[i + 1]
  if (!value) throw new Error('--only needs a module name (e.g. --only store)')
  return { only: value.split(',').map((s) => s.trim()) }
}

function discover(): string[] {
  return readdirSync(HERE)
    .filter((f) => f.endsWith('.bench.js'))
    .map((f) => basename(f, '.bench.js'))
    .sort()
}

function fmt(n: number | undefined, digits = 2): string {
  if (n === undefined || Number.isNaN(n)) return ''
  if (Math.abs(n) >= 1000) return n.toFixed(0)
  return n.toFixed(digits)
}

function printTable(results: ModuleResult[]): void {
  const lines = [['module', 'figure', 'value', 'unit', 'limit', 'ratio']]
  for (const r of results) {
    if (r.error) lines.push([r.module, `FAILED: ${r.error}`, '', '', '', ''])
    for (const row of r.rows)
      lines.push([r.module, row.name, fmt(row.value), row.unit, fmt(row.limit), fmt(row.ratio)])
  }
  const widths = lines[0].map((_, c) => Math.max(...lines.map((l) => l[c].length)))
  for (const [i, l] of lines.entries()) {
    process.stdout.write(
      l.map((cell, c) => (c >= 2 && c !== 3 ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ') +
        '\n',
    )
    if (i === 0) process.stdout.write(widths.map((w) => '-'.repeat(w)).join('  ') + '\n')
  }
  for (const r of results)
    for (const row of r.rows) if (row.note) process.stdout.write(`  [${r.module}] ${row.name}: ${row.note}\n`)
}

async function main(): Promise<number> {
  const { only } = parseArgs(process.argv.slice(2))
  const available = discover()
  const chosen = only ?? available
  const unknown = chosen.filter((m) => !available.includes(m))
  if (unknown.length > 0) {
    process.stderr.write(`bench: no module ${unknown.join(', ')} (have: ${available.join(', ')})\n`)
    return 2
  }
  const results: ModuleResult[] = []
  for (const name of chosen) {
    const started = performance.now()
    const tmp = mkdtempSync(join(tmpdir(), `replimesh-bench-${name}-`))
    const log = (m: string) => process.stderr.write(`[${name}] ${m}\n`)
    try {
      const mod = (await import(pathToFileURL(join(HERE, `${name}.bench.js`)).href)) as {
        run?: BenchFunction
        default?: BenchFunction
      }
      const fn = mod.run ?? mod.default
      if (typeof fn !== 'function') throw new Error('exports no run() function')
      const rows = await fn({ tmpDir: tmp, log, signal: AbortSignal.timeout(30 * 60_000) })
      results.push({ module: name, rows, seconds: (performance.now() - started) / 1000 })
    } catch (err) {
      results.push({
        module: name,
        rows: [],
        error: (err as Error).message,
        seconds: (performance.now() - started) / 1000,
      })
    } finally {
      rmSync(tmp, { recursive: true, force: true })
    }
  }
  printTable(results)
  mkdirSync(RESULTS, { recursive: true })
  const file = join(RESULTS, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  writeFileSync(
    file,
    JSON.stringify(
      { time: new Date().toISOString(), node: process.version, cpus: cpus().length, results },
      null,
      2,
    ) + '\n',
  )
  process.stdout.write(`results: ${file}\n`)
  return results.some((r) => r.error) ? 1 : 0
}

process.exitCode = await main()

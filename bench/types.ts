// The contract between `npm run bench` (bench/run.ts) and each bench/<name>.bench.ts module.

/** One measured figure. `limit` is the stage limit it is compared with; ratio = value / limit. */
export interface BenchRow {
  name: string
  value: number
  unit: string
  limit?: number
  ratio?: number
  /** Why the figure matters, or what it decided. */
  note?: string
}

export interface BenchContext {
  /** A scratch directory for this module, removed after it runs. */
  tmpDir: string
  /** Progress for people watching (stderr). */
  log: (message: string) => void
  signal: AbortSignal
}

/** What a bench module exports: `run` (or a default export) returning its rows. */
export type BenchFunction = (ctx: BenchContext) => Promise<BenchRow[]>

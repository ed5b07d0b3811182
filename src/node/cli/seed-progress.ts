// Progress of a seed for `replimesh protect` (DESIGN.md §7: progress on a terminal for long work).
// The CLI polls the node's GET /replication/vms/:vm: each target reports, while a full copy runs,
// the bytes checked (sent, or found already there) of all, and its last committed point. On a
// terminal: one cli-progress bar per target until every target committed a point; otherwise a
// log line per target every LOG_EVERY_MS. The pure part (what to show) is seedView().

/** What the node reports of one target (a subset of replication's TargetProgress). */
export interface TargetRow {
  peer: string
  seq: number | null
  lastError: string | null
  seeding: { doneBytes: number; totalBytes: number } | null
}

export interface SeedLine {
  peer: string
  state: 'starting' | 'seeding' | 'committed'
  doneBytes: number
  totalBytes: number
  /** Bytes per second averaged since this target's seeding was first seen, null before. */
  bytesPerSecond: number | null
  /** When seeding was first seen, and how much was done then (the base of the average). */
  sinceMs: number | null
  sinceBytes: number
  seq: number | null
  error: string | null
}

const POLL_MS = 500
const LOG_EVERY_MS = 5000
const MiB = 1024 * 1024

/** One view of the seed: a line per target, and whether every target committed. */
export function seedView(
  rows: TargetRow[],
  previous: { atMs: number; lines: SeedLine[] } | null,
  nowMs: number,
): { lines: SeedLine[]; done: boolean } {
  const lines = rows.map((r): SeedLine => {
    const before = previous?.lines.find((l) => l.peer === r.peer)
    const doneBytes = r.seq !== null ? (before?.totalBytes ?? 0) : (r.seeding?.doneBytes ?? 0)
    const totalBytes = r.seq !== null ? (before?.totalBytes ?? 0) : (r.seeding?.totalBytes ?? 0)
    const sinceMs = before?.sinceMs ?? (r.seeding ? nowMs : null)
    const sinceBytes = before?.sinceMs != null ? before.sinceBytes : doneBytes
    const dt = sinceMs === null ? 0 : (nowMs - sinceMs) / 1000
    return {
      peer: r.peer,
      state: r.seq !== null ? 'committed' : r.seeding ? 'seeding' : 'starting',
      doneBytes,
      totalBytes,
      bytesPerSecond: dt > 0 && r.seq === null ? Math.max(0, (doneBytes - sinceBytes) / dt) : null,
      sinceMs,
      sinceBytes,
      seq: r.seq,
      error: r.lastError,
    }
  })
  return { lines, done: lines.length > 0 && lines.every((l) => l.state === 'committed') }
}

/** A log line for a non-terminal. */
export function formatSeedLine(vm: string, l: SeedLine): string {
  const short = l.peer.length > 16 ? `${l.peer.slice(0, 12)}…` : l.peer
  if (l.state === 'committed') return `${vm} → ${short}: seeded, point ${l.seq} committed`
  if (l.state === 'starting') return `${vm} → ${short}: starting${l.error ? ` (last error: ${l.error})` : ''}`
  const pct = l.totalBytes > 0 ? Math.floor((l.doneBytes / l.totalBytes) * 100) : 0
  const rate = l.bytesPerSecond === null ? '' : `, ${(l.bytesPerSecond / MiB).toFixed(1)} MiB/s`
  return `${vm} → ${short}: ${(l.doneBytes / MiB).toFixed(0)}/${(l.totalBytes / MiB).toFixed(0)} MiB (${pct}%)${rate}${l.error ? ` (last error: ${l.error})` : ''}`
}

/**
 * Follows the seed until every target committed a point. `fetchRows` asks the node; `tty`
 * chooses bars (on stderr) or log lines (on stderr too, so stdout stays the command's answer).
 */
export async function followSeed(
  vm: string,
  fetchRows: () => Promise<TargetRow[]>,
  options: { tty: boolean; signal?: AbortSignal },
): Promise<SeedLine[]> {
  const { MultiBar, Presets } = (await import('cli-progress')).default
  const bars = options.tty
    ? new MultiBar(
        {
          format: ' {peer} |{bar}| {percentage}% {doneMiB}/{totalMiB} MiB {rate} {note}',
          hideCursor: true,
          clearOnComplete: false,
          stopOnComplete: false,
          barsize: 20,
        },
        Presets.shades_classic,
      )
    : null
  const shown = new Map<string, ReturnType<NonNullable<typeof bars>['create']>>()
  let previous: { atMs: number; lines: SeedLine[] } | null = null
  let lastLogMs = 0
  try {
    for (;;) {
      options.signal?.throwIfAborted()
      const now = Date.now()
      const view = seedView(await fetchRows(), previous, now)
      previous = { atMs: now, lines: view.lines }
      if (bars) {
        for (const l of view.lines) {
          const payload = {
            peer: l.peer.length > 16 ? `${l.peer.slice(0, 12)}…` : l.peer.padEnd(13),
            doneMiB: (l.doneBytes / MiB).toFixed(0),
            totalMiB: (l.totalBytes / MiB).toFixed(0),
            rate: l.bytesPerSecond === null ? '' : `${(l.bytesPerSecond / MiB).toFixed(1)} MiB/s`,
            note: l.state === 'committed' ? `point ${l.seq} committed` : (l.error ?? l.state),
          }
          const total = Math.max(1, l.totalBytes)
          let bar = shown.get(l.peer)
          if (!bar) {
            bar = bars.create(total, l.doneBytes, payload)
            shown.set(l.peer, bar)
          }
          bar.setTotal(total)
          bar.update(l.state === 'committed' ? total : l.doneBytes, payload)
        }
      } else if (view.done || now - lastLogMs >= LOG_EVERY_MS) {
        lastLogMs = now
        for (const l of view.lines) process.stderr.write(`${formatSeedLine(vm, l)}\n`)
      }
      if (view.done) return view.lines
      await new Promise((r) => setTimeout(r, POLL_MS))
    }
  } finally {
    bars?.stop()
  }
}

// Per-link settings an operator writes (in <dir>/links.json, through `replimesh link set`):
//
//   { "links": [ { "to": "lyon", "limit": "mon-fri 08:00-18:00 20M, else unlimited",
//                  "compress": "auto", "wan": true } ] }
//
// `to` is a peer id, a site (one shared link to every peer of that site) or "*" (any other peer).
// `limit` is a rate ("20M" = 20 MiB/s, "100mbit" = 100 Mbit/s, "unlimited") or a schedule: rules
// "[days] HH:MM-HH:MM RATE" separated by commas, and an optional "else RATE" (default unlimited).
// Times are the node's local time; a window may wrap past midnight (22:00-06:00). Pure parsing,
// checked once by zod; every bad value gives one line naming the field and the text.
import { z } from 'zod'

/** null: unlimited. */
export type Rate = number | null

export interface ScheduleRule {
  /** Days of the week it applies (0 = Sunday), or null for every day. */
  days: number[] | null
  startMinute: number
  endMinute: number
  bytesPerSecond: Rate
}

export interface Schedule {
  rules: ScheduleRule[]
  otherwise: Rate
}

export type CompressMode = 'auto' | 'on' | 'off'

/** Slowest limit accepted: below it a single 4 MiB chunk would take over a minute. */
export const MIN_LIMIT_BYTES_PER_SECOND = 64 * 1024

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']
const BYTE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }
const BIT_UNITS: Record<string, number> = { k: 1e3, m: 1e6, g: 1e9 }

export class LinkSettingsError extends Error {
  override name = 'LinkSettingsError'
}

/** "20M", "20MB/s", "512K", "100mbit", "1gbps", "unlimited" → bytes per second (null: unlimited). */
export function parseRate(text: string): Rate {
  const t = text.trim().toLowerCase()
  if (t === 'unlimited' || t === 'none' || t === 'off') return null
  const bits = /^(\d+(?:\.\d+)?)\s*([kmg])(?:bit|bps|bit\/s)$/.exec(t)
  const bytes = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?(?:\/s)?$/.exec(t)
  let rate: number
  if (bits) rate = (Number(bits[1]) * BIT_UNITS[bits[2]]) / 8
  else if (bytes) rate = Number(bytes[1]) * BYTE_UNITS[bytes[2]]
  else
    throw new LinkSettingsError(
      `'${text}' is not a rate (examples: 20M = 20 MiB/s, 512K, 100mbit, unlimited)`,
    )
  rate = Math.round(rate)
  if (rate < MIN_LIMIT_BYTES_PER_SECOND)
    throw new LinkSettingsError(`'${text}' is below the slowest limit accepted (64K, i.e. 64 KiB/s)`)
  return rate
}

function parseClock(text: string, whole: string): number {
  const m = /^(\d{1,2}):(\d{2})$/.exec(text)
  const minutes = m ? Number(m[1]) * 60 + Number(m[2]) : Number.NaN
  if (!m || Number(m[2]) > 59 || minutes > 24 * 60)
    throw new LinkSettingsError(`'${text}' in '${whole}' is not a time of day (HH:MM, 00:00 to 24:00)`)
  return minutes
}

function parseDays(text: string, whole: string): number[] {
  const [from, to] = text.split('-')
  const a = DAYS.indexOf(from.slice(0, 3))
  const b = to === undefined ? a : DAYS.indexOf(to.slice(0, 3))
  if (a < 0 || b < 0)
    throw new LinkSettingsError(`'${text}' in '${whole}' is not a day or day range (mon, mon-fri, sat-sun)`)
  const out: number[] = []
  for (let d = a; ; d = (d + 1) % 7) {
    out.push(d)
    if (d === b) break
  }
  return out
}

/** Parses a limit: a plain rate (always), or schedule rules with an optional "else RATE". */
export function parseSchedule(text: string): Schedule {
  const parts = text
    .split(/[,;]/)
    .map((s) => s.trim())
    .filter(Boolean)
  if (parts.length === 0) throw new LinkSettingsError('an empty limit (say "unlimited" for none)')
  const rules: ScheduleRule[] = []
  let otherwise: Rate | undefined
  for (const part of parts) {
    const words = part.split(/\s+/)
    const isDefault = words[0].toLowerCase() === 'else'
    if (isDefault || (parts.length === 1 && !/\d\s*-\s*\d|:/.test(part))) {
      if (otherwise !== undefined) throw new LinkSettingsError(`'${text}' has more than one default rate`)
      otherwise = parseRate(isDefault ? words.slice(1).join('') : part)
      continue
    }
    const days = words.length === 3 ? parseDays(words[0].toLowerCase(), part) : null
    const window = words.length === 3 ? words[1] : words[0]
    const rate = words.length === 3 ? words[2] : words[1]
    const range = /^(\d{1,2}:\d{2})-(\d{1,2}:\d{2})$/.exec(window ?? '')
    if (!range || rate === undefined || words.length > 3)
      throw new LinkSettingsError(
        `'${part}' is not a schedule rule (examples: "08:00-18:00 20M", "mon-fri 08:00-18:00 20M", "else unlimited")`,
      )
    const startMinute = parseClock(range[1], part)
    const endMinute = parseClock(range[2], part)
    if (startMinute === endMinute) throw new LinkSettingsError(`'${part}' is an empty time window`)
    rules.push({ days, startMinute, endMinute, bytesPerSecond: parseRate(rate) })
  }
  return { rules, otherwise: otherwise ?? null }
}

/** The rate a schedule gives at `when` (local time): the first matching rule, else the default. */
export function rateAt(schedule: Schedule, when: Date): Rate {
  const minute = when.getHours() * 60 + when.getMinutes()
  const day = when.getDay()
  const yesterday = (day + 6) % 7
  for (const r of schedule.rules) {
    const applies = (d: number) => r.days === null || r.days.includes(d)
    if (r.startMinute < r.endMinute) {
      if (applies(day) && minute >= r.startMinute && minute < r.endMinute) return r.bytesPerSecond
    } else if ((applies(day) && minute >= r.startMinute) || (applies(yesterday) && minute < r.endMinute)) {
      // A window wrapping past midnight belongs to the day it starts on.
      return r.bytesPerSecond
    }
  }
  return schedule.otherwise
}

/** True when the schedule limits the link at some time. */
export function everLimited(schedule: Schedule): boolean {
  return schedule.otherwise !== null || schedule.rules.some((r) => r.bytesPerSecond !== null)
}

const limitText = z.string().superRefine((text, ctx) => {
  try {
    parseSchedule(text)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

export const linkEntrySchema = z
  .object({
    /** A peer id, a site, or "*" for every other peer. */
    to: z.string().min(1).max(128),
    /** A rate or a schedule (see the file's opening comment). Default: unlimited. */
    limit: limitText.default('unlimited'),
    /** auto: compress when the link is limited or marked WAN. Default auto. */
    compress: z.enum(['auto', 'on', 'off']).default('auto'),
    /** The link crosses a WAN (compression pays even without a limit). Default false. */
    wan: z.boolean().default(false),
  })
  .strict()
export type LinkEntry = z.infer<typeof linkEntrySchema>

export const linksFileSchema = z
  .object({ links: z.array(linkEntrySchema).max(1024).default([]) })
  .strict()
  .superRefine((f, ctx) => {
    const seen = new Set<string>()
    f.links.forEach((l, i) => {
      if (seen.has(l.to))
        ctx.addIssue({ code: 'custom', path: ['links', i, 'to'], message: `'${l.to}' is listed twice` })
      seen.add(l.to)
    })
  })
export type LinksFile = z.infer<typeof linksFileSchema>

/** Parses a links file's text; throws LinkSettingsError with one line naming the file and field. */
export function parseLinksFile(text: string, file: string): LinksFile {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw new LinkSettingsError(`${file} is not valid JSON`)
  }
  const r = linksFileSchema.safeParse(raw)
  if (!r.success) {
    const issue = r.error.issues[0]
    throw new LinkSettingsError(`${file}: ${issue.path.join('.') || '(root)'}: ${issue.message}`)
  }
  return r.data
}

/** Whether chunks on this link are compressed. */
export function compressionOn(entry: Pick<LinkEntry, 'compress' | 'wan' | 'limit'>): boolean {
  if (entry.compress !== 'auto') return entry.compress === 'on'
  return entry.wan || everLimited(parseSchedule(entry.limit))
}

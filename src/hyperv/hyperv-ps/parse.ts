// Reading what Windows PowerShell 5.1's ConvertTo-Json prints, and turning it into VmInfo.
//
// 5.1 quirks handled here (docs/disk-formats-and-hyperv.md §4):
// - enums print as their numbers (no -EnumsAsStrings); PowerShell 7 or a .ToString() prints names;
// - DateTime prints as "\/Date(ms)\/" (JSON.parse leaves "/Date(ms)/"); 7 prints ISO 8601;
// - a collection can arrive as an array, a single object (one element, unrolled), null (none), or
//   {"value":[…],"Count":n} (an array wrapped in a PSObject);
// - a number can arrive as a string when a property was built by string expansion.
import { win32 } from 'node:path'
import { z } from 'zod'
import type { DiskFormat } from '../disk/index.js'
import type { VmDisk, VmInfo, VmNic, VmState } from '../hypervisor.js'

/** Collections in any of their 5.1 forms, as a plain array. */
export function asArray(value: unknown): unknown[] {
  if (value === null || value === undefined) return []
  if (Array.isArray(value)) return value
  if (typeof value === 'object' && Array.isArray((value as { value?: unknown }).value) && 'Count' in value)
    return (value as unknown as { value: unknown[] }).value
  return [value]
}

/** "/Date(1700000000000)/" (5.1), "/Date(…+0100)/", or ISO 8601 (7) → ms since the epoch. */
export function parseDate(value: unknown): number | null {
  if (value === null || value === undefined) return null
  if (typeof value === 'number') return value
  if (typeof value !== 'string') return null
  const m = /^\/Date\((-?\d+)(?:[+-]\d{4})?\)\/$/.exec(value)
  if (m) return Number(m[1])
  const t = Date.parse(value)
  return Number.isNaN(t) ? null : t
}

/** An enum as number or name → its name (from `names`), or the raw text when unknown. */
export function enumName(value: unknown, names: Readonly<Record<number, string>>): string | null {
  if (value === null || value === undefined) return null
  if (typeof value === 'number') return names[value] ?? String(value)
  if (typeof value === 'string') {
    if (/^\d+$/.test(value)) return names[Number(value)] ?? value
    return value
  }
  return null
}

export function asNumber(value: unknown, fallback = 0): number {
  if (typeof value === 'number' && Number.isFinite(value)) return value
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value)
  return fallback
}

export function asString(value: unknown): string | null {
  if (value === null || value === undefined) return null
  return typeof value === 'string' ? value : String(value)
}

/** Microsoft.HyperV.PowerShell.VMState (values as in the module; [UNCONFIRMED] beyond 1–11). */
export const VM_STATE_NAMES: Readonly<Record<number, string>> = {
  1: 'Other',
  2: 'Running',
  3: 'Off',
  4: 'Stopping',
  6: 'Saved',
  9: 'Paused',
  10: 'Starting',
  11: 'Reset',
  32773: 'Saving',
  32776: 'Pausing',
  32777: 'Resuming',
  32779: 'FastSaved',
  32780: 'FastSaving',
  32781: 'ForceShutdown',
  32782: 'ForceReboot',
  32783: 'Hibernated',
  32784: 'ComponentServicing',
  32785: 'RunningCritical',
  32786: 'OffCritical',
  32787: 'StoppingCritical',
  32788: 'SavedCritical',
  32789: 'PausedCritical',
  32790: 'StartingCritical',
  32791: 'ResetCritical',
  32792: 'SavingCritical',
  32793: 'PausingCritical',
  32794: 'ResumingCritical',
  32795: 'FastSavedCritical',
  32796: 'FastSavingCritical',
}
export const VHD_FORMAT_NAMES: Readonly<Record<number, string>> = { 2: 'VHD', 3: 'VHDX', 4: 'VHDSet' }
export const VHD_TYPE_NAMES: Readonly<Record<number, string>> = {
  2: 'Fixed',
  3: 'Dynamic',
  4: 'Differencing',
}
export const CONTROLLER_TYPE_NAMES: Readonly<Record<number, string>> = { 0: 'IDE', 1: 'SCSI', 2: 'PMEM' }

/**
 * Our five states. A saved (hibernated to disk) VM is not running: 'stopped'; "Critical" variants
 * (storage lost) keep their base state.
 */
export function mapVmState(value: unknown): VmState {
  const name = (enumName(value, VM_STATE_NAMES) ?? '').replace(/Critical$/, '')
  switch (name) {
    case 'Running':
      return 'running'
    case 'Off':
    case 'Saved':
    case 'FastSaved':
    case 'Hibernated':
      return 'stopped'
    case 'Paused':
      return 'paused'
    case 'Starting':
    case 'Resuming':
    case 'Reset':
      return 'starting'
    case 'Stopping':
    case 'Saving':
    case 'Pausing':
    case 'FastSaving':
    case 'ForceShutdown':
    case 'ForceReboot':
      return 'stopping'
    default:
      return 'unknown'
  }
}

export function mapDiskFormat(vhdFormat: unknown, path: string): DiskFormat {
  const name = enumName(vhdFormat, VHD_FORMAT_NAMES)
  if (name === 'VHD') return 'vhd'
  if (name === 'VHDX') return 'vhdx'
  return /\.vhd$/i.test(path) ? 'vhd' : /\.a?vhdx$/i.test(path) ? 'vhdx' : 'raw'
}

/** "00155D010203" or "00-15-5D-01-02-03" → "00:15:5d:01:02:03" (the lab's form). */
export function normalizeMac(mac: string): string {
  const hex = mac.replace(/[^0-9a-fA-F]/g, '').toLowerCase()
  if (hex.length !== 12) return mac.toLowerCase()
  return hex.match(/../g)!.join(':')
}

/** "255.255.255.0" → 24; "/64" or "64" → 64; null when unreadable. */
export function prefixLength(subnet: string): number | null {
  const s = subnet.replace(/^\//, '')
  if (/^\d{1,3}$/.test(s)) return Number(s)
  const parts = s.split('.').map(Number)
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) return null
  const bits = parts.map((p) => p.toString(2).padStart(8, '0')).join('')
  return /^1*0*$/.test(bits) ? (bits.indexOf('0') === -1 ? 32 : bits.indexOf('0')) : null
}

/** Hyper-V keeps no tags: we read them from a `tags: a, b` line of the VM's Notes. */
export function tagsFromNotes(notes: string): string[] {
  const m = /^\s*tags\s*:\s*(.*)$/im.exec(notes)
  if (!m) return []
  return m[1]
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t.length > 0)
}

const record = z.record(z.string(), z.unknown())
const vmRecordSchema = z.object({
  VM: record,
  Drives: z.unknown(),
  Vhds: z.unknown(),
  Adapters: z.unknown(),
  Guest: z.unknown(),
  IntegrationServices: z.unknown(),
})

type Obj = Record<string, unknown>
const objects = (v: unknown): Obj[] =>
  asArray(v).filter((x): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x))

/** Where Hyper-V keeps the VM's configuration file (.vmcx from version 6.2 on, else .xml). */
export function configPathOf(location: string | null, id: string, version: string | null): string | null {
  if (!location) return null
  const [major, minor] = (version ?? '0.0').split('.').map(Number)
  const ext = major > 6 || (major === 6 && minor >= 2) ? 'vmcx' : 'xml'
  return win32.join(location, 'Virtual Machines', `${id.toUpperCase()}.${ext}`)
}

function toDisks(drivesRaw: unknown, vhdsRaw: unknown): VmDisk[] {
  const vhds = new Map<string, Obj>()
  for (const v of objects(vhdsRaw)) {
    const p = asString(v.Path)
    if (p) vhds.set(p.toLowerCase(), v)
  }
  return objects(drivesRaw).map((d) => {
    const path = asString(d.Path) ?? ''
    const vhd = vhds.get(path.toLowerCase())
    const parents: string[] = []
    let parent = asString(vhd?.ParentPath)
    while (parent && parents.length < 64 && !parents.includes(parent)) {
      parents.push(parent)
      parent = asString(vhds.get(parent.toLowerCase())?.ParentPath)
    }
    const ctl = enumName(d.ControllerType, CONTROLLER_TYPE_NAMES) ?? '?'
    return {
      path,
      format: mapDiskFormat(vhd?.VhdFormat, path),
      virtualSize: asNumber(vhd?.Size),
      parents,
      location: `${ctl} ${asNumber(d.ControllerNumber)}:${asNumber(d.ControllerLocation)}`,
    }
  })
}

function toNics(adaptersRaw: unknown, guestRaw: unknown): VmNic[] {
  const guests = objects(guestRaw)
  return objects(adaptersRaw).map((a) => {
    const id = asString(a.Id) ?? ''
    const key = id.split('\\').pop()?.toLowerCase() ?? ''
    const g = key
      ? guests.find((x) => (asString(x.InstanceID) ?? '').toLowerCase().endsWith(`\\${key}`))
      : undefined
    const addresses: string[] = []
    if (g) {
      const ips = asArray(g.IPAddresses).map(asString)
      const subnets = asArray(g.Subnets).map(asString)
      ips.forEach((ip, i) => {
        if (!ip) return
        const len = subnets[i] ? prefixLength(subnets[i]!) : null
        addresses.push(`${ip}/${len ?? (ip.includes(':') ? 128 : 32)}`)
      })
    } else {
      for (const ip of asArray(a.IPAddresses).map(asString))
        if (ip) addresses.push(`${ip}/${ip.includes(':') ? 128 : 32}`)
    }
    const nic: VmNic = {
      name: asString(a.Name) ?? '',
      switch: asString(a.SwitchName) || null,
      mac: normalizeMac(asString(a.MacAddress) ?? ''),
      addresses,
    }
    if (g) {
      nic.gateway = asString(asArray(g.DefaultGateways)[0]) ?? null
      nic.dns = asArray(g.DNSServers)
        .map(asString)
        .filter((s): s is string => !!s)
    }
    return nic
  })
}

export interface VmRecord {
  info: VmInfo
  /** Configuration version, e.g. "9.0"; RCT needs 6.2 or later. */
  configVersion: string | null
  /** Get-VMIntegrationService rows (Name, Enabled, PrimaryStatusDescription). */
  integration: Obj[]
}

/** One record printed by ConvertTo-RmVmRecord → VmInfo. Throws on a record without a VM. */
export function toVmRecord(raw: unknown): VmRecord {
  const r = vmRecordSchema.parse(raw)
  const vm = r.VM
  const id = (asString(vm.Id) ?? '').toLowerCase()
  const notes = asString(vm.Notes) ?? ''
  const version = asString(vm.Version)
  const info: VmInfo = {
    id,
    name: asString(vm.Name) ?? '',
    generation: asNumber(vm.Generation, 1) === 2 ? 2 : 1,
    state: mapVmState(vm.State),
    cpus: asNumber(vm.ProcessorCount, 1),
    memoryBytes: asNumber(vm.MemoryStartup),
    disks: toDisks(r.Drives, r.Vhds),
    nics: toNics(r.Adapters, r.Guest),
    notes,
    tags: tagsFromNotes(notes),
    configPath: configPathOf(asString(vm.ConfigurationLocation), id, version),
  }
  return { info, configVersion: version, integration: objects(r.IntegrationServices) }
}

/** The {"ok":false,…} object a script prints from its catch block. */
export const failureSchema = z.object({
  ok: z.literal(false),
  op: z.string().nullish(),
  error: z.string().nullish(),
  cmdlet: z.string().nullish(),
  category: z.string().nullish(),
  errorId: z.string().nullish(),
  kind: z.string().nullish(),
  data: z.record(z.string(), z.unknown()).nullish(),
})
export type ScriptFailure = z.infer<typeof failureSchema>

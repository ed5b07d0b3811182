// vm.json: a lab VM's configuration, checked once with a schema where it is read. Disk paths are
// stored as written (relative ones resolve against the VM's folder, so a copied folder works).
import { randomBytes, randomUUID } from 'node:crypto'
import { readFile, rename, writeFile } from 'node:fs/promises'
import { z } from 'zod'
import type { VmDisk, VmInfo, VmNic, VmState } from '../hypervisor.js'
import { DEFAULT_RECORD_INTERVAL_MS, DEFAULT_TRACKING_BLOCK_BYTES } from './constants.js'
import { VmConfigError } from './errors.js'
import { resolveDiskPath, vmConfigPath } from './vm-paths.js'

export { resolveDiskPath, vmConfigPath }

export const workloadSchema = z.object({
  /** Bytes per second the guest writes; 0 writes nothing but the record stream. Default 0. */
  rateBytesPerSec: z.number().int().nonnegative().default(0),
  /** Size (and alignment) of each workload write. Default 4 KiB. */
  blockBytes: z.number().int().positive().multipleOf(512).default(4096),
  /** random: anywhere in the hot set; sequential: a cursor per disk that wraps. Default random. */
  pattern: z.enum(['random', 'sequential']).default('random'),
  /** Fraction of each disk (from its start) that random writes hit. Default 1 (all of it). */
  hotSetFraction: z.number().gt(0).lte(1).default(1),
  /** false turns the workload off (the record stream keeps running). Default true. */
  enabled: z.boolean().default(true),
})
export type WorkloadSettings = z.infer<typeof workloadSchema>
export type WorkloadOptions = z.input<typeof workloadSchema>

/** The workload a VM runs: its vm.json settings with `options` over them, checked. */
export const workloadSettings = (config: { workload?: WorkloadOptions }, options?: WorkloadOptions) =>
  workloadSchema.parse({ ...config.workload, ...options })

const diskSchema = z.object({
  path: z.string().min(1),
  format: z.enum(['vhdx', 'vhd', 'raw']),
  virtualSize: z.number().int().positive(),
})

const nicSchema = z.object({
  name: z.string().min(1),
  switch: z.string().nullable(),
  mac: z.string().regex(/^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$/),
  addresses: z.array(z.string()).default([]),
  gateway: z.string().nullable().optional(),
  dns: z.array(z.string()).optional(),
})

export const vmConfigSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, . _ - (at most 64)'),
  id: z.string().uuid(),
  generation: z.union([z.literal(1), z.literal(2)]).default(2),
  cpus: z.number().int().positive().default(1),
  memoryBytes: z
    .number()
    .int()
    .positive()
    .default(512 * 1024 * 1024),
  disks: z.array(diskSchema).min(1),
  nics: z.array(nicSchema).default([]),
  notes: z.string().default(''),
  tags: z.array(z.string()).default([]),
  workload: workloadSchema.default(workloadSchema.parse({})),
  /** How often the guest appends to its record stream. */
  recordIntervalMs: z.number().int().positive().default(DEFAULT_RECORD_INTERVAL_MS),
  /** Granularity of the dirty-range map (a power of two, at least 512). */
  trackingBlockBytes: z
    .number()
    .int()
    .min(512)
    .refine((n) => (n & (n - 1)) === 0, 'a power of two')
    .default(DEFAULT_TRACKING_BLOCK_BYTES),
})
export type VmConfig = z.infer<typeof vmConfigSchema>
export type VmConfigInput = z.input<typeof vmConfigSchema>

export const isValidVmName = (name: string) => vmConfigSchema.shape.name.safeParse(name).success

export async function readVmConfig(vmDir: string): Promise<VmConfig> {
  const file = vmConfigPath(vmDir)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new VmConfigError(file, code === 'ENOENT' ? 'no such file' : `cannot read (${code})`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new VmConfigError(file, `not JSON (${(err as Error).message})`)
  }
  return parseVmConfig(json, file)
}

export function parseVmConfig(json: unknown, file: string): VmConfig {
  const r = vmConfigSchema.safeParse(json)
  if (!r.success) {
    const issue = r.error.issues[0]
    throw new VmConfigError(file, `${issue.path.join('.') || '(top)'}: ${issue.message}`)
  }
  return r.data
}

/** Writes vm.json atomically (temporary file, then rename). */
export async function writeVmConfig(vmDir: string, config: VmConfig): Promise<void> {
  const file = vmConfigPath(vmDir)
  const tmp = `${file}.${process.pid}.tmp`
  await writeFile(tmp, JSON.stringify(vmConfigSchema.parse(config), null, 2) + '\n')
  await rename(tmp, file)
}

/** A locally administered unicast MAC. */
export function randomMac(): string {
  const b = randomBytes(6)
  b[0] = (b[0] & 0xfc) | 0x02
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':')
}

export const newVmId = () => randomUUID()

export function toVmInfo(vmDir: string, config: VmConfig, state: VmState): VmInfo {
  const disks: VmDisk[] = config.disks.map((d, i) => ({
    path: resolveDiskPath(vmDir, d.path),
    format: d.format,
    virtualSize: d.virtualSize,
    parents: [],
    location: `SCSI 0:${i}`,
  }))
  const nics: VmNic[] = config.nics.map((n) => ({
    name: n.name,
    switch: n.switch,
    mac: n.mac,
    addresses: [...n.addresses],
    ...(n.gateway !== undefined ? { gateway: n.gateway } : {}),
    ...(n.dns !== undefined ? { dns: [...n.dns] } : {}),
  }))
  return {
    id: config.id,
    name: config.name,
    generation: config.generation,
    state,
    cpus: config.cpus,
    memoryBytes: config.memoryBytes,
    disks,
    nics,
    notes: config.notes,
    tags: [...config.tags],
    configPath: vmConfigPath(vmDir),
    settings: {
      lab: {
        workload: { ...config.workload },
        recordIntervalMs: config.recordIntervalMs,
        trackingBlockBytes: config.trackingBlockBytes,
      },
    },
  }
}

const labSettingsSchema = z.object({
  workload: workloadSchema.optional(),
  recordIntervalMs: vmConfigSchema.shape.recordIntervalMs.optional(),
  trackingBlockBytes: vmConfigSchema.shape.trackingBlockBytes.optional(),
})

/** The lab settings carried in a replicated VmInfo, if any are there and valid (else none). */
export function labSettingsOf(info: VmInfo): z.infer<typeof labSettingsSchema> {
  const r = labSettingsSchema.safeParse((info.settings as { lab?: unknown } | undefined)?.lab)
  return r.success ? r.data : {}
}

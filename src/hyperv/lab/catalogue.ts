// The lab host's catalogue: VM folders under vmsDir. Creating, finding, registering and
// unregistering VMs are plain file operations, so they work with or without a running node.
import { mkdir, readdir, rm, rmdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { createDisk, type DiskFormat, openDisk } from '../disk/index.js'
import {
  HypervisorError,
  type NicMapping,
  type RegisterOptions,
  type VmInfo,
  VmNotFoundError,
} from '../hypervisor.js'
import {
  dirtyMapFile,
  GUEST_LOG_FILE,
  GUEST_PID_FILE,
  JOURNAL_FILE,
  MIN_LAB_DISK_BYTES,
  VM_CONFIG_FILE,
} from './constants.js'
import { VmConfigError } from './errors.js'
import { readPid } from './guest.js'
import {
  isValidVmName,
  labSettingsOf,
  newVmId,
  parseVmConfig,
  randomMac,
  readVmConfig,
  type VmConfig,
  type WorkloadOptions,
  writeVmConfig,
} from './vm-config.js'

export interface CreateLabVmOptions {
  sizeBytes: number
  /** Number of disks (default 1). */
  disks?: number
  /** Default vhdx. */
  format?: Exclude<DiskFormat, 'vhd'> | 'vhd'
  workload?: WorkloadOptions
  recordIntervalMs?: number
  trackingBlockBytes?: number
}

export interface LabVmEntry {
  dir: string
  config: VmConfig
}

export const diskFileName = (index: number, format: DiskFormat) =>
  `disk${index}.${format === 'raw' ? 'img' : format}`

export class LabCatalogue {
  constructor(readonly vmsDir: string) {}

  vmDir(name: string): string {
    return join(this.vmsDir, name)
  }

  /** Every VM folder with a readable vm.json; broken ones are reported to `onBroken`, not thrown. */
  async list(onBroken?: (err: VmConfigError) => void): Promise<LabVmEntry[]> {
    let names: string[]
    try {
      names = (await readdir(this.vmsDir, { withFileTypes: true }))
        .filter((d) => d.isDirectory())
        .map((d) => d.name)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
    const out: LabVmEntry[] = []
    for (const name of names.sort()) {
      const dir = this.vmDir(name)
      try {
        out.push({ dir, config: await readVmConfig(dir) })
      } catch (err) {
        if (!(err instanceof VmConfigError)) throw err
        if (!/no such file/.test(err.message)) onBroken?.(err)
      }
    }
    return out
  }

  /** By name (folder) or id. A broken vm.json of the named VM is an error, not "not found". */
  async find(vm: string): Promise<LabVmEntry> {
    if (isValidVmName(vm)) {
      const dir = this.vmDir(vm)
      try {
        return { dir, config: await readVmConfig(dir) }
      } catch (err) {
        if (!(err instanceof VmConfigError) || !/no such file/.test(err.message)) throw err
      }
    }
    const byId = (await this.list()).find((e) => e.config.id === vm)
    if (!byId) throw new VmNotFoundError(vm)
    return byId
  }

  async create(name: string, options: CreateLabVmOptions): Promise<LabVmEntry> {
    if (!isValidVmName(name))
      throw new HypervisorError(`'${name}' is not a valid VM name (letters, digits, . _ -; at most 64)`)
    const count = options.disks ?? 1
    if (!Number.isInteger(count) || count < 1 || count > 16)
      throw new HypervisorError(`--disks must be 1-16, got ${count}`)
    if (options.sizeBytes < MIN_LAB_DISK_BYTES || options.sizeBytes % 512 !== 0)
      throw new HypervisorError(
        `a lab disk must be a multiple of 512 bytes and at least ${MIN_LAB_DISK_BYTES} (the last MiB holds the record stream)`,
      )
    const dir = this.vmDir(name)
    await mkdir(this.vmsDir, { recursive: true })
    try {
      await mkdir(dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST')
        throw new HypervisorError(`a VM folder named '${name}' already exists in ${this.vmsDir}`)
      throw err
    }
    const format = options.format ?? 'vhdx'
    const disks: VmConfig['disks'] = []
    try {
      for (let i = 0; i < count; i++) {
        const file = diskFileName(i, format)
        const disk = await createDisk(join(dir, file), { format, virtualSize: options.sizeBytes })
        disks.push({ path: file, format, virtualSize: disk.virtualSize })
        await disk.close()
      }
      const config = parseVmConfig(
        {
          name,
          id: newVmId(),
          disks,
          nics: [{ name: 'eth0', switch: 'lab', mac: randomMac(), addresses: [] }],
          ...(options.workload ? { workload: options.workload } : {}),
          ...(options.recordIntervalMs ? { recordIntervalMs: options.recordIntervalMs } : {}),
          ...(options.trackingBlockBytes ? { trackingBlockBytes: options.trackingBlockBytes } : {}),
        },
        join(dir, VM_CONFIG_FILE),
      )
      await writeVmConfig(dir, config)
      return { dir, config }
    } catch (err) {
      await rm(dir, { recursive: true, force: true })
      throw err
    }
  }

  /** A VM from replicated configuration, its disks left where they are (absolute paths). */
  async register(info: VmInfo, diskPaths: string[], options: RegisterOptions = {}): Promise<LabVmEntry> {
    const name = options.name ?? info.name
    if (diskPaths.length !== info.disks.length)
      throw new HypervisorError(
        `VM '${info.name}' has ${info.disks.length} disks, ${diskPaths.length} paths given`,
      )
    const existing = await this.list()
    if (existing.some((e) => e.config.name === name))
      throw new HypervisorError(`a VM named '${name}' is already registered`)
    const id = options.newId ? newVmId() : info.id
    if (existing.some((e) => e.config.id === id))
      throw new HypervisorError(`a VM with id ${id} is already registered`)
    const disks: VmConfig['disks'] = []
    for (const given of diskPaths) {
      const path = resolve(given)
      const disk = await openDisk(path, { readOnly: true })
      disks.push({ path, format: disk.format, virtualSize: disk.virtualSize })
      await disk.close()
    }
    const dir = this.vmDir(name)
    const file = join(dir, VM_CONFIG_FILE)
    const config = parseVmConfig(
      {
        name,
        id,
        generation: info.generation,
        cpus: info.cpus,
        memoryBytes: info.memoryBytes,
        disks,
        nics: info.nics.map((n) => ({ ...n, mac: options.newId ? randomMac() : n.mac })),
        notes: info.notes,
        tags: info.tags,
        ...labSettingsOf(info),
      },
      file,
    )
    await mkdir(dir, { recursive: true })
    await writeVmConfig(dir, config)
    return { dir, config }
  }

  /** Removes the registration (vm.json, maps, logs); disk files stay, like Remove-VM. */
  async unregister(entry: LabVmEntry): Promise<void> {
    const files = [VM_CONFIG_FILE, GUEST_PID_FILE, GUEST_LOG_FILE, JOURNAL_FILE]
    for (let i = 0; i < entry.config.disks.length; i++) files.push(dirtyMapFile(i))
    for (const f of files) await rm(join(entry.dir, f), { force: true })
    await rmdir(entry.dir).catch(() => undefined)
  }

  async applyNetworkMapping(entry: LabVmEntry, mappings: NicMapping[]): Promise<void> {
    const config = structuredClone(entry.config)
    for (const m of mappings) {
      const nic = config.nics.find((n) => n.name === m.nic)
      if (!nic)
        throw new HypervisorError(
          `VM '${config.name}' has no network adapter '${m.nic}' (it has: ${config.nics.map((n) => n.name).join(', ') || 'none'})`,
        )
      nic.addresses = [...m.addresses]
      if (m.gateway !== undefined) nic.gateway = m.gateway
      if (m.dns !== undefined) nic.dns = [...m.dns]
      if (m.switch !== undefined) nic.switch = m.switch
    }
    await writeVmConfig(entry.dir, parseVmConfig(config, join(entry.dir, VM_CONFIG_FILE)))
  }

  async guestPid(entry: LabVmEntry): Promise<number | null> {
    return readPid(join(entry.dir, GUEST_PID_FILE))
  }
}

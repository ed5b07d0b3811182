// Parameters of the two ways to register a replica (pure): importing a replicated Hyper-V
// configuration file (ops.REGISTER_VM), or building the VM from its catalogue entry
// (ops.CREATE_VM). Paths are Windows paths, built with path.win32 whatever the platform.
import { win32 } from 'node:path'
import type { RegisterOptions, VmInfo } from '../hypervisor.js'
import { HyperVError } from './errors.js'

export interface RegisterSettings {
  /** Source switch name → switch on this host. */
  switchMap?: Record<string, string>
  /** Where test copies go; default a 'replimesh-copy-<name>' folder beside the first disk. */
  copyRoot?: string | null
}

/** A folder name from a VM name: nothing that could climb out of its parent or be a device. */
export const copyFolder = (name: string) => `replimesh-copy-${name.replace(/[^A-Za-z0-9._-]/g, '_')}`

export function importVmParams(
  config: VmInfo,
  diskPaths: string[],
  options: RegisterOptions,
  settings: RegisterSettings,
): Record<string, unknown> {
  const configPath = config.configPath ?? ''
  const source = diskPaths[0] ? win32.dirname(diskPaths[0]) : win32.dirname(configPath)
  const dest = settings.copyRoot ?? win32.join(source, copyFolder(options.name ?? config.name))
  return {
    configPath,
    copy: options.newId === true,
    name: options.name ?? null,
    diskPaths,
    vhdSourcePath: source,
    vhdDestinationPath: win32.join(dest, 'Virtual Hard Disks'),
    vmDestinationPath: dest,
    switchMap: Object.entries(settings.switchMap ?? {}).map(([from, to]) => ({ from, to })),
  }
}

export function createVmParams(
  config: VmInfo,
  diskPaths: string[],
  options: RegisterOptions,
  settings: RegisterSettings,
): Record<string, unknown> {
  if (diskPaths.length !== config.disks.length)
    throw new HyperVError(
      `VM '${config.name}' has ${config.disks.length} disks, ${diskPaths.length} paths given`,
    )
  const name = options.name ?? config.name
  const differencing = options.newId === true
  const folder = settings.copyRoot ?? win32.join(win32.dirname(diskPaths[0] ?? ''), copyFolder(name))
  const map = settings.switchMap ?? {}
  return {
    name,
    config: {
      generation: config.generation,
      memoryBytes: config.memoryBytes,
      cpus: config.cpus,
      notes: config.notes,
    },
    vmPath: differencing ? folder : null,
    diskPaths,
    differencing,
    childPaths: diskPaths.map((p, i) =>
      win32.join(folder, `${i}-${win32.basename(p).replace(/\.[^.]*$/, '')}.avhdx`),
    ),
    nics: config.nics.map((n) => ({
      name: n.name,
      switch: n.switch ? (map[n.switch] ?? n.switch) : null,
      // A test copy must not answer on the production MAC: Hyper-V assigns a new one.
      mac: differencing ? null : n.mac.replace(/[^0-9a-fA-F]/g, '').toUpperCase(),
    })),
  }
}

// Where a lab VM's files are, apart from the schema that checks vm.json: the guest process needs
// these paths but not zod (loading it was most of a guest's start-up cost, see guest-main.ts).
import { isAbsolute, join, resolve } from 'node:path'
import { VM_CONFIG_FILE } from './constants.js'

export const vmConfigPath = (vmDir: string) => join(vmDir, VM_CONFIG_FILE)

/** A disk's path as this machine opens it. */
export const resolveDiskPath = (vmDir: string, path: string) =>
  isAbsolute(path) ? path : resolve(vmDir, path)

// Front door of the lab hypervisor (Linux, macOS, CI): VMs are folders, running VMs are guest
// processes that write through a change-tracking, point-freezing disk layer.
import { openDisk } from '../disk/index.js'
import { LabHypervisor, type LabHypervisorInit } from './lab-hypervisor.js'
import { type RecordSummary, readNewestRecord, summarize } from './records.js'

export type { CreateLabVmOptions, LabVmEntry } from './catalogue.js'
export { RECORD_BYTES, RECORD_REGION_BYTES } from './constants.js'
export { GuestError, GuestWriteError, PointError, VmConfigError } from './errors.js'
export type { GuestStatus } from './guest-protocol.js'
export type { LabHypervisorInit, LabLogger, StartLabVmOptions } from './lab-hypervisor.js'
export { LabHypervisor } from './lab-hypervisor.js'
export type { RecordSummary } from './records.js'
export type { VmConfig, WorkloadOptions, WorkloadSettings } from './vm-config.js'

export function createLabHypervisor(init: LabHypervisorInit): LabHypervisor {
  return new LabHypervisor(init)
}

/** `vm records`: the newest record of the stream in any disk file (a replica copy works). */
export async function readDiskRecords(diskFile: string): Promise<RecordSummary> {
  const disk = await openDisk(diskFile, { readOnly: true })
  try {
    return summarize(await readNewestRecord(disk))
  } finally {
    await disk.close()
  }
}

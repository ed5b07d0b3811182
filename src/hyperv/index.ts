// Front door of the host layer: disk formats and the Hypervisor interface.
export * from './disk/index.js'
export type { HyperVInit, HyperVLogger } from './hyperv-ps/index.js'
export {
  createHyperVHypervisor,
  HyperVAccessDeniedError,
  HyperVCommandError,
  HyperVError,
  HyperVHypervisor,
  HyperVIncompatibleError,
  HyperVJobError,
  HyperVOutputError,
  HyperVReferenceError,
  HyperVTimeoutError,
} from './hyperv-ps/index.js'
export * from './hypervisor.js'
export type {
  CreateLabVmOptions,
  GuestStatus,
  LabHypervisorInit,
  LabLogger,
  RecordSummary,
  StartLabVmOptions,
  WorkloadOptions,
} from './lab/index.js'
export {
  createLabHypervisor,
  GuestError,
  GuestWriteError,
  LabHypervisor,
  PointError,
  RECORD_REGION_BYTES,
  readDiskRecords,
  VmConfigError,
} from './lab/index.js'

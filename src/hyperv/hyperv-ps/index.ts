// Front door of the Hyper-V adapter (Windows hosts): the Hypervisor interface over PowerShell 5.1
// and WMI. See hyperv.ts for the point cycle and ops.ts for the scripts.
import { HyperVHypervisor, type HyperVInit } from './hyperv.js'

export {
  HyperVAccessDeniedError,
  HyperVCommandError,
  HyperVError,
  HyperVIncompatibleError,
  HyperVJobError,
  HyperVOutputError,
  HyperVReferenceError,
  HyperVTimeoutError,
  WMI_RETURN_CODES,
} from './errors.js'
export type { HyperVInit, HyperVLogger } from './hyperv.js'
export { HyperVHypervisor } from './hyperv.js'
export type { RunnerInit } from './runner.js'

export function createHyperVHypervisor(options: HyperVInit = {}): HyperVHypervisor {
  return new HyperVHypervisor(options)
}

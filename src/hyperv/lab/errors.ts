// Named errors of the lab hypervisor, each with the facts an operator needs (VM, file).
import { HypervisorError } from '../hypervisor.js'

/** vm.json is missing, unreadable or does not match the schema. */
export class VmConfigError extends HypervisorError {
  override name = 'VmConfigError'
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`)
  }
}

/** A guest process failed to start, answered with an error, or died. */
export class GuestError extends HypervisorError {
  override name = 'GuestError'
  constructor(
    readonly vm: string,
    message: string,
  ) {
    super(`VM '${vm}': ${message}`)
  }
}

/** A write the lab VM refuses: out of range, into the record region, too large. */
export class GuestWriteError extends HypervisorError {
  override name = 'GuestWriteError'
}

/** A consistency point used wrongly: a second freeze, an unknown point, a disk index. */
export class PointError extends HypervisorError {
  override name = 'PointError'
}

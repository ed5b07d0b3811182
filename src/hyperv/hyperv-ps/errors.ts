// Named errors of the Hyper-V adapter. Every failure of a PowerShell run becomes exactly one of
// these, carrying the operation, the cmdlet or WMI method that failed and its own message.
import { HypervisorError } from '../hypervisor.js'

/** Return codes shared by the Msvm_* service methods (hyperv_v2 docs, e.g. GetVirtualDiskChanges). */
export const WMI_RETURN_CODES: Readonly<Record<number, string>> = {
  0: 'Completed with no error',
  4096: 'Job started',
  32768: 'Failed',
  32769: 'Access denied',
  32770: 'Not supported',
  32771: 'Status is unknown',
  32772: 'Timeout',
  32773: 'Invalid parameter',
  32774: 'System is in use',
  32775: 'Invalid state for this operation',
  32776: 'Incorrect data type',
  32777: 'System is not available',
  32778: 'Out of memory',
  32779: 'File not found',
}

export class HyperVError extends HypervisorError {
  override name = 'HyperVError'
}

/** A cmdlet (or the script around it) threw: `Import-VM: <its message>`. */
export class HyperVCommandError extends HyperVError {
  override name = 'HyperVCommandError'
  constructor(
    /** Our operation, e.g. 'register-vm'. */
    readonly op: string,
    /** The cmdlet or WMI method that failed, e.g. 'Import-VM', or null when unknown. */
    readonly cmdlet: string | null,
    /** PowerShell's own message. */
    readonly detail: string,
    /** ErrorCategory name (ObjectNotFound, PermissionDenied, …) and FullyQualifiedErrorId. */
    readonly category: string | null = null,
    readonly errorId: string | null = null,
  ) {
    super(`${cmdlet ?? op}: ${detail}`)
  }
}

/** The account running the node may not manage Hyper-V (not in Hyper-V Administrators). */
export class HyperVAccessDeniedError extends HyperVCommandError {
  override name = 'HyperVAccessDeniedError'
}

/** A WMI method returned a failure code, or the job it started ended in a failed state. */
export class HyperVJobError extends HyperVCommandError {
  override name = 'HyperVJobError'
  constructor(
    op: string,
    readonly method: string,
    readonly returnValue: number,
    readonly jobState: number | null,
    description: string,
  ) {
    const code = `WMI return code ${returnValue} (${WMI_RETURN_CODES[returnValue] ?? 'unknown code'})`
    const job = jobState === null ? '' : `, job state ${jobState}`
    super(op, method, `${code}${job}${description ? `: ${description}` : ''}`)
  }
}

/** Compare-VM left incompatibilities we cannot fix (listed with their MessageIds). */
export class HyperVIncompatibleError extends HyperVCommandError {
  override name = 'HyperVIncompatibleError'
}

/** The script ran longer than its deadline and was killed. */
export class HyperVTimeoutError extends HyperVError {
  override name = 'HyperVTimeoutError'
  constructor(
    readonly op: string,
    readonly timeoutMs: number,
  ) {
    super(`${op}: PowerShell did not finish within ${timeoutMs} ms (killed)`)
  }
}

/** PowerShell could not be started, printed too much, or printed something that is not our JSON. */
export class HyperVOutputError extends HyperVError {
  override name = 'HyperVOutputError'
  constructor(
    readonly op: string,
    message: string,
    readonly exitCode: number | null = null,
  ) {
    super(`${op}: ${message}`)
  }
}

/** A reference id this adapter did not issue (another hypervisor's, or damaged). */
export class HyperVReferenceError extends HyperVError {
  override name = 'HyperVReferenceError'
}

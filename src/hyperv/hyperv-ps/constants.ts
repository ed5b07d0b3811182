// Limits and defaults of the Hyper-V adapter. Each has a unit in its name.

/** The Windows PowerShell 5.1 binary; Server 2016+ ships it on PATH. */
export const DEFAULT_EXECUTABLE = 'powershell.exe'

/** Arguments before `-EncodedCommand <base64>`: no profile, never prompt, our script only. */
export const POWERSHELL_ARGS = ['-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass'] as const

/** One script run (a checkpoint with VSS in the guest can take a minute). */
export const DEFAULT_TIMEOUT_MS = 180_000

/** WMI jobs polled inside a script give up after this (stays below DEFAULT_TIMEOUT_MS). */
export const DEFAULT_JOB_TIMEOUT_SECONDS = 150

/** stdout + stderr of one run; a script that prints more is killed and reported. */
export const MAX_OUTPUT_BYTES = 16 * 1024 * 1024

/** Windows allows a 32,767-character command line; the encoded script must fit with room. */
export const MAX_ENCODED_COMMAND_CHARS = 30_000

/**
 * Event Log messages are cut to this many UTF-8 bytes: parameters travel inside the encoded
 * command line (MAX_ENCODED_COMMAND_CHARS), which the Event Log's own 31,839 characters exceed.
 */
export const MAX_EVENT_MESSAGE_BYTES = 4096

/** PowerShell processes run at once (each costs ~60 MiB and a second of CPU to start). */
export const DEFAULT_MAX_CONCURRENT_RUNS = 3

/** GetVirtualDiskChanges: rounds of queries before we call tracking broken (each round resumes). */
export const MAX_CHANGE_QUERY_ROUNDS = 4096

/** Differencing chain depth followed by discovery (a loop of parents must not hang the script). */
export const MAX_CHAIN_DEPTH = 64

/** Event Log source and log the adapter registers once and writes to. */
export const DEFAULT_EVENT_SOURCE = 'replimesh'
export const DEFAULT_EVENT_LOG = 'Application'

/** RCT needs VM configuration version 6.2 or later (Windows Server 2016). */
export const MIN_RCT_CONFIG_VERSION = [6, 2] as const

/** Msvm_VirtualSystemSnapshotService.CreateSnapshot SnapshotType values. */
export const SNAPSHOT_TYPE_FULL = 2
export const SNAPSHOT_TYPE_RECOVERY = 32768

/** Msvm_VirtualSystemSnapshotSettingData.ConsistencyLevel. */
export const CONSISTENCY_APPLICATION = 1
export const CONSISTENCY_CRASH = 2

/** ElementName given to our checkpoints, so a restarted node finds and removes its leftovers. */
export const POINT_MARKER = 'replimesh point'

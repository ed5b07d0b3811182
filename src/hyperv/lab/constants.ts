// Named limits and defaults of the lab hypervisor. Every buffer, wait and region has one here.

/** The record stream's reserved region: the last MiB of every disk of a lab VM. */
export const RECORD_REGION_BYTES = 1024 * 1024
/** One record of the stream: a 512-byte sector, so a write of one record is never torn. */
export const RECORD_BYTES = 512
/** Slots of the ring: seq % RECORD_SLOTS is a record's slot. */
export const RECORD_SLOTS = RECORD_REGION_BYTES / RECORD_BYTES
/** Smallest lab disk: the record region plus some room for the workload. */
export const MIN_LAB_DISK_BYTES = 4 * RECORD_REGION_BYTES

/** Default dirty-map granularity (bytes of virtual disk per tracked block). */
export const DEFAULT_TRACKING_BLOCK_BYTES = 64 * 1024
/** Default interval of the record stream. */
export const DEFAULT_RECORD_INTERVAL_MS = 50
/** Workload ticks: writes due are issued this often. */
export const WORKLOAD_TICK_MS = 50

/**
 * The workload skips a tick while this many disk operations wait (it owes the writes instead).
 * Operations run one at a time, so a deeper queue adds no throughput, only barrier latency.
 */
export const MAX_WORKLOAD_PENDING_OPS = 4
/** Planned workload writes waiting for the disks; beyond this a tick's writes are dropped. */
export const MAX_WORKLOAD_BACKLOG = 4096
/** Largest single `vm write` (one IPC message). */
export const MAX_GUEST_WRITE_BYTES = 64 * 1024 * 1024
/** While a point is frozen, workload writes pause once the copy-on-write journal reaches this. */
export const MAX_JOURNAL_BYTES = 1024 * 1024 * 1024

/** How long a guest may take to open its disks and say it is ready. */
export const GUEST_READY_TIMEOUT_MS = 20_000
/** How long a clean stop may take before the guest is killed. */
export const GUEST_STOP_TIMEOUT_MS = 20_000
/** Default deadline of one request to a guest (points, writes). */
export const GUEST_REQUEST_TIMEOUT_MS = 60_000
/**
 * `vm stop` / `vm start` wait at most this long for an open consistency point to be released
 * (replication reads a point in seconds); below the CLI's 30 s request deadline, so the operator
 * gets the reason, not a timeout.
 */
export const POINT_RELEASE_WAIT_MS = 20_000

/** Files inside a VM's folder. */
export const VM_CONFIG_FILE = 'vm.json'
export const GUEST_PID_FILE = 'guest.pid'
export const GUEST_LOG_FILE = 'guest.log'
export const JOURNAL_FILE = 'point-journal.bin'
/** The dirty map of a disk sits beside the VM's config, named after the disk index. */
export const dirtyMapFile = (diskIndex: number) => `disk${diskIndex}.dirty`

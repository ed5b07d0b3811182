// Messages between a node and its guest processes over the Node IPC channel (advanced
// serialization, so byte arrays travel as bytes). Requests carry an id; each gets one response.
import type { ChangedRange } from '../hypervisor.js'
import type { MapDistrust } from './dirty-map.js'
import type { RecordSummary } from './records.js'
import type { VmConfig, WorkloadSettings } from './vm-config.js'

export type GuestRequest =
  | { op: 'point'; sinceReference: string | null }
  | { op: 'release' }
  | { op: 'write'; disk: number; offset: number; data: Uint8Array }
  /** Settings the node checked and merged with vm.json's (the guest loads no schema library). */
  | { op: 'workload'; workload: WorkloadSettings }
  | { op: 'status' }
  | { op: 'stop' }

export interface GuestPointResult {
  generation: number
  time: number
  disks: Array<{ index: number; virtualSize: number; changed: ChangedRange[] | null }>
}

export interface GuestStatus {
  pid: number
  frozen: boolean
  journalBytes: number
  pendingOps: number
  /** The newest record issued (it may still wait behind other writes). */
  seq: number
  bytesWritten: number
  /** The newest record written: what a copy of the disks taken now holds at least. */
  records: RecordSummary
}

export type NodeToGuest =
  | { type: 'request'; id: number; request: GuestRequest }
  /** A guest launched with `hold` runs (writes its first record) only once this arrives. */
  | { type: 'go' }

export type GuestToNode =
  /** A held guest has its disks open and waits for 'go' (see GuestLaunch.hold). */
  | { type: 'loaded'; pid: number }
  | {
      type: 'ready'
      pid: number
      /** The stream position this run started from (start* of `vm records`). */
      startSeq: number
      startTime: number
      mapDistrust: MapDistrust[]
      journalEntriesReplayed: number
    }
  | { type: 'response'; id: number; ok: true; result: unknown }
  | { type: 'response'; id: number; ok: false; error: { name: string; message: string } }
  | { type: 'fatal'; error: { name: string; message: string } }

/** What the node hands a guest it starts (as JSON after <vmDir>): vm.json and workload, checked. */
export interface GuestLaunch {
  config?: VmConfig
  workload?: WorkloadSettings
  /**
   * Load and open the disks, say 'loaded', then wait for 'go' before the VM runs (its first
   * record, its workload): the node lets a start's cost overlap a wait it must honour first.
   */
  hold?: boolean
}

/** argv of the guest: <vmDir> [<GuestLaunch as JSON> | <workload options as JSON>] */
export const GUEST_ARGV_MARKER = '--replimesh-lab-guest'

// Points of a stopped lab VM. Nothing writes its disks, so the files are the point; the dirty
// maps its guest saved cleanly still answer "changed since reference" without starting it.
// Releasing such a point closes a generation in those maps (saved clean again), so that writes
// of the next run are newer than the reference handed out.
import { join } from 'node:path'
import type { ChangedRange } from '../hypervisor.js'
import { dirtyMapFile } from './constants.js'
import { DirtyMap } from './dirty-map.js'
import { formatReference, parseReference } from './guest-volume.js'
import type { VmConfig } from './vm-config.js'
import { resolveDiskPath } from './vm-paths.js'

/** Stands for "no trusted map" in a reference: never equal to a real tracking id. */
const NO_TRACKING = '0'

export interface StoppedPointState {
  maps: Array<DirtyMap | null>
  generation: number
  changed: Array<ChangedRange[] | null>
}

export async function openStoppedPoint(
  vmDir: string,
  config: VmConfig,
  sinceReference: string | null,
): Promise<StoppedPointState> {
  const maps = await Promise.all(
    config.disks.map((d, i) =>
      DirtyMap.peek(join(vmDir, dirtyMapFile(i)), resolveDiskPath(vmDir, d.path), {
        virtualSize: d.virtualSize,
        blockBytes: config.trackingBlockBytes,
      }),
    ),
  )
  const generation = Math.max(1, ...maps.map((m) => m?.generation ?? 0))
  const ref = sinceReference ? parseReference(sinceReference) : null
  const changed = maps.map((m, i) =>
    m && ref && ref.trackingIds[i] === m.trackingId && ref.generation <= generation
      ? m.changedSince(ref.generation)
      : null,
  )
  return { maps, generation, changed }
}

/** Closes the point's generation in the trusted maps and returns its reference. */
export async function releaseStoppedPoint(
  vmDir: string,
  config: VmConfig,
  state: StoppedPointState,
): Promise<string> {
  const ids: string[] = []
  for (const [i, m] of state.maps.entries()) {
    const diskFile = resolveDiskPath(vmDir, config.disks[i].path)
    // Written behind our back while the point was open? Then that map stays untrusted.
    const still = m && (await DirtyMap.peek(m.file, diskFile, m.geometry))
    if (!m || !still || still.trackingId !== m.trackingId) {
      ids.push(NO_TRACKING)
      continue
    }
    m.setGeneration(state.generation + 1)
    await m.saveClean(diskFile)
    ids.push(m.trackingId)
  }
  return formatReference(state.generation, ids)
}

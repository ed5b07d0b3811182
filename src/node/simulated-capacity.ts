// Simulated hardware for labs (`lab up --host-memory 16G --host-cpus 8`): many nodes on one machine
// all measure that machine, so a lab could never show a hub running out of memory. REPLIMESH_CAPACITY
// (JSON, checked once here) replaces what a node gossips as its size: total memory (then all of it
// counts as free, less what its VMs take, which placement subtracts itself), CPUs, and total disk
// (free disk is then the smaller of the real free space and that total). Never set on real hosts.
import { z } from 'zod'
import type { Capacity } from '../mesh/index.js'

const simulatedSchema = z
  .object({
    memoryTotalBytes: z.number().int().positive().optional(),
    cpus: z.number().int().positive().max(4096).optional(),
    diskTotalBytes: z.number().int().positive().optional(),
  })
  .strict()
export type SimulatedCapacity = z.infer<typeof simulatedSchema>

export class SimulatedCapacityError extends Error {
  override name = 'SimulatedCapacityError'
}

/** The simulated sizes in `env`, or null when none are set. Throws on a malformed value. */
export function simulatedCapacity(env: NodeJS.ProcessEnv = process.env): SimulatedCapacity | null {
  const text = env.REPLIMESH_CAPACITY
  if (!text) return null
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new SimulatedCapacityError('REPLIMESH_CAPACITY is not JSON')
  }
  const parsed = simulatedSchema.safeParse(value)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new SimulatedCapacityError(
      `REPLIMESH_CAPACITY: ${issue.path.join('.') || '(root)'}: ${issue.message}`,
    )
  }
  return parsed.data
}

/** `measured` with the simulated sizes applied. */
export function applySimulatedCapacity(measured: Capacity, simulated: SimulatedCapacity | null): Capacity {
  if (!simulated) return measured
  const out = { ...measured }
  if (simulated.memoryTotalBytes !== undefined) {
    out.memoryTotalBytes = simulated.memoryTotalBytes
    out.memoryFreeBytes = simulated.memoryTotalBytes
  }
  if (simulated.cpus !== undefined) out.cpus = simulated.cpus
  if (simulated.diskTotalBytes !== undefined) {
    out.diskTotalBytes = simulated.diskTotalBytes
    out.diskFreeBytes = Math.min(measured.diskFreeBytes, simulated.diskTotalBytes)
  }
  return out
}

/** Wraps a node's capacity measure with the simulated sizes of `env` (parsed now, so a bad value stops the start). */
export function simulatedCapacityOf(
  measure: () => Promise<Capacity>,
  env: NodeJS.ProcessEnv = process.env,
): () => Promise<Capacity> {
  const simulated = simulatedCapacity(env)
  if (!simulated) return measure
  return async () => applySimulatedCapacity(await measure(), simulated)
}

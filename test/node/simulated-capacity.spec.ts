// REPLIMESH_CAPACITY (lab hosts of a chosen size): parsed once, malformed values refused with one
// line, the simulated sizes replacing what the machine measures.
import { describe, expect, it } from 'vitest'
import {
  applySimulatedCapacity,
  SimulatedCapacityError,
  simulatedCapacity,
  simulatedCapacityOf,
} from '../../src/node/simulated-capacity.js'

const G = 2 ** 30
const measured = {
  diskFreeBytes: 50 * G,
  diskTotalBytes: 200 * G,
  cpus: 2,
  memoryTotalBytes: 24 * G,
  memoryFreeBytes: 20 * G,
}

describe('simulated capacity', () => {
  it('is absent unless REPLIMESH_CAPACITY is set', () => {
    expect(simulatedCapacity({})).toBeNull()
    expect(applySimulatedCapacity(measured, null)).toEqual(measured)
  })

  it('replaces memory (all free), CPUs and disk (free capped by the simulated total)', async () => {
    const env = {
      REPLIMESH_CAPACITY: JSON.stringify({ memoryTotalBytes: 4 * G, cpus: 16, diskTotalBytes: 10 * G }),
    }
    const measure = simulatedCapacityOf(async () => measured, env)
    expect(await measure()).toEqual({
      diskFreeBytes: 10 * G,
      diskTotalBytes: 10 * G,
      cpus: 16,
      memoryTotalBytes: 4 * G,
      memoryFreeBytes: 4 * G,
    })
    const disk = simulatedCapacity({ REPLIMESH_CAPACITY: JSON.stringify({ diskTotalBytes: 500 * G }) })
    expect(applySimulatedCapacity(measured, disk)).toMatchObject({
      diskFreeBytes: 50 * G,
      memoryTotalBytes: 24 * G,
    })
  })

  it.each([
    ['not json', /is not JSON/],
    ['{"memoryTotalBytes":-1}', /memoryTotalBytes/],
    ['{"cpus":1.5}', /cpus/],
    ['{"memory":1}', /REPLIMESH_CAPACITY/],
  ])('refuses %s', (text, message) => {
    expect(() => simulatedCapacity({ REPLIMESH_CAPACITY: text })).toThrow(SimulatedCapacityError)
    expect(() => simulatedCapacity({ REPLIMESH_CAPACITY: text })).toThrow(message)
  })
})

// The behaviour both hypervisors (lab and Hyper-V through PowerShell) must agree on. Each
// implementation's spec calls `hypervisorContract(name, makeFixture)` with a factory that builds
// a fresh hypervisor holding one known, stopped VM.
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  type HostEvent,
  type Hypervisor,
  HypervisorError,
  type VmInfo,
  VmNotFoundError,
  VmStateError,
} from '../../src/hyperv/index.js'

export interface HypervisorContractFixture {
  hypervisor: Hypervisor
  /** Name of a stopped VM on the host, with at least one disk and one NIC. */
  vm: string
  /**
   * Writes bytes into the running VM's disk, so changed ranges can be checked; omit when the
   * implementation cannot (the changed-range checks then only check shapes).
   */
  writeToVm?: (vm: string, disk: number, offset: number, data: Uint8Array) => Promise<void>
  /** The host events written so far, oldest first (omit if they cannot be read back). */
  readEvents?: () => Promise<HostEvent[]>
  /** Disk paths registerVm may use for a copy of the VM (same count as the VM's disks). */
  copyDiskPaths?: () => Promise<string[]>
  cleanup(): Promise<void>
}

const covers = (ranges: Array<{ offset: number; length: number }>, offset: number, length: number) =>
  ranges.some((r) => r.offset <= offset && offset + length <= r.offset + r.length)

export function hypervisorContract(
  name: string,
  makeFixture: () => Promise<HypervisorContractFixture>,
): void {
  describe(`Hypervisor contract: ${name}`, () => {
    let fx: HypervisorContractFixture
    let hv: Hypervisor

    beforeEach(async () => {
      fx = await makeFixture()
      hv = fx.hypervisor
    })
    afterEach(async () => {
      await fx?.cleanup()
    })

    it('lists the VM with a complete catalogue entry and finds it by name and by id', async () => {
      const all = await hv.listVms()
      const listed = all.find((v) => v.name === fx.vm)
      expect(listed).toBeDefined()
      const vm = listed as VmInfo
      expect(vm.id).toMatch(/^[0-9a-fA-F-]{36}$/)
      expect([1, 2]).toContain(vm.generation)
      expect(vm.state).toBe('stopped')
      expect(vm.cpus).toBeGreaterThan(0)
      expect(vm.memoryBytes).toBeGreaterThan(0)
      expect(vm.disks.length).toBeGreaterThan(0)
      for (const d of vm.disks) {
        expect(d.path.length).toBeGreaterThan(0)
        expect(['vhdx', 'vhd', 'raw']).toContain(d.format)
        expect(d.virtualSize).toBeGreaterThan(0)
        expect(Array.isArray(d.parents)).toBe(true)
      }
      expect(vm.nics.length).toBeGreaterThan(0)
      for (const n of vm.nics) {
        expect(n.mac).toMatch(/^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$/)
        expect(Array.isArray(n.addresses)).toBe(true)
      }
      expect(typeof vm.notes).toBe('string')
      expect(Array.isArray(vm.tags)).toBe(true)
      expect((await hv.getVm(fx.vm)).id).toBe(vm.id)
      expect((await hv.getVm(vm.id)).name).toBe(fx.vm)
    })

    it('names an unknown VM with VmNotFoundError in every operation that takes one', async () => {
      const nope = 'no-such-vm-7f3a'
      await expect(hv.getVm(nope)).rejects.toBeInstanceOf(VmNotFoundError)
      await expect(hv.startVm(nope)).rejects.toBeInstanceOf(VmNotFoundError)
      await expect(hv.stopVm(nope)).rejects.toBeInstanceOf(VmNotFoundError)
      await expect(hv.createPoint(nope)).rejects.toBeInstanceOf(VmNotFoundError)
      await expect(hv.unregisterVm(nope)).rejects.toBeInstanceOf(VmNotFoundError)
      await expect(hv.applyNetworkMapping(nope, [])).rejects.toBeInstanceOf(VmNotFoundError)
    })

    it('starts and stops: status follows, a second start is a VmStateError, a second stop is a no-op', async () => {
      await hv.startVm(fx.vm)
      expect((await hv.getVm(fx.vm)).state).toBe('running')
      const second = await hv.startVm(fx.vm).catch((e) => e)
      expect(second).toBeInstanceOf(VmStateError)
      expect(second).toBeInstanceOf(HypervisorError)
      await hv.stopVm(fx.vm)
      expect((await hv.getVm(fx.vm)).state).toBe('stopped')
      await hv.stopVm(fx.vm)
      expect((await hv.getVm(fx.vm)).state).toBe('stopped')
    })

    it('takes points: a full one, then changed ranges since its reference that cover a write', async () => {
      await hv.startVm(fx.vm)
      const vm = await hv.getVm(fx.vm)
      const full = await hv.createPoint(fx.vm)
      expect(full.vmId).toBe(vm.id)
      expect(full.time).toBeGreaterThan(0)
      expect(full.disks.map((d) => d.index)).toEqual(vm.disks.map((_, i) => i))
      for (const [i, d] of full.disks.entries()) {
        expect(d.virtualSize).toBe(vm.disks[i].virtualSize)
        expect(d.changed).toBeNull()
      }
      const view = await hv.openPointDisk(full, 0)
      expect(view.virtualSize).toBe(vm.disks[0].virtualSize)
      const head = new Uint8Array(4096)
      await view.read(head, 0)
      await view.close()
      const ref = await hv.releasePoint(full)
      expect(typeof ref).toBe('string')
      expect(ref.length).toBeGreaterThan(0)

      const offset = 1024 * 1024
      const data = new Uint8Array(8192).map((_, i) => (i * 7 + 1) & 0xff)
      if (fx.writeToVm) await fx.writeToVm(fx.vm, 0, offset, data)
      const delta = await hv.createPoint(fx.vm, { sinceReference: ref })
      for (const d of delta.disks) {
        expect(d.changed).not.toBeNull()
        for (const r of d.changed ?? []) {
          expect(r.offset).toBeGreaterThanOrEqual(0)
          expect(r.length).toBeGreaterThan(0)
          expect(r.offset + r.length).toBeLessThanOrEqual(d.virtualSize)
        }
      }
      if (fx.writeToVm) {
        expect(covers(delta.disks[0].changed ?? [], offset, data.length)).toBe(true)
        const v = await hv.openPointDisk(delta, 0)
        const got = new Uint8Array(data.length)
        await v.read(got, offset)
        await v.close()
        expect(Buffer.from(got).equals(Buffer.from(data))).toBe(true)
      }
      await hv.releasePoint(delta)
      await hv.stopVm(fx.vm)
    })

    it('answers an unknown reference with "changed: null" (read everything), never an empty list', async () => {
      await hv.startVm(fx.vm)
      const p = await hv.createPoint(fx.vm, { sinceReference: 'not-a-reference-of-this-host' })
      for (const d of p.disks) expect(d.changed).toBeNull()
      await hv.releasePoint(p)
      await hv.stopVm(fx.vm)
    })

    it('registers a copy under a new name and id, lists it, and unregisters it', async () => {
      const vm = await hv.getVm(fx.vm)
      const paths = fx.copyDiskPaths ? await fx.copyDiskPaths() : vm.disks.map((d) => d.path)
      const copy = await hv.registerVm(vm, paths, { newId: true, name: `${fx.vm}-copy` })
      expect(copy.name).toBe(`${fx.vm}-copy`)
      expect(copy.id).not.toBe(vm.id)
      expect(copy.disks.length).toBe(vm.disks.length)
      expect((await hv.listVms()).map((v) => v.name)).toContain(`${fx.vm}-copy`)
      await hv.unregisterVm(`${fx.vm}-copy`)
      await expect(hv.getVm(`${fx.vm}-copy`)).rejects.toBeInstanceOf(VmNotFoundError)
      expect((await hv.getVm(fx.vm)).id).toBe(vm.id)
    })

    it('refuses to unregister a running VM with VmStateError', async () => {
      await hv.startVm(fx.vm)
      await expect(hv.unregisterVm(fx.vm)).rejects.toBeInstanceOf(VmStateError)
      await hv.stopVm(fx.vm)
    })

    it('applies network mapping to a named NIC (switch null isolates it) and names an unknown NIC', async () => {
      const vm = await hv.getVm(fx.vm)
      const nic = vm.nics[0].name
      await hv.applyNetworkMapping(fx.vm, [
        { nic, addresses: ['10.20.0.15/24'], gateway: '10.20.0.1', dns: ['10.20.0.2'], switch: null },
      ])
      const after = await hv.getVm(fx.vm)
      expect(after.nics.find((n) => n.name === nic)?.switch).toBeNull()
      const bad = await hv.applyNetworkMapping(fx.vm, [{ nic: 'no-such-nic', addresses: [] }]).catch((e) => e)
      expect(bad).toBeInstanceOf(HypervisorError)
      expect(String(bad.message)).toContain('no-such-nic')
    })

    it('writes host events', async () => {
      const event: HostEvent = { level: 'warning', eventId: 3001, message: 'contract test event' }
      await hv.writeEvent(event)
      if (fx.readEvents) {
        const events = await fx.readEvents()
        expect(events.at(-1)).toMatchObject(event)
      }
    })
  })
}

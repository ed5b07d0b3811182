// The shared hypervisor contract, run against the lab hypervisor with real guest processes.
import { hypervisorContract } from '../contract.js'
import { makeLabHost, useBuildSnapshot } from './helpers.js'

const build = useBuildSnapshot()

hypervisorContract('lab', async () => {
  const host = await makeLabHost(build().guestScript)
  await host.hv.createVm('contract-vm', { sizeBytes: 8 * 1024 * 1024, disks: 2 })
  return {
    hypervisor: host.hv,
    vm: 'contract-vm',
    writeToVm: (vm, disk, offset, data) => host.hv.writeVm(vm, disk, offset, data),
    readEvents: async () =>
      (await host.readEvents()).map((e) => ({
        level: e.level as 'info' | 'warning' | 'error',
        eventId: e.eventId as number,
        message: e.message as string,
      })),
    cleanup: () => host.cleanup(),
  }
})

// The shared Hypervisor contract, run against the Hyper-V adapter and the fake powershell host.
// The host holds one stopped VM whose disk is a real VHDX under os.tmpdir(): points open its
// frozen file with our own reader, and "guest writes" land in it and in the host's change set.
import { join, win32 } from 'node:path'
import { createDisk, type HostEvent, openDisk } from '../../../src/hyperv/index.js'
import { hypervisorContract } from '../contract.js'
import { FakeHost, type Json } from './fake-host.js'

const MiB = 1024 * 1024
const VM_ID = '2b7e1516-28ae-4d2a-9f15-88097cf4f3c1'

async function contractHost() {
  const host = new FakeHost({})
  const disk = join(host.dir, 'app01-os.vhdx')
  const created = await createDisk(disk, { format: 'vhdx', virtualSize: 64 * MiB, blockSize: 2 * MiB })
  await created.close()
  const rec: Json = {
    VM: {
      Id: VM_ID,
      Name: 'app01',
      State: 3,
      Generation: 2,
      ProcessorCount: 2,
      MemoryStartup: 2147483648,
      Notes: 'contract VM\ntags: test',
      Path: host.dir,
      ConfigurationLocation: host.dir,
      Version: '10.0',
      CheckpointType: 3,
      CreationTime: '/Date(1700000000000)/',
    },
    Drives: [{ ControllerType: 1, ControllerNumber: 0, ControllerLocation: 0, Path: disk, DiskNumber: null }],
    Adapters: [
      {
        Name: 'Network Adapter',
        Id: `Microsoft:${VM_ID.toUpperCase()}\\5D0C5D0C-0000-4000-8000-000000000001`,
        SwitchName: 'Prod-vSwitch',
        MacAddress: '00155D0A0B0C',
        IPAddresses: ['10.1.0.30'],
      },
    ],
    Guest: [],
    IntegrationServices: [
      { Name: 'Shutdown', Enabled: true },
      { Name: 'VSS', Enabled: true },
    ],
  }
  // The adapter names the configuration the Windows way (ConfigurationLocation\Virtual Machines).
  const configPath = win32.join(host.dir, 'Virtual Machines', `${VM_ID.toUpperCase()}.vmcx`)
  host.write({
    vms: [rec],
    vhds: {
      [disk]: {
        Path: disk,
        VhdFormat: 3,
        VhdType: 3,
        Size: 64 * MiB,
        ParentPath: null,
        DiskIdentifier: '5D0C5D0C-0000-4000-8000-0000000000AA',
      },
    },
    switches: ['Prod-vSwitch'],
    configs: { [configPath]: structuredClone(rec) },
  })
  return { host, disk }
}

hypervisorContract('hyperv-ps (fake powershell)', async () => {
  const { host } = await contractHost()
  const hypervisor = host.adapter()
  await hypervisor.start()
  return {
    hypervisor,
    vm: 'app01',
    writeToVm: async (vm: string, index: number, offset: number, data: Uint8Array) => {
      // The guest writes to the live file: the base VHDX between points.
      const live = host.vm(vm).Drives[index].Path
      const d = await openDisk(live, { readOnly: false })
      await d.write(data, offset)
      await d.close()
      host.guestWrite(vm, index, offset, data.length)
    },
    readEvents: async (): Promise<HostEvent[]> =>
      host.read().events.map((e: Json) => ({
        level: e.entryType === 'Error' ? 'error' : e.entryType === 'Warning' ? 'warning' : 'info',
        eventId: e.eventId,
        message: e.message,
      })),
    cleanup: async () => {
      const rejected = host.rejections()
      await host.cleanup()
      if (rejected.length) throw new Error(`the fake refused scripts: ${JSON.stringify(rejected)}`)
    },
  }
})

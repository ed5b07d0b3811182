// The Hyper-V adapter against the fake powershell host (./fake/powershell.mjs): discovery from
// the recorded cmdlet shapes, hostile names, recovery, re-IP, events, and every error path of a
// PowerShell run giving one named error. The point cycle is in points.spec.ts.
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  HyperVAccessDeniedError,
  HyperVCommandError,
  HyperVError,
  HyperVIncompatibleError,
  HyperVOutputError,
  HyperVTimeoutError,
} from '../../../src/hyperv/hyperv-ps/index.js'
import { VmNotFoundError, VmStateError } from '../../../src/hyperv/hypervisor.js'
import { DB01, FakeHost, type Json, LEGACY01, WEB01 } from './fake-host.js'

const GiB = 1024 ** 3
let host: FakeHost

beforeEach(() => {
  host = new FakeHost()
})
afterEach(async () => {
  const rejected = host.rejections()
  await host.cleanup()
  expect(rejected).toEqual([])
})

describe('discovery', () => {
  it('catalogues the fixtures’ VMs: states, dates, disks and chains, NICs, notes', async () => {
    const hv = host.adapter()
    await hv.start()
    const vms = await hv.listVms()
    expect(vms.map((v) => [v.name, v.state, v.generation])).toEqual([
      ['web01', 'running', 2],
      ['db01', 'stopped', 1],
      ['legacy01', 'stopped', 1],
    ])
    const web = vms[0]
    expect(web).toMatchObject({ id: WEB01, cpus: 4, memoryBytes: 4 * GiB, tags: ['prod', 'web'] })
    // Sorted by controller location, the pass-through disk left out, the parent chain followed.
    expect(web.disks).toEqual([
      {
        path: 'C:\\VMs\\web01\\web01-os.vhdx',
        format: 'vhdx',
        virtualSize: 64 * GiB,
        parents: ['C:\\VMs\\base\\ws2022-base.vhdx'],
        location: 'SCSI 0:0',
      },
      {
        path: 'C:\\VMs\\web01\\web01-data.vhdx',
        format: 'vhdx',
        virtualSize: 100 * GiB,
        parents: [],
        location: 'SCSI 0:1',
      },
    ])
    expect(web.nics).toEqual([
      {
        name: 'Network Adapter',
        switch: 'Prod-vSwitch',
        mac: '00:15:5d:01:02:03',
        addresses: ['10.1.0.15/24', 'fe80::215:5dff:fe01:203/64'],
        gateway: '10.1.0.1',
        dns: ['10.1.0.2', '10.1.0.3'],
      },
      { name: 'Backup', switch: null, mac: '00:15:5d:01:02:04', addresses: ['10.9.0.15/32'] },
    ])
    expect(web.configPath).toBe(`C:\\VMs\\web01\\Virtual Machines\\${WEB01.toUpperCase()}.vmcx`)
    // db01: State as a string, its only drive a single object, a scalar IPAddresses.
    expect(vms[1].disks).toEqual([
      {
        path: 'D:\\Hyper-V\\db01\\db01.vhd',
        format: 'vhd',
        virtualSize: 40 * GiB,
        parents: [],
        location: 'IDE 0:0',
      },
    ])
    expect(vms[1].nics[0].addresses).toEqual(['10.1.0.20/32'])
    // legacy01: Saved counts as stopped, configuration version 5.0 keeps .xml, no addresses.
    expect(vms[2].configPath).toMatch(/\.xml$/)
    expect(vms[2].nics[0].addresses).toEqual([])
    const script = host.calls('list-vms')[0].script as string
    for (const c of [
      'Get-VM',
      'Get-VMHardDiskDrive',
      'Get-VHD',
      'Get-VMNetworkAdapter',
      'Get-VMIntegrationService',
    ])
      expect(script).toContain(c)
  })

  it('finds a VM by id (any case) or exact name; a missing disk file does not hide the VM', async () => {
    host.update((s) => {
      delete s.vhds['C:\\VMs\\web01\\web01-data.vhdx']
    })
    const hv = host.adapter()
    expect((await hv.getVm(DB01.toUpperCase())).name).toBe('db01')
    const web = await hv.getVm('WEB01')
    expect(web.id).toBe(WEB01)
    expect(web.disks[1]).toMatchObject({
      path: 'C:\\VMs\\web01\\web01-data.vhdx',
      format: 'vhdx',
      virtualSize: 0,
    })
    await expect(hv.getVm('web')).rejects.toBeInstanceOf(VmNotFoundError)
    // Hyper-V allows two VMs of one name: by name is then ambiguous, by id still works.
    host.update((s) => {
      const twin = structuredClone(s.vms[1])
      twin.VM.Id = '99999999-0000-4000-8000-0000000000db'
      s.vms.push(twin)
    })
    await expect(hv.getVm('db01')).rejects.toThrow("Find-RmVm: 2 VMs are named 'db01'; use the VM id")
    expect((await hv.getVm('99999999-0000-4000-8000-0000000000db')).name).toBe('db01')
  })
})

describe('hostile names', () => {
  const hostile = `web01'); Remove-VM -Name * -Force; $(Stop-Computer) ("`

  beforeEach(() => {
    host.update((s) => {
      const clone = (name: string, id: string) => {
        const rec = structuredClone(s.vms[1])
        rec.VM.Name = name
        rec.VM.Id = id
        s.vms.push(rec)
      }
      clone(hostile, '99999999-0000-4000-8000-000000000001')
      clone('*', '99999999-0000-4000-8000-000000000002')
    })
  })

  it('are data: looked up literally, never in the script text, nothing else touched', async () => {
    const hv = host.adapter()
    const vm = await hv.getVm(hostile)
    expect(vm.id).toBe('99999999-0000-4000-8000-000000000001')
    await hv.startVm(hostile)
    expect((await hv.getVm('*')).id).toBe('99999999-0000-4000-8000-000000000002')
    await expect(hv.getVm('w*')).rejects.toBeInstanceOf(VmNotFoundError)
    const states = Object.fromEntries(host.read().vms.map((v: Json) => [v.VM.Name, v.VM.State]))
    expect(states).toMatchObject({ [hostile]: 2, '*': 'Off', db01: 'Off', web01: 2 })
    expect(host.read().vms).toHaveLength(5)
    for (const call of host.calls()) expect(call.script).not.toContain('Stop-Computer')
  })

  it('a script the fake does not expect is refused loudly', async () => {
    const hv = host.adapter()
    const err = await hv.runner
      .run('start-vm', 'Remove-VM -VM (Find-RmVm $p.vm)', { vm: 'db01' })
      .catch((e) => e)
    expect(err).toBeInstanceOf(HyperVOutputError)
    expect(err.message).toContain(
      'FAKE-POWERSHELL REJECTS: operation start-vm uses unexpected cmdlet Remove-VM',
    )
    // A value spliced into the code (what the adapter never does) is caught too.
    const spliced = await hv.runner
      .run('start-vm', `Start-VM -VM (Find-RmVm '${hostile}')`, { vm: hostile })
      .catch((e) => e)
    expect(spliced.message).toContain('a parameter value appears in the script text')
    expect(host.rejections()).toHaveLength(2)
    host.update((s) => {
      s.rejections = []
    })
  })
})

describe('recovery', () => {
  const replicaConfig = 'E:\\Replica\\web01\\Virtual Machines\\WEB01.vmcx'
  const replicaDisks = ['E:\\Replica\\web01\\web01-os.vhdx', 'E:\\Replica\\web01\\web01-data.vhdx']

  beforeEach(() => {
    host.update((s) => {
      const rec = structuredClone(s.vms[0])
      rec.VM.Id = 'feedface-0000-4000-8000-000000000001'
      rec.Adapters.push({
        Name: 'Old',
        Id: 'Microsoft:X\\Y',
        SwitchName: 'Gone-vSwitch',
        MacAddress: '00155D0000EE',
        IPAddresses: [],
      })
      s.configs[replicaConfig] = rec
      for (const p of replicaDisks)
        s.vhds[p] = { Path: p, VhdFormat: 3, VhdType: 3, Size: 10 * GiB, ParentPath: null, DiskIdentifier: p }
    })
  })

  it('registers in place on the replicated disks, mapping and disconnecting switches', async () => {
    const hv = host.adapter({ switchMap: { 'Prod-vSwitch': 'DR-vSwitch' } })
    const config = { ...(await hv.getVm('web01')), configPath: replicaConfig }
    const vm = await hv.registerVm(config, replicaDisks)
    expect(vm.id).toBe('feedface-0000-4000-8000-000000000001')
    expect(vm.state).toBe('stopped')
    expect(vm.disks.map((d) => d.path)).toEqual(replicaDisks)
    expect(vm.nics.map((n) => [n.name, n.switch])).toEqual([
      ['Network Adapter', 'DR-vSwitch'],
      ['Backup', null],
      ['Old', null],
    ])
    const call = host.calls('register-vm')[0]
    expect(call.params).toMatchObject({
      configPath: replicaConfig,
      copy: false,
      diskPaths: replicaDisks,
      switchMap: [{ from: 'Prod-vSwitch', to: 'DR-vSwitch' }],
    })
    await expect(hv.registerVm(config, replicaDisks)).rejects.toMatchObject({
      name: 'HyperVCommandError',
      cmdlet: 'Import-VM',
    })
  })

  it('copies with a new id for a test failover', async () => {
    const hv = host.adapter()
    const config = { ...(await hv.getVm('web01')), configPath: replicaConfig }
    const vm = await hv.registerVm(config, replicaDisks, { newId: true, name: 'web01-test' })
    expect(vm.name).toBe('web01-test')
    expect(vm.id).not.toBe('feedface-0000-4000-8000-000000000001')
    expect(host.calls('register-vm')[0].params).toMatchObject({
      copy: true,
      vhdSourcePath: 'E:\\Replica\\web01',
      vmDestinationPath: 'E:\\Replica\\web01\\replimesh-copy-web01-test',
    })
    await hv.unregisterVm('web01-test')
    await hv.registerVm(config, replicaDisks, { newId: true, name: '..\\..\\Windows' })
    expect(host.calls('register-vm')[1].params.vmDestinationPath).toBe(
      'E:\\Replica\\web01\\replimesh-copy-.._.._Windows',
    )
  })

  it('names what stops an import: missing disk (40010), missing configuration, no configuration', async () => {
    const hv = host.adapter()
    const config = { ...(await hv.getVm('web01')), configPath: replicaConfig }
    const inc = await hv.registerVm(config, ['E:\\nowhere.vhdx', replicaDisks[1]]).catch((e) => e)
    expect(inc).toBeInstanceOf(HyperVIncompatibleError)
    expect(inc.message).toContain('40010 Virtual hard disk file not found: E:\\nowhere.vhdx')
    const missing = await hv.registerVm({ ...config, configPath: 'E:\\x.vmcx' }, replicaDisks).catch((e) => e)
    expect(missing).toBeInstanceOf(HyperVCommandError)
    expect(missing.message).toBe("Compare-VM: Could not find the file 'E:\\x.vmcx'.")
    // Without a configuration file the catalogue entry is used; its disk count must match.
    await expect(hv.registerVm({ ...config, configPath: null }, replicaDisks.slice(1))).rejects.toThrow(
      /has 2 disks, 1 paths given/,
    )
  })

  it('without a configuration file, builds the VM from its catalogue entry (New-VM)', async () => {
    const hv = host.adapter({ switchMap: { 'Prod-vSwitch': 'DR-vSwitch' } })
    const config = { ...(await hv.getVm('web01')), configPath: '/var/lib/replimesh/vms/web01/vm.json' }
    const vm = await hv.registerVm(config, replicaDisks)
    expect(vm).toMatchObject({
      name: 'web01',
      generation: 2,
      cpus: 4,
      memoryBytes: 4 * GiB,
      tags: ['prod', 'web'],
    })
    expect(vm.id).not.toBe(WEB01)
    expect(vm.disks.map((d) => [d.path, d.parents])).toEqual(replicaDisks.map((p) => [p, []]))
    expect(vm.nics.map((n) => [n.name, n.switch, n.mac])).toEqual([
      ['Network Adapter', 'DR-vSwitch', '00:15:5d:01:02:03'],
      ['Backup', null, '00:15:5d:01:02:04'],
    ])
    // A test copy: differencing children beside, never writing the replica; a fresh MAC.
    const test = await hv.registerVm({ ...config, configPath: null }, replicaDisks, {
      newId: true,
      name: 'web01-test',
    })
    expect(test.disks.map((d) => [d.path, d.parents])).toEqual([
      ['E:\\Replica\\web01\\replimesh-copy-web01-test\\0-web01-os.avhdx', [replicaDisks[0]]],
      ['E:\\Replica\\web01\\replimesh-copy-web01-test\\1-web01-data.avhdx', [replicaDisks[1]]],
    ])
    expect(test.nics[0].mac).not.toBe('00:15:5d:01:02:03')
    const params = host.calls('create-vm').map((c: Json) => c.params)
    expect(params[0].nics[0]).toEqual({ name: 'Network Adapter', switch: 'DR-vSwitch', mac: '00155D010203' })
    expect(params[1]).toMatchObject({
      differencing: true,
      vmPath: 'E:\\Replica\\web01\\replimesh-copy-web01-test',
    })
    expect(params[1].nics[0].mac).toBeNull()
  })

  it('starts, stops gracefully or by power, and unregisters only a stopped VM', async () => {
    const hv = host.adapter()
    await hv.startVm('db01')
    await expect(hv.startVm('db01')).rejects.toBeInstanceOf(VmStateError)
    await expect(hv.unregisterVm('db01')).rejects.toBeInstanceOf(VmStateError)
    // db01 has no Shutdown integration service: a graceful stop fails with Stop-VM's message.
    const err = await hv.stopVm('db01').catch((e) => e)
    expect(err).toBeInstanceOf(HyperVCommandError)
    expect(err.message).toMatch(/^Stop-VM: .*Shutdown integration service/)
    await hv.stopVm('db01', { force: true })
    expect(host.calls('stop-vm').map((c: Json) => c.params.force)).toEqual([false, true])
    expect(host.calls('stop-vm')[0].script).toContain('Stop-VM -VM $vm -TurnOff -Force')
    expect((await hv.getVm('db01')).state).toBe('stopped')
    await hv.unregisterVm('db01')
    await expect(hv.getVm('db01')).rejects.toBeInstanceOf(VmNotFoundError)
  })

  it('applies failover IP settings and switch changes per NIC', async () => {
    const hv = host.adapter()
    await hv.applyNetworkMapping('web01', [
      {
        nic: 'Network Adapter',
        addresses: ['10.20.0.15/24', '2001:db8::15/64'],
        gateway: '10.20.0.1',
        dns: ['10.20.0.2'],
        switch: 'DR-vSwitch',
      },
      { nic: 'Backup', addresses: [] },
    ])
    const [a, b] = host.vm('web01').Adapters
    expect(a.SwitchName).toBe('DR-vSwitch')
    expect(a.Failover).toEqual({
      ipv4: {
        address: '10.20.0.15',
        mask: '255.255.255.0',
        gateway: '10.20.0.1',
        dns1: '10.20.0.2',
        dns2: null,
      },
      ipv6: { address: '2001:db8::15', prefixLength: 64, gateway: null, dns1: null, dns2: null },
    })
    expect(b).toMatchObject({ SwitchName: null, Failover: { ipv4: null, ipv6: null } })
    const script = host.calls('apply-network')[0].script as string
    expect(script).toContain('Set-VMNetworkAdapterFailoverConfiguration @fc')
    expect(script).toContain('ClearFailoverIPv4Settings')
    const err = await hv
      .applyNetworkMapping('web01', [{ nic: 'Backup', addresses: [], switch: 'Nope-vSwitch' }])
      .catch((e) => e)
    expect(err).toMatchObject({ name: 'HyperVCommandError', cmdlet: 'Connect-VMNetworkAdapter' })
  })
})

describe('event log', () => {
  it('registers the source once, then writes with EventId and EntryType', async () => {
    const hv = host.adapter({ eventSource: 'replimesh-test' })
    await hv.writeEvent({ level: 'error', eventId: 4100, message: 'site B lost' })
    await hv.writeEvent({ level: 'info', eventId: 1000, message: 'ok' })
    expect(host.calls('write-event').map((c: Json) => c.params.register)).toEqual([true, false])
    expect(host.read().events).toEqual([
      {
        log: 'Application',
        source: 'replimesh-test',
        eventId: 4100,
        entryType: 'Error',
        message: 'site B lost',
      },
      {
        log: 'Application',
        source: 'replimesh-test',
        eventId: 1000,
        entryType: 'Information',
        message: 'ok',
      },
    ])
    await expect(hv.writeEvent({ level: 'info', eventId: 70000, message: 'x' })).rejects.toBeInstanceOf(
      HyperVError,
    )
    expect(host.calls('write-event')).toHaveLength(2)
    // A long message is cut to fit the command line, at a character boundary.
    await hv.writeEvent({ level: 'warning', eventId: 1001, message: 'é€'.repeat(20_000) })
    const long = host.read().events[2].message as string
    expect(Buffer.byteLength(long, 'utf8')).toBeLessThanOrEqual(4096)
    expect(long.endsWith('…')).toBe(true)
    expect(long.startsWith('é€é€')).toBe(true)
  })
})

describe('running PowerShell', () => {
  it('names a permission failure, survives warnings, refuses a host without Hyper-V', async () => {
    const hv = host.adapter()
    host.fault('list-vms', {
      error:
        'You do not have the required permission to complete this task. Contact the administrator of the authorization policy for the computer.',
      cmdlet: 'Get-VM',
      category: 'PermissionDenied',
      errorId: 'AccessDenied,Microsoft.HyperV.PowerShell.Commands.GetVM',
    })
    const denied = await hv.listVms().catch((e) => e)
    expect(denied).toBeInstanceOf(HyperVAccessDeniedError)
    expect(denied.message).toMatch(/^Get-VM: You do not have the required permission/)
    host.fault('start-vm', { kind: 'warning' })
    await hv.startVm('db01')
    host.update((s) => {
      s.hyperVModule = false
    })
    await expect(hv.start()).rejects.toThrow(/Hyper-V PowerShell module is not installed/)
  })

  it('kills a run at its timeout and on abort', async () => {
    const hv = host.adapter({ timeoutMs: 1500 })
    host.fault('start-vm', { kind: 'hang' })
    const t0 = Date.now()
    const err = await hv.startVm('db01').catch((e) => e)
    expect(err).toBeInstanceOf(HyperVTimeoutError)
    expect(err.message).toBe('start-vm: PowerShell did not finish within 1500 ms (killed)')
    expect(Date.now() - t0).toBeLessThan(5000)
    host.fault('list-vms', { kind: 'hang' })
    const ac = new AbortController()
    setTimeout(() => ac.abort(new Error('operator gave up')), 300)
    await expect(hv.listVms({ signal: ac.signal })).rejects.toThrow('operator gave up')
    host.fault('list-vms', { kind: 'hang' })
    const pending = hv.listVms().catch((e) => e)
    await new Promise((r) => setTimeout(r, 300))
    await hv.stop()
    expect(await pending).toBeInstanceOf(HyperVError)
  })

  it('bounds output, and names garbage, a crash and a missing executable', async () => {
    const hv = host.adapter({ maxOutputBytes: 64 * 1024 })
    host.fault('list-vms', { kind: 'flood' })
    await expect(hv.listVms()).rejects.toThrow(/output exceeded 65536 bytes/)
    host.fault('list-vms', { kind: 'garbage' })
    await expect(hv.listVms()).rejects.toBeInstanceOf(HyperVOutputError)
    host.fault('list-vms', { kind: 'crash' })
    await expect(hv.listVms()).rejects.toThrow(/exited with 3 without our result: Windows PowerShell crashed/)
    const calls = host.calls().length
    await expect(
      hv.applyNetworkMapping('web01', [{ nic: 'n'.repeat(20_000), addresses: [] }]),
    ).rejects.toThrow(/script too long for a command line/)
    expect(host.calls()).toHaveLength(calls)
    const none = host.adapter({ executable: '/nonexistent/powershell.exe' })
    await expect(none.listVms()).rejects.toThrow(/cannot run \/nonexistent\/powershell.exe: ENOENT/)
  })

  it('runs scripts in parallel up to maxConcurrent (the fake host serialises its state)', async () => {
    const hv = host.adapter({ maxConcurrent: 3 })
    await hv.writeEvent({ level: 'info', eventId: 1, message: 'first' })
    await Promise.all(
      [2, 3, 4, 5].map((eventId) => hv.writeEvent({ level: 'info', eventId, message: `m${eventId}` })),
    )
    expect(
      host
        .read()
        .events.map((e: Json) => e.eventId)
        .sort(),
    ).toEqual([1, 2, 3, 4, 5])
  })

  it('runs at most maxConcurrent scripts at once', async () => {
    const hv = host.adapter({ maxConcurrent: 1 })
    const results = await Promise.all([hv.getVm('web01'), hv.getVm('db01'), hv.getVm(LEGACY01)])
    expect(results.map((v) => v.name)).toEqual(['web01', 'db01', 'legacy01'])
  })
})

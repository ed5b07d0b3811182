// Pure parts of the Hyper-V adapter: 5.1 JSON quirks, state mapping, reference ids, range
// normalisation, re-IP planning, script building and the reading of a run's output.
import { describe, expect, it } from 'vitest'
import {
  HyperVAccessDeniedError,
  HyperVCommandError,
  HyperVIncompatibleError,
  HyperVJobError,
  HyperVOutputError,
  HyperVReferenceError,
} from '../../../src/hyperv/hyperv-ps/errors.js'
import { maskOf, planFailover } from '../../../src/hyperv/hyperv-ps/network.js'
import {
  asArray,
  configPathOf,
  mapDiskFormat,
  mapVmState,
  normalizeMac,
  parseDate,
  prefixLength,
  tagsFromNotes,
  toVmRecord,
} from '../../../src/hyperv/hyperv-ps/parse.js'
import {
  decodeReference,
  encodeReference,
  normalizeRanges,
  rctIdsByDisk,
} from '../../../src/hyperv/hyperv-ps/reference.js'
import { interpret, readableStderr } from '../../../src/hyperv/hyperv-ps/runner.js'
import { buildScript, encodeCommand, PREAMBLE } from '../../../src/hyperv/hyperv-ps/script.js'
import { VmNotFoundError, VmStateError } from '../../../src/hyperv/hypervisor.js'

describe('Windows PowerShell 5.1 JSON', () => {
  it('reads every form a collection takes', () => {
    expect(asArray(null)).toEqual([])
    expect(asArray(undefined)).toEqual([])
    expect(asArray('10.0.0.1')).toEqual(['10.0.0.1'])
    expect(asArray({ Path: 'a' })).toEqual([{ Path: 'a' }])
    expect(asArray([1, 2])).toEqual([1, 2])
    expect(asArray({ value: ['x'], Count: 1 })).toEqual(['x'])
    expect(asArray({ value: 'not-an-array', Count: 1 })).toEqual([{ value: 'not-an-array', Count: 1 }])
  })

  it('reads 5.1 and 7 dates', () => {
    // What JSON.parse makes of 5.1's "\/Date(1700000000000)\/".
    expect(parseDate(JSON.parse('"\\/Date(1700000000000)\\/"'))).toBe(1_700_000_000_000)
    expect(parseDate('/Date(-1000)/')).toBe(-1000)
    expect(parseDate('/Date(1700000000000+0100)/')).toBe(1_700_000_000_000)
    expect(parseDate('2023-11-14T22:13:20.000Z')).toBe(1_700_000_000_000)
    expect(parseDate(null)).toBeNull()
    expect(parseDate('yesterday')).toBeNull()
  })

  it.each([
    [2, 'running'],
    ['Running', 'running'],
    ['2', 'running'],
    [32785, 'running'],
    [3, 'stopped'],
    ['Off', 'stopped'],
    [6, 'stopped'],
    [32779, 'stopped'],
    [9, 'paused'],
    [32789, 'paused'],
    [10, 'starting'],
    [32777, 'starting'],
    [4, 'stopping'],
    [32773, 'stopping'],
    [1, 'unknown'],
    [12345, 'unknown'],
    [null, 'unknown'],
  ])('maps VMState %j to %s', (value, state) => {
    expect(mapVmState(value)).toBe(state)
  })

  it('maps disk formats from the enum or, failing that, the extension', () => {
    expect(mapDiskFormat(3, 'x')).toBe('vhdx')
    expect(mapDiskFormat('VHD', 'x')).toBe('vhd')
    expect(mapDiskFormat(null, 'C:\\a\\b.avhdx')).toBe('vhdx')
    expect(mapDiskFormat(undefined, 'C:\\a\\b.VHD')).toBe('vhd')
    expect(mapDiskFormat(undefined, 'C:\\a\\b.img')).toBe('raw')
  })

  it('normalises MACs, subnets, tags and the configuration path', () => {
    expect(normalizeMac('00155D010203')).toBe('00:15:5d:01:02:03')
    expect(normalizeMac('00-15-5D-01-02-03')).toBe('00:15:5d:01:02:03')
    expect(prefixLength('255.255.255.0')).toBe(24)
    expect(prefixLength('255.255.255.255')).toBe(32)
    expect(prefixLength('/64')).toBe(64)
    expect(prefixLength('255.0.255.0')).toBeNull()
    expect(tagsFromNotes('Front end\r\nTags: prod, web ,\r\nmore')).toEqual(['prod', 'web'])
    expect(tagsFromNotes('')).toEqual([])
    expect(configPathOf('C:\\VMs\\a', 'ab-cd', '9.0')).toBe('C:\\VMs\\a\\Virtual Machines\\AB-CD.vmcx')
    expect(configPathOf('C:\\VMs\\a', 'ab-cd', '5.0')).toBe('C:\\VMs\\a\\Virtual Machines\\AB-CD.xml')
    expect(configPathOf(null, 'ab', '9.0')).toBeNull()
  })

  it('builds VmInfo from a record whose collections are single objects, wrapped or null', () => {
    const { info, configVersion } = toVmRecord({
      VM: {
        Id: 'AB12',
        Name: 'x',
        State: 'Off',
        Generation: 2,
        ProcessorCount: 2,
        MemoryStartup: 1024,
        Notes: null,
        ConfigurationLocation: null,
        Version: '8.0',
      },
      Drives: { ControllerType: 0, ControllerNumber: 1, ControllerLocation: 0, Path: 'C:\\d\\child.avhdx' },
      Vhds: [
        { Path: 'C:\\d\\child.avhdx', VhdFormat: 3, Size: 10, ParentPath: 'C:\\d\\base.vhdx' },
        { Path: 'C:\\D\\BASE.VHDX', VhdFormat: 3, Size: 10, ParentPath: '' },
      ],
      Adapters: {
        value: [{ Name: 'n', SwitchName: '', MacAddress: '00155D000001', IPAddresses: 'fe80::1' }],
        Count: 1,
      },
      Guest: null,
      IntegrationServices: null,
    })
    expect(configVersion).toBe('8.0')
    expect(info).toMatchObject({ id: 'ab12', state: 'stopped', notes: '', tags: [], configPath: null })
    expect(info.disks).toEqual([
      {
        path: 'C:\\d\\child.avhdx',
        format: 'vhdx',
        virtualSize: 10,
        parents: ['C:\\d\\base.vhdx'],
        location: 'IDE 1:0',
      },
    ])
    expect(info.nics).toEqual([
      { name: 'n', switch: null, mac: '00:15:5d:00:00:01', addresses: ['fe80::1/128'] },
    ])
    expect(() => toVmRecord({ Drives: [] })).toThrow()
  })
})

describe('reference ids and changed ranges', () => {
  it('round-trips and refuses foreign or damaged ids', () => {
    const ref = {
      vmId: 'v',
      referencePointId: 'Microsoft:R',
      disks: [
        { index: 0, rctId: 'rct:1' },
        { index: 1, rctId: null },
      ],
    }
    expect(decodeReference(encodeReference(ref))).toEqual(ref)
    expect(() => decodeReference('lab1:unknown')).toThrow(HyperVReferenceError)
    expect(() => decodeReference('hvref1.!!!')).toThrow(HyperVReferenceError)
    expect(() => decodeReference(`hvref1.${Buffer.from('{"vmId":1}').toString('base64url')}`)).toThrow(
      HyperVReferenceError,
    )
  })

  it('matches RCT ids to disks by identifier, else by position', () => {
    expect(rctIdsByDisk(['AAA', 'BBB'], ['{bbb}', '{aaa}'], ['r2', 'r1'])).toEqual([
      { index: 0, rctId: 'r1' },
      { index: 1, rctId: 'r2' },
    ])
    expect(rctIdsByDisk(['AAA', null], ['{zzz}', '{yyy}'], ['r1', 'r2'])).toEqual([
      { index: 0, rctId: 'r1' },
      { index: 1, rctId: 'r2' },
    ])
    expect(rctIdsByDisk(['AAA', 'BBB'], ['{aaa}'], ['r1'])).toEqual([
      { index: 0, rctId: 'r1' },
      { index: 1, rctId: null },
    ])
  })

  it('sorts, clips and merges ranges', () => {
    expect(
      normalizeRanges(
        [
          { offset: 100, length: 10 },
          { offset: 0, length: 10 },
          { offset: 10, length: 5 },
          { offset: 105, length: 20 },
          { offset: 990, length: 50 },
          { offset: 2000, length: 1 },
        ],
        1000,
      ),
    ).toEqual([
      { offset: 0, length: 15 },
      { offset: 100, length: 25 },
      { offset: 990, length: 10 },
    ])
  })
})

describe('re-IP planning', () => {
  it('splits CIDR addresses into the failover cmdlet’s fields', () => {
    expect(maskOf(24)).toBe('255.255.255.0')
    expect(maskOf(0)).toBe('0.0.0.0')
    expect(maskOf(32)).toBe('255.255.255.255')
    expect(
      planFailover({
        nic: 'n',
        addresses: ['10.2.0.5/23', '2001:db8::5/64'],
        gateway: '10.2.0.1',
        dns: ['10.2.0.2', '2001:db8::53', '10.2.0.3'],
        switch: null,
      }),
    ).toEqual({
      nic: 'n',
      setSwitch: true,
      switch: null,
      ipv4: {
        address: '10.2.0.5',
        mask: '255.255.254.0',
        gateway: '10.2.0.1',
        dns1: '10.2.0.2',
        dns2: '10.2.0.3',
      },
      ipv6: { address: '2001:db8::5', prefixLength: 64, gateway: null, dns1: '2001:db8::53', dns2: null },
    })
    expect(planFailover({ nic: 'n', addresses: [] })).toMatchObject({
      setSwitch: false,
      ipv4: null,
      ipv6: null,
    })
    expect(() => planFailover({ nic: 'n', addresses: ['10.0.0.1/24', '10.0.0.2/24'] })).toThrow(
      /one address per IP family/,
    )
    expect(() => planFailover({ nic: 'n', addresses: ['10.0.0.300/24'] })).toThrow(/not an IP address/)
    expect(() => planFailover({ nic: 'n', addresses: ['10.0.0.1/33'] })).toThrow(/prefix length/)
  })
})

describe('scripts', () => {
  const hostile = `x'; Remove-VM * -Force; $(Stop-Computer) "\` #`

  it('start with the preamble and carry values only inside the base64 blob', () => {
    const script = buildScript('start-vm', 'Start-VM -VM (Find-RmVm $p.vm)', { vm: hostile })
    expect(script.split('\n').slice(0, 3)).toEqual([...PREAMBLE])
    expect(script.split('\n')[3]).toBe("$op='start-vm'")
    expect(script).not.toContain('Remove-VM')
    expect(script).not.toContain('Stop-Computer')
    const blob = /FromBase64String\('([A-Za-z0-9+/=]+)'\)/.exec(script)![1]
    expect(JSON.parse(Buffer.from(blob, 'base64').toString('utf8'))).toEqual({ vm: hostile })
    expect(script).toContain('ConvertTo-Json -InputObject @($r) -Depth 5 -Compress')
    expect(script).toMatch(/ok=\$false[\s\S]*exit 1\n\}$/)
    expect(() => buildScript("x'y", '', {})).toThrow(TypeError)
  })

  it('encode as base64 of UTF-16LE', () => {
    const enc = encodeCommand("Write-Output 'é'")
    expect(Buffer.from(enc, 'base64').toString('utf16le')).toBe("Write-Output 'é'")
    expect(Buffer.from(enc, 'base64').length).toBe(2 * "Write-Output 'é'".length)
  })
})

describe('reading a run', () => {
  const failure = (fields: object) =>
    `${JSON.stringify({ ok: false, op: 'x', error: 'boom', ...fields })}\r\n`

  it('takes the last JSON line, after warnings and a BOM', () => {
    expect(interpret('x', 0, '\uFEFFWARNING: already running\r\n[{"a":1}]\r\n', '')).toEqual([{ a: 1 }])
  })

  it('maps each failure to one named error', () => {
    const err = (fields: object) => {
      try {
        interpret('op1', 1, failure(fields), '')
      } catch (e) {
        return e as Error
      }
      throw new Error('no error')
    }
    const nf = err({ kind: 'vm-not-found', data: { vm: 'ghost' } })
    expect(nf).toBeInstanceOf(VmNotFoundError)
    expect(nf.message).toContain("'ghost'")
    const st = err({ kind: 'vm-state', data: { vm: 'a', state: 'Running' }, error: 'already running' })
    expect(st).toBeInstanceOf(VmStateError)
    expect((st as VmStateError).state).toBe('running')
    const job = err({
      kind: 'wmi',
      data: { method: 'CreateSnapshot', returnValue: 32775, jobState: 10 },
      error: 'busy',
    })
    expect(job).toBeInstanceOf(HyperVJobError)
    expect(job.message).toBe(
      'CreateSnapshot: WMI return code 32775 (Invalid state for this operation), job state 10: busy',
    )
    expect(err({ kind: 'incompatible', error: '33012 no switch' })).toBeInstanceOf(HyperVIncompatibleError)
    const denied = err({
      cmdlet: 'Get-VM',
      category: 'PermissionDenied',
      error: 'You do not have the required permission to complete this task.',
    })
    expect(denied).toBeInstanceOf(HyperVAccessDeniedError)
    expect(denied.message).toMatch(/^Get-VM: You do not have/)
    const plain = err({
      cmdlet: 'Import-VM',
      category: 'InvalidOperation',
      errorId: 'InvalidState,Microsoft.HyperV.PowerShell.Commands.ImportVM',
    })
    expect(plain).toBeInstanceOf(HyperVCommandError)
    expect(plain).not.toBeInstanceOf(HyperVAccessDeniedError)
    expect((plain as HyperVCommandError).cmdlet).toBe('Import-VM')
    expect(plain.message).toBe('Import-VM: boom')
  })

  it('reports output that is not ours, with the CLIXML error text', () => {
    const clixml =
      '#< CLIXML\r\n<Objs Version="1.1.0.1"><S S="Error">Import-Module : not found_x000D__x000A_</S><S S="Error">line 2</S></Objs>'
    expect(readableStderr(clixml)).toBe('Import-Module : not found\r\nline 2')
    expect(() => interpret('x', 1, '', clixml)).toThrow(
      /exited with 1 without our result: Import-Module : not found/,
    )
    expect(() => interpret('x', 0, 'hello', '')).toThrow(HyperVOutputError)
    expect(() => interpret('x', 0, '{"ok":true}', '')).toThrow(HyperVOutputError)
    expect(() => interpret('x', null, '', '')).toThrow(/exited with a signal/)
  })
})

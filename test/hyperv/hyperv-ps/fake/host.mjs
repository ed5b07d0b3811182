// The simulated Hyper-V host behind the fake powershell: one handler per adapter operation,
// playing it against the state (VMs in cmdlet shapes, VHDs, checkpoints, RCT history, reference
// points, events) and returning what the real script would print, or throwing ScriptError with
// the fields the real catch block prints.
import { randomUUID } from 'node:crypto'

let state

/** The state file's content, loaded by the entry script; handlers mutate it in place. */
export function useState(s) {
  state = s
}

export class ScriptError extends Error {
  constructor(message, fields = {}) {
    super(message)
    this.fields = fields
  }
}

const date = (ms) => `/Date(${ms})/`

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
function findVm(key) {
  const matches = GUID.test(key)
    ? state.vms.filter((v) => v.VM.Id.toLowerCase() === key.toLowerCase())
    : state.vms.filter((v) => v.VM.Name.toLowerCase() === String(key).toLowerCase())
  if (matches.length === 0)
    throw new ScriptError(`no VM named or with id '${key}'`, {
      cmdlet: 'Find-RmVm',
      category: 'OperationStopped',
      errorId: `no VM named or with id '${key}'`,
      kind: 'vm-not-found',
      data: { vm: key },
    })
  if (matches.length > 1)
    throw new ScriptError(`${matches.length} VMs are named '${key}'; use the VM id`, { cmdlet: 'Find-RmVm' })
  return matches[0]
}
const DRIVE_FIELDS = ['ControllerType', 'ControllerNumber', 'ControllerLocation', 'Path']
const stateName = (n) => ({ 2: 'Running', 3: 'Off', 6: 'Saved', 9: 'Paused' })[n] ?? String(n)
const vhdDrives = (rec) =>
  asList(rec.Drives)
    .filter((d) => d.Path && d.DiskNumber == null)
    .sort(
      (a, b) =>
        a.ControllerType - b.ControllerType ||
        a.ControllerNumber - b.ControllerNumber ||
        a.ControllerLocation - b.ControllerLocation,
    )
function asList(v) {
  if (v == null) return []
  if (Array.isArray(v)) return v
  if (typeof v === 'object' && Array.isArray(v.value)) return v.value
  return [v]
}
function getVhd(path) {
  const v = state.vhds[path]
  if (!v)
    throw new ScriptError(`Getting the mounted storage instance for the path '${path}' failed.`, {
      cmdlet: 'Get-VHD',
      category: 'ObjectNotFound',
    })
  return v
}
function vmRecord(rec) {
  const vhds = []
  for (const d of vhdDrives(rec)) {
    let path = d.Path
    for (let n = 0; path && n < 64; n++) {
      const v = state.vhds[path] ?? {
        Path: path,
        Error: `The system cannot find the file '${path}'.`,
        ParentPath: null,
      }
      vhds.push(v)
      path = v.ParentPath
    }
  }
  const pick = (o, keys) => Object.fromEntries(keys.map((k) => [k, o[k] ?? null]))
  const drives = Array.isArray(rec.Drives) || rec.Drives?.value ? vhdDrives(rec) : vhdDrives(rec)[0]
  return {
    VM: pick(rec.VM, [
      'Id',
      'Name',
      'State',
      'Generation',
      'ProcessorCount',
      'MemoryStartup',
      'Notes',
      'Path',
      'ConfigurationLocation',
      'Version',
      'CheckpointType',
      'CreationTime',
    ]),
    // Select-Object keeps a single drive a single object when the state holds it so (5.1 unrolling).
    Drives: Array.isArray(drives)
      ? drives.map((d) => pick(d, DRIVE_FIELDS))
      : drives && pick(drives, DRIVE_FIELDS),
    Vhds: vhds,
    Adapters: rec.Adapters,
    Guest: rec.Guest ?? [],
    IntegrationServices: rec.IntegrationServices,
  }
}
const versionAtLeast = (v, major, minor) => {
  const [a, b] = String(v).split('.').map(Number)
  return a > major || (a === major && b >= minor)
}
function wmiFailure(method, returnValue, jobState, message) {
  return new ScriptError(message, {
    cmdlet: 'Wait-RmJob',
    kind: 'wmi',
    data: { method, returnValue, jobState },
  })
}
export function takeFault(op) {
  const i = state.faults.findIndex((f) => f.op === op)
  if (i < 0) return null
  const f = state.faults[i]
  if (!f.sticky) state.faults.splice(i, 1)
  return f
}

export const handlers = {
  probe: () => [{ PSVersion: '5.1.17763.6414', HyperV: state.hyperVModule !== false }],

  'list-vms': (p) => (p.vm ? [findVm(p.vm)] : state.vms).map(vmRecord),

  'create-point': (p) => {
    const rec = findVm(p.vm)
    const rct = versionAtLeast(rec.VM.Version, 6, 2)
    const vss = asList(rec.IntegrationServices).some((s) => s.Name === 'VSS' && s.Enabled)
    const level = p.consistency === 1 && !vss ? 2 : p.consistency
    if (state.snapshots.some((s) => s.vmId === rec.VM.Id && s.type === 32768))
      throw wmiFailure('CreateSnapshot', 32775, 10, 'a recovery checkpoint of this VM already exists')
    const instanceId = `Microsoft:${randomUUID().toUpperCase()}`
    const created = state.now ?? Date.now()
    const disks = []
    for (const d of vhdDrives(rec)) {
      const live = getVhd(d.Path)
      const avhdx = `${d.Path.replace(/\.a?vhdx?$/i, '')}_${instanceId.slice(10, 18)}.avhdx`
      state.vhds[avhdx] = {
        ...live,
        Path: avhdx,
        VhdType: 4,
        ParentPath: d.Path,
        DiskIdentifier: randomUUID().toUpperCase(),
        FileSize: 4194304,
      }
      disks.push({ Live: state.vhds[avhdx], Frozen: live })
      // What the guest wrote since the last reference becomes the checkpoint's change set.
      const frozenChanges = state.pendingChanges[d.Path] ?? []
      state.pendingChanges[d.Path] = []
      d.Path = avhdx
      disks[disks.length - 1].changes = frozenChanges
    }
    state.snapshots.push({
      InstanceID: instanceId,
      ElementName: p.marker,
      vmId: rec.VM.Id,
      type: rct ? 32768 : 2,
      level,
      created,
      disks,
    })
    return [
      {
        VmId: rec.VM.Id,
        Version: rec.VM.Version,
        Rct: rct,
        ConsistencyLevel: level,
        SnapshotType: rct ? 32768 : 2,
        Snapshot: {
          InstanceID: instanceId,
          ElementName: `${rec.VM.Name} - (${new Date(created).toISOString()})`,
          VirtualSystemType: rct
            ? 'Microsoft:Hyper-V:Snapshot:Recovery'
            : 'Microsoft:Hyper-V:Snapshot:Realized',
          CreationTime: date(created),
        },
        Disks: disks.map((d) => ({ Live: d.Live, Frozen: d.Frozen })),
      },
    ]
  },

  'disk-changes': (p) =>
    asList(p.requests).map((q) => {
      const row = {
        Path: q.path,
        ReturnValue: 0,
        ProcessedByteLength: 0,
        ChangedByteOffsets: null,
        ChangedByteLengths: null,
        Error: null,
      }
      const snap = state.snapshots.find((s) => s.disks.some((d) => d.Frozen.Path === q.path))
      const disk = snap?.disks.find((d) => d.Frozen.Path === q.path)
      const size = state.vhds[q.path]?.Size
      const bad = (rv, msg) => ({ ...row, ReturnValue: rv, Error: msg })
      if (!disk || size === undefined)
        return bad(32779, `The system cannot find the file specified. (${q.path})`)
      if (q.length <= 0 || q.offset < 0 || q.offset + q.length > size)
        return bad(32773, 'The region lies outside the virtual disk')
      const history = state.rctHistory[q.path] ?? []
      const at = history.findIndex((h) => h.id === q.limitId)
      if (at < 0)
        return bad(32773, `The change tracking identifier '${q.limitId}' is not valid for this disk.`)
      const ranges = [...history.slice(at + 1).flatMap((h) => h.ranges), ...disk.changes].sort(
        (a, b) => a.offset - b.offset,
      )
      // Process at most changeChunkBytes per call, like a host that stops early.
      const processed = Math.min(q.length, state.changeChunkBytes ?? Number.MAX_SAFE_INTEGER)
      const end = q.offset + processed
      const hit = ranges
        .map((r) => ({ start: Math.max(r.offset, q.offset), end: Math.min(r.offset + r.length, end) }))
        .filter((r) => r.end > r.start)
      return {
        ...row,
        ProcessedByteLength: processed,
        // 5.1 prints a one-element UInt64[] as an array; null when there is none.
        ChangedByteOffsets: hit.length ? hit.map((r) => r.start) : null,
        ChangedByteLengths: hit.length ? hit.map((r) => r.end - r.start) : null,
      }
    }),

  'cleanup-points': (p) => {
    const stale = state.snapshots.filter((s) => s.ElementName === p.marker)
    for (const snap of stale) {
      const rec = state.vms.find((v) => v.VM.Id === snap.vmId)
      if (rec) mergeBack(rec, snap, false)
    }
    state.snapshots = state.snapshots.filter((s) => !stale.includes(s))
    return stale.map((s) => ({ InstanceID: s.InstanceID, VirtualSystemIdentifier: s.vmId.toUpperCase() }))
  },

  'release-point': (p) => {
    const rec = findVm(p.vm)
    const i = state.snapshots.findIndex((s) => s.InstanceID === p.snapshotId)
    if (i < 0)
      throw new ScriptError(`checkpoint '${p.snapshotId}' of VM '${rec.VM.Name}' no longer exists`, {
        kind: 'point-gone',
      })
    const snap = state.snapshots[i]
    const fault = takeFault('release-point:job')
    if (fault)
      throw wmiFailure(
        p.convert ? 'ConvertToReferencePoint' : 'DestroySnapshot',
        fault.returnValue ?? 32768,
        10,
        fault.message ?? 'job failed',
      )
    state.snapshots.splice(i, 1)
    mergeBack(rec, snap, p.convert)
    if (!p.convert) return [{ ReferencePoint: null, Removed: [] }]
    const ref = {
      InstanceID: `Microsoft:${randomUUID().toUpperCase()}`,
      vmId: rec.VM.Id,
      ReferencePointType: 1,
      VirtualDiskIdentifiers: [],
      ResilientChangeTrackingIdentifiers: [],
    }
    for (const sd of snap.disks) {
      state.rctHistory[sd.Frozen.Path] ??= []
      const history = state.rctHistory[sd.Frozen.Path]
      const id = `rctX:${sd.Frozen.DiskIdentifier.toLowerCase()}:${history.length + 1}`
      history.push({ id, ranges: sd.changes })
      ref.VirtualDiskIdentifiers.push(`{${sd.Frozen.DiskIdentifier}}`)
      ref.ResilientChangeTrackingIdentifiers.push(id)
    }
    const keep = new Set([ref.InstanceID, ...asList(p.keep)])
    const removed = state.referencePoints
      .filter((r) => r.vmId === rec.VM.Id && !keep.has(r.InstanceID))
      .map((r) => r.InstanceID)
    state.referencePoints = state.referencePoints.filter((r) => !removed.includes(r.InstanceID))
    state.referencePoints.push(ref)
    const { vmId, ...shown } = ref
    return [{ ReferencePoint: shown, Removed: removed }]
  },

  'register-vm': (p) => {
    const config = state.configs[p.configPath]
    if (!config)
      throw new ScriptError(`Could not find the file '${p.configPath}'.`, {
        cmdlet: 'Compare-VM',
        category: 'ObjectNotFound',
        errorId: 'ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.CompareVM',
      })
    const rec = structuredClone(config)
    if (p.copy) {
      rec.VM.Id = randomUUID()
      for (const d of vhdDrives(rec)) {
        const name = d.Path.split(/[\\/]/).pop()
        const src = `${p.vhdSourcePath}\\${name}`
        const dst = `${p.vhdDestinationPath}\\${name}`
        const v = state.vhds[src] ?? state.vhds[asList(p.diskPaths).find((x) => x.endsWith(name))]
        if (!v)
          throw incompatible([{ MessageId: 40010, Message: `Virtual hard disk file not found: ${src}` }])
        state.vhds[dst] = { ...v, Path: dst }
        d.Path = dst
      }
    } else {
      if (state.vms.some((v) => v.VM.Id.toLowerCase() === rec.VM.Id.toLowerCase()))
        throw new ScriptError(
          'The operation cannot be performed because the object is not in a valid state: a virtual machine with the same identifier already exists.',
          { cmdlet: 'Import-VM', category: 'InvalidOperation' },
        )
      vhdDrives(rec).forEach((d, i) => {
        if (asList(p.diskPaths)[i]) d.Path = asList(p.diskPaths)[i]
      })
      const missing = vhdDrives(rec).filter((d) => !state.vhds[d.Path])
      if (missing.length)
        throw incompatible(
          missing.map((d) => ({ MessageId: 40010, Message: `Virtual hard disk file not found: ${d.Path}` })),
        )
    }
    for (const a of asList(rec.Adapters)) {
      const m = asList(p.switchMap).find((x) => x.from === a.SwitchName)
      if (m) {
        if (!state.switches.includes(m.to))
          throw new ScriptError(`Hyper-V was unable to find a virtual switch with name "${m.to}".`, {
            cmdlet: 'Connect-VMNetworkAdapter',
            category: 'InvalidArgument',
          })
        a.SwitchName = m.to
      } else if (a.SwitchName && !state.switches.includes(a.SwitchName)) a.SwitchName = null // 33012 → Disconnect
    }
    if (p.name) rec.VM.Name = p.name
    rec.VM.State = 3
    state.vms.push(rec)
    return [vmRecord(rec)]
  },

  'create-vm': (p) => {
    const c = p.config
    const id = randomUUID()
    const drives = asList(p.diskPaths).map((path, i) => {
      let file = path
      const parent = state.vhds[path]
      if (!parent)
        throw new ScriptError(`The system cannot find the file '${path}'.`, {
          cmdlet: p.differencing ? 'New-VHD' : 'Add-VMHardDiskDrive',
          category: 'ObjectNotFound',
        })
      if (p.differencing) {
        file = p.childPaths[i]
        state.vhds[file] = {
          ...parent,
          Path: file,
          VhdType: 4,
          ParentPath: path,
          DiskIdentifier: randomUUID().toUpperCase(),
        }
      }
      const ide = c.generation === 1 && i === 0
      return {
        ControllerType: ide ? 0 : 1,
        ControllerNumber: 0,
        ControllerLocation: ide ? 0 : i,
        Path: file,
        DiskNumber: null,
      }
    })
    const rec = {
      VM: {
        Id: id,
        Name: p.name,
        State: 3,
        Generation: c.generation,
        ProcessorCount: c.cpus,
        MemoryStartup: c.memoryBytes,
        Notes: c.notes ?? '',
        Path: p.vmPath ?? 'C:\\ProgramData\\Microsoft\\Windows\\Hyper-V',
        ConfigurationLocation: p.vmPath ?? 'C:\\ProgramData\\Microsoft\\Windows\\Hyper-V',
        Version: '10.0',
        CheckpointType: 3,
        CreationTime: date(state.now ?? Date.now()),
      },
      Drives: drives,
      Adapters: asList(p.nics).map((n, i) => ({
        Name: n.name,
        Id: `Microsoft:${id.toUpperCase()}\\${String(i).padStart(8, '0')}-0000-4000-8000-000000000000`,
        SwitchName: n.switch && state.switches.includes(n.switch) ? n.switch : null,
        MacAddress: n.mac ?? `00155D${randomUUID().replace(/-/g, '').slice(0, 6).toUpperCase()}`,
        IPAddresses: [],
      })),
      Guest: [],
      IntegrationServices: [
        { Name: 'Shutdown', Enabled: true },
        { Name: 'VSS', Enabled: true },
      ],
    }
    state.vms.push(rec)
    return [vmRecord(rec)]
  },

  'unregister-vm': (p) => {
    const rec = findVm(p.vm)
    if (rec.VM.State !== 3 && rec.VM.State !== 6)
      throw new ScriptError('stop it before unregistering', {
        kind: 'vm-state',
        data: { vm: rec.VM.Name, state: stateName(rec.VM.State) },
      })
    state.vms = state.vms.filter((v) => v !== rec && v.VM.Id !== rec.VM.Id)
    return [{ Removed: rec.VM.Id }]
  },

  'start-vm': (p) => {
    const rec = findVm(p.vm)
    if (rec.VM.State === 2)
      throw new ScriptError('already running', {
        kind: 'vm-state',
        data: { vm: rec.VM.Name, state: 'Running' },
      })
    rec.VM.State = 2
    return [{ Started: rec.VM.Id }]
  },

  'stop-vm': (p) => {
    const rec = findVm(p.vm)
    if (rec.VM.State !== 3) {
      const shutdown = asList(rec.IntegrationServices).some((s) => s.Name === 'Shutdown' && s.Enabled)
      if (!p.force && !shutdown)
        throw new ScriptError(
          `The virtual machine '${rec.VM.Name}' could not be shut down: the Shutdown integration service is not available.`,
          {
            cmdlet: 'Stop-VM',
            category: 'NotImplemented',
            errorId: 'Unspecified,Microsoft.HyperV.PowerShell.Commands.StopVM',
          },
        )
      rec.VM.State = 3
    }
    return [{ Stopped: rec.VM.Id }]
  },

  'apply-network': (p) => {
    const rec = findVm(p.vm)
    return asList(p.mappings).map((m) => {
      const a = asList(rec.Adapters).find((x) => x.Name === m.nic)
      if (!a)
        throw new ScriptError(`VM '${rec.VM.Name}' has no network adapter named '${m.nic}'`, {
          kind: 'nic-not-found',
        })
      if (m.setSwitch) {
        if (m.switch && !state.switches.includes(m.switch))
          throw new ScriptError(`Hyper-V was unable to find a virtual switch with name "${m.switch}".`, {
            cmdlet: 'Connect-VMNetworkAdapter',
            category: 'InvalidArgument',
          })
        a.SwitchName = m.switch ?? null
      }
      a.Failover = { ipv4: m.ipv4 ?? null, ipv6: m.ipv6 ?? null }
      return { Nic: a.Name }
    })
  },

  'write-event': (p) => {
    if (p.register && !state.eventSources.includes(p.source)) state.eventSources.push(p.source)
    if (!state.eventSources.includes(p.source))
      throw new ScriptError(`The source name "${p.source}" does not exist on computer "localhost".`, {
        cmdlet: 'Write-EventLog',
        category: 'InvalidOperation',
      })
    state.events.push({
      log: p.log,
      source: p.source,
      eventId: p.eventId,
      entryType: p.entryType,
      message: p.message,
    })
    return [{ Written: true }]
  },
}

/**
 * Merge: each drive goes back to its frozen parent (the AVHDX's data lands in it). Writes made
 * during the point stay in pendingChanges[parent]: the next change set.
 */
function mergeBack(rec, snap, converted) {
  for (const d of vhdDrives(rec)) {
    const sd = snap.disks.find((x) => x.Live.Path === d.Path)
    if (!sd) continue
    delete state.vhds[d.Path]
    d.Path = sd.Frozen.Path
    // Destroyed, not converted: no new RCT id, so its changes stay tracked since the last one.
    if (!converted) state.pendingChanges[d.Path] = [...sd.changes, ...(state.pendingChanges[d.Path] ?? [])]
  }
}

function incompatible(list) {
  return new ScriptError(list.map((x) => `${x.MessageId} ${x.Message}`).join('; '), {
    kind: 'incompatible',
    data: { incompatibilities: list },
  })
}

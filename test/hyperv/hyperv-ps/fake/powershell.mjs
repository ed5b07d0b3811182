#!/usr/bin/env node
// A fake `powershell.exe` for the Hyper-V adapter's tests on Linux. It is NOT PowerShell: it
// decodes -EncodedCommand, checks that the script is one the adapter is expected to send (the
// preamble, the operation's cmdlets and WMI methods, values only inside the base64 parameter
// blob), then plays the operation against a host kept in a JSON state file
// ($REPLIMESH_FAKE_PS_STATE) and prints what Windows PowerShell 5.1 would print: one line of
// ConvertTo-Json -Compress (enums as numbers, "\/Date(ms)\/" dates), or {"ok":false,…} + exit 1.
// A script it does not expect is refused loudly: exit 99, "FAKE-POWERSHELL REJECTS" on stderr,
// and the reason recorded in state.rejections so a test can assert there were none.
// This file: arguments, decoding, the checks, the state file, output. ./host.mjs: the host.
import { mkdirSync, readFileSync, renameSync, rmdirSync, writeFileSync } from 'node:fs'
import { handlers, ScriptError, takeFault, useState } from './host.mjs'

const PREAMBLE = [
  "$ErrorActionPreference='Stop'",
  "$ProgressPreference='SilentlyContinue'",
  '[Console]::OutputEncoding=[Text.Encoding]::UTF8',
]
const PARAMS_LINE =
  /^\$p=ConvertFrom-Json \(\[Text\.Encoding\]::UTF8\.GetString\(\[Convert\]::FromBase64String\('([A-Za-z0-9+/=]*)'\)\)\)$/m
const RESULT_LINE = '[Console]::Out.WriteLine((ConvertTo-Json -InputObject @($r) -Depth 5 -Compress))'

// Cmdlets and functions any script may use, then per operation: what it may use and what it must.
const COMMON = [
  'Get-VM',
  'Where-Object',
  'Select-Object',
  'ConvertFrom-Json',
  'ConvertTo-Json',
  'Get-Date',
  'Start-Sleep',
  'Find-RmVm',
  'Wait-RmJob',
  'ForEach-Object',
  'Sort-Object',
]
const RECORD = [
  'ConvertTo-RmVmRecord',
  'Get-VMHardDiskDrive',
  'Get-VHD',
  'Get-VMNetworkAdapter',
  'Get-WmiObject',
  'Get-VMIntegrationService',
]
const OPS = {
  probe: { may: ['Get-Module'], must: ['Get-Module'] },
  'list-vms': { may: RECORD, must: [...RECORD, 'Msvm_GuestNetworkAdapterConfiguration'] },
  'create-point': {
    may: ['Get-VMIntegrationService', 'Get-WmiObject', 'Get-VMHardDiskDrive', 'Get-VHD'],
    must: [
      'Msvm_VirtualSystemSnapshotService',
      'Msvm_VirtualSystemSnapshotSettingData',
      'CreateSnapshot',
      'ConsistencyLevel',
      '32768',
      'IgnoreNonSnapshottableDisks',
      'ModifySystemSettings',
      "[version]'6.2'",
    ],
  },
  'disk-changes': { may: ['Get-WmiObject'], must: ['Msvm_ImageManagementService', 'GetVirtualDiskChanges'] },
  'cleanup-points': { may: ['Get-WmiObject'], must: ['DestroySnapshot', 'ElementName -eq $p.marker'] },
  'release-point': {
    may: ['Get-WmiObject'],
    must: [
      'ConvertToReferencePoint',
      'DestroyReferencePoint',
      'DestroySnapshot',
      'Msvm_VirtualSystemReferencePoint',
    ],
  },
  'register-vm': {
    may: [
      'Compare-VM',
      'Import-VM',
      'Get-VMHardDiskDrive',
      'Set-VMHardDiskDrive',
      'Get-VMNetworkAdapter',
      'Connect-VMNetworkAdapter',
      'Disconnect-VMNetworkAdapter',
      'Rename-VM',
      ...RECORD,
    ],
    must: [
      'Compare-VM',
      'Import-VM',
      '-CompatibilityReport',
      'GenerateNewId=$true',
      'VhdDestinationPath',
      'Register=$true',
      '33012',
      'Disconnect-VMNetworkAdapter',
    ],
  },
  'create-vm': {
    may: [
      'New-VM',
      'Set-VMProcessor',
      'Set-VM',
      'New-VHD',
      'Add-VMHardDiskDrive',
      'Get-VMScsiController',
      'Add-VMScsiController',
      'Get-VMNetworkAdapter',
      'Remove-VMNetworkAdapter',
      'Add-VMNetworkAdapter',
      'Get-VMSwitch',
      ...RECORD,
    ],
    must: [
      'New-VM @nv',
      'New-VHD',
      '-Differencing',
      'Add-VMHardDiskDrive',
      'Add-VMNetworkAdapter @na',
      'StaticMacAddress',
    ],
  },
  'unregister-vm': { may: ['Remove-VM'], must: ['Remove-VM'] },
  'start-vm': { may: ['Start-VM'], must: ['Start-VM'] },
  'stop-vm': { may: ['Stop-VM'], must: ['Stop-VM', '-TurnOff'] },
  'apply-network': {
    may: [
      'Get-VMNetworkAdapter',
      'Connect-VMNetworkAdapter',
      'Disconnect-VMNetworkAdapter',
      'Set-VMNetworkAdapterFailoverConfiguration',
    ],
    must: ['Set-VMNetworkAdapterFailoverConfiguration'],
  },
  'write-event': {
    may: ['New-EventLog', 'Write-EventLog'],
    must: ['New-EventLog', 'Write-EventLog', '-EventId', '-EntryType'],
  },
}
// Never acceptable: code evaluation, and -Name look-ups that treat * and [ as wildcards.
const FORBIDDEN = [/Invoke-Expression/i, /\biex\b/i, /Add-Type/i, /Get-VM\w*\s+-Name\b/i, /-Filter\s+"/i]

const statePath = process.env.REPLIMESH_FAKE_PS_STATE
let state
const current = { op: null, params: null }

function reject(reason) {
  if (state) {
    state.rejections.push({ op: current.op, reason })
    saveState()
  }
  process.stderr.write(`FAKE-POWERSHELL REJECTS: ${reason}\n`)
  unlock()
  process.exit(99)
}

// --- state file, under a lock (the adapter may run several scripts at once) ---
const lockDir = statePath ? `${statePath}.lock` : null
let locked = false
function lock() {
  const deadline = Date.now() + 10_000
  for (;;) {
    try {
      mkdirSync(lockDir)
      locked = true
      return
    } catch {
      if (Date.now() > deadline) {
        process.stderr.write('fake powershell: state lock timeout\n')
        process.exit(98)
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5)
    }
  }
}
function unlock() {
  if (locked) rmdirSync(lockDir)
  locked = false
}
function loadState() {
  state = JSON.parse(readFileSync(statePath, 'utf8'))
  for (const k of [
    'vms',
    'snapshots',
    'referencePoints',
    'calls',
    'rejections',
    'events',
    'eventSources',
    'faults',
    'switches',
  ])
    state[k] ??= []
  state.vhds ??= {}
  state.configs ??= {}
  state.pendingChanges ??= {}
  state.rctHistory ??= {}
  useState(state)
}
function saveState() {
  const tmp = `${statePath}.${process.pid}.tmp`
  writeFileSync(tmp, JSON.stringify(state, null, 1))
  renameSync(tmp, statePath)
}

// --- output in Windows PowerShell 5.1's JSON ---
/** JSON.stringify, then 5.1's escaping of dates: "/Date(ms)/" is written "\/Date(ms)\/". */
function ps51Json(value) {
  return JSON.stringify(value).replace(/"\/Date\((-?\d+)\)\/"/g, '"\\/Date($1)\\/"')
}
function succeed(items) {
  saveState()
  unlock()
  process.stdout.write(`${ps51Json(items)}\r\n`)
  process.exit(0)
}
function fail(err) {
  saveState()
  unlock()
  const f = err.fields ?? {}
  const out = {
    ok: false,
    op: current.op,
    error: err.message,
    cmdlet: f.cmdlet ?? null,
    category: f.category ?? 'NotSpecified',
    errorId: f.errorId ?? null,
    kind: f.kind ?? null,
    data: f.data ?? null,
  }
  process.stdout.write(`${JSON.stringify(out)}\r\n`)
  process.exit(1)
}

// --- checks on the script ---
function stringsIn(value, out = []) {
  if (typeof value === 'string') out.push(value)
  else if (Array.isArray(value)) for (const v of value) stringsIn(v, out)
  else if (value && typeof value === 'object') for (const v of Object.values(value)) stringsIn(v, out)
  return out
}

function checkScript(script) {
  const lines = script.split('\n')
  for (let i = 0; i < PREAMBLE.length; i++)
    if (lines[i] !== PREAMBLE[i]) reject(`preamble line ${i + 1} is ${JSON.stringify(lines[i])}`)
  const opMatch = /^\$op='([a-z-]+)'$/.exec(lines[3] ?? '')
  if (!opMatch) reject('line 4 does not name the operation')
  const op = opMatch[1]
  current.op = op
  const spec = OPS[op]
  if (!spec) reject(`unknown operation '${op}'`)
  const blobs = [...script.matchAll(new RegExp(PARAMS_LINE, 'gm'))]
  if (blobs.length !== 1) reject(`expected one parameter blob line, found ${blobs.length}`)
  let params
  try {
    params = JSON.parse(Buffer.from(blobs[0][1], 'base64').toString('utf8'))
  } catch {
    reject('parameter blob is not base64 JSON')
  }
  current.params = params
  if (!script.includes('try {') || !script.includes(RESULT_LINE)) reject('no try block printing the result')
  if (!/\} catch \{[\s\S]*ok=\$false[\s\S]*exit 1\s*\}\s*$/.test(script))
    reject('no catch block printing ok=false and exiting 1')
  for (const f of FORBIDDEN) if (f.test(script)) reject(`forbidden construct ${f}`)
  const text = script.replace(blobs[0][1], '')
  // A bare word ('Error', 'Application') cannot close a quote or start an expression; anything
  // else found verbatim in the script text means a value was spliced into code.
  for (const s of stringsIn(params))
    if (s.length >= 3 && !/^[A-Za-z]+$/.test(s) && text.includes(s))
      reject(`a parameter value appears in the script text: ${JSON.stringify(s)}`)
  const used = new Set([...text.matchAll(/\b[A-Z][a-z]+-[A-Z][A-Za-z]+\b/g)].map((m) => m[0]))
  const allowed = new Set([...COMMON, ...spec.may])
  for (const c of used) if (!allowed.has(c)) reject(`operation ${op} uses unexpected cmdlet ${c}`)
  for (const m of spec.must) if (!text.includes(m)) reject(`operation ${op} lacks ${m}`)
  return { op, params }
}

// --- main ---
const argv = process.argv.slice(2)
const expected = ['-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-EncodedCommand']
if (argv.length !== 6 || expected.some((a, i) => argv[i] !== a)) {
  process.stderr.write(`FAKE-POWERSHELL REJECTS: arguments ${JSON.stringify(argv.slice(0, 5))}\n`)
  process.exit(99)
}
if (!statePath) {
  process.stderr.write('fake powershell: REPLIMESH_FAKE_PS_STATE is not set\n')
  process.exit(98)
}
lock()
loadState()
const raw = Buffer.from(argv[5], 'base64')
if (raw.length % 2 !== 0 || raw.toString('base64') !== argv[5])
  reject('-EncodedCommand is not base64 of UTF-16LE')
const script = raw.toString('utf16le')
const { op, params } = checkScript(script)
state.calls.push({ op, params, script })

const fault = takeFault(op)
if (fault) {
  saveState()
  if (fault.kind === 'hang') {
    unlock()
    setInterval(() => {}, 1000)
  } else if (fault.kind === 'garbage') {
    unlock()
    process.stdout.write('this is not json\r\n')
    process.exit(0)
  } else if (fault.kind === 'flood') {
    unlock()
    const line = `${'x'.repeat(1023)}\n`
    const write = () => {
      while (process.stdout.write(line));
      process.stdout.once('drain', write)
    }
    write()
  } else if (fault.kind === 'crash') {
    unlock()
    process.stderr.write(
      '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><S S="Error">Windows PowerShell crashed_x000D__x000A_</S></Objs>',
    )
    process.exit(3)
  } else if (fault.kind === 'warning') {
    process.stdout.write('WARNING: The virtual machine is already in the specified state.\r\n')
    runOp()
  } else {
    fail(new ScriptError(fault.error ?? 'failed', fault))
  }
} else runOp()

function runOp() {
  try {
    succeed(handlers[op](params))
  } catch (err) {
    if (err instanceof ScriptError) fail(err)
    reject(`fake bug: ${err.stack}`)
  }
}

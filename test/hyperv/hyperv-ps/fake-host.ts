// A fake Hyper-V host for the adapter's tests: a temp folder with the fake powershell's state
// file, built from the recorded cmdlet shapes in ./fixtures, and helpers to poke it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  createHyperVHypervisor,
  type HyperVHypervisor,
  type HyperVInit,
} from '../../../src/hyperv/hyperv-ps/index.js'

export const FAKE_POWERSHELL = join(import.meta.dirname, 'fake', 'powershell.mjs')
const FIXTURES = join(import.meta.dirname, 'fixtures')

// biome-ignore lint/suspicious/noExplicitAny: the fake's state is free-form JSON in cmdlet shapes
export type Json = any

export const fixture = (name: string): Json[] =>
  JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8'))

export const WEB01 = '6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7'
export const DB01 = '0a9b8c7d-6e5f-4a3b-9c2d-1e0f2a3b4c5d'
export const LEGACY01 = '11111111-2222-4333-8444-555555555555'

/** The host of the fixtures: web01 (running, 2 disks, RCT), db01 (off, VHD), legacy01 (5.0). */
export function fixtureState(): Json {
  const byVm = (rows: Json[], id: string) =>
    rows.filter((r) =>
      String(r.VMId ?? r.InstanceID)
        .toLowerCase()
        .includes(id.toLowerCase()),
    )
  const vms = fixture('get-vm').map((vm: Json) => {
    const drives = byVm(fixture('get-vmharddiskdrive'), vm.Id)
    return {
      VM: vm,
      // db01's only drive as a single object: 5.1 unrolls a one-element pipeline.
      Drives: drives.length === 1 && vm.Name === 'db01' ? drives[0] : drives,
      Adapters: byVm(fixture('get-vmnetworkadapter'), vm.Id),
      Guest: byVm(fixture('msvm-guestnetworkadapterconfiguration'), vm.Id),
      IntegrationServices: byVm(fixture('get-vmintegrationservice'), vm.Id),
    }
  })
  const vhds: Record<string, Json> = {}
  for (const v of fixture('get-vhd')) vhds[v.Path] = v
  return { vms, vhds, switches: ['Prod-vSwitch', 'DR-vSwitch'], configs: {}, now: 1_750_000_000_000 }
}

export class FakeHost {
  readonly dir = mkdtempSync(join(tmpdir(), 'replimesh-fakeps-'))
  readonly statePath = join(this.dir, 'state.json')
  private readonly adapters: HyperVHypervisor[] = []

  constructor(state: Json = fixtureState()) {
    this.write(state)
  }

  read(): Json {
    return JSON.parse(readFileSync(this.statePath, 'utf8'))
  }

  write(state: Json): void {
    writeFileSync(this.statePath, JSON.stringify(state, null, 1))
  }

  update(fn: (s: Json) => void): void {
    const s = this.read()
    fn(s)
    this.write(s)
  }

  vm(name: string): Json {
    return this.read().vms.find((v: Json) => v.VM.Name === name)
  }

  /** Queues a fault for the next run of `op` (see the fake's fault kinds). */
  fault(op: string, fields: Json): void {
    this.update((s) => {
      s.faults ??= []
      s.faults.push({ op, ...fields })
    })
  }

  /** The guest wrote [offset, offset+length) of disk `index` (sorted by controller). */
  guestWrite(vmName: string, index: number, offset: number, length: number): void {
    this.update((s) => {
      const rec = s.vms.find((v: Json) => v.VM.Name === vmName)
      const drives = (Array.isArray(rec.Drives) ? rec.Drives : [rec.Drives])
        .filter((d: Json) => d.Path && d.DiskNumber == null)
        .sort(
          (a: Json, b: Json) =>
            a.ControllerNumber - b.ControllerNumber || a.ControllerLocation - b.ControllerLocation,
        )
      let path = drives[index].Path
      if (/\.avhdx$/i.test(path)) path = s.vhds[path].ParentPath
      s.pendingChanges ??= {}
      s.pendingChanges[path] ??= []
      s.pendingChanges[path].push({ offset, length })
    })
  }

  calls(op?: string): Json[] {
    const all = this.read().calls ?? []
    return op ? all.filter((c: Json) => c.op === op) : all
  }

  rejections(): Json[] {
    return this.read().rejections ?? []
  }

  adapter(init: HyperVInit = {}): HyperVHypervisor {
    const a = createHyperVHypervisor({
      executable: FAKE_POWERSHELL,
      env: { REPLIMESH_FAKE_PS_STATE: this.statePath },
      timeoutMs: 20_000,
      ...init,
    })
    this.adapters.push(a)
    return a
  }

  async cleanup(): Promise<void> {
    for (const a of this.adapters) await a.stop()
    rmSync(this.dir, { recursive: true, force: true })
  }
}

// Fakes for the failover shell's tests: an in-memory control network with partitions, a
// hypervisor that records what it is asked, and a notification channel that keeps what it gets.
import type {
  ControlReply,
  ControlRequest,
  ControlTransport,
  Notification,
  NotificationChannel,
} from '../../src/failover/index.js'
import {
  type Hypervisor,
  type NicMapping,
  type StartVmOptions,
  type VmInfo,
  VmNotFoundError,
} from '../../src/hyperv/index.js'

export class FakeNet {
  readonly handlers = new Map<
    string,
    (from: { peerId: string; site: string }, req: ControlRequest) => Promise<ControlReply>
  >()
  readonly cut = new Set<string>()
  readonly sites = new Map<string, string>()
  readonly down = new Set<string>()
  blocked(a: string, b: string): boolean {
    return this.down.has(a) || this.down.has(b) || this.cut.has([a, b].sort().join('|'))
  }
  transport(self: string): ControlTransport {
    return {
      request: async (peerId, req) => {
        await new Promise((r) => setTimeout(r, Math.random() * 5))
        const h = this.handlers.get(peerId)
        if (this.blocked(self, peerId) || !h) throw new Error(`${peerId} unreachable`)
        return h({ peerId: self, site: this.sites.get(self)! }, JSON.parse(JSON.stringify(req)))
      },
      serve: (handler) => void this.handlers.set(self, handler),
      close: async () => void this.handlers.delete(self),
    }
  }
}

export class RecordingChannel implements NotificationChannel {
  readonly name = 'recording'
  readonly got: Notification[] = []
  async send(n: Notification): Promise<void> {
    this.got.push(n)
  }
  kinds(): string[] {
    return this.got.map((n) => `${n.kind}${n.vm ? `:${n.vm}` : ''}`)
  }
}

export class FakeHypervisor implements Hypervisor {
  readonly kind = 'lab' as const
  readonly vms = new Map<string, VmInfo>()
  readonly log: string[] = []
  readonly mappings = new Map<string, NicMapping[]>()
  /** When each VM's start began (its gate entered: a lab guest boots from then), and ran. */
  readonly gated = new Map<string, number>()
  readonly started = new Map<string, number>()
  async start() {}
  async stop() {}
  async listVms() {
    return [...this.vms.values()]
  }
  async getVm(vm: string) {
    const v = this.vms.get(vm) ?? [...this.vms.values()].find((x) => x.id === vm)
    if (!v) throw new VmNotFoundError(vm)
    return { ...v }
  }
  createPoint(): never {
    throw new Error('not in this fake')
  }
  openPointDisk(): never {
    throw new Error('not in this fake')
  }
  releasePoint(): never {
    throw new Error('not in this fake')
  }
  async registerVm(config: VmInfo, diskPaths: string[], options: { newId?: boolean; name?: string } = {}) {
    const name = options.name ?? config.name
    if (this.vms.has(name)) throw new Error(`a VM named '${name}' is already registered`)
    const v: VmInfo = {
      ...config,
      name,
      id: options.newId ? `${config.id}-copy` : config.id,
      state: 'stopped',
      disks: config.disks.map((d, i) => ({ ...d, path: diskPaths[i] })),
    }
    this.vms.set(name, v)
    this.log.push(`register ${name}`)
    return v
  }
  async unregisterVm(vm: string) {
    this.vms.delete(vm)
    this.log.push(`unregister ${vm}`)
  }
  async startVm(vm: string, options: StartVmOptions = {}) {
    await this.getVm(vm)
    this.gated.set(vm, Date.now())
    await options.gate?.()
    this.started.set(vm, Date.now())
    this.vms.get(vm)!.state = 'running'
    this.log.push(`start ${vm}`)
  }
  async stopVm(vm: string) {
    this.vms.get(vm)!.state = 'stopped'
    this.log.push(`stop ${vm}`)
  }
  async applyNetworkMapping(vm: string, mappings: NicMapping[]) {
    this.mappings.set(vm, mappings)
    this.log.push(`re-ip ${vm}`)
  }
  async writeEvent() {}
}

export function vmInfo(name: string, address: string): VmInfo {
  return {
    id: `id-${name}`,
    name,
    generation: 2,
    state: 'stopped',
    cpus: 2,
    memoryBytes: 2 ** 30,
    disks: [{ path: `/replicas/${name}/disk0.vhdx`, format: 'vhdx', virtualSize: 2 ** 26, parents: [] }],
    nics: [
      {
        name: 'eth0',
        switch: 'LAN',
        mac: '00:15:5d:00:00:01',
        addresses: [address],
        gateway: '10.1.0.1',
        dns: [],
      },
    ],
    notes: '',
    tags: [],
    configPath: null,
  }
}

// Network re-mapping (re-IP) for a VM that runs at another site (DESIGN.md §6). Two kinds of
// rules: per-NIC addresses written for one VM at one site (they win), and per-site subnet
// rewrites that keep each address's host part (10.1.0.15/24 → 10.2.0.15/24). The result is the
// NicMapping[] that Hypervisor.applyNetworkMapping takes. A test failover disconnects every NIC.
// Addresses no rule covers are kept, and listed, so a stretched VLAN needs no rule.
import type { NicMapping, VmNic } from '../hyperv/index.js'
import { NetworkMappingError } from './errors.js'

export interface SubnetRule {
  /** CIDR the VM's addresses come from, e.g. "10.1.0.0/24". */
  from: string
  /** CIDR they move into at this site, e.g. "10.2.0.0/24". */
  to: string
  /** Gateway at this site (null: none). Absent: the old gateway, rewritten if it was in `from`. */
  gateway?: string | null
  /** DNS servers at this site. Absent: unchanged. */
  dns?: string[]
}

export interface SiteNetworkRules {
  subnets: SubnetRule[]
  /** Virtual switch to connect NICs to at this site. Absent: unchanged. */
  switch?: string
}

export interface NetworkRules {
  sites: Record<string, SiteNetworkRules>
  /** Per VM, per site: explicit NIC settings. */
  vms: Record<string, Record<string, NicMapping[]>>
}

interface Cidr {
  family: 4 | 6
  network: bigint
  prefix: number
  bits: number
}

function parseIp(text: string): { family: 4 | 6; value: bigint } | null {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(text)) {
    const parts = text.split('.').map(Number)
    if (parts.some((p) => p > 255)) return null
    return { family: 4, value: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) }
  }
  if (!text.includes(':') || !/^[0-9a-fA-F:]+$/.test(text)) return null
  const halves = text.split('::')
  if (halves.length > 2) return null
  const head = halves[0] ? halves[0].split(':') : []
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : []
  const missing = 8 - head.length - tail.length
  if ((halves.length === 1 && missing !== 0) || missing < 0) return null
  const groups = [...head, ...Array(halves.length === 2 ? missing : 0).fill('0'), ...tail]
  if (groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return null
  return { family: 6, value: groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n) }
}

function formatIp(family: 4 | 6, value: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 255n)).join('.')
  const groups = Array.from({ length: 8 }, (_, i) => ((value >> BigInt(112 - i * 16)) & 0xffffn).toString(16))
  // RFC 5952 §4.2: the longest run of two or more zero groups becomes "::".
  let best = { at: -1, len: 0 }
  for (let i = 0; i < 8; ) {
    let j = i
    while (j < 8 && groups[j] === '0') j++
    if (j - i > best.len && j - i >= 2) best = { at: i, len: j - i }
    i = j === i ? i + 1 : j
  }
  if (best.at < 0) return groups.join(':')
  return `${groups.slice(0, best.at).join(':')}::${groups.slice(best.at + best.len).join(':')}`
}

/** Parses "10.1.0.0/24" or "fd00::/64". With `host`, keeps the host bits (an interface address). */
export function parseCidr(text: string, host = false): (Cidr & { address: bigint }) | null {
  const [ip, len, extra] = text.split('/')
  if (extra !== undefined || len === undefined || !/^\d{1,3}$/.test(len)) return null
  const parsed = parseIp(ip)
  if (!parsed) return null
  const bits = parsed.family === 4 ? 32 : 128
  const prefix = Number(len)
  if (prefix > bits) return null
  const mask = ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix)
  const network = parsed.value & mask
  if (!host && network !== parsed.value) return null
  return { family: parsed.family, network, prefix, bits, address: parsed.value }
}

function contains(net: Cidr, family: 4 | 6, value: bigint): boolean {
  if (net.family !== family) return false
  const shift = BigInt(net.bits - net.prefix)
  return value >> shift === net.network >> shift
}

/** Moves `value` from subnet `from` to the same host offset in `to`; throws when it cannot fit. */
function rewrite(value: bigint, from: Cidr, to: Cidr, what: string): bigint {
  const offset = value - from.network
  const size = 1n << BigInt(to.bits - to.prefix)
  if (offset >= size) throw new NetworkMappingError(`${what}: host part does not fit in the target subnet`)
  if (to.family === 4 && to.prefix < 31 && (offset === 0n || offset === size - 1n))
    throw new NetworkMappingError(
      `${what}: would become the network or broadcast address of the target subnet`,
    )
  return to.network + offset
}

export interface MappingResult {
  mappings: NicMapping[]
  /** "nic address" entries that no rule covered and were kept as they are. */
  unchanged: string[]
}

/**
 * The NIC settings for `vm` when it runs at `targetSite` (its home is `homeSite`). `isolate`
 * disconnects every NIC (test failover); addresses are still re-mapped so the copy is consistent.
 */
export function networkMapping(input: {
  vm: string
  nics: VmNic[]
  homeSite: string
  targetSite: string
  rules: NetworkRules
  isolate?: boolean
}): MappingResult {
  const explicit = input.rules.vms[input.vm]?.[input.targetSite]
  const unchanged: string[] = []
  let mappings: NicMapping[]
  if (explicit) {
    for (const m of explicit)
      if (!input.nics.some((n) => n.name === m.nic))
        throw new NetworkMappingError(
          `VM ${input.vm} has no NIC '${m.nic}' (rule for site ${input.targetSite})`,
        )
    mappings = explicit.map((m) => ({ ...m }))
  } else if (input.targetSite === input.homeSite || !input.rules.sites[input.targetSite]) {
    mappings = []
    if (input.targetSite !== input.homeSite)
      for (const nic of input.nics) for (const a of nic.addresses) unchanged.push(`${nic.name} ${a}`)
  } else {
    const site = input.rules.sites[input.targetSite]
    const subnets = site.subnets.map((r) => ({ rule: r, from: parseCidr(r.from)!, to: parseCidr(r.to)! }))
    mappings = input.nics.map((nic) => mapNic(input.vm, nic, subnets, site.switch, unchanged))
  }
  if (input.isolate) {
    const byNic = new Map(mappings.map((m) => [m.nic, m]))
    mappings = input.nics.map((nic) => ({
      ...(byNic.get(nic.name) ?? { nic: nic.name, addresses: nic.addresses }),
      switch: null,
    }))
  }
  return { mappings, unchanged }
}

function mapNic(
  vm: string,
  nic: VmNic,
  subnets: Array<{ rule: SubnetRule; from: Cidr; to: Cidr }>,
  siteSwitch: string | undefined,
  unchanged: string[],
): NicMapping {
  let used: SubnetRule | undefined
  const addresses = nic.addresses.map((a) => {
    const addr = parseCidr(a, true)
    if (!addr)
      throw new NetworkMappingError(`VM ${vm} NIC ${nic.name}: '${a}' is not an address in CIDR form`)
    const hit = subnets.find((s) => contains(s.from, addr.family, addr.address))
    if (!hit) {
      unchanged.push(`${nic.name} ${a}`)
      return a
    }
    used ??= hit.rule
    const value = rewrite(addr.address, hit.from, hit.to, `VM ${vm} NIC ${nic.name} address ${a}`)
    return `${formatIp(addr.family, value)}/${hit.to.prefix}`
  })
  const mapping: NicMapping = { nic: nic.name, addresses }
  const gw = nic.gateway ? parseIp(nic.gateway) : null
  const gwRule = gw && subnets.find((s) => contains(s.from, gw.family, gw.value))
  if (used && used.gateway !== undefined) mapping.gateway = used.gateway
  else if (gw && gwRule)
    mapping.gateway = formatIp(gw.family, rewrite(gw.value, gwRule.from, gwRule.to, `VM ${vm} gateway`))
  else if (nic.gateway !== undefined) mapping.gateway = nic.gateway
  if (used?.dns) mapping.dns = [...used.dns]
  else if (nic.dns) mapping.dns = [...nic.dns]
  if (siteSwitch !== undefined) mapping.switch = siteSwitch
  return mapping
}

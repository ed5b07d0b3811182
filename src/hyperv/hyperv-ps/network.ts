// Re-IP: NicMapping (CIDR addresses) → what Set-VMNetworkAdapterFailoverConfiguration takes
// (one IPv4 address + dotted mask, one IPv6 address + prefix length, a gateway and two DNS
// servers per family). Pure.
import { isIPv4, isIPv6 } from 'node:net'
import type { NicMapping } from '../hypervisor.js'
import { HyperVError } from './errors.js'

export interface FailoverFamily {
  address: string
  gateway: string | null
  dns1: string | null
  dns2: string | null
}
export interface FailoverPlan {
  nic: string
  setSwitch: boolean
  switch: string | null
  ipv4: (FailoverFamily & { mask: string }) | null
  ipv6: (FailoverFamily & { prefixLength: number }) | null
}

export function maskOf(prefix: number): string {
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join('.')
}

function splitCidr(nic: string, cidr: string): { ip: string; prefix: number } {
  const [ip, len] = cidr.split('/')
  const v4 = isIPv4(ip)
  if (!v4 && !isIPv6(ip)) throw new HyperVError(`NIC '${nic}': '${cidr}' is not an IP address`)
  const max = v4 ? 32 : 128
  const prefix = len === undefined ? max : Number(len)
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max)
    throw new HyperVError(`NIC '${nic}': bad prefix length in '${cidr}'`)
  return { ip, prefix }
}

/** The failover cmdlet holds one address per family: more is refused, not silently dropped. */
export function planFailover(m: NicMapping): FailoverPlan {
  const parsed = m.addresses.map((a) => splitCidr(m.nic, a))
  const v4 = parsed.filter((p) => isIPv4(p.ip))
  const v6 = parsed.filter((p) => isIPv6(p.ip))
  if (v4.length > 1 || v6.length > 1)
    throw new HyperVError(`NIC '${m.nic}': Hyper-V failover settings hold one address per IP family`)
  const gw = m.gateway ?? null
  const dns = m.dns ?? []
  const dns4 = dns.filter((d) => isIPv4(d))
  const dns6 = dns.filter((d) => isIPv6(d))
  return {
    nic: m.nic,
    setSwitch: m.switch !== undefined,
    switch: m.switch ?? null,
    ipv4: v4[0]
      ? {
          address: v4[0].ip,
          mask: maskOf(v4[0].prefix),
          gateway: gw && isIPv4(gw) ? gw : null,
          dns1: dns4[0] ?? null,
          dns2: dns4[1] ?? null,
        }
      : null,
    ipv6: v6[0]
      ? {
          address: v6[0].ip,
          prefixLength: v6[0].prefix,
          gateway: gw && isIPv6(gw) ? gw : null,
          dns1: dns6[0] ?? null,
          dns2: dns6[1] ?? null,
        }
      : null,
  }
}

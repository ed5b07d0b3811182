// Failover settings, checked once at the edge (STYLE.md §13), every default written here.
import { availableParallelism } from 'node:os'
import { z } from 'zod'
import { MAX_STARTS_PER_HOST, STARTS_PER_CPU } from './constants.js'
import { FailoverConfigError } from './errors.js'
import { parseCidr } from './network-map.js'
import { NotifierConfig } from './notify/config.js'

const cidr = z.string().refine((s) => parseCidr(s) !== null, 'a network in CIDR form, e.g. 10.2.0.0/24')
const hostCidr = z
  .string()
  .refine((s) => parseCidr(s, true) !== null, 'an address in CIDR form, e.g. 10.2.0.15/24')
const ip = z.string().refine((s) => parseCidr(`${s}/${s.includes(':') ? 128 : 32}`) !== null, 'an IP address')

export const TierConfig = z.object({
  rpoMs: z.number().int().positive(),
  rtoMs: z.number().int().positive(),
  /** `automatic`: fail over when the host is confirmed down; `alert`: notify and wait. */
  mode: z.enum(['automatic', 'alert']),
})

/** Tiers every mesh has unless it overrides them. */
export const DEFAULT_TIERS = {
  gold: { rpoMs: 5_000, rtoMs: 120_000, mode: 'automatic' },
  silver: { rpoMs: 60_000, rtoMs: 900_000, mode: 'automatic' },
  bronze: { rpoMs: 900_000, rtoMs: 14_400_000, mode: 'alert' },
} as const

export const VmFailoverConfig = z.object({
  /** Default "silver". */
  tier: z.string().default('silver'),
  /** Boot priority, lower first. Default 100. */
  priority: z.number().int().min(0).max(10_000).default(100),
  preferPeers: z.array(z.string()).optional(),
  preferSites: z.array(z.string()).optional(),
  avoidSites: z.array(z.string()).optional(),
  /** When no holder has room for it: `refuse` or `warn` (start it anyway, saying so). Default: the mesh's `overCapacity`. */
  overCapacity: z.enum(['refuse', 'warn']).optional(),
})

const nicMapping = z.object({
  nic: z.string().min(1),
  addresses: z.array(hostCidr),
  gateway: ip.nullable().optional(),
  dns: z.array(ip).optional(),
  switch: z.string().nullable().optional(),
})

export const FailoverConfig = z
  .object({
    tiers: z.record(z.string(), TierConfig).default({ ...DEFAULT_TIERS }),
    vms: z.record(z.string(), VmFailoverConfig).default({}),
    /** A witness for meshes of fewer than three sites: the peer id of a small node at a third place. */
    witness: z
      .object({ peerId: z.string().min(1) })
      .nullable()
      .default(null),
    /**
     * Sites that may be over-subscribed, with the memory ratio of their total they may promise
     * (e.g. a central site taking remote offices: `{ "HQ": { "maxOversubscription": 3 } }`).
     */
    hubs: z
      .record(z.string(), z.object({ maxOversubscription: z.number().min(1).max(4).default(1.5) }))
      .default({}),
    network: z
      .object({
        sites: z
          .record(
            z.string(),
            z.object({
              subnets: z.array(
                z.object({
                  from: cidr,
                  to: cidr,
                  gateway: ip.nullable().optional(),
                  dns: z.array(ip).optional(),
                }),
              ),
              switch: z.string().optional(),
            }),
          )
          .default({}),
        vms: z.record(z.string(), z.record(z.string(), z.array(nicMapping))).default({}),
      })
      .default({ sites: {}, vms: {} }),
    /**
     * A failed-over VM that no holder of its newest point has room for (memory, disk, vCPUs; hubs
     * within their ratio have room): `refuse` (default: it stays down and the operator is told what
     * it needs) or `warn` (start it on the holder with the most room, with an over-capacity warning).
     * A VM's own `overCapacity` overrides this.
     */
    overCapacity: z.enum(['refuse', 'warn']).default('refuse'),
    /** vCPUs a host may carry per logical CPU when placing failed-over VMs. Default 8. */
    maxVcpusPerCpu: z.number().min(1).max(64).default(8),
    /**
     * Boot-storm cap: VMs started at once on one host during a whole-host or site failover. The
     * VMs of one boot priority start together up to this many (the next priority once they run).
     * Default STARTS_PER_CPU (8) per logical CPU of this host, which starts every VM of a priority
     * at once on most hosts; lower it where many VMs booting together would swamp shared storage.
     */
    maxStartsPerHost: z
      .number()
      .int()
      .min(1)
      .max(MAX_STARTS_PER_HOST)
      .default(() => Math.min(MAX_STARTS_PER_HOST, STARTS_PER_CPU * availableParallelism())),
    /**
     * What an owner cut off from quorum does with its running VMs once its lease ends (lease.ts):
     * `stop` (default: it turns them off before the quorum side can start them, so a VM never runs
     * twice, and restarts those nobody took over when the links return) or `keep-running` (it only
     * stops producing points; the quorum side may start a copy at a higher epoch, and this one is
     * stopped when the links return: two copies run meanwhile).
     */
    isolationResponse: z.enum(['keep-running', 'stop']).default('stop'),
    /**
     * Owner lease in ms: an owner that hears no quorum of sites for this long fences itself, and an
     * automatic failover starts the VM elsewhere only once the lease has surely run out (lease.ts).
     * Default null: the mesh's downAfterMs. Shorter than two ping intervals or longer than twice
     * downAfterMs is refused when the failover service starts.
     */
    leaseMs: z.number().int().positive().nullable().default(null),
    notifications: NotifierConfig.default({ webhooks: [] }),
  })
  .superRefine((c, ctx) => {
    for (const [vm, v] of Object.entries(c.vms))
      if (!c.tiers[v.tier])
        ctx.addIssue({ code: 'custom', path: ['vms', vm, 'tier'], message: `unknown tier '${v.tier}'` })
  })

export type FailoverConfig = z.infer<typeof FailoverConfig>
export type FailoverConfigInput = z.input<typeof FailoverConfig>

export function parseFailoverConfig(input: unknown): FailoverConfig {
  const r = FailoverConfig.safeParse(input ?? {})
  if (r.success) return r.data
  throw new FailoverConfigError(r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`))
}

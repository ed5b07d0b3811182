// `replimesh plan --dir DIR [--json]` (DESIGN.md §7): capacity planning from the mesh the running
// node sees. The node computes the plan (GET /plan, failover's planCapacity over live gossip); this
// prints it for people, or as JSON (shape in the README, "Capacity plan").
import type { Command } from 'commander'
import type { PlanReply } from '../api/plan.js'
import { printJson } from './output.js'

type Plan = PlanReply

const gib = (b: number) =>
  b >= 2 ** 30 || b === 0 ? `${(b / 2 ** 30).toFixed(1)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`
const secs = (ms: number | null) => (ms === null ? '—' : `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`)
/** Peer ids are 52 characters: enough of each end to tell them apart. */
export const shortId = (id: string) => (id.length > 16 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id)

function table(rows: string[][], indent = '  '): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows
    .map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  '))
    .join('\n')
}

function sitesSection(plan: Plan): string {
  const rows = [['site', 'hosts', 'hub', 'memory', 'running VMs', 'headroom', 'vCPUs used', 'disk free']]
  for (const s of plan.sites)
    rows.push([
      s.site,
      String(s.hosts),
      s.hub ? `${s.hub.maxOversubscription}×` : '—',
      gib(s.memoryTotalBytes),
      gib(s.memoryCommittedBytes),
      gib(s.memoryHeadroomBytes),
      `${s.vcpusCommitted}/${s.cpus}`,
      gib(s.diskFreeBytes),
    ])
  return `Sites (headroom: memory a site may still promise; a hub up to its ratio)\n${table(rows)}`
}

function scenarioSection(s: Plan['scenarios'][number]): string {
  const what = s.kind === 'host' ? `host ${shortId(s.failed)}` : `site ${s.failed}`
  const head = `${what} down (${s.hosts.map(shortId).join(', ')}): ${s.vms.length === 0 ? 'no VMs' : s.fits ? 'fits' : 'DOES NOT FIT'}`
  if (s.vms.length === 0) return head
  const rows = [['vm', 'from', 'to', 'status', 'loss / RPO', 'RTO', 'note']]
  for (const v of s.vms)
    rows.push([
      v.vm,
      shortId(v.from),
      v.to
        ? `${shortId(v.to.peerId)} (${v.to.site}) point ${v.to.pointSeq}`
        : v.forcedTo
          ? `— (would need ${shortId(v.forcedTo.peerId)})`
          : '—',
      v.status === 'unplaced' ? 'UNPLACED' : v.status,
      `${secs(v.dataLossMs)} / ${secs(v.rpoMs)}${v.rpoBreached ? ' BREACHED' : ''}`,
      secs(v.rtoMs),
      v.reason ?? v.warning ?? '',
    ])
  const loads = s.targets.map(
    (t) =>
      `    ${shortId(t.peerId)} (${t.site}${t.hub ? ', hub' : ''}): runs ${gib(t.memoryCommittedBytes)}, ` +
      `${gib(t.memoryIncomingBytes)} arriving, may take ${gib(t.memoryAllowanceBytes)}` +
      (t.overSubscribedBytes > 0 ? `, ${gib(t.overSubscribedBytes)} over-subscribed` : '') +
      (t.excessBytes > 0 ? `: ${gib(t.excessBytes)} OVER` : ''),
  )
  return [head, table(rows, '    '), ...loads].join('\n')
}

function riskSection(plan: Plan): string {
  if (plan.atRisk.length === 0) return 'VMs at risk: none (every VM has two or more copies, one off-site)'
  const rows = [['vm', 'owner', 'site', 'reason', 'copies', 'tier', 'RPO', 'RTO', 'newest point']]
  for (const r of plan.atRisk)
    rows.push([
      r.vm,
      shortId(r.owner),
      r.site,
      r.reason,
      `${r.copies} (${r.offSiteCopies} off-site)`,
      r.tier,
      secs(r.rpoMs),
      secs(r.rtoMs),
      r.newestPointAgeMs === null ? 'none' : `${secs(r.newestPointAgeMs)} old`,
    ])
  return `VMs at risk\n${table(rows)}`
}

function diskSection(plan: Plan): string {
  if (plan.replicaDisk.length === 0) return 'Replica disk: no node holds a replica yet'
  const rows = [['holder', 'site', 'VMs held', 'disk needed', 'disk free']]
  for (const d of plan.replicaDisk)
    rows.push([
      shortId(d.peerId),
      d.site,
      d.vms.map((v) => v.vm).join(','),
      gib(d.diskNeededBytes),
      gib(d.diskFreeBytes) + (d.diskNeededBytes > d.diskFreeBytes ? ' SHORT' : ''),
    ])
  return `Replica disk (virtual sizes of the VMs each holder keeps a copy of)\n${table(rows)}`
}

export function formatPlan(plan: Plan): string {
  const failing = plan.scenarios.filter((s) => !s.fits)
  return [
    `Capacity plan seen from ${shortId(plan.peerId)} (site ${plan.site}): ${plan.nodes} nodes, ${plan.vms} VMs` +
      (plan.downPeers.length ? `; down now: ${plan.downPeers.map(shortId).join(', ')}` : ''),
    ...(plan.warnings ?? []).map((w) => `warning: ${w}`),
    '',
    sitesSection(plan),
    '',
    `Failure scenarios: ${plan.scenarios.length}, ${failing.length} do not fit` +
      (failing.length ? ` (${failing.map((s) => `${s.kind} ${shortId(s.failed)}`).join(', ')})` : ''),
    ...plan.scenarios.map((s) => `  ${scenarioSection(s)}`),
    '',
    riskSection(plan),
    '',
    diskSection(plan),
  ].join('\n')
}

export function register(program: Command): void {
  program
    .command('plan')
    .description(
      'capacity plan: what each host and each site failing would do (placements, over-subscription, VMs at risk)',
    )
    .requiredOption('--dir <dir>', 'node folder (its running node answers from live gossip)')
    .option('--json', 'print JSON')
    .action(async (o: { dir: string; json?: boolean }) => {
      const { callDaemon } = await import('../client.js')
      const plan = await callDaemon<Plan>(o.dir, 'GET', '/plan')
      if (o.json) printJson(plan)
      else process.stdout.write(`${formatPlan(plan)}\n`)
    })
}

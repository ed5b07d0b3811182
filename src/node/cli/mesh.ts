// Mesh and node commands: mesh create, mesh token, init, start, connect, status, revoke.
// Only commander and the light client load at startup; the mesh, libp2p and the daemon are
// imported inside the actions, so `status` answers fast.
import { type Command, InvalidArgumentError } from 'commander'
import { callDaemon } from '../client.js'
import { parseDurationMs, printJson } from './output.js'

interface StatusReply {
  peerId: string
  site: string
  addrs: string[]
  peers: Array<{ peerId: string; site: string; state: string }>
  vms: Array<{ name: string; role: string; state: string; lagSeconds: number | null }>
}

function ttl(text: string): number {
  const ms = parseDurationMs(text)
  if (ms <= 0) throw new InvalidArgumentError('the time to live must be positive')
  return ms
}

export function register(program: Command): void {
  const mesh = program.command('mesh').description('create a mesh and issue join tokens')

  mesh
    .command('create')
    .description('make a new mesh: its key pair and its first node; prints a join token last')
    .requiredOption('--dir <dir>', 'folder of the new node')
    .requiredOption('--site <site>', 'site of this node')
    .option('--listen <multiaddr>', 'listen address (port 0 picks a free port, kept)', '/ip4/0.0.0.0/tcp/0')
    .option('--ttl <duration>', 'join token time to live', ttl, 3_600_000)
    .option('--json', 'print JSON (the token is still the last line)')
    .action(async (opts: { dir: string; site: string; listen: string; ttl: number; json?: boolean }) => {
      const { createMesh } = await import('../join.js')
      const r = await createMesh({ dir: opts.dir, site: opts.site, listen: opts.listen, ttlMs: opts.ttl })
      if (opts.json) process.stdout.write(JSON.stringify({ ...r, token: undefined }) + '\n')
      else {
        process.stdout.write(
          `mesh ${r.meshId} created\nnode ${r.peerId} (site ${r.site}) listens on ${r.listen}\n`,
        )
        process.stdout.write(`join token (valid until ${new Date(r.expiresAt).toISOString()}, one use):\n`)
      }
      process.stdout.write(r.token + '\n')
    })

  mesh
    .command('token')
    .description('issue another one-time join token (on the node that created the mesh); printed last')
    .requiredOption('--dir <dir>', 'folder of the node holding the mesh key')
    .option('--ttl <duration>', 'time to live', ttl, 3_600_000)
    .action(async (opts: { dir: string; ttl: number }) => {
      const { makeToken } = await import('../join.js')
      const t = await makeToken(opts.dir, opts.ttl)
      process.stdout.write(
        `join token (valid until ${new Date(t.expiresAt).toISOString()}, one use):\n${t.text}\n`,
      )
    })

  program
    .command('init')
    .description('make a new node that joins a mesh with a token')
    .requiredOption('--dir <dir>', 'folder of the new node')
    .requiredOption('--site <site>', 'site of this node')
    .requiredOption('--join <token>', 'join token from `replimesh mesh token`')
    .option('--listen <multiaddr>', 'listen address (port 0 picks a free port, kept)', '/ip4/0.0.0.0/tcp/0')
    .option('--json', 'print JSON')
    .action(async (opts: { dir: string; site: string; join: string; listen: string; json?: boolean }) => {
      const { joinMesh } = await import('../join.js')
      const r = await joinMesh({ dir: opts.dir, site: opts.site, token: opts.join, listen: opts.listen })
      if (opts.json) printJson(r)
      else
        process.stdout.write(
          `node ${r.peerId} (site ${r.site}) joined mesh ${r.meshId}; start it with: replimesh start --dir ${opts.dir}\n`,
        )
    })

  program
    .command('start')
    .description('run the node in the foreground (SIGTERM or Ctrl-C stops it)')
    .requiredOption('--dir <dir>', 'folder of the node')
    .action(async (opts: { dir: string }) => {
      const { runDaemon } = await import('../daemon.js')
      await runDaemon(opts.dir)
    })

  program
    .command('connect')
    .description('dial a peer by hand (it must still prove membership)')
    .requiredOption('--dir <dir>', 'folder of the running node')
    .argument('<multiaddr>', 'address of the peer, e.g. /ip4/10.0.0.5/tcp/4701')
    .option('--json', 'print JSON')
    .action(async (address: string, opts: { dir: string; json?: boolean }) => {
      const r = await callDaemon<{ peerId: string; site: string }>(opts.dir, 'POST', '/mesh/connect', {
        body: { address },
      })
      if (opts.json) printJson(r)
      else process.stdout.write(`connected to ${r.peerId} (site ${r.site})\n`)
    })

  program
    .command('status')
    .description("the node's identity, peers and VMs")
    .requiredOption('--dir <dir>', 'folder of the running node')
    .option('--json', 'print JSON')
    .action(async (opts: { dir: string; json?: boolean }) => {
      const s = await callDaemon<StatusReply>(opts.dir, 'GET', '/status', { timeoutMs: 10_000 })
      if (opts.json) return printJson(s)
      const lines = [`node ${s.peerId} site ${s.site}`, ...s.addrs.map((a) => `  listening ${a}`)]
      lines.push(
        `peers (${s.peers.length}):`,
        ...s.peers.map((p) => `  ${p.state.padEnd(8)} ${p.site.padEnd(12)} ${p.peerId}`),
      )
      lines.push(
        `vms (${s.vms.length}):`,
        ...s.vms.map((v) => `  ${v.state.padEnd(8)} ${v.role.padEnd(8)} ${v.name}`),
      )
      process.stdout.write(lines.join('\n') + '\n')
    })

  program
    .command('revoke')
    .description("revoke members' certificates (on the node that created the mesh); spreads by gossip")
    .requiredOption('--dir <dir>', 'folder of the node holding the mesh key')
    .argument('<peerIds...>', 'peer ids to revoke')
    .action(async (peerIds: string[], opts: { dir: string }) => {
      const { revokePeers } = await import('../join.js')
      const r = await revokePeers(opts.dir, peerIds)
      const sent = await callDaemon(opts.dir, 'POST', '/mesh/revocation', { body: r.envelope }).then(
        () => true,
        () => false,
      )
      process.stdout.write(
        `revocation list #${r.seq} names ${r.revoked.length} peer(s)` +
          (sent ? '; spreading by gossip\n' : '; the node is not running: it spreads when the node starts\n'),
      )
    })
}

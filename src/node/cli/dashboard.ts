// `replimesh dashboard --dir DIR`: the address of the running node's dashboard, with its API token
// in the fragment (which a browser never sends to a server). The token changes when the node
// restarts; the page asks for it again then.
import type { Command } from 'commander'
import { printJson } from './output.js'

export function register(program: Command): void {
  program
    .command('dashboard')
    .description("print the address of the node's dashboard (open it in a browser on this host)")
    .requiredOption('--dir <dir>', 'node folder')
    .option('--json', 'print JSON: {url}')
    .action(async (o: { dir: string; json?: boolean }) => {
      const { nodeDashboardUrl } = await import('../dashboard/index.js')
      const { callDaemon } = await import('../client.js')
      const url = await nodeDashboardUrl(o.dir)
      // Only an address that answers: a stale api.json of a crashed node says so in one line.
      await callDaemon(o.dir, 'GET', '/status', { timeoutMs: 10_000 })
      if (o.json) return printJson({ url })
      process.stdout.write(`${url}\n`)
    })
}

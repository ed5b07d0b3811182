import type { Command } from 'commander'

/** Registers `demo`: what `npm start` runs. */
export function register(program: Command): void {
  program
    .command('demo')
    .description('run the demo: a 3-site lab on loopback, VMs protected, a host killed, failover measured')
    .option('--exit', 'finish after the summary instead of leaving the surviving nodes running')
    .option('--dir <dir>', 'lab folder (new or empty; default a fresh temp folder)')
    .option('--keep', 'keep the lab folder at the end')
    .action(async (o: { exit?: boolean; dir?: string; keep?: boolean }) => {
      const { runDemo } = await import('./demo-run.js')
      await runDemo({ exit: o.exit, dir: o.dir, keep: o.keep })
    })
}

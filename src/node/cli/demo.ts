import type { Command } from 'commander'

/** Registers `demo`: what `npm start` runs. */
export function register(program: Command): void {
  program
    .command('demo')
    .description('run the demo: a 3-site lab on loopback, VMs protected, a host killed, failover measured')
    .action(async () => {
      const { runDemo } = await import('./demo-run.js')
      await runDemo()
    })
}

// The command line: one commander program, each command group registered from its own file.
// Groups import their heavy modules inside their actions, so `status` and friends start fast.
import { Command, CommanderError } from 'commander'
import { register as registerDashboard } from './dashboard.js'
import { register as registerDemo } from './demo.js'
import { register as registerDisk } from './disk.js'
import { register as registerFailover } from './failover.js'
import { register as registerLab } from './lab.js'
import { register as registerMesh } from './mesh.js'
import { formatError } from './output.js'
import { register as registerPlan } from './plan.js'
import { register as registerReplication } from './replication.js'
import { register as registerStore } from './store.js'
import { register as registerVm } from './vm.js'

export function buildProgram(): Command {
  const program = new Command('replimesh')
    .description('Peer-to-peer replication and failover of Hyper-V virtual machines across sites')
    .version('0.1.0')
    .exitOverride()
    // One line per usage error (commander's own text plus a pointer to --help), never a help dump.
    .configureOutput({
      outputError: (str, write) =>
        write(`replimesh: ${str.split('\n')[0].replace(/^error: /, '')} (see --help)\n`),
    })
  registerDisk(program)
  registerStore(program)
  registerMesh(program)
  registerVm(program)
  registerFailover(program)
  registerReplication(program)
  registerDemo(program)
  registerPlan(program)
  registerLab(program)
  registerDashboard(program)
  return program
}

/** Runs the CLI and returns the exit code: 0 ok, 1 operation failed, 2 bad command line. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit through here with code 0; usage errors were already printed.
      return err.exitCode === 0 ? 0 : 2
    }
    process.stderr.write(`replimesh: ${formatError(err)}\n`)
    if (process.env.REPLIMESH_DEBUG && err instanceof Error && err.stack)
      process.stderr.write(err.stack + '\n')
    return (err as { exitCode?: number })?.exitCode === 2 ? 2 : 1
  }
}

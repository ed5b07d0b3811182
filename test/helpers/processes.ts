// Process checks the end-to-end tests make after stopping nodes: by pid, and by what is left on
// the machine naming a lab or test folder (Linux /proc).
import { readdir, readFile } from 'node:fs/promises'

/** Whether `pid` still exists (EPERM: it does, owned by someone else). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Processes other than this one whose command line names `folder`: `pid: command line` each. */
export async function processesUsing(folder: string): Promise<string[]> {
  const found: string[] = []
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.includes(folder)) found.push(`${pid}: ${cmdline.replaceAll('\0', ' ').slice(0, 200)}`)
  }
  return found
}

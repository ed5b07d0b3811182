// Reading a node's optional JSON settings files (failover.json, the epoch ledger), shared by route
// modules that must not import each other: the daemon loads the failover module lazily.
import { readFile } from 'node:fs/promises'

/** The parsed contents of `file`; undefined when it does not exist; an error naming it otherwise. */
export async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new Error(`${file}: ${(err as Error).message}`)
  }
}

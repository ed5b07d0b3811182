import type { Command } from 'commander'

/** Registers the `mesh` commands. */
export function register(_program: Command): void {}

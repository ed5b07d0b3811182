import type { Command } from 'commander'

/** Registers the `vm` commands. */
export function register(_program: Command): void {}

import type { Command } from 'commander'

/** Registers the `disk` commands. */
export function register(_program: Command): void {}

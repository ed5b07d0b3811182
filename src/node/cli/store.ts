import type { Command } from 'commander'

/** Registers the `store` commands. */
export function register(_program: Command): void {}

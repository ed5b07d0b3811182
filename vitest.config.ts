import { defineConfig } from 'vitest/config'

// End-to-end files start real node processes; on a 2-core machine they run one file at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.spec.ts'],
    setupFiles: ['test/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
    pool: 'forks',
  },
})

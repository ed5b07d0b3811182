import { defineConfig } from 'vitest/config'

// Two projects, run one after the other (sequence.groupOrder):
// - unit: files that run in this process (in-memory meshes, fake hypervisors, short CLI runs,
//   qemu-img/libvhdi oracles). Two files at a time; every such file must hold beside any other
//   (temp folders from mkdtemp, ports from the kernel, deadlines that wait for events).
// - serial: files that start long-lived real node processes (mesh nodes, lab daemons, guests)
//   and judge liveness, failover or rates by the clock. One file at a time on a 2-core machine.
// A new file is a unit file unless it is under test/e2e/ or listed in SERIAL.
const SERIAL = [
  'test/e2e/**/*.spec.ts',
  // `replimesh start` daemons with lab guests, kill -9 of the node.
  'test/hyperv/lab/cli.spec.ts',
  // An owner process and its guest killed with -9; waits for the guest to notice.
  'test/hyperv/lab/owner-death.spec.ts',
]

export default defineConfig({
  test: {
    setupFiles: ['test/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/**/*.spec.ts'],
          exclude: SERIAL,
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'serial',
          include: SERIAL,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})

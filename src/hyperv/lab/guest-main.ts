// Entry point of a lab guest process (forked by LabHypervisor.startVm).

import { runGuest } from './guest.js'
import { GUEST_ARGV_MARKER } from './guest-protocol.js'

const i = process.argv.indexOf(GUEST_ARGV_MARKER)
if (i < 0 || !process.argv[i + 1]) {
  process.stderr.write('usage: guest-main --replimesh-lab-guest <vmDir> [workloadJson]\n')
  process.exit(2)
}
await runGuest(process.argv[i + 1], process.argv[i + 2])

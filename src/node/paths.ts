// Where a node keeps its files inside its --dir. One place, so every part agrees.
import { join } from 'node:path'

export const nodePaths = (dir: string) => ({
  dir,
  /** Typed node configuration: site, listen addresses, mesh id and public key, bootstrap peers. */
  config: join(dir, 'node.json'),
  /** The node's libp2p private key, mode 0600. */
  identity: join(dir, 'identity.key'),
  /** The membership certificate received when joining. */
  certificate: join(dir, 'membership.json'),
  /** Mesh private key: only on the node that ran `mesh create`. Mode 0600. */
  meshKey: join(dir, 'mesh.key'),
  /** {url} of the running daemon's HTTP API on loopback; written at start, removed at stop. */
  api: join(dir, 'api.json'),
  /** Bearer token for the HTTP API, mode 0600. */
  apiToken: join(dir, 'api.token'),
  /** Held by the running daemon: a second `start` on the same folder refuses. */
  lock: join(dir, 'daemon.lock'),
  /** The chunk store (pack files and LevelDB index). */
  store: join(dir, 'store'),
  /** Lab hypervisor VMs: one folder each with vm.json and its disks. */
  vms: join(dir, 'vms'),
  /** Materialised replica disks kept up to date on targets. */
  replicas: join(dir, 'replicas'),
  log: join(dir, 'node.log'),
})

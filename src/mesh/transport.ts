// The libp2p stack every replimesh node runs (DESIGN.md §4): TCP, Noise, Yamux, identify, ping,
// and mDNS when asked. The Node 20 polyfill (src/node/polyfill.js) must be loaded first.
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { ConnectionGater, PrivateKey } from '@libp2p/interface'
import { mdns } from '@libp2p/mdns'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'

export interface TransportInit {
  privateKey: PrivateKey
  /** Multiaddrs to listen on; empty for a node that only dials. */
  listen: string[]
  /** Addresses to announce instead of the listening ones (NAT, public name). */
  announce?: string[]
  mdns?: boolean
  /** mDNS service tag: nodes of one mesh share it, so other meshes' nodes are not dialled. */
  mdnsServiceTag?: string
  connectionGater?: ConnectionGater
}

export async function createTransportNode(init: TransportInit) {
  return createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: init.listen, announce: init.announce ?? [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: {
      // Loopback and private addresses are where labs and LAN sites live: allow them.
      denyDialMultiaddr: () => false,
      ...init.connectionGater,
    },
    peerDiscovery: init.mdns ? [mdns({ serviceTag: init.mdnsServiceTag, interval: 10_000 })] : [],
    // libp2p's own connection monitor pings every connection every 10 s on /ipfs/ping/1.0.0, on
    // top of MeshNode's liveness pings. Ping allows one outbound stream per connection, so when
    // the two met, its ping failed "Too many outbound protocol streams … 2/1" (and under load it
    // timed out), and on any failed ping it aborted the whole connection with that error: every
    // chunks and points stream on it failed. MeshNode pings (one in flight per peer) and hangs
    // up on a peer silent past downAfterMs instead.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping(),
    },
  })
}

export type TransportNode = Awaited<ReturnType<typeof createTransportNode>>

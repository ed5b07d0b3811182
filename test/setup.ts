// libp2p 3.x needs Promise.withResolvers, which Node 20 lacks (DESIGN.md §9).
import '../src/node/polyfill.js'

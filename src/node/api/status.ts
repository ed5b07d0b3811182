// GET /status (DESIGN.md §7), GET /mesh/peers (with gossip state), GET /mesh/protocols,
// POST /mesh/connect, POST /mesh/revocation.
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { signedEnvelopeSchema } from '../../mesh/index.js'
import type { NodeComponents, VmStatusRow } from './components.js'

export async function defaultVmStatus(
  components: Pick<NodeComponents, 'hypervisor' | 'mesh'>,
): Promise<VmStatusRow[]> {
  if (!components.hypervisor) return []
  const vms = await components.hypervisor.listVms()
  return vms.map((vm) => ({
    name: vm.name,
    id: vm.id,
    role: 'primary' as const,
    state: vm.state === 'running' ? ('running' as const) : ('stopped' as const),
    owner: components.mesh.peerId,
    epoch: 0,
    lastPoint: null,
    lagSeconds: null,
    rpoSeconds: null,
  }))
}

const connectBody = z.object({ address: z.string().min(1).max(512) })

export async function statusRoutes(app: FastifyInstance, components: NodeComponents): Promise<void> {
  const { mesh } = components
  app.get('/status', async () => ({
    peerId: mesh.peerId,
    site: mesh.site,
    addrs: mesh.addrs(),
    peers: mesh.peers().map((p) => ({ peerId: p.peerId, site: p.site, state: p.state })),
    vms: await components.vmStatus(),
  }))

  app.get('/mesh/peers', async () => mesh.peers())
  app.get('/mesh/states', async () => mesh.nodeStates())
  app.get('/mesh/protocols', async () => mesh.protocols())

  app.post('/mesh/connect', async (request, reply) => {
    const body = connectBody.safeParse(request.body)
    if (!body.success) return reply.code(400).send({ error: 'expected {address: multiaddr}' })
    try {
      return await mesh.connect(body.data.address)
    } catch (err) {
      return reply
        .code(502)
        .send({ error: `could not connect to ${body.data.address}: ${(err as Error).message}` })
    }
  })

  app.post('/mesh/revocation', async (request, reply) => {
    const body = signedEnvelopeSchema.safeParse(request.body)
    if (!body.success) return reply.code(400).send({ error: 'expected a signed revocation list' })
    try {
      await mesh.revoke(body.data)
      return { seq: mesh.revocationSeq }
    } catch (err) {
      return reply.code(400).send({ error: (err as Error).message })
    }
  })
}

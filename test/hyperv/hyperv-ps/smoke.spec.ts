import { it } from 'vitest'
import { FakeHost } from './fake-host.js'

it('smoke', async () => {
  const h = new FakeHost()
  const a = h.adapter()
  await a.start()
  console.log(JSON.stringify(await a.listVms(), null, 1))
  const p = await a.createPoint('web01')
  console.log(p)
  const ref = await a.releasePoint(p)
  h.guestWrite('web01', 0, 4096, 8192)
  const p2 = await a.createPoint('web01', { sinceReference: ref })
  console.log(JSON.stringify(p2))
  console.log(h.rejections())
  await h.cleanup()
})

// stopPid, how `lab down` stops nodes it did not start: SIGTERM, SIGKILL after a deadline, and a
// LabError after a second deadline when even SIGKILL does not remove the process (a zombie here:
// a child its parent never reaps, which signals cannot remove).
import { type ChildProcess, spawn } from 'node:child_process'
import { afterEach, describe, expect, it } from 'vitest'
import { LabError, processExists, stopPid } from '../../src/node/lab-mesh.js'

const started: ChildProcess[] = []
afterEach(() => {
  for (const c of started.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
})

/** Starts a command in its own process group; resolves once it printed its first line. */
async function run(command: string, args: string[]): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(command, args, { detached: true, stdio: ['ignore', 'pipe', 'inherit'] })
  started.push(child)
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} printed nothing within 10 s`)), 10_000)
    let text = ''
    child.stdout!.on('data', (d) => {
      text += d
      if (text.includes('\n')) {
        clearTimeout(timer)
        resolve(text.split('\n')[0])
      }
    })
  })
  return { child, line }
}

describe('stopPid', () => {
  it('a process that ends on SIGTERM is stopped; one that ignores it is killed after the deadline', async () => {
    const polite = await run(process.execPath, ['-e', 'console.log("up"); setInterval(() => {}, 1000)'])
    expect(await stopPid(polite.child.pid!, 5_000)).toBe('stopped')
    expect(processExists(polite.child.pid!)).toBe(false)

    const deaf = await run(process.execPath, [
      '-e',
      'process.on("SIGTERM", () => {}); console.log("up"); setInterval(() => {}, 1000)',
    ])
    const t0 = Date.now()
    expect(await stopPid(deaf.child.pid!, 300)).toBe('killed')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300)
    expect(processExists(deaf.child.pid!)).toBe(false)
    expect(await stopPid(deaf.child.pid!)).toBe('gone')
  })

  it('a process SIGKILL cannot remove is a LabError after the final deadline, not an endless wait', async () => {
    // The parent forks a child that exits at once and never reaps it: the child stays a zombie.
    const parent = await run('/usr/bin/python3', [
      '-c',
      'import os, sys, time\npid = os.fork()\nif pid == 0: os._exit(0)\nprint(pid, flush=True)\ntime.sleep(60)',
    ])
    const zombie = Number(parent.line)
    expect(zombie).toBeGreaterThan(0)
    const t0 = Date.now()
    const err = await stopPid(zombie, 200, 400).catch((e: Error) => e)
    expect(err).toBeInstanceOf(LabError)
    expect((err as Error).message).toMatch(
      new RegExp(`process ${zombie} did not exit within 0.2 s of SIGTERM nor 0.4 s of SIGKILL`),
    )
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600)
    expect(Date.now() - t0).toBeLessThan(5_000)
    parent.child.kill('SIGKILL') // its init-adopted zombie is reaped
  })
})

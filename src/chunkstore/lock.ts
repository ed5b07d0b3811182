// A FIFO async mutex: index batches (commits, GC steps) run one at a time, each briefly.
export class Mutex {
  private tail: Promise<void> = Promise.resolve()

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const before = this.tail
    let release!: () => void
    this.tail = new Promise<void>((r) => {
      release = r
    })
    await before
    try {
      return await fn()
    } finally {
      release()
    }
  }
}

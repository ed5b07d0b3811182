// The second hashing thread of a ParallelHasher (hash-pool.ts). It shares a job's chunks with the
// main thread through an atomic counter in shared memory: each side claims the next chunk,
// zero-checks and hashes it, writes the id into the shared id array and counts it done.
import { parentPort } from 'node:worker_threads'
import { hashFunction } from './hash.js'
import { type HashJob, runJob } from './hash-pool.js'

const port = parentPort
if (port) {
  port.on('message', (job: HashJob) => {
    runJob(job, hashFunction(job.algorithm))
  })
}

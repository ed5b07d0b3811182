// Enforces DESIGN.md §2: imports run node → failover → replication → mesh → chunkstore, every
// layer may use hyperv, hyperv imports none of the others, and a module is entered only through
// its index.ts. Exits 1 naming each offending import.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'

const SRC = resolve(import.meta.dirname, '..', 'src')
const ORDER = ['node', 'failover', 'replication', 'mesh', 'chunkstore']
const allowed = (from, to) => {
  if (from === to || to === 'hyperv') return true
  if (from === 'hyperv') return false
  const a = ORDER.indexOf(from)
  const b = ORDER.indexOf(to)
  return a >= 0 && b >= 0 && a < b
}

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) yield* files(p)
    else if (p.endsWith('.ts')) yield p
  }
}

const problems = []
for (const file of files(SRC)) {
  const from = relative(SRC, file).split(sep)[0]
  const text = readFileSync(file, 'utf8')
  for (const m of text.matchAll(
    /(?:import|export)[^'"]*?from\s*['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/g,
  )) {
    const spec = m[1] ?? m[2]
    const target = resolve(dirname(file), spec)
    const rel = relative(SRC, target)
    if (rel.startsWith('..')) continue
    const to = rel.split(sep)[0]
    const where = `${relative(process.cwd(), file)}: import '${spec}'`
    if (!allowed(from, to)) problems.push(`${where}: ${from} may not import ${to}`)
    else if (from !== to && rel !== `${to}${sep}index.js`)
      problems.push(`${where}: enter ${to} through ${to}/index.js`)
  }
}
for (const p of problems) console.error(p)
process.exit(problems.length ? 1 : 0)

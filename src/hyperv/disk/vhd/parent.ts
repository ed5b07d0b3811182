// Finding a differencing VHD's parent: the W2ru (relative) locator, then W2ku (absolute), then
// ParentName, then ParentName's file name beside the child. Locator data is UTF-16LE; its
// DataSpace units differ between writers (sectors or bytes), so only DataLength is trusted.
// The parent found must carry the UniqueId the child recorded (ParentUniqueId).
import type { FileHandle } from 'node:fs/promises'
import { access } from 'node:fs/promises'
import { basename, dirname, isAbsolute, relative, resolve, sep } from 'node:path'
import { CorruptDiskError } from '../errors.js'
import { readFull } from '../file-io.js'
import type { DynamicHeader, ParentLocator } from './format.js'
import { SECTOR_SIZE } from './format.js'

/** Locator paths longer than this are refused as corrupt (Windows long paths reach 32 K chars). */
const MAX_LOCATOR_BYTES = 65536

/** Turns a Windows-style path from a locator into a path on this machine, relative to `baseDir`. */
function localPath(text: string, baseDir: string): string {
  let p = text.replace(/\0+$/, '')
  if (sep === '/') p = p.replace(/\\/g, '/')
  if (p.startsWith('./')) p = p.slice(2)
  return isAbsolute(p) ? p : resolve(baseDir, p)
}

async function readLocator(
  fh: FileHandle,
  path: string,
  loc: ParentLocator,
  fileSize: number,
): Promise<string> {
  if (loc.dataLength > MAX_LOCATOR_BYTES || loc.dataOffset + loc.dataLength > fileSize)
    throw new CorruptDiskError(
      path,
      `parent locator ${loc.code} points past the end of the file`,
      loc.dataOffset,
    )
  const buf = Buffer.alloc(loc.dataLength)
  await readFull(fh, path, buf, 0, loc.dataLength, loc.dataOffset)
  return buf.toString('utf16le')
}

/** Candidate parent paths, most specific first, without duplicates. */
export async function parentCandidates(
  fh: FileHandle,
  path: string,
  header: DynamicHeader,
  fileSize: number,
): Promise<string[]> {
  const baseDir = dirname(resolve(path))
  const out: string[] = []
  const add = (p: string) => {
    if (p && !out.includes(p)) out.push(p)
  }
  for (const code of ['W2ru', 'W2ku']) {
    for (const loc of header.locators.filter((l) => l.code === code && l.dataLength > 0))
      add(localPath(await readLocator(fh, path, loc, fileSize), baseDir))
  }
  if (header.parentName) {
    add(localPath(header.parentName, baseDir))
    add(resolve(baseDir, basename(header.parentName.replace(/\\/g, '/'))))
  }
  return out
}

export async function firstExisting(paths: string[]): Promise<string | null> {
  for (const p of paths) {
    try {
      await access(p)
      return p
    } catch {}
  }
  return null
}

/** Relative locator text as Windows writes it: `.\name.vhd` or `..\dir\name.vhd`. */
export function relativeLocator(childPath: string, parentPath: string): string {
  let rel = relative(dirname(resolve(childPath)), resolve(parentPath))
    .split(sep)
    .join('\\')
  if (!rel.startsWith('..')) rel = `.\\${rel}`
  return rel
}

/** Bytes a locator's data takes in the file, padded to whole sectors. */
export function locatorSpace(dataLength: number): number {
  return Math.max(SECTOR_SIZE, Math.ceil(dataLength / SECTOR_SIZE) * SECTOR_SIZE)
}

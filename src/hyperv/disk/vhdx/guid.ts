// GUIDs in the MS binary layout (MS-VHDX §2.1): Data1, Data2, Data3 little-endian, Data4 raw.
import { randomBytes } from 'node:crypto'

export type Guid = Buffer

export const ZERO_GUID: Guid = Buffer.alloc(16)

/** Parses "2DC27766-F623-4200-9D64-115E9BFD4A08" (braces optional) into its 16-byte layout. */
export function guidFromString(text: string): Guid {
  const hex = text.replace(/[{}-]/g, '')
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`not a GUID: ${text}`)
  const raw = Buffer.from(hex, 'hex')
  const out = Buffer.alloc(16)
  out.writeUInt32LE(raw.readUInt32BE(0), 0)
  out.writeUInt16LE(raw.readUInt16BE(4), 4)
  out.writeUInt16LE(raw.readUInt16BE(6), 6)
  raw.copy(out, 8, 8, 16)
  return out
}

/** Lowercase, braced, as the parent locator stores parent_linkage (MS-VHDX §2.6.2.6.3). */
export function guidToString(guid: Uint8Array): string {
  const b = Buffer.from(guid.buffer, guid.byteOffset, 16)
  const h = (n: number, w: number) => n.toString(16).padStart(w, '0')
  const d4 = b.subarray(8, 16).toString('hex')
  return `{${h(b.readUInt32LE(0), 8)}-${h(b.readUInt16LE(4), 4)}-${h(b.readUInt16LE(6), 4)}-${d4.slice(0, 4)}-${d4.slice(4)}}`
}

/** A random (version 4) GUID. */
export function newGuid(): Guid {
  const b = randomBytes(16)
  b[7] = (b[7] & 0x0f) | 0x40 // Data3 is little-endian: its high byte holds the version
  b[8] = (b[8] & 0x3f) | 0x80
  return b
}

export function isZeroGuid(guid: Uint8Array): boolean {
  return guid.every((x) => x === 0)
}

export function guidEquals(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0
}

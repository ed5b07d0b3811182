// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-8. VHDX uses it for the
// headers, the region table and log entries (MS-VHDX §2.2.2), never for payload data, so a
// table implementation is fast enough.

const POLY = 0x82f63b78

const TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = []
  for (let k = 0; k < 8; k++) t.push(new Uint32Array(256))
  for (let i = 0; i < 256; i++) {
    let c = i
    for (let j = 0; j < 8; j++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1
    t[0][i] = c >>> 0
  }
  for (let i = 0; i < 256; i++) {
    for (let k = 1; k < 8; k++) t[k][i] = (t[k - 1][i] >>> 8) ^ t[0][t[k - 1][i] & 0xff]
  }
  return t
})()

/** Continues a CRC-32C over `data`; pass the previous result as `crc` (0 to start). */
export function crc32c(data: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES
  let c = ~crc >>> 0
  let i = 0
  const n = data.length
  for (; i + 8 <= n; i += 8) {
    c ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
    c =
      t7[c & 0xff] ^
      t6[(c >>> 8) & 0xff] ^
      t5[(c >>> 16) & 0xff] ^
      t4[c >>> 24] ^
      t3[data[i + 4]] ^
      t2[data[i + 5]] ^
      t1[data[i + 6]] ^
      t0[data[i + 7]]
  }
  for (; i < n; i++) c = t0[(c ^ data[i]) & 0xff] ^ (c >>> 8)
  return ~c >>> 0
}

/** CRC-32C of `data` with the 4-byte checksum field at `checksumOffset` read as zero. */
export function crc32cWithZeroField(data: Uint8Array, checksumOffset: number): number {
  let c = crc32c(data.subarray(0, checksumOffset))
  c = crc32c(new Uint8Array(4), c)
  return crc32c(data.subarray(checksumOffset + 4), c)
}

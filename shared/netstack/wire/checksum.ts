/**
 * The Internet checksum (RFC 1071), the IPv4 and IPv6 pseudo-header sums (RFC 768/9293,
 * RFC 8200 §8.1) and incremental updates (RFC 1624).
 *
 * Sums are kept *unfolded* (plain non-negative integers) until {@link finishChecksum}, so
 * pieces combine by addition: `finishChecksum(pseudoHeaderSum(...) + onesSum(segment))`.
 * Pieces other than the last must start at an even offset of the checksummed data and have
 * an even length (the RFC 1071 byte-pairing rule).
 * Nothing here allocates or throws.
 * @module
 */

/** Folds a non-negative integer sum into 16 bits with end-around carry (not complemented). */
export function foldSum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The checksum field value for an unfolded sum: `~fold(sum) & 0xffff`. */
export function finishChecksum(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

/** Bytes summed between folds, so the running total stays far below 2^53. */
const CHUNK = 1 << 20;

/** DataView over the last ArrayBuffer summed: reused so the hot path allocates nothing. */
let lastBuffer: ArrayBufferLike | null = null;
let lastView: DataView | null = null;

function viewOf(buf: Uint8Array): DataView {
  if (buf.buffer !== lastBuffer || lastView === null) {
    lastBuffer = buf.buffer;
    lastView = new DataView(buf.buffer);
  }
  return lastView;
}

/**
 * One's-complement sum (unfolded) of `buf[start..end)` read as big-endian 16-bit words,
 * plus `initial`. An odd final byte is padded with a zero byte. Reads 32 bits at a time
 * (through a cached `DataView` of the underlying buffer). Out-of-range `start`/`end` are
 * clamped to the buffer.
 */
export function onesSum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  if (start < 0) start = 0;
  if (end > buf.length) end = buf.length;
  let sum = initial;
  if (end - start >= 4) {
    const v = viewOf(buf);
    const base = buf.byteOffset;
    let i = base + start;
    const last = base + end - ((end - start) & 3);
    while (i < last) {
      const stop = Math.min(last, i + CHUNK);
      let s = 0;
      for (; i < stop; i += 4) s += v.getUint32(i);
      sum = foldSum(sum + s);
    }
    start = i - base;
  }
  if (end - start >= 2) {
    sum += (buf[start] << 8) | buf[start + 1];
    start += 2;
  }
  if (start < end) sum += buf[start] << 8;
  return sum;
}

/** The RFC 1071 checksum of `buf[start..end)` (complemented, ready for the header field). */
export function internetChecksum(
  buf: Uint8Array,
  start = 0,
  end = buf.length,
  initial = 0,
): number {
  return finishChecksum(onesSum(buf, start, end, initial));
}

/**
 * True when `buf[start..end)` plus `initial` (a pseudo-header sum) verifies: the data
 * includes its own checksum field, so the folded sum must be 0xffff.
 */
export function checksumValid(
  buf: Uint8Array,
  start = 0,
  end = buf.length,
  initial = 0,
): boolean {
  return foldSum(onesSum(buf, start, end, initial)) === 0xffff;
}

/**
 * Unfolded sum of the pseudo header for TCP, UDP and ICMPv6 checksums. `src` and `dst`
 * are both 4 bytes (IPv4: src, dst, zero, protocol, 16-bit length) or both 16 bytes
 * (IPv6, RFC 8200 §8.1: src, dst, 32-bit upper-layer length, 3 zero bytes, next header).
 * `length` is the upper-layer packet length (header + data). Either way the sum is
 * `sum(src) + sum(dst) + protocol + length`, which is what this returns.
 */
export function pseudoHeaderSum(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  length: number,
): number {
  return onesSum(src, 0, src.length, onesSum(dst)) + protocol + (length >>> 16) +
    (length & 0xffff);
}

/**
 * RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data changed from
 * `oldWord` to `newWord` (`HC' = ~(~HC + ~m + m')`). For UDP, leave a zero (absent)
 * checksum alone and send a computed 0 as 0xffff.
 */
export function updateChecksum16(checksum: number, oldWord: number, newWord: number): number {
  return ~foldSum((~checksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)) & 0xffff;
}

/** {@link updateChecksum16} for an aligned 32-bit field (an IPv4 address, a sequence number). */
export function updateChecksum32(checksum: number, oldValue: number, newValue: number): number {
  return ~foldSum(
    (~checksum & 0xffff) + (~(oldValue >>> 16) & 0xffff) + (~oldValue & 0xffff) +
      (newValue >>> 16 & 0xffff) + (newValue & 0xffff),
  ) & 0xffff;
}

/**
 * {@link updateChecksum16} for an even-length, even-aligned field given as bytes (an IPv6
 * address, a port pair): `oldBytes` and `newBytes` must have the same length. Call it
 * *before* overwriting the field when `oldBytes` is a view of it.
 */
export function updateChecksumBytes(
  checksum: number,
  oldBytes: Uint8Array,
  newBytes: Uint8Array,
): number {
  let s = ~checksum & 0xffff;
  const n = Math.min(oldBytes.length, newBytes.length) & ~1;
  for (let i = 0; i < n; i += 2) {
    s += (~((oldBytes[i] << 8) | oldBytes[i + 1]) & 0xffff) +
      ((newBytes[i] << 8) | newBytes[i + 1]);
  }
  return ~foldSum(s) & 0xffff;
}

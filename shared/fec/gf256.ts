/**
 * Arithmetic in GF(2^8) with the reducing polynomial x^8 + x^4 + x^3 + x^2 + 1
 * (0x11d, generator 2), the field of the Reed-Solomon erasure code
 * (`reed_solomon.ts`).
 *
 * Addition is XOR. Multiplication of single elements goes through the
 * log/exp tables ({@link mul}, {@link div}, {@link inv}); the per-byte hot
 * path over whole shards ({@link mulAddRow}, {@link mulRow}) goes through a
 * 64 KiB table of every product, `MUL_TABLE[c << 8 | x] = c·x`, four source
 * bytes per 32-bit word when both arrays are 4-byte aligned there.
 *
 * Measured in V8 (Deno 2.9, x86-64, 1,200-byte rows, coefficients rotating;
 * noisy shared machine, so rounded): per-byte log/exp with a zero test
 * ≈ 0.5 GB/s, the product table per byte ≈ 1.2 GB/s, the product table read
 * through a per-coefficient 256-byte view with 32-bit words ≈ 1.7–2.0 GB/s —
 * what the rows use, with the bytewise loop for unaligned arrays and the
 * tail. A 128 KiB table per coefficient of products of byte pairs reached
 * 2.7 GB/s for one coefficient but 0.25 GB/s once 200 of them compete for the
 * cache (a 20:10 code), and each costs 65,536 steps to build: not kept.
 * Coefficient 1 is a plain XOR of 32-bit words.
 * @module
 */

/** The reducing polynomial, x^8 + x^4 + x^3 + x^2 + 1. */
export const GF_POLYNOMIAL = 0x11d;

/** `EXP[i] = 2^i`, for 0 ≤ i < 510 (doubled so `EXP[LOG[a] + LOG[b]]` needs no modulo). */
export const EXP: Uint8Array = new Uint8Array(512);
/** `LOG[a]` = the i with 2^i = a, for a ≠ 0; `LOG[0]` is unused (0). */
export const LOG: Uint8Array = new Uint8Array(256);

{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= GF_POLYNOMIAL;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255];
}

/** `MUL_TABLE[c << 8 | x]` = c·x: one 256-byte row per coefficient (64 KiB). */
export const MUL_TABLE: Uint8Array = new Uint8Array(65536);

for (let c = 1; c < 256; c++) {
  const lc = LOG[c];
  const base = c << 8;
  for (let x = 1; x < 256; x++) MUL_TABLE[base | x] = EXP[lc + LOG[x]];
}

/**
 * `MUL_ROWS[c]` = the 256-byte row of {@link MUL_TABLE} for coefficient c, as
 * a view made once here (indexing a 256-entry view with a byte is faster in
 * V8 than indexing the whole table with `c << 8 | x`).
 */
export const MUL_ROWS: readonly Uint8Array[] = Array.from(
  { length: 256 },
  (_, c) => MUL_TABLE.subarray(c << 8, (c << 8) + 256),
);

/** a·b in GF(2^8). */
export function mul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return EXP[LOG[a] + LOG[b]];
}

/** a/b in GF(2^8); throws a RangeError when b is 0. */
export function div(a: number, b: number): number {
  if (b === 0) throw new RangeError("division by zero in GF(2^8)");
  if (a === 0) return 0;
  return EXP[LOG[a] + 255 - LOG[b]];
}

/** The multiplicative inverse of a ≠ 0; throws a RangeError for 0. */
export function inv(a: number): number {
  if (a === 0) throw new RangeError("zero has no inverse in GF(2^8)");
  return EXP[255 - LOG[a]];
}

/** a^n for an integer n ≥ 0 (0^0 = 1). */
export function pow(a: number, n: number): number {
  if (n === 0) return 1;
  if (a === 0) return 0;
  return EXP[(LOG[a] * n) % 255];
}

/** True when a 32-bit view of `a` from byte `start` on is possible. */
function aligned(a: Uint8Array, start: number): boolean {
  return ((a.byteOffset + start) & 3) === 0;
}

/**
 * `dst[i] ^= coef·src[i]` for `start ≤ i < end` (default: the whole shorter
 * array). `coef` is a field element (0..255); 0 leaves `dst` unchanged. The
 * hot path of encoding and reconstruction: no allocation beyond two 32-bit
 * views when both arrays are aligned.
 */
export function mulAddRow(
  dst: Uint8Array,
  src: Uint8Array,
  coef: number,
  start = 0,
  end: number = Math.min(dst.length, src.length),
): void {
  if (coef === 0 || end <= start) return;
  let i = start;
  const words = (end - start) >>> 2;
  if (words >= 4 && aligned(dst, start) && aligned(src, start)) {
    const d32 = new Uint32Array(dst.buffer, dst.byteOffset + start, words);
    const s32 = new Uint32Array(src.buffer, src.byteOffset + start, words);
    if (coef === 1) {
      for (let w = 0; w < words; w++) d32[w] ^= s32[w];
    } else {
      const t = MUL_ROWS[coef];
      for (let w = 0; w < words; w++) {
        const s = s32[w];
        d32[w] ^= t[s & 255] | (t[(s >>> 8) & 255] << 8) | (t[(s >>> 16) & 255] << 16) |
          (t[s >>> 24] << 24);
      }
    }
    i = start + (words << 2);
  }
  if (coef === 1) {
    for (; i < end; i++) dst[i] ^= src[i];
    return;
  }
  const t = MUL_ROWS[coef];
  for (; i < end; i++) dst[i] ^= t[src[i]];
}

/**
 * `dst[i] = coef·src[i]` for `start ≤ i < end` (default: the whole shorter
 * array): the first term of a sum, so the destination need not be zeroed.
 */
export function mulRow(
  dst: Uint8Array,
  src: Uint8Array,
  coef: number,
  start = 0,
  end: number = Math.min(dst.length, src.length),
): void {
  if (end <= start) return;
  if (coef === 0) {
    dst.fill(0, start, end);
    return;
  }
  if (coef === 1) {
    dst.set(src.subarray(start, end), start);
    return;
  }
  let i = start;
  const words = (end - start) >>> 2;
  const t = MUL_ROWS[coef];
  if (words >= 4 && aligned(dst, start) && aligned(src, start)) {
    const d32 = new Uint32Array(dst.buffer, dst.byteOffset + start, words);
    const s32 = new Uint32Array(src.buffer, src.byteOffset + start, words);
    for (let w = 0; w < words; w++) {
      const s = s32[w];
      d32[w] = t[s & 255] | (t[(s >>> 8) & 255] << 8) | (t[(s >>> 16) & 255] << 16) |
        (t[s >>> 24] << 24);
    }
    i = start + (words << 2);
  }
  for (; i < end; i++) dst[i] = t[src[i]];
}

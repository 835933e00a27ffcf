/**
 * A systematic Reed-Solomon erasure code over GF(2^8): `data` shards go out
 * as they are, `parity` shards are linear combinations of them, and any
 * `data` of the `data + parity` shards give back the rest.
 *
 * The encoding matrix is the identity over a Cauchy matrix,
 * `C[i][j] = 1 / (x_i + y_j)` with `x_i = data + i` and `y_j = j` (all
 * distinct elements, so no denominator is 0). Every square submatrix of a
 * Cauchy matrix is invertible, so every choice of `data` rows of the whole
 * matrix is too: any `data` surviving shards decode. The inverse for one
 * choice of surviving rows is cached (a bounded map keyed by the rows), so a
 * recurring loss pattern costs the row arithmetic only.
 *
 * Shards are byte arrays of at least `length` bytes; only the first `length`
 * are read and written. Padding to a common length is the caller's job.
 * Misuse (wrong counts, short buffers) throws a RangeError; a shortage of
 * surviving shards is a result (`false`), not an error.
 * @module
 */

import { div, mulAddRow, mulRow } from "./gf256.ts";

/** Largest number of cached decode matrices per code. */
const DECODE_CACHE_LIMIT = 256;

/** A systematic (data + parity, data) Reed-Solomon erasure code. */
export class ReedSolomon {
  /** Number of data shards. */
  readonly data: number;
  /** Number of parity shards. */
  readonly parity: number;
  /** Number of shards in all. */
  readonly total: number;
  /** The parity rows of the encoding matrix, `parity × data`, row-major. */
  readonly #cauchy: Uint8Array;
  /** Inverted decode matrices (`data × data`) by the surviving rows used. */
  readonly #cache = new Map<string, Uint8Array>();
  /** Scratch: the surviving rows chosen for a reconstruction. */
  readonly #rows: Int32Array;
  /** Scratch: present flags for the allocating {@link reconstruct}. */
  readonly #present: Uint8Array;

  /** A code with `data` data shards and `parity` parity shards (1 ≤ each, sum ≤ 255). */
  constructor(data: number, parity: number) {
    if (!Number.isInteger(data) || !Number.isInteger(parity) || data < 1 || parity < 1) {
      throw new RangeError(`need integers data ≥ 1 and parity ≥ 1, got ${data}:${parity}`);
    }
    if (data + parity > 255) {
      throw new RangeError(`data + parity must be at most 255, got ${data + parity}`);
    }
    this.data = data;
    this.parity = parity;
    this.total = data + parity;
    this.#cauchy = new Uint8Array(parity * data);
    for (let i = 0; i < parity; i++) {
      for (let j = 0; j < data; j++) this.#cauchy[i * data + j] = div(1, (data + i) ^ j);
    }
    this.#rows = new Int32Array(data);
    this.#present = new Uint8Array(this.total);
  }

  /** The encoding coefficient of data shard `j` in parity shard `i` (for tests and tools). */
  coefficient(i: number, j: number): number {
    return this.#cauchy[i * this.data + j];
  }

  /**
   * Computes the `parity` parity shards of the first `data` entries of
   * `shards` into the first `parity` entries of `parityOut`, over
   * `length` bytes. With `shardLengths`, data shard j holds only
   * `shardLengths[j]` (≤ length) meaningful bytes and is read as if zero
   * beyond them (the codec's ragged datagrams need no padding then).
   */
  encode(
    shards: readonly Uint8Array[],
    parityOut: readonly Uint8Array[],
    length: number,
    shardLengths?: ArrayLike<number>,
  ): void {
    const k = this.data;
    if (shards.length < k || parityOut.length < this.parity) {
      throw new RangeError(`need ${k} data and ${this.parity} parity shards`);
    }
    for (let j = 0; j < k; j++) {
      if (shards[j].length < (shardLengths ? shardLengths[j] : length)) {
        throw new RangeError(`data shard ${j} is shorter than its length`);
      }
      if (shardLengths && shardLengths[j] > length) {
        throw new RangeError(`data shard ${j} is longer than the shard length`);
      }
    }
    const c = this.#cauchy;
    for (let i = 0; i < this.parity; i++) {
      const out = parityOut[i];
      if (out.length < length) throw new RangeError(`parity shard ${i} is too short`);
      const row = i * k;
      if (shardLengths) {
        out.fill(0, 0, length);
        for (let j = 0; j < k; j++) mulAddRow(out, shards[j], c[row + j], 0, shardLengths[j]);
      } else {
        mulRow(out, shards[0], c[row], 0, length);
        for (let j = 1; j < k; j++) mulAddRow(out, shards[j], c[row + j], 0, length);
      }
    }
  }

  /**
   * Restores the missing entries (`null`) of `shards` (`total` entries, data
   * first) from the present ones, in new arrays of `length` bytes. Returns
   * false, changing nothing, when fewer than `data` shards are present.
   */
  reconstruct(shards: (Uint8Array | null)[], length: number): boolean {
    if (shards.length !== this.total) {
      throw new RangeError(`need ${this.total} shard slots, got ${shards.length}`);
    }
    const present = this.#present;
    let count = 0;
    for (let i = 0; i < this.total; i++) {
      present[i] = shards[i] === null ? 0 : 1;
      count += present[i];
    }
    if (count < this.data) return false;
    for (let i = 0; i < this.total; i++) {
      if (shards[i] === null) shards[i] = new Uint8Array(length);
    }
    return this.reconstructInto(shards as Uint8Array[], present, length, false);
  }

  /**
   * Restores missing shards in place: `present[i]` (nonzero/true) says
   * `shards[i]` holds its shard; every other entry is a buffer of at least
   * `length` bytes that receives it. With `dataOnly`, only missing data
   * shards are written (missing parity buffers are left as they are).
   * Returns false, writing nothing, when fewer than `data` are present.
   */
  reconstructInto(
    shards: readonly Uint8Array[],
    present: ArrayLike<number | boolean>,
    length: number,
    dataOnly = false,
  ): boolean {
    const k = this.data;
    if (shards.length < this.total || present.length < this.total) {
      throw new RangeError(`need ${this.total} shards and present flags`);
    }
    const rows = this.#rows;
    let chosen = 0;
    let missingData = 0;
    for (let i = 0; i < this.total; i++) {
      if (present[i]) {
        if (chosen < k) rows[chosen++] = i;
      } else if (i < k) {
        missingData++;
      }
    }
    if (chosen < k) return false;
    for (let i = 0; i < this.total; i++) {
      if (shards[i].length < length) throw new RangeError(`shard ${i} is too short`);
    }
    if (missingData > 0) {
      const inverse = this.#decodeMatrix(rows);
      if (inverse === null) return false; // cannot happen with a Cauchy matrix
      for (let d = 0; d < k; d++) {
        if (present[d]) continue;
        const out = shards[d];
        const row = d * k;
        mulRow(out, shards[rows[0]], inverse[row], 0, length);
        for (let j = 1; j < k; j++) mulAddRow(out, shards[rows[j]], inverse[row + j], 0, length);
      }
    }
    if (!dataOnly) {
      const c = this.#cauchy;
      for (let i = 0; i < this.parity; i++) {
        if (present[k + i]) continue;
        const out = shards[k + i];
        mulRow(out, shards[0], c[i * k], 0, length);
        for (let j = 1; j < k; j++) mulAddRow(out, shards[j], c[i * k + j], 0, length);
      }
    }
    return true;
  }

  /** The inverse of the encoding matrix's rows `rows` (cached), or null if singular. */
  #decodeMatrix(rows: Int32Array): Uint8Array | null {
    const k = this.data;
    let key = "";
    for (let r = 0; r < k; r++) key += String.fromCharCode(rows[r]);
    const hit = this.#cache.get(key);
    if (hit) return hit;
    const m = new Uint8Array(k * k);
    for (let r = 0; r < k; r++) {
      const src = rows[r];
      if (src < k) m[r * k + src] = 1;
      else m.set(this.#cauchy.subarray((src - k) * k, (src - k + 1) * k), r * k);
    }
    const inverse = invertMatrix(m, k);
    if (inverse === null) return null;
    if (this.#cache.size >= DECODE_CACHE_LIMIT) {
      this.#cache.delete(this.#cache.keys().next().value as string);
    }
    this.#cache.set(key, inverse);
    return inverse;
  }
}

/**
 * The inverse of the `n × n` row-major matrix `m` over GF(2^8) by
 * Gauss-Jordan elimination (`m` is destroyed), or null when it is singular.
 */
export function invertMatrix(m: Uint8Array, n: number): Uint8Array | null {
  const out = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) out[i * n + i] = 1;
  for (let col = 0; col < n; col++) {
    let pivot = col;
    while (pivot < n && m[pivot * n + col] === 0) pivot++;
    if (pivot === n) return null;
    if (pivot !== col) {
      for (let j = 0; j < n; j++) {
        const a = col * n + j;
        const b = pivot * n + j;
        let t = m[a];
        m[a] = m[b];
        m[b] = t;
        t = out[a];
        out[a] = out[b];
        out[b] = t;
      }
    }
    const scale = div(1, m[col * n + col]);
    const rowM = m.subarray(col * n, col * n + n);
    const rowO = out.subarray(col * n, col * n + n);
    mulRow(rowM, rowM, scale);
    mulRow(rowO, rowO, scale);
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const f = m[r * n + col];
      if (f === 0) continue;
      mulAddRow(m.subarray(r * n, r * n + n), rowM, f);
      mulAddRow(out.subarray(r * n, r * n + n), rowO, f);
    }
  }
  return out;
}

/**
 * A bounded, sorted set of disjoint half-open ranges `[start, end)` of absolute offsets:
 * out-of-order data held by the receiver (the SACK blocks it sends) and the sender's SACK
 * scoreboard (what the peer reported holding). Stored in one typed array; adding never
 * allocates. When a new range would exceed the bound, {@link RangeSet.add} refuses it.
 * @module
 */

/** Sorted disjoint ranges with a fixed maximum count. */
export class RangeSet {
  readonly #r: Float64Array;
  #n = 0;
  /** Index (in range order) of the range the last successful {@link add} touched, or -1. */
  last = -1;

  /** Creates a set of at most `max` ranges. */
  constructor(readonly max: number) {
    this.#r = new Float64Array(2 * max);
  }

  /** Ranges held. */
  get count(): number {
    return this.#n;
  }

  /** Start of range `i`. */
  start(i: number): number {
    return this.#r[2 * i];
  }

  /** End of range `i`. */
  end(i: number): number {
    return this.#r[2 * i + 1];
  }

  /** Sum of the ranges' lengths. */
  get total(): number {
    let t = 0;
    for (let i = 0; i < this.#n; i++) t += this.#r[2 * i + 1] - this.#r[2 * i];
    return t;
  }

  /** Removes every range. */
  clear(): void {
    this.#n = 0;
    this.last = -1;
  }

  /**
   * Adds `[s, e)`, merging with touching or overlapping ranges. Returns false (and changes
   * nothing) when it would need a new slot and the set is full.
   */
  add(s: number, e: number): boolean {
    if (e <= s) return true;
    const r = this.#r;
    let n = this.#n;
    // First range whose end >= s (may merge).
    let i = 0;
    while (i < n && r[2 * i + 1] < s) i++;
    // Ranges [i, j) overlap or touch [s, e).
    let j = i;
    while (j < n && r[2 * j] <= e) j++;
    if (i === j) {
      if (n >= this.max) return false;
      r.copyWithin(2 * i + 2, 2 * i, 2 * n);
      r[2 * i] = s;
      r[2 * i + 1] = e;
      this.#n = n + 1;
      this.last = i;
      return true;
    }
    const ns = Math.min(s, r[2 * i]);
    const ne = Math.max(e, r[2 * (j - 1) + 1]);
    r[2 * i] = ns;
    r[2 * i + 1] = ne;
    const removed = j - i - 1;
    if (removed > 0) {
      r.copyWithin(2 * i + 2, 2 * j, 2 * n);
      n -= removed;
      this.#n = n;
    }
    this.last = i;
    return true;
  }

  /** Drops everything below `off` (trimming a range that straddles it). */
  trimBelow(off: number): void {
    const r = this.#r;
    let k = 0;
    while (k < this.#n && r[2 * k + 1] <= off) k++;
    if (k > 0) {
      r.copyWithin(0, 2 * k, 2 * this.#n);
      this.#n -= k;
      if (this.last >= 0) this.last = this.last >= k ? this.last - k : -1;
    }
    if (this.#n > 0 && r[0] < off) r[0] = off;
  }

  /** True when `off` lies inside a range. */
  contains(off: number): boolean {
    for (let i = 0; i < this.#n; i++) {
      if (off < this.#r[2 * i]) return false;
      if (off < this.#r[2 * i + 1]) return true;
    }
    return false;
  }

  /** Index of the first range with `end > off`, or -1. */
  firstEndingAfter(off: number): number {
    for (let i = 0; i < this.#n; i++) if (this.#r[2 * i + 1] > off) return i;
    return -1;
  }

  /** Bytes of the ranges that lie in `[s, e)`. */
  coveredIn(s: number, e: number): number {
    let t = 0;
    for (let i = 0; i < this.#n; i++) {
      const a = Math.max(s, this.#r[2 * i]);
      const b = Math.min(e, this.#r[2 * i + 1]);
      if (b > a) t += b - a;
    }
    return t;
  }
}

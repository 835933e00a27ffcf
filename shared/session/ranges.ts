/**
 * A sorted set of disjoint half-open integer ranges `[start, end)`, used for
 * received packet numbers (to build ACK frames) and acknowledged or lost stream
 * byte ranges. Small and array-backed: the sets in use hold a few dozen ranges.
 * @module
 */

/** Sorted disjoint ranges; `starts[i] < ends[i] < starts[i+1]`. */
export class RangeSet {
  /** Range starts, ascending. */
  starts: number[] = [];
  /** Range ends (exclusive), parallel to `starts`. */
  ends: number[] = [];

  /** Number of disjoint ranges. */
  get length(): number {
    return this.starts.length;
  }

  /** True when no range is held. */
  get empty(): boolean {
    return this.starts.length === 0;
  }

  /** Removes everything. */
  clear(): void {
    this.starts.length = 0;
    this.ends.length = 0;
  }

  /** Index of the first range whose end is >= v (binary search). */
  private lowerIndex(v: number): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Adds `[start, end)`, merging with touching or overlapping ranges. */
  add(start: number, end: number): void {
    if (end <= start) return;
    const s = this.starts;
    const e = this.ends;
    let i = this.lowerIndex(start);
    if (i === s.length) {
      s.push(start);
      e.push(end);
      return;
    }
    if (end < s[i]) {
      s.splice(i, 0, start);
      e.splice(i, 0, end);
      return;
    }
    // Overlaps or touches range i: merge forward.
    let newStart = Math.min(start, s[i]);
    let newEnd = Math.max(end, e[i]);
    let j = i + 1;
    while (j < s.length && s[j] <= newEnd) {
      newEnd = Math.max(newEnd, e[j]);
      j++;
    }
    if (i > 0 && e[i - 1] >= newStart) {
      i--;
      newStart = s[i];
    }
    s.splice(i, j - i, newStart);
    e.splice(i, j - i, newEnd);
  }

  /** Removes `[start, end)` from the set. */
  remove(start: number, end: number): void {
    if (end <= start) return;
    const s = this.starts;
    const e = this.ends;
    let i = this.lowerIndex(start + 1);
    while (i < s.length && s[i] < end) {
      if (s[i] < start && e[i] > end) {
        s.splice(i + 1, 0, end);
        e.splice(i + 1, 0, e[i]);
        e[i] = start;
        return;
      }
      if (s[i] < start) {
        e[i] = start;
        i++;
      } else if (e[i] > end) {
        s[i] = end;
        return;
      } else {
        s.splice(i, 1);
        e.splice(i, 1);
      }
    }
  }

  /** True when `v` is inside some range. */
  has(v: number): boolean {
    const i = this.lowerIndex(v + 1);
    return i < this.starts.length && this.starts[i] <= v;
  }

  /** True when all of `[start, end)` is covered. */
  covers(start: number, end: number): boolean {
    const i = this.lowerIndex(start + 1);
    return i < this.starts.length && this.starts[i] <= start && this.ends[i] >= end;
  }

  /** Drops the lowest ranges until at most `max` remain. */
  truncate(max: number): void {
    const extra = this.starts.length - max;
    if (extra > 0) {
      this.starts.splice(0, extra);
      this.ends.splice(0, extra);
    }
  }

  /** Removes everything below `v`. */
  dropBelow(v: number): void {
    this.remove(Number.MIN_SAFE_INTEGER, v);
  }
}

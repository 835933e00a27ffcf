/**
 * A set of domain names and domain suffixes, keyed by labels, mapping each
 * entry to a value (the router stores the list of rules an entry belongs to).
 *
 * Semantics:
 * - a **suffix** entry `local.lan` matches `local.lan` and every name under it
 *   on a label boundary (`a.local.lan`, `x.y.local.lan`), never `evillocal.lan`;
 * - an **exact** entry matches that one name only;
 * - matching ignores ASCII case and one trailing dot (`Local.LAN.` matches);
 * - names are ASCII: internationalized names are given in punycode
 *   (`xn--…`). Only `A`–`Z` are folded; any other character is compared as is,
 *   so a non-ASCII name given at lookup time simply matches nothing.
 *
 * Structure: an open-addressing hash table of whole names (a name and a suffix
 * are the same key; each entry holds an exact and a suffix value). A lookup
 * hashes the host once, from its last character to its first; at every label
 * boundary the running hash is the hash of that suffix, so each boundary costs
 * one probe, and the stored bytes are compared only on a hash hit. A lookup is
 * O(length of the name), allocates nothing and never lowercases a copy. It was
 * measured against a `Map` probed with `substring` at each boundary and against
 * the first version of this table (docs/routing.md, "Performance").
 * @module
 */

/** How an entry matches: the name only, or the name and everything under it. */
export type DomainMode = "exact" | "suffix";

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * Normalizes a domain name for a {@link DomainSet}: ASCII lowercase, one
 * trailing dot removed. Returns `null` unless the result is 1..253 characters
 * of labels of `a-z 0-9 - _` (each 1..63 characters, no leading or trailing
 * `-`), not all digits and dots like an IPv4 address, and not starting with a
 * dot or containing a wildcard.
 */
export function normalizeDomain(name: string): string | null {
  let end = name.length;
  if (end > 0 && name.charCodeAt(end - 1) === 46) end--;
  if (end === 0 || end > 253) return null;
  let upper = false;
  let letters = false;
  let labelStart = 0;
  for (let i = 0; i <= end; i++) {
    const c = i < end ? name.charCodeAt(i) : 46;
    if (c === 46) {
      const len = i - labelStart;
      if (len === 0 || len > 63) return null;
      if (name.charCodeAt(labelStart) === 45 || name.charCodeAt(i - 1) === 45) return null;
      labelStart = i + 1;
    } else if (c >= 97 && c <= 122) {
      letters = true;
    } else if (c >= 65 && c <= 90) {
      letters = true;
      upper = true;
    } else if (c === 45 || c === 95) {
      letters = true;
    } else if (c < 48 || c > 57) {
      return null; // non-ASCII, wildcards, spaces, ...
    }
  }
  if (!letters) return null; // digits and dots: an IPv4 address is not a domain
  const s = end === name.length ? name : name.substring(0, end);
  return upper ? s.toLowerCase() : s;
}

/** Hash of `s` (already lowercase) read from its last character to its first. */
function hashName(s: string): number {
  let h = FNV_OFFSET;
  for (let i = s.length - 1; i >= 0; i--) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME);
  return h >>> 0;
}

/**
 * Domain names and suffixes mapped to values of type `V`. Build it with
 * {@link DomainSet.add}, then query it with {@link DomainSet.lookup},
 * {@link DomainSet.has} or {@link DomainSet.collect}.
 */
export class DomainSet<V> {
  /**
   * Open-addressing table, 4 int32 per slot: hash of the name, entry index + 1
   * (0 = empty slot), offset and length of the name in `#chars`. Keeping the
   * hash and where the name is in the slot itself makes a hit touch only the
   * slot, the name's bytes and the value.
   */
  #slots = new Int32Array(4 * 16);
  #mask = 15;
  /** Every entry name (normalized ASCII), back to back. */
  #chars = new Uint8Array(1024);
  #charsUsed = 0;
  /** Value of each entry for an exact match, by entry index. */
  #exact: (V | undefined)[] = [];
  /** Value of each entry for a suffix match, by entry index. */
  #suffix: (V | undefined)[] = [];
  /** Count of (name, mode) pairs stored. */
  #size = 0;

  /** Number of (name, mode) pairs in the set. */
  get size(): number {
    return this.#size;
  }

  /**
   * Adds `name` (normalized with {@link normalizeDomain}) in `mode`, mapped to
   * `value`; a second add of the same name and mode replaces the value.
   * Returns false, and changes nothing, if the name is not a valid domain.
   */
  add(name: string, mode: DomainMode, value: V): boolean {
    const n = normalizeDomain(name);
    if (n === null) return false;
    const h = hashName(n);
    let e = this.#probe(n, 0, n.length, h);
    if (e < 0) {
      e = this.#exact.length;
      if ((e + 1) * 2 > this.#mask + 1) this.#grow();
      const off = this.#store(n);
      this.#exact.push(undefined);
      this.#suffix.push(undefined);
      this.#place(h, e, off, n.length);
    }
    const slot = mode === "exact" ? this.#exact : this.#suffix;
    if (slot[e] === undefined) this.#size++;
    slot[e] = value;
    return true;
  }

  /** The value stored for exactly `name` in `mode` (no suffix matching), if any. */
  get(name: string, mode: DomainMode): V | undefined {
    const n = normalizeDomain(name);
    if (n === null) return undefined;
    const e = this.#probe(n, 0, n.length, hashName(n));
    if (e < 0) return undefined;
    return mode === "exact" ? this.#exact[e] : this.#suffix[e];
  }

  /**
   * The value of the most specific entry matching `host`: an exact entry for
   * the name itself, else the longest matching suffix; `undefined` if none.
   */
  lookup(host: string): V | undefined {
    let found: V | undefined;
    const end = hostEnd(host);
    if (end <= 0) return undefined;
    let h = FNV_OFFSET;
    for (let i = end - 1; i >= 0; i--) {
      h = Math.imul(h ^ lower(host.charCodeAt(i)), FNV_PRIME);
      if (i !== 0 && host.charCodeAt(i - 1) !== 46) continue; // not a label start
      const e = this.#probe(host, i, end, h >>> 0);
      if (e < 0) continue;
      if (i === 0 && this.#exact[e] !== undefined) return this.#exact[e];
      if (this.#suffix[e] !== undefined) found = this.#suffix[e];
    }
    return found;
  }

  /** True if any entry matches `host`. */
  has(host: string): boolean {
    return this.collect(host, undefined) > 0;
  }

  /**
   * Writes the value of every entry matching `host` into `out` (from index 0;
   * pass one array and reuse it, nothing is allocated) and returns their count:
   * suffix entries from the shortest (`lan`) to the name itself, then the
   * exact entry, if any. With `out` undefined, only counts.
   */
  collect(host: string, out: V[] | undefined): number {
    const end = hostEnd(host);
    if (end <= 0) return 0;
    let n = 0;
    let h = FNV_OFFSET;
    for (let i = end - 1; i >= 0; i--) {
      h = Math.imul(h ^ lower(host.charCodeAt(i)), FNV_PRIME);
      if (i !== 0 && host.charCodeAt(i - 1) !== 46) continue;
      const e = this.#probe(host, i, end, h >>> 0);
      if (e < 0) continue;
      const s = this.#suffix[e];
      if (s !== undefined) {
        if (out) out[n] = s;
        n++;
      }
      if (i === 0) {
        const x = this.#exact[e];
        if (x !== undefined) {
          if (out) out[n] = x;
          n++;
        }
      }
    }
    return n;
  }

  /** Calls `fn` for every entry (in no particular order). */
  forEach(fn: (name: string, mode: DomainMode, value: V) => void): void {
    const slots = this.#slots;
    for (let p = 0; p <= this.#mask; p++) {
      const v = slots[4 * p + 1];
      if (v === 0) continue;
      const e = v - 1;
      const off = slots[4 * p + 2];
      const name = String.fromCharCode(...this.#chars.subarray(off, off + slots[4 * p + 3]));
      const x = this.#exact[e];
      if (x !== undefined) fn(name, "exact", x);
      const s = this.#suffix[e];
      if (s !== undefined) fn(name, "suffix", s);
    }
  }

  /** Entry index whose name equals `host[start, end)` (ASCII case folded), or -1. */
  #probe(host: string, start: number, end: number, h: number): number {
    const len = end - start;
    const slots = this.#slots;
    const chars = this.#chars;
    const hi = h | 0;
    for (let p = h & this.#mask;; p = (p + 1) & this.#mask) {
      const q = 4 * p;
      const v = slots[q + 1];
      if (v === 0) return -1;
      if (slots[q] !== hi || slots[q + 3] !== len) continue;
      const off = slots[q + 2];
      let i = 0;
      while (i < len && chars[off + i] === lower(host.charCodeAt(start + i))) i++;
      if (i === len) return v - 1;
    }
  }

  /** Appends the ASCII name to `#chars`; returns its offset. */
  #store(name: string): number {
    const off = this.#charsUsed;
    if (off + name.length > this.#chars.length) {
      const bigger = new Uint8Array(Math.max(2 * this.#chars.length, off + name.length));
      bigger.set(this.#chars.subarray(0, off));
      this.#chars = bigger;
    }
    for (let i = 0; i < name.length; i++) this.#chars[off + i] = name.charCodeAt(i);
    this.#charsUsed = off + name.length;
    return off;
  }

  #place(h: number, e: number, off: number, len: number): void {
    const slots = this.#slots;
    let p = h & this.#mask;
    while (slots[4 * p + 1] !== 0) p = (p + 1) & this.#mask;
    slots[4 * p] = h | 0;
    slots[4 * p + 1] = e + 1;
    slots[4 * p + 2] = off;
    slots[4 * p + 3] = len;
  }

  #grow(): void {
    const old = this.#slots;
    const cap = 2 * (this.#mask + 1);
    this.#slots = new Int32Array(4 * cap);
    this.#mask = cap - 1;
    for (let q = 0; q < old.length; q += 4) {
      if (old[q + 1] !== 0) this.#place(old[q] >>> 0, old[q + 1] - 1, old[q + 2], old[q + 3]);
    }
  }
}

/** ASCII lowercase of one UTF-16 code unit. */
function lower(c: number): number {
  return c >= 65 && c <= 90 ? c | 32 : c;
}

/** Length of `host` without one trailing dot. */
function hostEnd(host: string): number {
  const n = host.length;
  return n > 0 && host.charCodeAt(n - 1) === 46 ? n - 1 : n;
}

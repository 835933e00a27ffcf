/**
 * IP prefixes in one 128-bit address space, and a longest-prefix-match table.
 *
 * IPv4 lives in the IPv4-mapped range `::ffff:0:0/96`: `10.0.0.0/8` is the
 * 128-bit prefix `::ffff:10.0.0.0/104`. An IPv4 entry therefore also matches
 * the IPv4-mapped IPv6 form of an address (`::ffff:127.0.0.1` is `127.0.0.1`),
 * and one table serves both families.
 *
 * Parsing is strict: dotted-quad IPv4 in decimal without leading zeros (no
 * `127.1`, `0x7f.1`, `010.0.0.1`), IPv6 per RFC 4291 §2.2 (with `::` and a
 * trailing dotted IPv4), optional brackets around IPv6, no zone (`%eth0`). A
 * prefix whose host bits are set (`10.1.2.3/8`) is rejected with a reason, not
 * silently masked: in a policy or a rule set it is usually a typo, and the
 * two readings (`/8` or `/32`) differ widely. {@link maskPrefix} masks on
 * purpose when a caller wants that.
 *
 * {@link PrefixTable} is a path-compressed binary trie (Patricia) whose nodes
 * live in one typed array, entered through a 2 × 65,536-slot jump table on the
 * top 16 bits (of the IPv4 address for IPv4-mapped ones); a lookup allocates
 * nothing and compares one 32-bit word per step. Figures:
 * `tests/bench/cidr_bench.ts`.
 * @module
 */

import { formatIPv6 } from "./ip.ts";

/** A prefix in the 128-bit space: `addr` (16 bytes, host bits zero) and its length 0..128. */
export interface Prefix {
  /** The network address, 16 bytes, every bit past `bits` zero. */
  readonly addr: Uint8Array;
  /** Prefix length in the 128-bit space (an IPv4 `/n` is `n + 96`). */
  readonly bits: number;
}

/** Result of {@link parsePrefix}: the prefix, or why the text is not one. */
export type PrefixParse =
  | { ok: true; prefix: Prefix }
  | { ok: false; error: string };

/** Whether `b` (16 bytes) lies in `::ffff:0:0/96`, the IPv4-mapped range. */
export function isMapped(b: Uint8Array): boolean {
  if (b[10] !== 0xff || b[11] !== 0xff) return false;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * Parses dotted-quad IPv4 in `s[from, to)` into `out[at..at+4)`; false if malformed.
 * Decimal, 1..3 digits per part, no leading zeros, each part ≤ 255.
 */
function scanIPv4(s: string, from: number, to: number, out: Uint8Array, at: number): boolean {
  let part = 0;
  let i = from;
  while (part < 4) {
    const start = i;
    let v = 0;
    while (i < to) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      v = v * 10 + (c - 48);
      i++;
      if (i - start > 3) return false;
    }
    const n = i - start;
    if (n === 0 || v > 255 || (n > 1 && s.charCodeAt(start) === 48)) return false;
    out[at + part] = v;
    part++;
    if (part < 4) {
      if (i >= to || s.charCodeAt(i) !== 46) return false;
      i++;
    }
  }
  return i === to;
}

/** Value of a hex digit, or -1. */
function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** Parses IPv6 text in `s[from, to)` (no brackets) into `out` (16 bytes); false if malformed. */
function scanIPv6(s: string, from: number, to: number, out: Uint8Array): boolean {
  if (to - from < 2 || to - from > 45) return false;
  let g = 0; // groups written
  let dbl = -1; // group index where `::` stands
  let i = from;
  if (s.charCodeAt(i) === 58) {
    if (s.charCodeAt(i + 1) !== 58) return false;
    dbl = 0;
    i += 2;
  }
  while (i < to) {
    if (g >= 8) return false;
    const start = i;
    let v = 0;
    while (i < to) {
      const h = hexValue(s.charCodeAt(i));
      if (h < 0) break;
      v = (v << 4) | h;
      i++;
      if (i - start > 4) return false;
    }
    if (i === start) return false;
    if (i < to && s.charCodeAt(i) === 46) {
      // Trailing dotted IPv4: the last 32 bits.
      if (g > 6 || !scanIPv4(s, start, to, out, 2 * g)) return false;
      g += 2;
      i = to;
      break;
    }
    out[2 * g] = v >> 8;
    out[2 * g + 1] = v & 0xff;
    g++;
    if (i === to) break;
    if (s.charCodeAt(i) !== 58) return false;
    i++;
    if (i < to && s.charCodeAt(i) === 58) {
      if (dbl !== -1) return false;
      dbl = g;
      i++;
    } else if (i === to) {
      return false; // a single trailing colon
    }
  }
  if (dbl === -1) return g === 8;
  if (g > 7) return false;
  // Move the groups after `::` to the end, zero the gap.
  const tail = g - dbl;
  for (let k = tail - 1; k >= 0; k--) {
    out[2 * (8 - tail + k)] = out[2 * (dbl + k)];
    out[2 * (8 - tail + k) + 1] = out[2 * (dbl + k) + 1];
  }
  for (let k = 2 * dbl; k < 2 * (8 - tail); k++) out[k] = 0;
  return true;
}

/**
 * Parses an IP address (IPv4, IPv6, or IPv6 in brackets) into `out` (16 bytes,
 * IPv4 as `::ffff:a.b.c.d`) without allocating. Returns 4 or 6 (the family
 * the text was written in), or 0 if malformed (then `out` is garbage).
 */
export function parseIpInto(text: string, out: Uint8Array): 0 | 4 | 6 {
  let from = 0;
  let to = text.length;
  if (to > 47 || out.length < 16) return 0;
  if (to > 0 && text.charCodeAt(0) === 91) {
    if (text.charCodeAt(to - 1) !== 93) return 0;
    from = 1;
    to--;
    return scanIPv6(text, from, to, out) ? 6 : 0;
  }
  let colon = false;
  for (let i = 0; i < to; i++) {
    if (text.charCodeAt(i) === 58) {
      colon = true;
      break;
    }
  }
  if (colon) return scanIPv6(text, from, to, out) ? 6 : 0;
  if (!scanIPv4(text, from, to, out, 12)) return 0;
  for (let i = 0; i < 10; i++) out[i] = 0;
  out[10] = 0xff;
  out[11] = 0xff;
  return 4;
}

/** Parses an IP address (IPv4, IPv6, bracketed IPv6) to 16 bytes (IPv4 as IPv4-mapped), or `null`. */
export function parseIp(text: string): Uint8Array | null {
  const out = new Uint8Array(16);
  return parseIpInto(text, out) === 0 ? null : out;
}

/** An address as the packet layer holds it: 4 bytes for IPv4, 16 for IPv6; null if not one. */
export function ipBytes(text: string): Uint8Array | null {
  const ip = parseIp(text);
  if (!ip) return null;
  return isMapped(ip) ? ip.slice(12, 16) : ip;
}

/** Formats 16 bytes: IPv4-mapped addresses as dotted IPv4, others per RFC 5952. */
export function formatIp(addr: Uint8Array): string {
  if (addr.length !== 16) throw new RangeError("address must be 16 bytes");
  if (isMapped(addr)) return `${addr[12]}.${addr[13]}.${addr[14]}.${addr[15]}`;
  return formatIPv6(addr);
}

/** A copy of `addr` (16 bytes) with every bit past `bits` cleared, as a {@link Prefix}. */
export function maskPrefix(addr: Uint8Array, bits: number): Prefix {
  if (addr.length !== 16) throw new RangeError("address must be 16 bytes");
  if (!Number.isInteger(bits) || bits < 0 || bits > 128) {
    throw new RangeError("prefix length must be 0..128");
  }
  const out = new Uint8Array(16);
  const full = bits >> 3;
  for (let i = 0; i < full; i++) out[i] = addr[i];
  if (full < 16 && (bits & 7) !== 0) out[full] = addr[full] & (0xff00 >> (bits & 7));
  return { addr: out, bits };
}

/** Whether `addr` has no bit set past the first `bits`. */
function hostBitsClear(addr: Uint8Array, bits: number): boolean {
  const full = bits >> 3;
  if (full < 16 && (bits & 7) !== 0 && (addr[full] & (0xff >> (bits & 7))) !== 0) return false;
  for (let i = full + ((bits & 7) !== 0 ? 1 : 0); i < 16; i++) if (addr[i] !== 0) return false;
  return true;
}

/**
 * Parses `addr/len` or a bare address (a host prefix: `/32` for IPv4, `/128`
 * for IPv6). IPv6 may be bracketed (`[2001:db8::]/32`). IPv4 lengths are
 * 0..32, IPv6 0..128. Host bits set past the length are an error whose message
 * names the network address. Messages never repeat the input.
 */
export function parsePrefix(text: string): PrefixParse {
  const slash = text.lastIndexOf("/");
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const addr = new Uint8Array(16);
  const family = parseIpInto(addrText, addr);
  if (family === 0) return { ok: false, error: "not an IPv4 or IPv6 address or CIDR" };
  const max = family === 4 ? 32 : 128;
  let len = max;
  if (slash !== -1) {
    const lenText = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText) || Number(lenText) > max) {
      return { ok: false, error: `prefix length must be 0..${max}` };
    }
    len = Number(lenText);
  }
  const bits = family === 4 ? len + 96 : len;
  if (!hostBitsClear(addr, bits)) {
    const net = maskPrefix(addr, bits);
    return {
      ok: false,
      error: `host bits are set past /${len} (the network is ${formatPrefix(net)})`,
    };
  }
  return { ok: true, prefix: { addr, bits } };
}

/** Parses a CIDR or a bare address like {@link parsePrefix}; `null` when malformed. */
export function parseCidr(text: string): Prefix | null {
  const r = parsePrefix(text);
  return r.ok ? r.prefix : null;
}

/** Formats a prefix: IPv4 form (`10.0.0.0/8`) inside `::ffff:0:0/96`, else `2001:db8::/32`. */
export function formatPrefix(p: Prefix): string {
  if (p.bits >= 96 && isMapped(p.addr)) return `${formatIp(p.addr)}/${p.bits - 96}`;
  return `${formatIPv6(p.addr)}/${p.bits}`;
}

/** Whether address `addr` (16 bytes) lies inside prefix `p`. */
export function prefixContains(p: Prefix, addr: Uint8Array): boolean {
  const full = p.bits >> 3;
  for (let i = 0; i < full; i++) if (p.addr[i] !== addr[i]) return false;
  const rest = p.bits & 7;
  if (rest === 0) return true;
  const m = 0xff00 >> rest;
  return (p.addr[full] & m) === (addr[full] & m);
}

/** The 32-bit word `w` (0..3) of a 16-byte address. */
function word(b: Uint8Array, w: number): number {
  const i = w << 2;
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) | 0;
}

/** Mask of the first `n` bits (0..32) of a word, as int32. */
function wordMask(n: number): number {
  return n >= 32 ? -1 : n <= 0 ? 0 : ~(-1 >>> n);
}

const NO_VALUE = -1;
/** Int32 slots per node: key words 0..3, length, value index, child 0, child 1. */
const STRIDE = 8;
const LEN = 4;
const VAL = 5;
const KID = 6;
/** Jump-table slots per region (IPv4-mapped, other). */
const SLOTS = 65536;
/** Inserts touching more jump slots than this defer to one rebuild at the next lookup. */
const EAGER_SLOTS = 1024;
/** Tables smaller than this have no jump table (it costs 1.1 MiB; small tries are shallow). */
const JUMP_MIN = 256;

/**
 * Longest-prefix-match table over the 128-bit space (IPv4 entries match
 * plain IPv4 and IPv4-mapped IPv6 addresses alike).
 *
 * A path-compressed binary trie in one typed array, entered through a jump
 * table indexed by the top 16 bits of the address (of the IPv4 address, for
 * IPv4-mapped ones): a lookup skips the top of the trie, then visits one
 * 32-byte node per branching point below (a handful for random data) and
 * allocates nothing. `insert` is O(128) plus the jump slots it touches; an
 * insert that touches many (a short prefix) defers to one rebuild of the
 * jump table (one pass over the top of the trie) at the next lookup. Tables under 256
 * prefixes have no jump table and walk from the root.
 */
export class PrefixTable<V> {
  // Node i occupies #n[8i..8i+7]: the key's four words (host bits zero), its
  // length, an index into #values or -1, and the children for next bit 0 and
  // 1 (0 = none: node 0 is the root, never a child). One array so that a step
  // of the walk reads one cache line.
  #n: Int32Array;
  #nodes = 1;
  #values: V[] = [];
  // The jump table: where the walk stands after the first 112 bits of an
  // IPv4-mapped address (slots 0..65535, by the IPv4 address's top 16 bits)
  // or the first 16 bits of any other address (slots 65536..131071): the node
  // to continue at (-1: the walk is over), the bits already checked, and the
  // best value so far. Kept exact for the slots an insert touches; a lookup
  // then skips the top of the trie.
  // Allocated (1.1 MiB) once the table holds JUMP_MIN prefixes; smaller
  // tables walk from the root.
  #jNode: Int32Array | null = null;
  #jPrev = new Uint8Array(0);
  #jBest = new Int32Array(0);
  #dirty = false;
  /** The key being inserted, as words. */
  readonly #k = new Int32Array(4);

  /** An empty table; `capacity` pre-sizes the node array (about 2 nodes per prefix). */
  constructor(capacity = 64) {
    this.#n = new Int32Array(STRIDE * Math.max(2, capacity | 0));
    this.#n[VAL] = NO_VALUE;
  }

  /**
   * Brings the jump slots that lie inside (or contain) node `i`'s prefix up
   * to date; when they are many, marks the whole jump table for a rebuild at
   * the next lookup instead (bulk loads then pay once).
   */
  #touch(i: number): void {
    if (this.#jNode === null) {
      if (this.#values.length < JUMP_MIN) return;
      this.#jNode = new Int32Array(2 * SLOTS);
      this.#jPrev = new Uint8Array(2 * SLOTS);
      this.#jBest = new Int32Array(2 * SLOTS);
      this.#dirty = true;
    }
    if (this.#dirty) return;
    const n = this.#n;
    const o = STRIDE * i;
    const len = n[o + LEN];
    // IPv4-mapped slots: prefix words (0, 0, 0xffff, hi16 << 16), 112 bits.
    let mapped = true;
    for (let w = 0; w < 3 && 32 * w < len; w++) {
      const want = w === 2 ? 0xffff : 0;
      if (((n[o + w] ^ want) & wordMask(len - 32 * w)) !== 0) mapped = false;
    }
    const v4count = !mapped ? 0 : len <= 96 ? SLOTS : len <= 112 ? 1 << (112 - len) : 1;
    const v6count = len <= 16 ? 1 << (16 - len) : 1;
    if (v4count + v6count > EAGER_SLOTS) {
      this.#dirty = true;
      return;
    }
    if (v4count > 0) this.#recompute(len <= 96 ? 0 : n[o + 3] >>> 16, v4count);
    this.#recompute(SLOTS + (n[o] >>> 16), v6count);
  }

  /** Rebuilds the whole jump table in one pass over the top of the trie. */
  #rebuild(): void {
    const rootBest = this.#n[VAL];
    this.#fill(0, 0, rootBest, 0, SLOTS, true);
    this.#fill(0, 0, rootBest, SLOTS, SLOTS, false);
    this.#dirty = false;
  }

  /** Sets `count` jump slots from `first` to one state. */
  #set(first: number, count: number, node: number, prev: number, best: number): void {
    const jNode = this.#jNode!;
    const jPrev = this.#jPrev;
    const jBest = this.#jBest;
    for (let s = first; s < first + count; s++) {
      jNode[s] = node;
      jPrev[s] = prev;
      jBest[s] = best;
    }
  }

  /**
   * Fills the jump slots `[lo, lo + count)` of one region (IPv4-mapped when
   * `v4`), whose walks all reach `node` with `prev` bits checked and `best`
   * found so far; the same states {@link #recompute} gives slot by slot.
   */
  #fill(node: number, prev: number, best: number, lo: number, count: number, v4: boolean): void {
    const n = this.#n;
    const o = STRIDE * node;
    const nl = n[o + LEN];
    const slotLen = v4 ? 112 : 16;
    if (nl > slotLen) {
      this.#set(lo, count, node, prev, best);
      return;
    }
    // In the IPv4-mapped region, the key must agree with ::ffff:0:0 on its first 96 bits.
    const baseLen = v4 ? 96 : 0;
    const fixed = Math.min(nl, baseLen);
    for (let w = 0; 32 * w < fixed; w++) {
      if (((n[o + w] ^ (w === 2 ? 0xffff : 0)) & wordMask(fixed - 32 * w)) !== 0) {
        this.#set(lo, count, -1, prev, best);
        return;
      }
    }
    // The node's own slots; the rest of the range misses at this node.
    const region = v4 ? 0 : SLOTS;
    const nodeLo = nl <= baseLen ? region : region + (n[o + (v4 ? 3 : 0)] >>> 16);
    const nodeCount = nl <= baseLen ? SLOTS : 1 << (slotLen - nl);
    if (nodeLo > lo) this.#set(lo, nodeLo - lo, -1, prev, best);
    if (nodeLo + nodeCount < lo + count) {
      this.#set(nodeLo + nodeCount, lo + count - nodeLo - nodeCount, -1, prev, best);
    }
    const v = n[o + VAL];
    const here = v !== NO_VALUE ? v : best;
    if (nl === slotLen) {
      this.#set(nodeLo, 1, node, nl, here);
      return;
    }
    if (nl < baseLen) {
      // The next bit is fixed by ::ffff:0:0 (bits 80..95 are ones).
      const child = n[o + KID + (nl >= 80 ? 1 : 0)];
      if (child === 0) this.#set(nodeLo, nodeCount, -1, nl, here);
      else this.#fill(child, nl, here, nodeLo, nodeCount, v4);
      return;
    }
    const half = nodeCount >> 1;
    for (let b = 0; b < 2; b++) {
      const child = n[o + KID + b];
      if (child === 0) this.#set(nodeLo + b * half, half, -1, nl, here);
      else this.#fill(child, nl, here, nodeLo + b * half, half, v4);
    }
  }

  /** Recomputes `count` jump slots from `first`. */
  #recompute(first: number, count: number): void {
    const n = this.#n;
    const jNode = this.#jNode!;
    for (let s = first; s < first + count; s++) {
      const v4 = s < SLOTS;
      const slotLen = v4 ? 112 : 16;
      const b0 = v4 ? 0 : (s - SLOTS) << 16;
      const b2 = v4 ? 0xffff : 0;
      const b3 = v4 ? s << 16 : 0;
      let best = n[VAL];
      let node = 0;
      let prev = 0;
      let done = false;
      for (;;) {
        const o = STRIDE * node;
        const nl = n[o + LEN];
        if (nl > slotLen) break;
        if (nl > prev) {
          const last = (nl - 1) >>> 5;
          for (let w = prev >>> 5; w <= last && !done; w++) {
            const a = w === 0 ? b0 : w === 1 ? 0 : w === 2 ? b2 : b3;
            const m = w < last ? -1 : wordMask(nl - 32 * w);
            if (((n[o + w] ^ a) & m) !== 0) done = true;
          }
          if (done) break;
          const v = n[o + VAL];
          if (v !== NO_VALUE) best = v;
          prev = nl;
        }
        if (nl === slotLen) break;
        const wi = nl >>> 5;
        const a = wi === 0 ? b0 : wi === 1 ? 0 : wi === 2 ? b2 : b3;
        const next = n[o + KID + ((a >>> (31 - (nl & 31))) & 1)];
        if (next === 0) {
          done = true;
          break;
        }
        node = next;
      }
      jNode[s] = done ? -1 : node;
      this.#jPrev[s] = prev;
      this.#jBest[s] = best;
    }
  }

  /** Number of prefixes stored. */
  get size(): number {
    return this.#values.length;
  }

  /** Bytes held by the node array and the jump table (for benchmarks; values not counted). */
  get nodeBytes(): number {
    return this.#n.byteLength + (this.#jNode?.byteLength ?? 0) + this.#jPrev.byteLength +
      this.#jBest.byteLength;
  }

  /** A new node for key words `k` masked to `len` bits. */
  #node(k: Int32Array, len: number, val: number): number {
    if ((this.#nodes + 1) * STRIDE > this.#n.length) {
      const grown = new Int32Array(this.#n.length * 2);
      grown.set(this.#n);
      this.#n = grown;
    }
    const i = this.#nodes++;
    const n = this.#n;
    const o = STRIDE * i;
    for (let w = 0; w < 4; w++) n[o + w] = k[w] & wordMask(len - 32 * w);
    n[o + LEN] = len;
    n[o + VAL] = val;
    n[o + KID] = 0;
    n[o + KID + 1] = 0;
    return i;
  }

  /** Number of leading bits (at most `limit`) node `i`'s key shares with `k`. */
  #common(i: number, k: Int32Array, limit: number): number {
    for (let w = 0; w < 4; w++) {
      const x = this.#n[STRIDE * i + w] ^ k[w];
      if (x !== 0) return Math.min(limit, 32 * w + Math.clz32(x));
      if (32 * (w + 1) >= limit) return limit;
    }
    return limit;
  }

  /**
   * Stores `value` under `prefix` (its host bits must be clear — anything from
   * {@link parsePrefix} or {@link maskPrefix}); replaces and returns the value
   * already stored under exactly that prefix, if any.
   */
  insert(prefix: Prefix, value: V): V | undefined {
    const len = prefix.bits;
    if (!Number.isInteger(len) || len < 0 || len > 128 || prefix.addr.length !== 16) {
      throw new RangeError("invalid prefix");
    }
    if (!hostBitsClear(prefix.addr, len)) throw new RangeError("prefix has host bits set");
    const k = this.#k;
    for (let w = 0; w < 4; w++) k[w] = word(prefix.addr, w);
    let node = 0;
    for (;;) {
      const o = STRIDE * node;
      const nl = this.#n[o + LEN];
      if (nl === len) {
        const vi = this.#n[o + VAL];
        if (vi !== NO_VALUE) {
          const old = this.#values[vi];
          this.#values[vi] = value;
          return old;
        }
        this.#n[o + VAL] = this.#values.push(value) - 1;
        this.#touch(node);
        return undefined;
      }
      const bit = (k[nl >>> 5] >>> (31 - (nl & 31))) & 1;
      const c = this.#n[o + KID + bit];
      if (c === 0) {
        const leaf = this.#node(k, len, this.#values.length);
        this.#values.push(value);
        this.#n[o + KID + bit] = leaf;
        this.#touch(leaf);
        return undefined;
      }
      const cl = this.#n[STRIDE * c + LEN];
      const common = this.#common(c, k, Math.min(cl, len));
      if (common === cl) {
        node = c;
        continue;
      }
      const cbit = (this.#n[STRIDE * c + (common >>> 5)] >>> (31 - (common & 31))) & 1;
      if (common === len) {
        // The new prefix sits between `node` and `c`.
        const mid = this.#node(k, len, this.#values.length);
        this.#values.push(value);
        this.#n[STRIDE * mid + KID + cbit] = c;
        this.#n[o + KID + bit] = mid;
        this.#touch(mid);
        return undefined;
      }
      // Diverge at `common`: a branching node without a value, two children.
      const glue = this.#node(k, common, NO_VALUE);
      const leaf = this.#node(k, len, this.#values.length);
      this.#values.push(value);
      this.#n[STRIDE * glue + KID + cbit] = c;
      this.#n[STRIDE * glue + KID + (cbit ^ 1)] = leaf;
      this.#n[o + KID + bit] = glue;
      this.#touch(glue);
      return undefined;
    }
  }

  /** The value stored under exactly `prefix`, if any (no longest-prefix matching). */
  get(prefix: Prefix): V | undefined {
    let node = 0;
    const len = prefix.bits;
    for (;;) {
      const o = STRIDE * node;
      const nl = this.#n[o + LEN];
      if (nl > len || !this.#matches(node, prefix.addr)) return undefined;
      if (nl === len) {
        const vi = this.#n[o + VAL];
        return vi === NO_VALUE ? undefined : this.#values[vi];
      }
      const bit = (prefix.addr[nl >> 3] >> (7 - (nl & 7))) & 1;
      node = this.#n[o + KID + bit];
      if (node === 0) return undefined;
    }
  }

  #matches(node: number, addr: Uint8Array): boolean {
    const o = STRIDE * node;
    const len = this.#n[o + LEN];
    for (let w = 0; 32 * w < len; w++) {
      if (((this.#n[o + w] ^ word(addr, w)) & wordMask(len - 32 * w)) !== 0) return false;
    }
    return true;
  }

  /** Longest-prefix match of a 16-byte address (IPv4 as `::ffff:a.b.c.d`). */
  lookup(addr: Uint8Array): V | undefined {
    return this.lookupWords(word(addr, 0), word(addr, 1), word(addr, 2), word(addr, 3));
  }

  /** Longest-prefix match of an IPv4 address given as a 32-bit number. */
  lookupV4(ipv4: number): V | undefined {
    return this.lookupWords(0, 0, 0xffff, ipv4 | 0);
  }

  /** Longest-prefix match of the address whose four 32-bit words (big-endian order) are given. */
  lookupWords(w0: number, w1: number, w2: number, w3: number): V | undefined {
    const n = this.#n;
    const jNode = this.#jNode;
    let best = n[VAL];
    let o = 0;
    let prev = 0; // bits already known to match
    if (jNode !== null) {
      if (this.#dirty) this.#rebuild();
      const slot = w0 === 0 && w1 === 0 && w2 === 0xffff ? w3 >>> 16 : SLOTS + (w0 >>> 16);
      best = this.#jBest[slot];
      const start = jNode[slot];
      if (start < 0) return best === NO_VALUE ? undefined : this.#values[best];
      o = STRIDE * start;
      prev = this.#jPrev[slot];
    }
    for (;;) {
      const nl = n[o + LEN];
      if (nl > prev) {
        // Check the bits (prev, nl]: the words they fall in.
        const last = (nl - 1) >>> 5;
        for (let w = prev >>> 5; w <= last; w++) {
          const a = w === 0 ? w0 : w === 1 ? w1 : w === 2 ? w2 : w3;
          const m = w < last ? -1 : wordMask(nl - 32 * w);
          if (((n[o + w] ^ a) & m) !== 0) {
            return best === NO_VALUE ? undefined : this.#values[best];
          }
        }
        const v = n[o + VAL];
        if (v !== NO_VALUE) best = v;
        if (nl === 128) break;
        prev = nl;
      }
      const wi = nl >>> 5;
      const a = wi === 0 ? w0 : wi === 1 ? w1 : wi === 2 ? w2 : w3;
      const next = n[o + KID + ((a >>> (31 - (nl & 31))) & 1)];
      if (next === 0) break;
      o = STRIDE * next;
    }
    return best === NO_VALUE ? undefined : this.#values[best];
  }

  /**
   * Writes the values of every prefix containing `addr` into `out`, least
   * specific first, and returns how many; `out` is reused (no allocation once
   * it has grown), entries past the count are left as they were.
   */
  collect(addr: Uint8Array, out: V[]): number {
    let n = 0;
    let node = 0;
    for (;;) {
      if (!this.#matches(node, addr)) return n;
      const o = STRIDE * node;
      const vi = this.#n[o + VAL];
      if (vi !== NO_VALUE) out[n++] = this.#values[vi];
      const nl = this.#n[o + LEN];
      if (nl === 128) return n;
      node = this.#n[o + KID + ((addr[nl >> 3] >> (7 - (nl & 7))) & 1)];
      if (node === 0) return n;
    }
  }

  /** Every stored prefix with its value, in address order (shorter prefix first on ties). */
  *entries(): IterableIterator<[Prefix, V]> {
    const stack = [0];
    while (stack.length > 0) {
      const node = stack.pop()!;
      const o = STRIDE * node;
      const vi = this.#n[o + VAL];
      if (vi !== NO_VALUE) {
        const addr = new Uint8Array(16);
        for (let w = 0; w < 4; w++) {
          const x = this.#n[o + w];
          addr[4 * w] = x >>> 24;
          addr[4 * w + 1] = (x >>> 16) & 0xff;
          addr[4 * w + 2] = (x >>> 8) & 0xff;
          addr[4 * w + 3] = x & 0xff;
        }
        yield [{ addr, bits: this.#n[o + LEN] }, this.#values[vi]];
      }
      const one = this.#n[o + KID + 1];
      const zero = this.#n[o + KID];
      if (one !== 0) stack.push(one);
      if (zero !== 0) stack.push(zero);
    }
  }
}

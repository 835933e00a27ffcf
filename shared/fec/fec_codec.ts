/**
 * Forward error correction for datagrams: the group logic and the wire
 * format, sans-I/O (`now` is passed in; no sockets, no timers).
 *
 * The encoder numbers datagrams in groups of `k` data datagrams followed by
 * `m` parity datagrams (Reed-Solomon, `reed_solomon.ts`). Data datagrams go
 * out at once, unchanged but for a header; the parity leaves when the group
 * has its `k` data datagrams, or earlier when {@link FecEncoder.flush} finds
 * the group older than its timeout (then the group is cut short at the `k'`
 * datagrams it has, with `m' = ceil(m·k'/k)` parity). `k:m` may change
 * between groups (the adaptive ratio, `adaptive.ts`); `m = 0` sends the
 * header only.
 *
 * Wire format (every datagram, 5-byte header):
 * ```
 * group  u16 big-endian   group number, wraps at 2^16
 * index  u8               0..k-1: a data datagram; k..k+m-1: parity row index-k
 * k      u8               data datagrams in the group (1..255)
 * m      u8               parity datagrams in the group (0..254), k + m ≤ 255
 * data datagram   = header || payload                       (5 bytes added)
 * parity datagram = header || RS parity of the coded shards  (7 bytes more than the longest)
 * coded shard     = u16be(payload length) || payload || zeros to the group's longest + 2
 * ```
 * A data datagram carries the `k`, `m` its group was opened with; the parity
 * of a group cut short carries the `k'`, `m'` it was coded with, and the
 * decoder takes those. The length prefix exists only inside the coded shards,
 * so a recovered datagram gets its exact length back.
 *
 * The decoder takes datagrams in any order, drops duplicates and malformed
 * ones (counted, never thrown), delivers each data datagram as it arrives,
 * and delivers the data datagrams it recovers as soon as a group has `k` of
 * its `k + m`. It keeps at most `maxGroups` groups, each for at most
 * `windowMs` from its first datagram, and the numbers of the last
 * `4 · maxGroups` groups it forgot: a late datagram of one of those is
 * dropped as stale, so a datagram is delivered at most once unless it comes
 * back after all that (the session's replay window is the last word).
 * Payloads handed to the callbacks are valid only during the call.
 * @module
 */

import { ReedSolomon } from "./reed_solomon.ts";

/** Bytes of the header on every FEC datagram. */
export const FEC_HEADER_LENGTH = 5;
/** Bytes a parity datagram is longer than the longest data payload of its group. */
export const FEC_PARITY_OVERHEAD = FEC_HEADER_LENGTH + 2;
/** Largest payload the coded length prefix can describe. */
export const FEC_MAX_PAYLOAD = 0xffff - 2;

/** Default data datagrams per group. */
const DEFAULT_K = 10;
/** Default parity datagrams per group. */
const DEFAULT_M = 3;
/** Default largest payload, bytes. */
const DEFAULT_MAX_PAYLOAD = 1500;
/** Default age at which {@link FecEncoder.flush} cuts a group short, ms. */
const DEFAULT_TIMEOUT_MS = 5;
/** Default number of groups a decoder remembers. */
const DEFAULT_MAX_GROUPS = 64;
/** Default time a decoder remembers a group, ms. */
const DEFAULT_WINDOW_MS = 1000;
/** Forgotten group numbers remembered (to drop their late datagrams), per open group allowed. */
const FORGOTTEN_PER_GROUP = 4;
/** Cached codes per encoder or decoder (one per k:m in use). */
const CODE_CACHE_LIMIT = 64;

/** Checks a k:m pair; throws a RangeError naming what is wrong. */
function checkRatio(k: number, m: number): void {
  if (!Number.isInteger(k) || !Number.isInteger(m) || k < 1 || m < 0 || k + m > 255) {
    throw new RangeError(`FEC ratio must have integers k ≥ 1, m ≥ 0, k + m ≤ 255; got ${k}:${m}`);
  }
}

/** Checks the largest payload; throws a RangeError. */
function checkMaxPayload(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > FEC_MAX_PAYLOAD) {
    throw new RangeError(`maxPayload must be an integer in 1..${FEC_MAX_PAYLOAD}, got ${n}`);
  }
}

/** A bounded cache of codes by k:m. */
class CodeCache {
  readonly #codes = new Map<number, ReedSolomon>();

  /** The code for k:m (m ≥ 1). */
  get(k: number, m: number): ReedSolomon {
    const key = (k << 8) | m;
    let rs = this.#codes.get(key);
    if (!rs) {
      if (this.#codes.size >= CODE_CACHE_LIMIT) this.#codes.clear();
      rs = new ReedSolomon(k, m);
      this.#codes.set(key, rs);
    }
    return rs;
  }
}

/** Writes the 5-byte header at the start of `b`. */
function writeHeader(b: Uint8Array, group: number, index: number, k: number, m: number): void {
  b[0] = group >>> 8;
  b[1] = group & 0xff;
  b[2] = index;
  b[3] = k;
  b[4] = m;
}

/** Options of a {@link FecEncoder}. */
export interface FecEncoderOptions {
  /** Receives each datagram to send; valid only during the call. */
  onDatagram: (wire: Uint8Array) => void;
  /** Data datagrams per group (default 10). */
  dataShards?: number;
  /** Parity datagrams per group (default 3; 0: none). */
  parityShards?: number;
  /** Largest payload accepted, bytes (default 1500). */
  maxPayload?: number;
  /** Age at which {@link FecEncoder.flush} cuts an open group short, ms (default 5). */
  timeoutMs?: number;
  /** Number of the first group (default 0). */
  firstGroup?: number;
}

/** Counters of a {@link FecEncoder}. */
export interface FecEncoderStats {
  /** Data datagrams sent. */
  dataSent: number;
  /** Parity datagrams sent. */
  paritySent: number;
  /** Groups closed (full or cut short). */
  groups: number;
  /** Groups cut short by {@link FecEncoder.flush}. */
  groupsFlushed: number;
  /** Payloads refused for being longer than `maxPayload`. */
  oversize: number;
}

/**
 * The sending side: wraps each payload in a data datagram at once and emits
 * a group's parity when it is full or timed out. One copy per payload (into
 * the group's slot, whose bytes are both the datagram and the coded shard).
 */
export class FecEncoder {
  /** Counters (live). */
  readonly stats: FecEncoderStats = {
    dataSent: 0,
    paritySent: 0,
    groups: 0,
    groupsFlushed: 0,
    oversize: 0,
  };
  readonly #emit: (wire: Uint8Array) => void;
  readonly #maxPayload: number;
  readonly #timeoutMs: number;
  readonly #codes = new CodeCache();
  /** Slot j: header (5) || payload; after sending, bytes 3..4 become the length prefix. */
  readonly #slots: Uint8Array[] = [];
  /** Views of the slots from byte 3: the coded shards. */
  readonly #shards: Uint8Array[] = [];
  readonly #lengths = new Int32Array(255);
  readonly #parity: Uint8Array[] = [];
  readonly #parityViews: Uint8Array[] = [];
  readonly #scratch: Uint8Array;
  #nextK: number;
  #nextM: number;
  #group: number;
  #k = 0;
  #m = 0;
  #count = 0;
  #opened = 0;
  #longest = 0;

  /** An encoder emitting through `options.onDatagram`. */
  constructor(options: FecEncoderOptions) {
    this.#emit = options.onDatagram;
    this.#maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    checkMaxPayload(this.#maxPayload);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#nextK = options.dataShards ?? DEFAULT_K;
    this.#nextM = options.parityShards ?? DEFAULT_M;
    checkRatio(this.#nextK, this.#nextM);
    this.#group = (options.firstGroup ?? 0) & 0xffff;
    this.#scratch = new Uint8Array(FEC_HEADER_LENGTH + this.#maxPayload);
  }

  /** The k:m the next group opens with. */
  get ratio(): { k: number; m: number } {
    return { k: this.#nextK, m: this.#nextM };
  }

  /** Sets k:m for the groups opened from now on (the open group keeps its own). */
  setRatio(k: number, m: number): void {
    checkRatio(k, m);
    this.#nextK = k;
    this.#nextM = m;
  }

  /** The number of the group the next data datagram belongs to. */
  get group(): number {
    return this.#group;
  }

  /**
   * Sends `payload` as a data datagram (and the group's parity if this
   * fills it). Returns false, sending nothing, when it is longer than
   * `maxPayload`.
   */
  send(payload: Uint8Array, now: number): boolean {
    const len = payload.length;
    if (len > this.#maxPayload) {
      this.stats.oversize++;
      return false;
    }
    if (this.#count === 0) {
      this.#k = this.#nextK;
      this.#m = this.#nextM;
      this.#opened = now;
      this.#longest = 0;
    }
    const index = this.#count++;
    if (this.#m === 0) {
      const b = this.#scratch;
      writeHeader(b, this.#group, index, this.#k, 0);
      b.set(payload, FEC_HEADER_LENGTH);
      this.stats.dataSent++;
      this.#emit(b.subarray(0, FEC_HEADER_LENGTH + len));
      if (this.#count === this.#k) this.#close();
      return true;
    }
    const slot = this.#slot(index);
    writeHeader(slot, this.#group, index, this.#k, this.#m);
    slot.set(payload, FEC_HEADER_LENGTH);
    this.stats.dataSent++;
    this.#emit(slot.subarray(0, FEC_HEADER_LENGTH + len));
    slot[3] = len >>> 8;
    slot[4] = len & 0xff;
    this.#lengths[index] = len + 2;
    if (len + 2 > this.#longest) this.#longest = len + 2;
    if (this.#count === this.#k) this.#emitParity(this.#k, this.#m);
    return true;
  }

  /**
   * Cuts the open group short when it is at least `timeoutMs` old at `now`:
   * emits parity for the data datagrams it has (none when its m is 0) and
   * opens the next group with the current ratio.
   */
  flush(now: number): void {
    if (this.#count === 0 || now - this.#opened < this.#timeoutMs) return;
    this.stats.groupsFlushed++;
    if (this.#m === 0) {
      this.#close();
      return;
    }
    const k = this.#count;
    const m = Math.min(Math.ceil((this.#m * k) / this.#k), 255 - k);
    this.#emitParity(k, m);
  }

  /** When {@link flush} has work: the open group's timeout, or Infinity with none open. */
  deadline(): number {
    return this.#count === 0 ? Infinity : this.#opened + this.#timeoutMs;
  }

  /** Slot `j`, made on first use. */
  #slot(j: number): Uint8Array {
    while (this.#slots.length <= j) {
      const s = new Uint8Array(FEC_HEADER_LENGTH + this.#maxPayload);
      this.#slots.push(s);
      this.#shards.push(s.subarray(3));
    }
    return this.#slots[j];
  }

  /** Codes the open group's `k` slots into `m` parity datagrams, emits them, closes the group. */
  #emitParity(k: number, m: number): void {
    while (this.#parity.length < m) {
      const p = new Uint8Array(FEC_PARITY_OVERHEAD + this.#maxPayload);
      this.#parity.push(p);
      this.#parityViews.push(p.subarray(FEC_HEADER_LENGTH));
    }
    const length = this.#longest;
    this.#codes.get(k, m).encode(this.#shards, this.#parityViews, length, this.#lengths);
    for (let i = 0; i < m; i++) {
      const p = this.#parity[i];
      writeHeader(p, this.#group, k + i, k, m);
      this.stats.paritySent++;
      this.#emit(p.subarray(0, FEC_HEADER_LENGTH + length));
    }
    this.#close();
  }

  #close(): void {
    this.stats.groups++;
    this.#group = (this.#group + 1) & 0xffff;
    this.#count = 0;
  }
}

/** Options of a {@link FecDecoder}. */
export interface FecDecoderOptions {
  /** Receives each data payload, received or recovered, once; valid only during the call. */
  onData: (payload: Uint8Array) => void;
  /** Largest payload accepted, bytes (default 1500); longer data is malformed. */
  maxPayload?: number;
  /** Groups remembered at once (default 64). */
  maxGroups?: number;
  /** Time a group is remembered from its first datagram, ms (default 1000). */
  windowMs?: number;
}

/** Counters of a {@link FecDecoder}. */
export interface FecDecoderStats {
  /** Data datagrams received (and delivered). */
  dataReceived: number;
  /** Data datagrams recovered from parity (and delivered). */
  recovered: number;
  /** Groups forgotten with data datagrams known to be missing. */
  unrecoverableGroups: number;
  /** Parity datagrams received. */
  parityReceived: number;
  /** Datagrams dropped as malformed or inconsistent with their group. */
  malformed: number;
  /** Datagrams dropped as already received. */
  duplicates: number;
  /** Datagrams dropped because their group was already forgotten. */
  stale: number;
}

/** A group as the decoder remembers it. */
class Group {
  id = 0;
  created = 0;
  k = 0;
  m = 0;
  /** k and m come from a parity header (authoritative), not a data header. */
  final = false;
  /** Coded shard length (from the parity), -1 before any. */
  length = -1;
  dataCount = 0;
  parityCount = 0;
  maxData = -1;
  /** All data datagrams delivered (received or recovered). */
  done = false;
  readonly have = new Uint8Array(255);
  /** Coded length (payload + 2) of each stored data shard. */
  readonly lengths = new Int32Array(255);
  readonly bufs: (Uint8Array | null)[] = new Array(255).fill(null);
}

/**
 * The receiving side: delivers data datagrams at once and recovers lost ones
 * from parity. Memory is bounded by `maxGroups` groups of stored shards,
 * from a pool of reused buffers.
 */
export class FecDecoder {
  /** Counters (live). */
  readonly stats: FecDecoderStats = {
    dataReceived: 0,
    recovered: 0,
    unrecoverableGroups: 0,
    parityReceived: 0,
    malformed: 0,
    duplicates: 0,
    stale: 0,
  };
  readonly #onData: (payload: Uint8Array) => void;
  readonly #maxPayload: number;
  readonly #maxGroups: number;
  readonly #windowMs: number;
  readonly #codes = new CodeCache();
  readonly #groups = new Map<number, Group>();
  /** Open groups, oldest first. */
  readonly #order: Group[] = [];
  readonly #groupPool: Group[] = [];
  readonly #bufPool: Uint8Array[] = [];
  readonly #shards: Uint8Array[] = new Array(255);
  readonly #present = new Uint8Array(255);
  readonly #dummy: Uint8Array;
  /** Numbers of the groups forgotten last (a late datagram of one is stale). */
  readonly #forgotten = new Set<number>();
  /** The same numbers, oldest first, as a ring. */
  readonly #forgottenRing: Int32Array;
  #ringStart = 0;

  /** A decoder delivering through `options.onData`. */
  constructor(options: FecDecoderOptions) {
    this.#onData = options.onData;
    this.#maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    checkMaxPayload(this.#maxPayload);
    this.#maxGroups = options.maxGroups ?? DEFAULT_MAX_GROUPS;
    if (!Number.isInteger(this.#maxGroups) || this.#maxGroups < 1 || this.#maxGroups > 1024) {
      throw new RangeError(`maxGroups must be an integer in 1..1024, got ${this.#maxGroups}`);
    }
    this.#windowMs = options.windowMs ?? DEFAULT_WINDOW_MS;
    this.#dummy = new Uint8Array(this.#maxPayload + 2);
    this.#forgottenRing = new Int32Array(this.#maxGroups * FORGOTTEN_PER_GROUP);
  }

  /** Groups remembered now. */
  get openGroups(): number {
    return this.#groups.size;
  }

  /** Takes one received datagram. Never throws on bad input (it is counted and dropped). */
  push(wire: Uint8Array, now: number): void {
    this.expire(now);
    const st = this.stats;
    if (wire.length < FEC_HEADER_LENGTH) {
      st.malformed++;
      return;
    }
    const id = (wire[0] << 8) | wire[1];
    const index = wire[2];
    const k = wire[3];
    const m = wire[4];
    if (k === 0 || k + m > 255 || index >= k + m) {
      st.malformed++;
      return;
    }
    const isData = index < k;
    const size = wire.length - FEC_HEADER_LENGTH;
    if (isData ? size > this.#maxPayload : size < 2 || size > this.#maxPayload + 2) {
      st.malformed++;
      return;
    }
    let g = this.#groups.get(id);
    if (g === undefined) {
      if (this.#forgotten.has(id)) {
        st.stale++;
        return;
      }
      g = this.#open(id, now, k, m, !isData, size);
    } else if (!this.#consistent(g, isData, index, k, m, size)) {
      st.malformed++;
      return;
    }
    if (g.have[index]) {
      st.duplicates++;
      return;
    }
    g.have[index] = 1;
    if (isData) {
      st.dataReceived++;
      g.dataCount++;
      if (index > g.maxData) g.maxData = index;
      if (g.m > 0 && !g.done) {
        const b = this.#take();
        b[0] = size >>> 8;
        b[1] = size & 0xff;
        b.set(wire.subarray(FEC_HEADER_LENGTH), 2);
        g.bufs[index] = b;
        g.lengths[index] = size + 2;
      }
      this.#onData(wire.subarray(FEC_HEADER_LENGTH));
    } else {
      st.parityReceived++;
      g.parityCount++;
      if (!g.done) {
        const b = this.#take();
        b.set(wire.subarray(FEC_HEADER_LENGTH));
        g.bufs[index] = b;
      }
    }
    if (g.done) return;
    if (g.dataCount === g.k) {
      g.done = true;
      this.#release(g);
    } else if (g.final && g.dataCount + g.parityCount >= g.k) {
      this.#recover(g);
    }
  }

  /** Forgets the groups older than `windowMs` at `now` (push does this too). */
  expire(now: number): void {
    const order = this.#order;
    while (order.length > 0 && now - order[0].created >= this.#windowMs) this.#evict();
  }

  #open(id: number, now: number, k: number, m: number, final: boolean, size: number): Group {
    if (this.#order.length >= this.#maxGroups) this.#evict();
    const g = this.#groupPool.pop() ?? new Group();
    g.id = id;
    g.created = now;
    g.k = k;
    g.m = m;
    g.final = final;
    g.length = final ? size : -1;
    g.dataCount = 0;
    g.parityCount = 0;
    g.maxData = -1;
    g.done = false;
    g.have.fill(0);
    this.#groups.set(id, g);
    this.#order.push(g);
    return g;
  }

  /** Whether a datagram agrees with what its group already says; adopts a parity's k:m. */
  #consistent(g: Group, isData: boolean, index: number, k: number, m: number, size: number) {
    if (isData) {
      if (!g.final) return k === g.k && m === g.m;
      return index < g.k && size + 2 <= g.length;
    }
    if (g.final) return k === g.k && m === g.m && size === g.length;
    // First parity of a group opened by data: k may be cut short, never grown.
    if (k > g.k || g.maxData >= k || m === 0 || (g.m === 0 && g.dataCount > 0)) return false;
    for (let i = 0; i <= g.maxData; i++) {
      if (g.have[i] && g.lengths[i] > size) return false;
    }
    g.k = k;
    g.m = m;
    g.final = true;
    g.length = size;
    return true;
  }

  /** Rebuilds the missing data shards of `g` and delivers them. */
  #recover(g: Group): void {
    const k = g.k;
    const length = g.length;
    const shards = this.#shards;
    const present = this.#present;
    for (let i = 0; i < k; i++) {
      let b = g.bufs[i];
      if (g.have[i] && b !== null) {
        b.fill(0, g.lengths[i], length);
        present[i] = 1;
      } else {
        b = this.#take();
        g.bufs[i] = b;
        present[i] = 0;
      }
      shards[i] = b;
    }
    for (let i = k; i < k + g.m; i++) {
      const b = g.bufs[i];
      if (g.have[i] && b !== null) {
        shards[i] = b;
        present[i] = 1;
      } else {
        shards[i] = this.#dummy;
        present[i] = 0;
      }
    }
    g.done = true;
    if (this.#codes.get(k, g.m).reconstructInto(shards, present, length, true)) {
      for (let i = 0; i < k; i++) {
        if (present[i]) continue;
        const b = shards[i];
        const len = (b[0] << 8) | b[1];
        g.have[i] = 1;
        if (len + 2 > length) {
          this.stats.malformed++; // a forged or corrupted shard went into the sum
          continue;
        }
        this.stats.recovered++;
        this.#onData(b.subarray(2, 2 + len));
      }
    }
    this.#release(g);
  }

  /** Forgets the oldest group, counting it if data is known to be missing. */
  #evict(): void {
    const g = this.#order.shift()!;
    if (g.m > 0 && !g.done) {
      const known = g.final ? g.k : g.maxData + 1;
      if (g.dataCount < known) this.stats.unrecoverableGroups++;
    }
    this.#release(g);
    this.#groups.delete(g.id);
    this.#remember(g.id);
    this.#groupPool.push(g);
  }

  /** Adds `id` to the forgotten groups, dropping the oldest beyond the ring's size. */
  #remember(id: number): void {
    const ring = this.#forgottenRing;
    const set = this.#forgotten;
    if (set.size >= ring.length) {
      set.delete(ring[this.#ringStart]);
      ring[this.#ringStart] = id;
      this.#ringStart = (this.#ringStart + 1) % ring.length;
    } else {
      ring[(this.#ringStart + set.size) % ring.length] = id;
    }
    set.add(id);
  }

  /** Returns the shard buffers of `g` to the pool. */
  #release(g: Group): void {
    const bufs = g.bufs;
    const pool = this.#bufPool;
    for (let i = 0; i < 255; i++) {
      const b = bufs[i];
      if (b !== null) {
        if (pool.length < 4096) pool.push(b);
        bufs[i] = null;
      }
    }
  }

  #take(): Uint8Array {
    return this.#bufPool.pop() ?? new Uint8Array(this.#maxPayload + 2);
  }
}

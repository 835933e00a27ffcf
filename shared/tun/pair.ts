/**
 * An in-memory, connected pair of {@link TunDevice}s: what one end writes the
 * other reads, in order, through a bounded queue of preallocated slots (a
 * full queue drops, as a NIC's ring would). For tests: two stacks joined
 * back to back, or a stack and a script playing the network
 * (wireguard-go's `tun/tuntest`, our `duplexPair()`).
 * @module
 */

import {
  checkWriteBatch,
  MAX_PACKET,
  NO_OFFLOAD,
  type PacketBatch,
  type TunDevice,
  TunError,
  type TunOffload,
} from "./device.ts";

/** Options for {@link tunPair}. */
export interface TunPairOptions {
  /** MTU of both ends (default 1500; 68‥65535). */
  mtu?: number;
  /**
   * Reject packets longer than `mtu` on write, as every real device does
   * (default true). False lets anything up to {@link MAX_PACKET} through, for
   * tests that want to see what a stack would do with it.
   */
  enforceMtu?: boolean;
  /** Packets queued per direction before writes drop (default 1024; 64 without `enforceMtu`). */
  queue?: number;
  /** Names of the two ends (default "tun-a", "tun-b"). */
  names?: [string, string];
  /**
   * Both ends report TSO, USO and checksum offload, and carry each packet's
   * offload metadata (GSO kind and size, partial checksum) across unchanged,
   * without segmenting: two stacks joined back to back exchange
   * super-segments as they would through a vnet-hdr Linux TUN. Slots are
   * then {@link MAX_PACKET} bytes (default queue 64).
   */
  offload?: boolean;
}

/** Counters of one end of a {@link tunPair}. */
export interface TunPairStats {
  /** Packets this end wrote that the peer's queue took. */
  sent: number;
  /** Packets this end wrote that were dropped (peer queue full, or peer closed). */
  dropped: number;
  /** Packets this end read. */
  received: number;
}

/** One end of a {@link tunPair}, with counters. */
export interface TunPairEnd extends TunDevice {
  /** This end's counters. */
  readonly stats: TunPairStats;
}

/**
 * Two connected in-memory TUN devices. Closing one end ends its own reads
 * and writes; packets written towards a closed end are dropped (counted).
 */
export function tunPair(opts: TunPairOptions = {}): [TunPairEnd, TunPairEnd] {
  const mtu = opts.mtu ?? 1500;
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > MAX_PACKET) {
    throw new RangeError(`tunPair mtu must be an integer in 68..${MAX_PACKET}`);
  }
  const enforce = opts.enforceMtu ?? true;
  const offload = opts.offload ?? false;
  const queue = opts.queue ?? (enforce && !offload ? 1024 : 64);
  if (!Number.isInteger(queue) || queue < 1) throw new RangeError("tunPair queue must be ≥ 1");
  const [na, nb] = opts.names ?? ["tun-a", "tun-b"];
  const slot = enforce && !offload ? mtu : MAX_PACKET;
  const caps = offload ? ALL_OFFLOADS : NO_OFFLOAD;
  const a = new MemoryTun(na, mtu, enforce, queue, slot, caps);
  const b = new MemoryTun(nb, mtu, enforce, queue, slot, caps);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

/** Offload metadata of the packets in a receive ring, by slot. */
interface RingMeta {
  flags: Uint8Array;
  gsoKind: Uint8Array;
  gsoSize: Uint16Array;
  hdrLen: Uint16Array;
  csumStart: Uint16Array;
  csumOffset: Uint16Array;
}

const ALL_OFFLOADS: TunOffload = Object.freeze({ tso: true, uso: true, checksum: true });

class MemoryTun implements TunPairEnd {
  peer!: MemoryTun;
  readonly stats: TunPairStats = { sent: 0, dropped: 0, received: 0 };
  #closed = false;
  // The receive ring: packets the peer wrote, waiting for this end's reads.
  readonly #ring: Uint8Array;
  readonly #lens: Uint32Array;
  // Offload metadata per ring slot (only with offloads on).
  readonly #meta: RingMeta | null;
  readonly #slot: number;
  readonly #cap: number;
  #head = 0;
  #size = 0;
  #waiter: ((n: number) => void) | null = null;
  #waitingInto: PacketBatch | null = null;

  constructor(
    readonly name: string,
    readonly mtu: number,
    private readonly enforce: boolean,
    cap: number,
    slot: number,
    readonly offload: TunOffload,
  ) {
    this.#cap = cap;
    this.#slot = slot;
    this.#ring = new Uint8Array(cap * slot);
    this.#lens = new Uint32Array(cap);
    this.#meta = offload === NO_OFFLOAD ? null : {
      flags: new Uint8Array(cap),
      gsoKind: new Uint8Array(cap),
      gsoSize: new Uint16Array(cap),
      hdrLen: new Uint16Array(cap),
      csumStart: new Uint16Array(cap),
      csumOffset: new Uint16Array(cap),
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  readBatch(into: PacketBatch): Promise<number> {
    if (this.#closed) return Promise.resolve(0);
    if (this.#waiter !== null) {
      return Promise.reject(new TunError("busy", `${this.name}: a read is already pending`));
    }
    if (into.slotSize < this.#slot) {
      return Promise.reject(
        new TunError("slot", `${this.name}: batch slots of ${into.slotSize} < ${this.#slot}`),
      );
    }
    if (this.#size > 0) return Promise.resolve(this.#drain(into));
    return new Promise<number>((resolve) => {
      this.#waiter = resolve;
      this.#waitingInto = into;
    });
  }

  #drain(into: PacketBatch): number {
    let n = 0;
    const cap = into.capacity;
    while (this.#size > 0 && n < cap) {
      const h = this.#head;
      const len = this.#lens[h];
      const off = h * this.#slot;
      into.slots[n].set(this.#ring.subarray(off, off + len));
      into.lengths[n] = len;
      const m = this.#meta;
      if (m === null) {
        into.flags[n] = 0;
        into.gsoKind[n] = 0;
        into.gsoSize[n] = 0;
        into.hdrLen[n] = 0;
        into.csumStart[n] = 0;
        into.csumOffset[n] = 0;
      } else {
        into.flags[n] = m.flags[h];
        into.gsoKind[n] = m.gsoKind[h];
        into.gsoSize[n] = m.gsoSize[h];
        into.hdrLen[n] = m.hdrLen[h];
        into.csumStart[n] = m.csumStart[h];
        into.csumOffset[n] = m.csumOffset[h];
      }
      n++;
      this.#head = h + 1 === this.#cap ? 0 : h + 1;
      this.#size--;
    }
    into.count = n;
    this.stats.received += n;
    return n;
  }

  /** Takes packet `i` of `from`; false if the queue is full or this end is closed. */
  deliver(from: PacketBatch, i: number): boolean {
    if (this.#closed || this.#size === this.#cap) return false;
    let t = this.#head + this.#size;
    if (t >= this.#cap) t -= this.#cap;
    const len = from.lengths[i];
    const src = from.slots[i];
    this.#ring.set(len === src.length ? src : src.subarray(0, len), t * this.#slot);
    this.#lens[t] = len;
    const m = this.#meta;
    if (m !== null) {
      m.flags[t] = from.flags[i];
      m.gsoKind[t] = from.gsoKind[i];
      m.gsoSize[t] = from.gsoSize[i];
      m.hdrLen[t] = from.hdrLen[i];
      m.csumStart[t] = from.csumStart[i];
      m.csumOffset[t] = from.csumOffset[i];
    }
    this.#size++;
    return true;
  }

  /** Wakes a pending read after a batch was delivered. */
  wake(): void {
    const w = this.#waiter;
    if (w === null || this.#size === 0) return;
    const into = this.#waitingInto!;
    this.#waiter = null;
    this.#waitingInto = null;
    w(this.#drain(into));
  }

  writeBatch(from: PacketBatch, start = 0, end: number = from.count): number {
    if (this.#closed) throw new TunError("closed", `${this.name}: device closed`);
    checkWriteBatch(from, start, end, this.enforce ? this.mtu : MAX_PACKET, this.offload);
    const peer = this.peer;
    let ok = 0;
    for (let i = start; i < end; i++) {
      if (peer.deliver(from, i)) ok++;
    }
    this.stats.sent += ok;
    this.stats.dropped += end - start - ok;
    if (ok > 0) peer.wake();
    return ok;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#size = 0;
    const w = this.#waiter;
    this.#waiter = null;
    this.#waitingInto = null;
    w?.(0);
  }
}

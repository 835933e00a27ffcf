/**
 * The project's link emulator (test infrastructure): this machine's kernel has
 * no `tc netem`, so a userspace forwarder between two TUN devices imposes, per
 * direction, a one-way delay with jitter, random loss, reordering, duplication,
 * a rate cap and a queue limit — seeded, so runs repeat.
 *
 * `ImpairedLink` is the sans-I/O model (packets in with a time, packets out
 * with a release time); `linkemu_main.ts` runs two of them between TUNs.
 * @module
 */

import { prng } from "./simnet.ts";

/** Impairments of one direction. Zero means "off". */
export interface Impairment {
  /** One-way delay, ms. */
  delayMs: number;
  /** Uniform extra delay 0..jitterMs, ms (may reorder). */
  jitterMs: number;
  /** Drop probability, 0..1. */
  loss: number;
  /** Probability a packet is held back `reorderMs` extra (overtaken by later ones). */
  reorder: number;
  /** Extra hold for reordered packets, ms. */
  reorderMs: number;
  /** Probability a packet is delivered twice. */
  duplicate: number;
  /** Rate cap, Mbit/s (0 = unlimited). */
  rateMbps: number;
  /** Packets queued behind the rate cap before tail drop. */
  queuePackets: number;
}

/** No impairment. */
export const CLEAN: Impairment = {
  delayMs: 0,
  jitterMs: 0,
  loss: 0,
  reorder: 0,
  reorderMs: 0,
  duplicate: 0,
  rateMbps: 0,
  queuePackets: 1000,
};

/** Counters of one direction. */
export interface LinkCounters {
  in: number;
  out: number;
  lost: number;
  queueDrops: number;
  duplicated: number;
  reordered: number;
}

interface Pending {
  at: number;
  seq: number;
  pkt: Uint8Array;
}

/** One direction of the emulated link, in virtual or real time. */
export class ImpairedLink {
  /** Counters. */
  readonly counters: LinkCounters = {
    in: 0,
    out: 0,
    lost: 0,
    queueDrops: 0,
    duplicated: 0,
    reordered: 0,
  };
  private readonly rand: () => number;
  private heap: Pending[] = [];
  private seq = 0;
  private busyUntil = 0;
  private departures: number[] = [];
  private depHead = 0;

  constructor(readonly imp: Impairment, seed: number) {
    this.rand = prng(seed);
  }

  /** True when packets pass straight through (no timers needed). */
  get passthrough(): boolean {
    const i = this.imp;
    return i.delayMs === 0 && i.jitterMs === 0 && i.reorder === 0 && i.rateMbps === 0 &&
      i.duplicate === 0;
  }

  /** Counts a packet on a pass-through link; true if random loss drops it. */
  loseNow(): boolean {
    this.counters.in++;
    if (this.imp.loss > 0 && this.rand() < this.imp.loss) {
      this.counters.lost++;
      return true;
    }
    this.counters.out++;
    return false;
  }

  /** Offers a packet at time `now` (ms); returns false if it was dropped. */
  push(pkt: Uint8Array, now: number): boolean {
    const i = this.imp;
    this.counters.in++;
    if (i.loss > 0 && this.rand() < i.loss) {
      this.counters.lost++;
      return false;
    }
    let depart = now;
    if (i.rateMbps > 0) {
      while (this.depHead < this.departures.length && this.departures[this.depHead] <= now) {
        this.depHead++;
      }
      if (this.depHead > 4096) {
        this.departures = this.departures.slice(this.depHead);
        this.depHead = 0;
      }
      if (this.departures.length - this.depHead >= i.queuePackets) {
        this.counters.queueDrops++;
        return false;
      }
      depart = Math.max(now, this.busyUntil) + (pkt.length * 8) / (i.rateMbps * 1000);
      this.busyUntil = depart;
      this.departures.push(depart);
    }
    let at = depart + i.delayMs + (i.jitterMs > 0 ? this.rand() * i.jitterMs : 0);
    if (i.reorder > 0 && this.rand() < i.reorder) {
      at += i.reorderMs;
      this.counters.reordered++;
    }
    this.insert(at, pkt);
    if (i.duplicate > 0 && this.rand() < i.duplicate) {
      this.counters.duplicated++;
      this.insert(at + 0.01, pkt);
    }
    return true;
  }

  /** Earliest release time, or Infinity. */
  get nextAt(): number {
    return this.heap.length > 0 ? this.heap[0].at : Infinity;
  }

  /** Removes and returns every packet due at `now`, in release order. */
  due(now: number, out: Uint8Array[]): void {
    const h = this.heap;
    while (h.length > 0 && h[0].at <= now) {
      out.push(h[0].pkt);
      this.counters.out++;
      const last = h.pop()!;
      if (h.length > 0) {
        h[0] = last;
        this.siftDown(0);
      }
    }
  }

  private insert(at: number, pkt: Uint8Array): void {
    const h = this.heap;
    h.push({ at, seq: this.seq++, pkt });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p], h[i])) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }

  private siftDown(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && less(h[l], h[m])) m = l;
      if (r < h.length && less(h[r], h[m])) m = r;
      if (m === i) return;
      [h[m], h[i]] = [h[i], h[m]];
      i = m;
    }
  }
}

function less(a: Pending, b: Pending): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/**
 * A deterministic simulated network for driving two sans-I/O sessions in
 * virtual time: per-direction delay, jitter (reordering), loss, duplication.
 * @module
 */

import type { PacketProtector, Session } from "../../shared/session/session.ts";

/** Seeded PRNG (mulberry32) so runs repeat. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Impairments of one direction. */
export interface LinkProfile {
  delayMs: number;
  jitterMs: number;
  loss: number;
  duplicate: number;
  /** Bottleneck rate in bytes per ms (absent: infinitely fast). */
  rate?: number;
  /** Bytes the bottleneck queue holds before it drops at the tail (absent: unbounded). */
  queueBytes?: number;
}

/** Plain-text protector for simulation: 8-byte packet number then the plaintext. */
export class ClearProtector implements PacketProtector {
  lastPn = -1;
  seal(pn: number, plaintext: Uint8Array, out: Uint8Array): number {
    new DataView(out.buffer, out.byteOffset).setFloat64(0, pn);
    out.set(plaintext, 8);
    for (let i = 8 + plaintext.length; i < 28 + plaintext.length; i++) out[i] = 0;
    return 28 + plaintext.length;
  }
  open(wire: Uint8Array, out: Uint8Array): number {
    if (wire.length < 28) return -1;
    this.lastPn = new DataView(wire.buffer, wire.byteOffset).getFloat64(0);
    out.set(wire.subarray(8, wire.length - 20));
    return wire.length - 28;
  }
}

interface InFlight {
  at: number;
  to: 0 | 1;
  data: Uint8Array;
}

/** Two sessions joined by an impaired link; `step` advances virtual time. */
export class SimNet {
  now = 0;
  readonly sessions: [Session, Session];
  private queue: InFlight[] = [];
  private readonly rand: () => number;
  private readonly out = new Uint8Array(2048);
  /** Datagrams put on the link, per direction. */
  readonly sent = [0, 0];
  /** Datagrams the bottleneck queue dropped, per direction. */
  readonly tailDrops = [0, 0];
  /** Time each datagram waited in the bottleneck queue, ms, per direction: `[sentAt, wait]`. */
  readonly queueWaits: [number, number][][] = [[], []];
  /** When each direction's bottleneck is free again (virtual ms). */
  private readonly linkFree = [0, 0];
  /** Longest jump of virtual time per {@link step}, ms (Infinity: straight to the next event). */
  maxStep = Infinity;

  constructor(
    a: Session,
    b: Session,
    readonly profiles: [LinkProfile, LinkProfile],
    seed = 1,
  ) {
    this.sessions = [a, b];
    this.rand = prng(seed);
  }

  private transmit(from: 0 | 1): void {
    const s = this.sessions[from];
    const p = this.profiles[from];
    for (;;) {
      const n = s.pollTransmit(this.now, this.out);
      if (n === 0) break;
      this.sent[from]++;
      if (this.rand() < p.loss) continue;
      let departs = this.now;
      if (p.rate !== undefined) {
        const start = Math.max(this.now, this.linkFree[from]);
        const backlog = (start - this.now) * p.rate;
        if (p.queueBytes !== undefined && backlog + n > p.queueBytes) {
          this.tailDrops[from]++;
          continue;
        }
        this.linkFree[from] = start + n / p.rate;
        departs = this.linkFree[from];
        this.queueWaits[from].push([this.now, start - this.now]);
      }
      const copies = this.rand() < p.duplicate ? 2 : 1;
      for (let c = 0; c < copies; c++) {
        const at = departs + p.delayMs + this.rand() * p.jitterMs;
        this.queue.push({ at, to: from === 0 ? 1 : 0, data: this.out.slice(0, n) });
      }
    }
  }

  /** Runs timers, sends, delivers; then advances time to the next event. */
  step(): void {
    for (const i of [0, 1] as const) {
      const s = this.sessions[i];
      if (s.nextTimeout() <= this.now) s.handleTimeout(this.now);
      this.transmit(i);
    }
    let next = Infinity;
    for (const q of this.queue) if (q.at < next) next = q.at;
    for (const s of this.sessions) next = Math.min(next, s.nextTimeout());
    if (next <= this.now) next = this.now + 0.05;
    if (next === Infinity) next = this.now + 1;
    if (next > this.now + this.maxStep) next = this.now + this.maxStep;
    this.now = next;
    const due = this.queue.filter((q) => q.at <= this.now);
    this.queue = this.queue.filter((q) => q.at > this.now);
    due.sort((x, y) => x.at - y.at);
    for (const d of due) this.sessions[d.to].receive(d.data, this.now);
  }
}

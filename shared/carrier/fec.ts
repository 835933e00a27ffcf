/**
 * Forward error correction as a wrapper around any carrier: each session
 * datagram gets the 5-byte group header of `shared/fec/fec_codec.ts`, and
 * after each group of `k` come `m` Reed-Solomon parity datagrams, so a lost
 * datagram is rebuilt without waiting a round trip.
 *
 * - **Masked header.** The header is XORed with the datagram's own last 5
 *   bytes (a session packet ends in its AEAD tag; parity looks random), so
 *   no plain group counter shows on the wire. It is no secret — an observer
 *   who knows the scheme can undo it — only no fixed pattern for a naive
 *   filter. A payload under 5 bytes masks with its bytes repeated.
 * - **Both directions set apart.** Each side's encoder has its own mode:
 *   `off` (header only, m = 0), `fixed` k:m, or `auto`, where m follows the
 *   loss the *peer* measures on what it receives and reports in-band.
 * - **Reports.** About every 500 ms while datagrams arrive, each side sends
 *   a control datagram: header with k = 0 (which the codec never emits), then
 *   `version u8 = 1 | loss u16 (per 10,000) | asked mode u8 (0 none, 1 off,
 *   2 auto, 3 fixed) | k u8 | m u8`, then 8 random bytes (so the mask has a
 *   random tail). A client's fixed or off mode is asked of the server too
 *   (`--fec 10:3` gives 10:3 both ways); `auto` leaves the server's own.
 * - **Loss measured.** Per group, shards seen against shards sent (k + m from
 *   a parity header, else the highest data index seen + 1), over the last 32
 *   groups once they are closed.
 * @module
 */

import type {
  CarrierDialer,
  CarrierLink,
  CarrierListener,
  Endpoint,
  OnEndpointDatagram,
} from "./carrier.ts";
import {
  FEC_HEADER_LENGTH,
  FEC_PARITY_OVERHEAD,
  FecDecoder,
  FecEncoder,
} from "../fec/fec_codec.ts";
import { AdaptiveParity } from "../fec/adaptive.ts";

/** How the sending side of a path codes: none, a fixed ratio, or following the loss. */
export type FecMode =
  | { kind: "off" }
  | { kind: "fixed"; k: number; m: number }
  | { kind: "auto"; k?: number; maxParity?: number };

/** Options of the FEC wrappers. */
export interface FecOptions {
  /** This side's mode (the server's default; a client's request overrides it per client). */
  mode: FecMode;
  /** Age at which a half-full group is closed, ms (default 5). */
  timeoutMs?: number;
  /** Clock, ms (default `performance.now`). */
  now?: () => number;
}

/** Counters of one direction pair (a link, or one endpoint of a listener, or their sum). */
export interface FecStats {
  dataSent: number;
  paritySent: number;
  received: number;
  recovered: number;
  unrecoverableGroups: number;
  malformed: number;
  /** The parity per group this side sends now (k:m). */
  ratio: string;
  /** The loss the peer last reported (what this side's `auto` follows). */
  peerLoss: number;
  /** The loss measured here, on what the peer sends. */
  localLoss: number;
}

/** Bytes FEC adds to a session datagram at most (parity: header + coded length). */
export const FEC_OVERHEAD = FEC_PARITY_OVERHEAD;
const REPORT_MS = 500;
const REPORT_BODY = 6;
const REPORT_PAD = 8;
const IDLE_ENDPOINT_MS = 120_000;
const LOSS_GROUPS = 32;
const DEFAULT_AUTO_K = 10;

/**
 * XORs the 5 header bytes of `b` with its payload's last 5 bytes, or, for a
 * payload shorter than that, with its bytes repeated; its own inverse (the
 * payload is untouched, and its length is the datagram's minus 5).
 */
function mask(b: Uint8Array): void {
  const len = b.length - FEC_HEADER_LENGTH;
  if (len <= 0) return;
  if (len >= FEC_HEADER_LENGTH) {
    const t = b.length - FEC_HEADER_LENGTH;
    for (let i = 0; i < FEC_HEADER_LENGTH; i++) b[i] ^= b[t + i];
  } else {
    for (let i = 0; i < FEC_HEADER_LENGTH; i++) b[i] ^= b[FEC_HEADER_LENGTH + (i % len)];
  }
}

/** Loss on received groups: shards seen against shards sent, over recent closed groups. */
class LossMeter {
  private readonly seen = new Map<number, { got: number; maxData: number; total: number }>();
  private readonly closed: [number, number][] = [];
  private highest = -1;

  add(group: number, index: number, k: number, m: number): void {
    let g = this.seen.get(group);
    if (!g) {
      g = { got: 0, maxData: -1, total: 0 };
      this.seen.set(group, g);
      if (this.highest < 0 || ((group - this.highest) & 0xffff) < 0x8000) this.highest = group;
      this.closeOld();
    }
    g.got++;
    if (index < k) g.maxData = Math.max(g.maxData, index);
    else g.total = k + m;
  }

  private closeOld(): void {
    for (const [id, g] of this.seen) {
      if (((this.highest - id) & 0xffff) < 3) continue;
      const expected = Math.max(g.total || g.maxData + 1, g.got);
      this.closed.push([g.got, expected]);
      if (this.closed.length > LOSS_GROUPS) this.closed.shift();
      this.seen.delete(id);
    }
  }

  /** Fraction of shards lost over the recent closed groups (0 when none). */
  get loss(): number {
    let got = 0;
    let exp = 0;
    for (const [g, e] of this.closed) {
      got += g;
      exp += e;
    }
    return exp > 0 ? Math.max(0, 1 - got / exp) : 0;
  }
}

/** One direction pair's coding state: the encoder, the decoder, the adaptive ratio. */
class FecPath {
  readonly encoder: FecEncoder;
  readonly decoder: FecDecoder;
  readonly meter = new LossMeter();
  adaptive: AdaptiveParity | null = null;
  /** The mode this side sends with (its own, or what the peer asked). */
  mode: FecMode;
  peerLoss = 0;
  lastReport = 0;
  lastSeen = 0;
  malformed = 0;
  private readonly out: Uint8Array;

  constructor(
    mode: FecMode,
    private readonly own: FecMode,
    private readonly asks: FecMode | null,
    maxPayload: number,
    timeoutMs: number,
    private readonly transmit: (wire: Uint8Array) => void,
    deliver: (payload: Uint8Array) => void,
  ) {
    this.mode = mode;
    this.out = new Uint8Array(maxPayload + FEC_PARITY_OVERHEAD + REPORT_PAD);
    const { k, m } = ratioOf(mode, 0);
    this.encoder = new FecEncoder({
      onDatagram: (wire) => this.emit(wire),
      dataShards: k,
      parityShards: m,
      maxPayload,
      timeoutMs,
      firstGroup: crypto.getRandomValues(new Uint16Array(1))[0],
    });
    this.decoder = new FecDecoder({ onData: deliver, maxPayload });
    if (mode.kind === "auto") this.adaptive = new AdaptiveParity({ maxParity: mode.maxParity });
  }

  private emit(wire: Uint8Array): void {
    const b = this.out.subarray(0, wire.length);
    b.set(wire);
    mask(b);
    this.transmit(b);
  }

  /** A datagram from the peer (unmasked here, in place). */
  receive(data: Uint8Array, now: number): void {
    if (data.length <= FEC_HEADER_LENGTH) {
      this.malformed++;
      return;
    }
    this.lastSeen = now;
    mask(data);
    const group = (data[0] << 8) | data[1];
    const index = data[2];
    const k = data[3];
    const m = data[4];
    if (k === 0) {
      this.onReport(data.subarray(FEC_HEADER_LENGTH));
      return;
    }
    if (index < k + m) this.meter.add(group, index, k, m);
    this.decoder.push(data, now);
    if (now - this.lastReport >= REPORT_MS) this.report(now);
  }

  /** Sends this side's report (the loss it measures, the mode it asks for). */
  report(now: number): void {
    this.lastReport = now;
    const b = this.out.subarray(0, FEC_HEADER_LENGTH + REPORT_BODY + REPORT_PAD);
    crypto.getRandomValues(b);
    b[2] = 0;
    b[3] = 0;
    b[4] = 0;
    const loss = Math.round(this.meter.loss * 10000);
    const o = FEC_HEADER_LENGTH;
    b[o] = 1;
    b[o + 1] = loss >> 8;
    b[o + 2] = loss & 0xff;
    const ask = this.asks;
    b[o + 3] = !ask ? 0 : ask.kind === "off" ? 1 : ask.kind === "auto" ? 2 : 3;
    b[o + 4] = ask?.kind === "fixed" ? ask.k : 0;
    b[o + 5] = ask?.kind === "fixed" ? ask.m : 0;
    mask(b);
    this.transmit(b);
  }

  private onReport(body: Uint8Array): void {
    if (body.length < REPORT_BODY || body[0] !== 1) {
      this.malformed++;
      return;
    }
    const loss = ((body[1] << 8) | body[2]) / 10000;
    if (loss > 1) {
      this.malformed++;
      return;
    }
    this.peerLoss = loss;
    const asked = body[3];
    let mode = this.own;
    if (asked === 1) mode = { kind: "off" };
    else if (asked === 2) mode = this.own.kind === "auto" ? this.own : { kind: "auto" };
    else if (asked === 3) {
      const k = body[4];
      const m = body[5];
      if (k >= 1 && k <= 64 && m <= k) mode = { kind: "fixed", k, m };
    }
    if (mode.kind === "auto" && !this.adaptive) this.adaptive = new AdaptiveParity();
    if (mode.kind !== "auto") this.adaptive = null;
    this.mode = mode;
    this.adaptive?.update(loss);
    const { k, m } = ratioOf(mode, this.adaptive ? this.adaptive.parityFor(autoK(mode)) : 0);
    this.encoder.setRatio(k, m);
  }

  stats(): FecStats {
    const e = this.encoder.stats;
    const d = this.decoder.stats;
    const r = this.encoder.ratio;
    return {
      dataSent: e.dataSent,
      paritySent: e.paritySent,
      received: d.dataReceived + d.parityReceived,
      recovered: d.recovered,
      unrecoverableGroups: d.unrecoverableGroups,
      malformed: d.malformed + this.malformed,
      ratio: `${r.k}:${r.m}`,
      peerLoss: this.peerLoss,
      localLoss: this.meter.loss,
    };
  }
}

function autoK(mode: FecMode): number {
  return mode.kind === "auto" ? mode.k ?? DEFAULT_AUTO_K : DEFAULT_AUTO_K;
}

/** The k:m a mode sends with (`adaptiveM` for auto). */
function ratioOf(mode: FecMode, adaptiveM: number): { k: number; m: number } {
  if (mode.kind === "fixed") return { k: mode.k, m: mode.m };
  if (mode.kind === "off") return { k: DEFAULT_AUTO_K, m: 0 };
  return { k: autoK(mode), m: adaptiveM };
}

/** Sum of several paths' counters. */
function sumStats(all: FecStats[]): FecStats {
  const out: FecStats = {
    dataSent: 0,
    paritySent: 0,
    received: 0,
    recovered: 0,
    unrecoverableGroups: 0,
    malformed: 0,
    ratio: all.length === 1 ? all[0].ratio : "",
    peerLoss: 0,
    localLoss: 0,
  };
  for (const s of all) {
    out.dataSent += s.dataSent;
    out.paritySent += s.paritySent;
    out.received += s.received;
    out.recovered += s.recovered;
    out.unrecoverableGroups += s.unrecoverableGroups;
    out.malformed += s.malformed;
    out.peerLoss = Math.max(out.peerLoss, s.peerLoss);
    out.localLoss = Math.max(out.localLoss, s.localLoss);
  }
  return out;
}

/** Flushes half-full groups on one timer for many paths. */
class GroupTimer {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly open = new Set<FecPath>();
  constructor(private readonly now: () => number, private readonly ms: number) {}

  /** `p` has an open group: it is flushed once its time is up. */
  arm(p: FecPath): void {
    this.open.add(p);
    if (this.timer === undefined) {
      this.timer = setTimeout(this.tick, this.ms);
      Deno.unrefTimer(this.timer);
    }
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    const now = this.now();
    for (const p of this.open) {
      p.encoder.flush(now);
      if (p.encoder.deadline() === Infinity) this.open.delete(p);
    }
    if (this.open.size > 0) {
      this.timer = setTimeout(this.tick, this.ms);
      Deno.unrefTimer(this.timer);
    }
  };

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.open.clear();
  }
}

/** The server side: a listener whose clients code their datagrams (one path per endpoint). */
export class FecListener implements CarrierListener {
  readonly kind: string;
  readonly overhead: number;
  readonly reliable: boolean;
  readonly maxDatagram: number;
  private readonly paths = new Map<string, { path: FecPath; ep: Endpoint }>();
  private readonly now: () => number;
  private readonly timer: GroupTimer;
  private sweep: ReturnType<typeof setInterval> | undefined;
  private deliver: OnEndpointDatagram | null = null;

  constructor(private readonly inner: CarrierListener, private readonly opts: FecOptions) {
    this.kind = `${inner.kind}+fec`;
    this.overhead = inner.overhead + FEC_OVERHEAD;
    this.reliable = inner.reliable;
    this.maxDatagram = Math.min(inner.maxDatagram - FEC_OVERHEAD, 0xffff - FEC_OVERHEAD);
    this.now = opts.now ?? (() => performance.now());
    this.timer = new GroupTimer(this.now, opts.timeoutMs ?? 5);
  }

  get local(): Deno.NetAddr {
    return this.inner.local;
  }

  run(onDatagram: OnEndpointDatagram): Promise<void> {
    this.deliver = onDatagram;
    this.sweep = setInterval(() => this.expire(), 10_000);
    Deno.unrefTimer(this.sweep);
    return this.inner.run((data, from) => this.pathOf(from).receive(data, this.now()));
  }

  private pathOf(ep: Endpoint): FecPath {
    let e = this.paths.get(ep.key);
    if (!e) {
      if (this.paths.size >= 65536) this.expire(true);
      const path: FecPath = new FecPath(
        this.opts.mode,
        this.opts.mode,
        null,
        this.maxDatagram,
        this.opts.timeoutMs ?? 5,
        (wire) => this.inner.send(wire, ep),
        (payload) => this.deliver?.(payload, ep),
      );
      e = { path, ep };
      this.paths.set(ep.key, e);
    }
    return e.path;
  }

  private expire(force = false): void {
    const now = this.now();
    for (const [k, e] of this.paths) {
      if (force || now - e.path.lastSeen > IDLE_ENDPOINT_MS) this.paths.delete(k);
      if (force && this.paths.size < 60000) return;
    }
  }

  send(data: Uint8Array, to: Endpoint): void {
    if (data.length === 0 || data.length > this.maxDatagram) return;
    const p = this.pathOf(to);
    p.encoder.send(data, this.now());
    this.timer.arm(p);
  }

  flush(): void {
    this.inner.flush();
  }

  close(): void {
    clearInterval(this.sweep);
    this.timer.close();
    this.inner.close();
  }

  /** Counters summed over the endpoints (or of one). */
  stats(endpoint?: Endpoint): FecStats {
    if (endpoint) {
      const e = this.paths.get(endpoint.key);
      return sumStats(e ? [e.path.stats()] : []);
    }
    return sumStats([...this.paths.values()].map((e) => e.path.stats()));
  }
}

/** The client side: a link whose datagrams are coded. */
export class FecLink implements CarrierLink {
  readonly kind: string;
  readonly overhead: number;
  readonly reliable: boolean;
  readonly maxDatagram: number;
  private readonly path: FecPath;
  private readonly now: () => number;
  private readonly timer: GroupTimer;
  private deliver: ((d: Uint8Array) => void) | null = null;
  private reporter: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly inner: CarrierLink, opts: FecOptions) {
    this.kind = `${inner.kind}+fec`;
    this.overhead = inner.overhead + FEC_OVERHEAD;
    this.reliable = inner.reliable;
    this.maxDatagram = Math.min(inner.maxDatagram - FEC_OVERHEAD, 0xffff - FEC_OVERHEAD);
    this.now = opts.now ?? (() => performance.now());
    this.timer = new GroupTimer(this.now, opts.timeoutMs ?? 5);
    // The client asks the server for its own fixed or off mode; auto leaves the server's.
    const asks = opts.mode.kind === "auto" ? null : opts.mode;
    this.path = new FecPath(
      opts.mode,
      opts.mode,
      asks,
      this.maxDatagram,
      opts.timeoutMs ?? 5,
      (wire) => inner.send(wire),
      (payload) => this.deliver?.(payload),
    );
  }

  get local(): string {
    return `${this.inner.local} +fec`;
  }

  get localPort(): number {
    return this.inner.localPort;
  }

  run(onDatagram: (data: Uint8Array) => void): Promise<void> {
    this.deliver = onDatagram;
    // The request and the loss go out even before the server sends anything.
    this.path.report(this.now());
    this.reporter = setInterval(() => {
      if (this.now() - this.path.lastReport >= REPORT_MS) this.path.report(this.now());
    }, REPORT_MS * 2);
    Deno.unrefTimer(this.reporter);
    return this.inner.run((data) => this.path.receive(data, this.now())).finally(() => {
      clearInterval(this.reporter);
      this.timer.close();
    });
  }

  send(data: Uint8Array): void {
    if (data.length === 0 || data.length > this.maxDatagram) return;
    this.path.encoder.send(data, this.now());
    this.timer.arm(this.path);
  }

  flush(): void {
    this.inner.flush();
  }

  close(): void {
    clearInterval(this.reporter);
    this.timer.close();
    this.inner.close();
  }

  /** This link's counters. */
  stats(): FecStats {
    return this.path.stats();
  }
}

/** Wraps a dialer: every link it opens is coded. */
export class FecDialer implements CarrierDialer {
  readonly kind: string;
  openNow?: (server: Deno.NetAddr) => CarrierLink;

  constructor(private readonly inner: CarrierDialer, private readonly opts: FecOptions) {
    this.kind = `${inner.kind}+fec`;
    const open = inner.openNow;
    if (open) this.openNow = (server) => new FecLink(open.call(inner, server), this.opts);
  }

  async dial(server: Deno.NetAddr, signal?: AbortSignal): Promise<CarrierLink> {
    return new FecLink(await this.inner.dial(server, signal), this.opts);
  }
}

/** Parses "off", "auto" or "k:m" (k 1..64, m ≤ k); null otherwise. */
export function parseFecMode(s: string): FecMode | null {
  const v = s.trim().toLowerCase();
  if (v === "off") return { kind: "off" };
  if (v === "auto") return { kind: "auto" };
  const m = /^(\d{1,2}):(\d{1,2})$/.exec(v);
  if (!m) return null;
  const k = Number(m[1]);
  const p = Number(m[2]);
  return k >= 1 && k <= 64 && p <= k ? { kind: "fixed", k, m: p } : null;
}

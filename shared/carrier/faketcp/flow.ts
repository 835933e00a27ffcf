/**
 * The fake-TCP flow machine (sans-I/O): what makes one carrier path look
 * like a TCP connection to middleboxes — the three-way handshake, sequence
 * and acknowledgment numbers that advance as real TCP's do, timestamps, a
 * constant window, delayed ACKs, keepalive probes and dead-path detection —
 * and nothing of TCP's semantics: no retransmission of data, no ordering, no
 * congestion or flow control (the session above does all that).
 *
 * It owns no socket and no timer and never reads the clock: every call takes
 * `now` (milliseconds), {@link FakeTcpFlow.deadline} says when to call
 * {@link FakeTcpFlow.tick} next, and segments to send come out as a reused
 * {@link TcpRepr} the I/O layer emits (`segment.ts`). The hot path (one data
 * segment out, one in) allocates nothing.
 * @module
 */

import { TcpFlags, type TcpRepr } from "./segment.ts";
import type { TcpSegment } from "../../netstack/wire/tcp.ts";

/** Tunables of a flow; every field has a default ({@link DEFAULT_FLOW_CONFIG}). */
export interface FlowConfig {
  /** MSS announced on the SYN / SYN-ACK (1460: Ethernet). */
  mss: number;
  /**
   * Window scale shift announced (9: a Linux host whose tcp_rmem allows
   * 32 MiB). Large on purpose: a stateful middlebox (conntrack) marks
   * segments beyond the peer's last ACK + window INVALID, and nothing here
   * holds data back for a window.
   */
  windowScale: number;
  /** Window field on every non-SYN segment (constant; scaled: 64240 << 9 ≈ 31 MiB). */
  window: number;
  /** Window field of the client's SYN (Linux: 64240). */
  synWindow: number;
  /** Window field of the server's SYN-ACK (Linux: 65160). */
  synAckWindow: number;
  /** A received segment is acknowledged within this long if no data segment carries the ACK. */
  ackDelayMs: number;
  /** …or at once when this many received bytes are unacknowledged (keeps conntrack's window). */
  ackBytes: number;
  /** First SYN / SYN-ACK retransmission after this long; doubles each time (handshake only). */
  synRetryMs: number;
  /** Handshake retransmissions (SYN or SYN-ACK) before the flow gives up (state "dead"). */
  synRetries: number;
  /** Keepalive: silence this long before the first probe (0: no keepalive). */
  idleMs: number;
  /** Keepalive: between unanswered probes. */
  probeMs: number;
  /** Keepalive: unanswered probes after which the path is dead. */
  probes: number;
  /** A flow that heard nothing this long is forgotten (the server's flows; 0: never). */
  expireMs: number;
}

/** Defaults: Linux-like values, keepalive after 10 s of silence, dead 9 s later. */
export const DEFAULT_FLOW_CONFIG: Readonly<FlowConfig> = {
  mss: 1460,
  windowScale: 9,
  window: 64240,
  synWindow: 64240,
  synAckWindow: 65160,
  ackDelayMs: 40,
  ackBytes: 64 * 1024,
  synRetryMs: 1000,
  synRetries: 5,
  idleMs: 10_000,
  probeMs: 3000,
  probes: 3,
  expireMs: 0,
};

/** A flow's state. */
export type FlowState = "syn-sent" | "syn-received" | "established" | "dead";

/** What {@link FakeTcpFlow.receive} made of a segment. */
export const Rx = {
  /** Not for this flow, implausible, or nothing to do: dropped. */
  Ignored: 0,
  /** Carries a datagram (`seg.payload`). */
  Data: 1,
  /** Control only (handshake, ACK, keepalive): nothing to deliver. */
  Control: 2,
  /** A new SYN on this 4-tuple (the peer started over): the caller replaces the flow. */
  Restart: 3,
} as const;

/** One of {@link Rx}. */
export type RxResult = typeof Rx[keyof typeof Rx];

/** A 32-bit random number source (tests pass a seeded one). */
export type Rand32 = () => number;

/** Random 32-bit numbers from WebCrypto, drawn 64 at a time. */
export function cryptoRand32(): Rand32 {
  const pool = new Uint32Array(64);
  let i = pool.length;
  return () => {
    if (i === pool.length) {
      crypto.getRandomValues(pool);
      i = 0;
    }
    return pool[i++];
  };
}

/** `a − b` in sequence space (RFC 9293 serial arithmetic): negative when a is before b. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

const HALF = 1 << 30;
/** Internal marker of a pending keepalive probe (not a TCP flag). */
const PROBE = 0x1000; // what a plausible seq/ack may be away from ours

/** One fake-TCP connection's TCP-looking state. */
export class FakeTcpFlow {
  state: FlowState;
  /** Initial send sequence number (random). */
  readonly iss: number;
  /** The peer's initial sequence number (once known). */
  irs = 0;
  /** Next sequence number we send. */
  sndNxt: number;
  /** Next sequence number we expect (the ACK field we send). */
  rcvNxt = 0;
  /** Timestamps option in use (the client always; the server when the SYN had it). */
  timestamps = true;
  /** IPv4 identification of the next packet (a per-flow counter, as Linux). */
  ipId: number;
  /** When we last heard a plausible segment from the peer. */
  lastRx: number;
  /** Counters. */
  segmentsIn = 0;
  segmentsOut = 0;
  dropped = 0;

  /** The segment to send, filled by {@link data} and {@link control}; valid until the next call. */
  readonly out: TcpRepr & { seq: number; ack: number; flags: number; window: number } = {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    mss: -1,
    windowScale: -1,
    sackPermitted: false,
    hasTimestamps: false,
    tsVal: 0,
    tsEcr: 0,
  };

  private readonly tsOffset: number;
  private tsRecent = 0;
  private peerWindowScale = -1;
  /** The ACK field of the last segment we sent. */
  private lastAckSent = 0;
  private unacked = 0;
  private ackDue = Infinity;
  /** A control segment to send: SYN, SYN-ACK, ACK. */
  private pending = 0;
  private synAt = Infinity;
  private synInterval: number;
  private synTries = 0;
  private windowOpen = false;
  private synWindow = 65535;
  private firstFlight = 0;
  private probesSent = 0;
  private nextProbe = Infinity;
  private keepalive: boolean;

  private constructor(
    readonly role: "client" | "server",
    readonly localPort: number,
    readonly remotePort: number,
    now: number,
    rand: Rand32,
    readonly config: Readonly<FlowConfig>,
  ) {
    this.iss = rand() >>> 0;
    this.sndNxt = (this.iss + 1) >>> 0; // the SYN takes one sequence number
    this.tsOffset = rand() >>> 0;
    this.ipId = rand() & 0xffff;
    this.lastRx = now;
    this.synInterval = config.synRetryMs;
    this.keepalive = config.idleMs > 0;
    this.state = role === "client" ? "syn-sent" : "syn-received";
    this.out.srcPort = localPort;
    this.out.dstPort = remotePort;
  }

  /** A client flow: its SYN is due at once ({@link control}). */
  static client(
    localPort: number,
    remotePort: number,
    now: number,
    rand: Rand32 = cryptoRand32(),
    config: Partial<FlowConfig> = {},
  ): FakeTcpFlow {
    const f = new FakeTcpFlow("client", localPort, remotePort, now, rand, {
      ...DEFAULT_FLOW_CONFIG,
      ...config,
    });
    f.pending = TcpFlags.SYN;
    f.synAt = now + f.synInterval;
    return f;
  }

  /**
   * A server flow for the SYN `syn` (a checksum-valid segment with SYN set
   * and ACK clear, to our `localPort`): its SYN-ACK is due at once. Options
   * mirror the SYN's, as a Linux server's do.
   */
  static server(
    syn: TcpSegment,
    localPort: number,
    now: number,
    rand: Rand32 = cryptoRand32(),
    config: Partial<FlowConfig> = {},
  ): FakeTcpFlow {
    const f = new FakeTcpFlow("server", localPort, syn.srcPort, now, rand, {
      ...DEFAULT_FLOW_CONFIG,
      idleMs: 0,
      ...config,
    });
    f.acceptSyn(syn);
    f.synAt = now + f.synInterval;
    return f;
  }

  /** True when a SYN segment opens a connection: SYN without ACK, RST, FIN, nor data. */
  static isOpeningSyn(seg: TcpSegment): boolean {
    return (seg.flags & (TcpFlags.SYN | TcpFlags.ACK | TcpFlags.RST | TcpFlags.FIN)) ===
        TcpFlags.SYN && seg.payload.length === 0;
  }

  private acceptSyn(syn: TcpSegment): void {
    this.irs = syn.seq;
    this.rcvNxt = (syn.seq + 1) >>> 0;
    this.timestamps = syn.hasTimestamps;
    this.tsRecent = syn.tsVal;
    this.peerWindowScale = syn.windowScale;
    this.sackPeer = syn.sackPermitted;
    this.pending = TcpFlags.SYN | TcpFlags.ACK;
  }
  private sackPeer = true;

  /**
   * Takes a checksum-valid segment of this flow's 4-tuple. Implausible ones
   * (an ACK of data never sent, a sequence number far from the window) are
   * ignored and do not count as signs of life.
   */
  receive(seg: TcpSegment, now: number): RxResult {
    if (this.state === "dead") return Rx.Ignored;
    const f = seg.flags;
    if (f & TcpFlags.RST) {
      // No RST ends a flow: an injected one would otherwise cut the path
      // (the keepalive finds a truly dead one).
      this.dropped++;
      return Rx.Ignored;
    }
    if (this.state === "syn-sent") {
      if ((f & (TcpFlags.SYN | TcpFlags.ACK)) !== (TcpFlags.SYN | TcpFlags.ACK)) {
        this.dropped++;
        return Rx.Ignored;
      }
      if (seg.ack !== ((this.iss + 1) >>> 0)) {
        this.dropped++;
        return Rx.Ignored;
      }
      this.irs = seg.seq;
      this.rcvNxt = (seg.seq + 1) >>> 0;
      this.synWindow = seg.window;
      this.timestamps = seg.hasTimestamps;
      this.peerWindowScale = seg.windowScale;
      if (seg.hasTimestamps) this.tsRecent = seg.tsVal;
      this.state = "established";
      this.synAt = Infinity;
      this.pending = TcpFlags.ACK;
      this.alive(now);
      return Rx.Control;
    }
    if (f & TcpFlags.SYN) {
      if (f & TcpFlags.ACK) {
        // A retransmitted SYN-ACK: our handshake ACK was lost; answer it again.
        if (this.role === "client" && seg.seq === this.irs) {
          this.pending = TcpFlags.ACK;
          this.alive(now);
          return Rx.Control;
        }
        this.dropped++;
        return Rx.Ignored;
      }
      if (this.role === "server" && seg.seq === this.irs) {
        // A retransmitted SYN: our SYN-ACK was lost (or the ACK): send it again.
        if (this.state === "syn-received") this.pending = TcpFlags.SYN | TcpFlags.ACK;
        else this.pending = TcpFlags.ACK;
        return Rx.Control;
      }
      return this.role === "server" ? Rx.Restart : Rx.Ignored;
    }
    if (!(f & TcpFlags.ACK)) {
      this.dropped++;
      return Rx.Ignored;
    }
    // Plausibility: an ACK of nothing we sent, or a sequence number far from the window.
    const ackAhead = seqDiff(seg.ack, this.sndNxt);
    if (ackAhead > 0 || ackAhead < -HALF) {
      this.dropped++;
      return Rx.Ignored;
    }
    const off = seqDiff(seg.seq, this.rcvNxt);
    if (off > HALF || off < -HALF) {
      this.dropped++;
      return Rx.Ignored;
    }
    if (this.state === "syn-received") {
      if (seqDiff(seg.ack, (this.iss + 1) >>> 0) < 0) {
        this.dropped++;
        return Rx.Ignored;
      }
      this.state = "established";
      this.synAt = Infinity;
      // A window update at once: until a middlebox sees a non-SYN segment of
      // ours it holds the peer to the unscaled SYN-ACK window (64 KiB).
      this.pending = TcpFlags.ACK;
      this.windowOpen = true;
    }
    this.segmentsIn++;
    this.windowOpen = true;
    if (this.timestamps && seg.hasTimestamps) this.tsRecent = seg.tsVal;
    this.alive(now);
    const len = seg.payload.length;
    if (f & TcpFlags.FIN) {
      // A FIN (a prober closing, or the peer gone): answered with FIN-ACK, then the flow ends.
      const fend = (seg.seq + len + 1) >>> 0;
      if (seqDiff(fend, this.rcvNxt) > 0) this.rcvNxt = fend;
      this.pending = TcpFlags.FIN | TcpFlags.ACK;
      return len > 0 ? Rx.Data : Rx.Control;
    }
    if (len === 0) {
      // Below the window: a keepalive probe (seq = our rcvNxt − 1): answer it.
      if (off < 0) this.pending = TcpFlags.ACK;
      return Rx.Control;
    }
    const end = (seg.seq + len) >>> 0;
    if (seqDiff(end, this.rcvNxt) > 0) this.rcvNxt = end;
    this.unacked += len;
    if (this.unacked >= this.config.ackBytes) this.pending = TcpFlags.ACK;
    else if (this.ackDue === Infinity) this.ackDue = now + this.config.ackDelayMs;
    return Rx.Data;
  }

  private alive(now: number): void {
    this.lastRx = now;
    this.probesSent = 0;
    this.nextProbe = this.keepalive ? now + this.config.idleMs : Infinity;
  }

  /**
   * False while sending `len` more bytes would pass the peer's SYN-ACK
   * window (unscaled, ~64 KiB) before any later segment of the peer showed
   * its scaled one: a stateful middlebox would call those segments INVALID.
   * Only the first round trip after the handshake is affected.
   */
  canSend(len: number): boolean {
    if (this.state !== "established") return false;
    if (this.windowOpen) return true;
    if (this.firstFlight + len > this.synWindow) return false;
    this.firstFlight += len;
    return true;
  }

  /** Fills {@link out} for a data segment of `len` bytes (PSH|ACK) and advances the sequence. */
  data(len: number, now: number): TcpRepr {
    const o = this.out;
    o.seq = this.sndNxt;
    o.flags = TcpFlags.PSH | TcpFlags.ACK;
    this.sndNxt = (this.sndNxt + len) >>> 0;
    this.fill(now);
    return o;
  }

  /** True when data may be sent (the handshake is complete and the path not dead). */
  get established(): boolean {
    return this.state === "established";
  }

  /** The next control segment due now (SYN, SYN-ACK, ACK, a keepalive probe), or null. */
  control(now: number): TcpRepr | null {
    const o = this.out;
    const p = this.pending;
    if (p === 0) {
      if (this.ackDue <= now && this.state === "established") {
        o.seq = this.sndNxt;
        o.flags = TcpFlags.ACK;
        this.fill(now);
        return o;
      }
      return null;
    }
    this.pending = 0;
    if (p & TcpFlags.SYN) {
      o.seq = this.iss;
      o.flags = p;
      o.ack = p & TcpFlags.ACK ? this.rcvNxt : 0;
      o.window = p & TcpFlags.ACK ? this.config.synAckWindow : this.config.synWindow;
      o.mss = this.config.mss;
      const server = this.role === "server";
      o.sackPermitted = server ? this.sackPeer : true;
      o.hasTimestamps = this.timestamps;
      o.tsVal = (now + this.tsOffset) >>> 0;
      o.tsEcr = server ? this.tsRecent : 0;
      o.windowScale = server && this.peerWindowScale < 0 ? -1 : this.config.windowScale;
      this.segmentsOut++;
      return o;
    }
    if (p === (TcpFlags.FIN | TcpFlags.ACK)) {
      // The peer closed: acknowledge its FIN with ours, as an application reading EOF would.
      o.seq = this.sndNxt;
      o.flags = p;
      this.fill(now);
      this.sndNxt = (this.sndNxt + 1) >>> 0;
      this.state = "dead";
      return o;
    }
    if (p === PROBE) {
      // A keepalive probe: one below our next sequence number, no data (as Linux).
      o.seq = (this.sndNxt - 1) >>> 0;
      o.flags = TcpFlags.ACK;
      this.fill(now);
      return o;
    }
    o.seq = this.sndNxt;
    o.flags = TcpFlags.ACK;
    this.fill(now);
    return o;
  }

  private fill(now: number): void {
    const o = this.out;
    o.ack = this.rcvNxt;
    o.window = this.peerWindowScale < 0 && this.role === "server"
      ? Math.min(0xffff, this.config.window << this.config.windowScale)
      : this.config.window;
    o.mss = -1;
    o.windowScale = -1;
    o.sackPermitted = false;
    o.hasTimestamps = this.timestamps;
    o.tsVal = (now + this.tsOffset) >>> 0;
    o.tsEcr = this.tsRecent;
    this.lastAckSent = this.rcvNxt;
    this.unacked = 0;
    this.ackDue = Infinity;
    this.segmentsOut++;
  }

  /** The ACK field last sent (tests). */
  get ackSent(): number {
    return this.lastAckSent;
  }

  /**
   * Advances timers to `now`: handshake retransmission, delayed ACK,
   * keepalive probes (marked pending for {@link control}), dead path and
   * expiry (state becomes "dead"). Returns the state.
   */
  tick(now: number): FlowState {
    if (this.state === "dead") return this.state;
    if (this.synAt <= now && this.state !== "established") {
      if (this.synTries++ >= this.config.synRetries) {
        this.state = "dead";
        return this.state;
      }
      this.pending = this.role === "client" ? TcpFlags.SYN : TcpFlags.SYN | TcpFlags.ACK;
      this.synInterval *= 2;
      this.synAt = now + this.synInterval;
    }
    if (this.state === "established" && this.nextProbe <= now) {
      if (this.probesSent >= this.config.probes) {
        this.state = "dead";
        return this.state;
      }
      this.probesSent++;
      this.pending = PROBE;
      this.nextProbe = now + this.config.probeMs;
    }
    if (this.config.expireMs > 0 && now - this.lastRx >= this.config.expireMs) {
      this.state = "dead";
    }
    return this.state;
  }

  /** When {@link tick} should run next (Infinity: nothing scheduled), ms. */
  deadline(): number {
    if (this.state === "dead") return Infinity;
    let d = this.ackDue;
    if (this.state !== "established" && this.synAt < d) d = this.synAt;
    if (this.state === "established" && this.nextProbe < d) d = this.nextProbe;
    if (this.config.expireMs > 0) {
      const e = this.lastRx + this.config.expireMs;
      if (e < d) d = e;
    }
    return d;
  }

  /** True when a control segment is waiting for {@link control}. */
  get hasControl(): boolean {
    return this.pending !== 0;
  }

  /** True once the flow ended (FIN answered, keepalive unanswered, expired, killed). */
  get ended(): boolean {
    return this.state === "dead";
  }

  /** Marks the flow dead (closed by its owner). */
  kill(): void {
    this.state = "dead";
  }
}

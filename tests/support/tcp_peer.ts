/**
 * Test support for the netstack: a minimal *client-side* TCP (the part of a kernel TCP an
 * application's connect() exercises: SYN with MSS/window-scale/SACK/timestamps, ACKs with
 * SACK blocks, data, FIN, simple retransmission) and a simulated link in virtual time
 * (loss, reordering, duplication, delay) that joins peers to a `Stack`. It is deliberately
 * simple and independent of `shared/netstack/tcp/`: the kernel will be the real judge.
 * @module
 */

import { prng } from "./simnet.ts";
import { emitIpHeader, parseIp } from "../../shared/netstack/wire/packet.ts";
import { emitTcp, parseTcp, TcpFlags, type TcpRepr } from "../../shared/netstack/wire/tcp.ts";
import { IpProtocol } from "../../shared/netstack/wire/ip_protocol.ts";
import type { Stack, StackEvent } from "../../shared/netstack/stack.ts";

export { prng };

/** Options of a {@link TcpPeer}. */
export interface TcpPeerOptions {
  /** Our (the application's) address. */
  src: Uint8Array;
  srcPort: number;
  /** Where we connect. */
  dst: Uint8Array;
  dstPort: number;
  /** MSS we announce. Default 1460 (IPv4) / 1440. */
  mss?: number;
  /** Window scale we announce, -1 for none. Default 7. */
  wscale?: number;
  /** Offer SACK. Default true. */
  sack?: boolean;
  /** Offer timestamps. Default true. */
  timestamps?: boolean;
  /** Receive buffer (our window). Default 256 KiB. */
  rcvBuf?: number;
  /** Initial sequence number. Default 1000. */
  isn?: number;
  /** Retransmission timeout (fixed, doubled per consecutive timeout). Default 300 ms. */
  rto?: number;
}

/** The minimal client TCP. Offsets: 0 = SYN, data byte k = k + 1. */
export class TcpPeer {
  readonly o: Required<TcpPeerOptions>;
  state: "closed" | "syn-sent" | "established" | "reset" = "closed";
  /** Data to send (grows with {@link write}). */
  #out = new Uint8Array(1024);
  #outLen = 0;
  #finQueued = false;
  sndUna = 0;
  sndNxt = 0;
  sndMax = 0;
  sndWnd = 0;
  peerShift = 0;
  peerMss = 536;
  peerSack = false;
  tsOk = false;
  tsRecent = 0;
  #dup = 0;
  #rtoAt = Infinity;
  #backoff = 0;
  #probeAt = Infinity;
  #irs = 0;
  rcvNxt = 0;
  /** Bytes received in order (all of them, for byte-exact checks). */
  received = new Uint8Array(1024);
  receivedLen = 0;
  /** Bytes the "application" read (window = rcvBuf - (receivedLen - readLen)). */
  readLen = 0;
  /** When false the application does not read: our window closes. */
  reading = true;
  finReceived = false;
  #ooo = new Map<number, Uint8Array>();
  #ackNow = false;
  #synDue = false;
  /** Every segment received (flags, seq, ack, window, len, options) for assertions. */
  readonly log: {
    flags: number;
    seq: number;
    ack: number;
    window: number;
    len: number;
    sack: number[];
    mss: number;
    wscale: number;
    sackOk: boolean;
    ts: boolean;
    at: number;
  }[] = [];
  /** ICMP messages received (type, code). */
  readonly icmp: { type: number; code: number }[] = [];
  /** Segments sent. */
  sent = 0;
  retransmits = 0;
  #keepLog: boolean;

  constructor(opts: TcpPeerOptions, keepLog = true) {
    this.o = {
      mss: opts.src.length === 4 ? 1460 : 1440,
      wscale: 7,
      sack: true,
      timestamps: true,
      rcvBuf: 256 * 1024,
      isn: 1000,
      rto: 300,
      ...opts,
    };
    this.#keepLog = keepLog;
  }

  /** Sends the SYN. */
  connect(): void {
    this.state = "syn-sent";
    this.#synDue = true;
  }

  /** Queues bytes to send. */
  write(data: Uint8Array): void {
    if (this.#outLen + data.length > this.#out.length) {
      const b = new Uint8Array(Math.max(this.#out.length * 2, this.#outLen + data.length));
      b.set(this.#out.subarray(0, this.#outLen));
      this.#out = b;
    }
    this.#out.set(data, this.#outLen);
    this.#outLen += data.length;
  }

  /** Queues our FIN after the data. */
  close(): void {
    this.#finQueued = true;
  }

  /** True when everything we wrote (and our FIN, if queued) is acknowledged. */
  get allAcked(): boolean {
    return this.sndUna >= this.#outLen + 1 + (this.#finQueued ? 1 : 0);
  }

  /** The bytes received so far. */
  get data(): Uint8Array {
    return this.received.subarray(0, this.receivedLen);
  }

  #window(): number {
    const free = Math.max(0, this.o.rcvBuf - (this.receivedLen - this.readLen));
    const shift = this.o.wscale >= 0 && this.peerShift >= 0 ? this.o.wscale : 0;
    return Math.min(free >> shift, 0xffff);
  }

  /** Lets the application read everything (window reopens: a window update is sent). */
  readAll(): void {
    const before = this.#window();
    this.readLen = this.receivedLen;
    if (this.#window() > before) this.#ackNow = true;
  }

  /** Takes a packet addressed to us. */
  input(pkt: Uint8Array, now: number): void {
    const ip = parseIp(pkt);
    if (typeof ip === "string") throw new Error(`peer: bad IP from stack: ${ip}`);
    if (ip.protocol === IpProtocol.Icmp || ip.protocol === IpProtocol.Icmpv6) {
      this.icmp.push({ type: ip.payload[0], code: ip.payload[1] });
      return;
    }
    const s = parseTcp(ip.payload, ip.src, ip.dst);
    if (typeof s === "string") throw new Error(`peer: bad TCP from stack: ${s}`);
    if (this.#keepLog) {
      const sack: number[] = [];
      for (let i = 0; i < 2 * s.sackCount; i++) sack.push(s.sackBlocks[i]);
      this.log.push({
        flags: s.flags,
        seq: s.seq,
        ack: s.ack,
        window: s.window,
        len: s.payload.length,
        sack,
        mss: s.mss,
        wscale: s.windowScale,
        sackOk: s.sackPermitted,
        ts: s.hasTimestamps,
        at: now,
      });
    }
    const f = s.flags;
    if (f & TcpFlags.RST) {
      this.state = "reset";
      this.#rtoAt = this.#probeAt = Infinity;
      return;
    }
    if (this.state === "syn-sent") {
      if (!(f & TcpFlags.SYN) || !(f & TcpFlags.ACK)) return;
      if (s.ack !== ((this.o.isn + 1) >>> 0)) return;
      this.#irs = s.seq;
      this.rcvNxt = 1;
      this.peerMss = s.mss > 0 ? s.mss : 536;
      this.peerShift = this.o.wscale >= 0 && s.windowScale >= 0 ? s.windowScale : -1;
      this.peerSack = this.o.sack && s.sackPermitted;
      this.tsOk = this.o.timestamps && s.hasTimestamps;
      this.tsRecent = s.tsVal;
      this.sndWnd = s.window;
      this.sndUna = 1;
      if (this.sndNxt < 1) this.sndNxt = 1;
      this.state = "established";
      this.#rtoAt = Infinity;
      this.#backoff = 0;
      this.#ackNow = true;
      return;
    }
    if (this.state !== "established") return;
    if (f & TcpFlags.SYN) {
      this.#ackNow = true; // retransmitted SYN-ACK: our ACK was lost
      return;
    }
    if (s.hasTimestamps) this.tsRecent = s.tsVal;
    // ACK
    const ackOff = this.sndUna + ((s.ack - ((this.o.isn + this.sndUna) >>> 0)) | 0);
    const shift = this.peerShift > 0 ? this.peerShift : 0;
    const wnd = s.window * (1 << shift);
    if (ackOff > this.sndUna && ackOff <= this.sndMax) {
      this.sndUna = ackOff;
      if (this.sndNxt < ackOff) this.sndNxt = ackOff;
      this.#dup = 0;
      this.#backoff = 0;
      this.#rtoAt = this.sndUna < this.sndMax ? now + this.o.rto : Infinity;
    } else if (
      ackOff === this.sndUna && s.payload.length === 0 && !(f & TcpFlags.FIN) &&
      this.sndMax > this.sndUna && wnd === this.sndWnd
    ) {
      if (++this.#dup === 3) {
        this.sndNxt = this.sndUna; // crude fast retransmit: go back
        this.retransmits++;
      }
    }
    this.sndWnd = wnd;
    if (wnd > 0) this.#probeAt = Infinity;
    // Data
    const segOff = this.rcvNxt + ((s.seq - ((this.#irs + this.rcvNxt) >>> 0)) | 0);
    const len = s.payload.length;
    if (len > 0 || (f & TcpFlags.FIN) || segOff < this.rcvNxt) this.#ackNow = true; // keepalive too
    if (len > 0) {
      const free = this.o.rcvBuf - (this.receivedLen - this.readLen);
      if (segOff === this.rcvNxt) {
        const take = Math.min(len, Math.max(free, 0));
        this.#append(s.payload.subarray(0, take));
        this.rcvNxt += take;
        for (;;) {
          const next = this.#ooo.get(this.rcvNxt);
          if (!next) break;
          this.#ooo.delete(this.rcvNxt);
          this.#append(next);
          this.rcvNxt += next.length;
        }
        for (const k of [...this.#ooo.keys()]) if (k < this.rcvNxt) this.#ooo.delete(k);
        if (take < len) return; // beyond our window: dropped (probe)
      } else if (segOff > this.rcvNxt && segOff - this.rcvNxt < free) {
        if (this.#ooo.size < 64) this.#ooo.set(segOff, s.payload.slice());
        return;
      } else return;
    }
    if ((f & TcpFlags.FIN) && segOff + len === this.rcvNxt && !this.finReceived) {
      this.finReceived = true;
      this.rcvNxt++;
    }
    if (this.reading) this.readLen = this.receivedLen;
  }

  #append(d: Uint8Array): void {
    if (this.receivedLen + d.length > this.received.length) {
      const b = new Uint8Array(Math.max(this.received.length * 2, this.receivedLen + d.length));
      b.set(this.received.subarray(0, this.receivedLen));
      this.received = b;
    }
    this.received.set(d, this.receivedLen);
    this.receivedLen += d.length;
  }

  /** Next time {@link onTimeout} has work. */
  deadline(): number {
    return Math.min(this.#rtoAt, this.#probeAt);
  }

  /** Timers. */
  onTimeout(now: number): void {
    if (this.#rtoAt <= now) {
      this.#rtoAt = Infinity;
      if (this.state === "syn-sent") this.#synDue = true;
      else if (this.sndUna < this.sndMax) {
        this.sndNxt = this.sndUna;
        this.retransmits++;
      }
      this.#backoff++;
      this.#rtoAt = Infinity;
    }
    if (this.#probeAt <= now) {
      this.#probeAt = Infinity;
      this.#probeDue = true;
    }
  }
  #probeDue = false;

  /** Packets to send now. */
  poll(now: number): Uint8Array[] {
    const pkts: Uint8Array[] = [];
    const rto = this.o.rto * 2 ** Math.min(this.#backoff, 6);
    if (this.#synDue) {
      this.#synDue = false;
      pkts.push(this.#segment(now, TcpFlags.SYN, 0, 0, true));
      this.sndNxt = this.sndMax = 1;
      this.#rtoAt = now + rto;
      return pkts;
    }
    if (this.state !== "established") return pkts;
    const mss = Math.min(this.peerMss, this.o.mss) - (this.tsOk ? 12 : 0);
    const finOff = this.#finQueued ? this.#outLen + 1 : Infinity;
    for (let guard = 0; guard < 64; guard++) {
      const avail = this.#outLen - (this.sndNxt - 1);
      const wndEnd = this.sndUna + Math.min(this.sndWnd, 64 * mss);
      let len = Math.max(0, Math.min(avail, mss, wndEnd - this.sndNxt));
      if (this.#probeDue && len === 0 && avail > 0 && this.sndWnd === 0) {
        len = 1; // zero-window probe
        this.#probeDue = false;
      }
      const fin = this.sndNxt + len === finOff;
      if (len === 0 && !fin) break;
      if (this.sndNxt < this.sndMax) this.retransmits++;
      pkts.push(
        this.#segment(now, TcpFlags.ACK | (fin ? TcpFlags.FIN : 0), this.sndNxt, len, false),
      );
      this.sndNxt += len + (fin ? 1 : 0);
      if (this.sndNxt > this.sndMax) this.sndMax = this.sndNxt;
      if (this.#rtoAt === Infinity) this.#rtoAt = now + rto;
      this.#ackNow = false;
      if (fin) break;
    }
    if (
      this.sndWnd === 0 && this.#outLen - (this.sndNxt - 1) > 0 && this.#probeAt === Infinity &&
      this.sndUna === this.sndMax
    ) this.#probeAt = now + 500;
    if (this.#ackNow) {
      this.#ackNow = false;
      pkts.push(this.#segment(now, TcpFlags.ACK, this.sndNxt, 0, false));
    }
    return pkts;
  }

  /**
   * Builds a segment by hand (tests of RST/SYN handling, out-of-order data): `seqOff` is
   * our sequence offset (0 = SYN), `payload` is sent as is, `ack` defaults to ours.
   */
  craft(
    now: number,
    flags: number,
    seqOff: number,
    payload: Uint8Array = new Uint8Array(0),
    ack?: number,
  ): Uint8Array {
    const hl = this.o.src.length === 4 ? 20 : 40;
    const repr: TcpRepr = {
      srcPort: this.o.srcPort,
      dstPort: this.o.dstPort,
      seq: (this.o.isn + seqOff) >>> 0,
      ack: ack ?? ((this.#irs + this.rcvNxt) >>> 0),
      flags,
      window: this.#window(),
      hasTimestamps: this.tsOk,
      tsVal: Math.floor(now) >>> 0,
      tsEcr: this.tsRecent,
      mss: (flags & TcpFlags.SYN) ? this.o.mss : -1,
    };
    const buf = new Uint8Array(hl + 60 + payload.length);
    const tl = emitTcp(repr, payload, this.o.src, this.o.dst, buf, hl);
    emitIpHeader(
      { src: this.o.src, dst: this.o.dst, protocol: IpProtocol.Tcp, ttl: 64, payloadLength: tl },
      buf,
      0,
    );
    return buf.subarray(0, hl + tl);
  }

  /** The stack's initial sequence number (known after the SYN-ACK). */
  get irs(): number {
    return this.#irs;
  }

  #segment(now: number, flags: number, off: number, len: number, syn: boolean): Uint8Array {
    const sack: number[] = [];
    if (!syn && this.peerSack && this.#ooo.size > 0) {
      const keys = [...this.#ooo.keys()].sort((a, b) => a - b);
      let s = keys[0], e = s + this.#ooo.get(s)!.length;
      const blocks: [number, number][] = [];
      for (const k of keys.slice(1)) {
        if (k <= e) e = Math.max(e, k + this.#ooo.get(k)!.length);
        else {
          blocks.push([s, e]);
          s = k;
          e = k + this.#ooo.get(k)!.length;
        }
      }
      blocks.push([s, e]);
      for (const [a, b] of blocks.slice(0, this.tsOk ? 3 : 4)) {
        sack.push((this.#irs + a) >>> 0, (this.#irs + b) >>> 0);
      }
    }
    const repr: TcpRepr = {
      srcPort: this.o.srcPort,
      dstPort: this.o.dstPort,
      seq: (this.o.isn + off) >>> 0,
      ack: syn ? 0 : (this.#irs + this.rcvNxt) >>> 0,
      flags,
      window: syn ? Math.min(this.o.rcvBuf, 0xffff) : this.#window(),
      mss: syn ? this.o.mss : -1,
      windowScale: syn ? this.o.wscale : -1,
      sackPermitted: syn && this.o.sack,
      hasTimestamps: syn ? this.o.timestamps : this.tsOk,
      tsVal: Math.floor(now) >>> 0,
      tsEcr: syn ? 0 : this.tsRecent,
      sackCount: sack.length / 2,
      sackBlocks: sack,
    };
    const hl = this.o.src.length === 4 ? 20 : 40;
    const buf = new Uint8Array(hl + 60 + len);
    if (len > 0) buf.set(this.#out.subarray(off - 1, off - 1 + len), hl + 0);
    const payload = len > 0 ? this.#out.subarray(off - 1, off - 1 + len) : new Uint8Array(0);
    const tl = emitTcp(repr, payload, this.o.src, this.o.dst, buf, hl);
    emitIpHeader(
      {
        src: this.o.src,
        dst: this.o.dst,
        protocol: IpProtocol.Tcp,
        ttl: 64,
        payloadLength: tl,
      },
      buf,
      0,
    );
    this.sent++;
    return buf.subarray(0, hl + tl);
  }
}

/** One direction's impairments. */
export interface Impairment {
  /** Base one-way delay (ms). */
  delay: number;
  /** Extra random delay in [0, jitter) (reorders). */
  jitter: number;
  /** Drop probability. */
  loss: number;
  /** Duplicate probability. */
  duplicate: number;
}

const CLEAN: Impairment = { delay: 1, jitter: 0, loss: 0, duplicate: 0 };

/**
 * Joins a {@link Stack} (with an embedder callback) and any number of {@link TcpPeer}s in
 * virtual time. Packets from the stack go to the peer whose address:port they name.
 */
export class SimLink {
  now = 0;
  readonly #rand: () => number;
  #q: { at: number; seq: number; toStack: boolean; pkt: Uint8Array }[] = [];
  #seq = 0;
  readonly peers: TcpPeer[] = [];
  /** Packets the stack sent to nobody we know (ICMP to unknown, etc.). */
  readonly stray: Uint8Array[] = [];
  /** Every packet the stack emitted, if {@link recordStack}. */
  readonly fromStack: Uint8Array[] = [];
  recordStack = false;
  /** Times of {@link fromStack}'s packets. */
  readonly fromStackAt: number[] = [];
  /** Drops a packet when it returns false (deterministic loss for tests). */
  filter: ((pkt: Uint8Array, toStack: boolean) => boolean) | null = null;
  readonly #buf: Uint8Array;
  /** Packets handed to the stack / delivered to peers. */
  delivered = 0;

  constructor(
    readonly stack: Stack,
    readonly onEvent: (ev: StackEvent, link: SimLink) => void,
    readonly up: Impairment = CLEAN,
    readonly down: Impairment = CLEAN,
    seed = 1,
  ) {
    this.#rand = prng(seed);
    this.#buf = new Uint8Array(stack.mtu + 64);
  }

  /** Adds a peer. */
  add(p: TcpPeer): TcpPeer {
    this.peers.push(p);
    return p;
  }

  #send(pkt: Uint8Array, toStack: boolean): void {
    const im = toStack ? this.up : this.down;
    if (this.filter && !this.filter(pkt, toStack)) return;
    if (this.#rand() < im.loss) return;
    const copies = this.#rand() < im.duplicate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const at = this.now + im.delay + this.#rand() * im.jitter;
      this.#q.push({ at, seq: this.#seq++, toStack, pkt });
    }
  }

  /** Injects a packet to the stack (after the up-link delay, impaired like the rest). */
  inject(pkt: Uint8Array): void {
    this.#send(pkt, true);
  }

  #peerFor(pkt: Uint8Array): TcpPeer | undefined {
    const ip = parseIp(pkt);
    if (typeof ip === "string") return undefined;
    let port: number;
    if (ip.protocol === IpProtocol.Tcp || ip.protocol === IpProtocol.Udp) {
      port = (ip.payload[2] << 8) | ip.payload[3];
    } else if (ip.payload.length >= 8 + (ip.version === 4 ? 20 : 40) + 4) {
      // ICMP error: the quoted packet's source port
      const q = ip.payload.subarray(8 + (ip.version === 4 ? (ip.payload[8] & 15) * 4 : 40));
      port = (q[0] << 8) | q[1];
    } else return undefined;
    return this.peers.find((p) => p.o.srcPort === port);
  }

  /** Moves everything that is ready; returns true if anything happened. */
  #flush(): boolean {
    let any = false;
    for (;;) {
      const n = this.stack.poll(this.now, this.#buf);
      if (n === 0) break;
      any = true;
      const pkt = this.#buf.slice(0, n);
      if (this.recordStack) {
        this.fromStack.push(pkt);
        this.fromStackAt.push(this.now);
      }
      this.#send(pkt, false);
    }
    for (let ev = this.stack.pollEvent(); ev; ev = this.stack.pollEvent()) {
      any = true;
      this.onEvent(ev, this);
    }
    for (const p of this.peers) {
      for (const pkt of p.poll(this.now)) {
        any = true;
        this.#send(pkt, true);
      }
    }
    return any;
  }

  /** Runs until `done()` or virtual time passes `until` (ms). Returns true when done. */
  run(done: () => boolean, until: number): boolean {
    for (let steps = 0; steps < 50_000_000; steps++) {
      while (this.#flush());
      if (done()) return true;
      // Next event time.
      let t = Infinity;
      let qi = -1;
      for (let i = 0; i < this.#q.length; i++) {
        const e = this.#q[i];
        if (e.at < t || (e.at === t && qi >= 0 && e.seq < this.#q[qi].seq)) {
          t = e.at;
          qi = i;
        }
      }
      const sd = this.stack.nextDeadline();
      let pd = Infinity;
      for (const p of this.peers) pd = Math.min(pd, p.deadline());
      const next = Math.min(t, sd, pd);
      if (next === Infinity || next > until) {
        this.now = Math.max(this.now, Math.min(until, next));
        return done();
      }
      if (next > this.now) this.now = next;
      if (qi >= 0 && t <= this.now) {
        const e = this.#q[qi];
        this.#q[qi] = this.#q[this.#q.length - 1];
        this.#q.pop();
        this.delivered++;
        if (e.toStack) this.stack.input(e.pkt, this.now);
        else {
          const p = this.#peerFor(e.pkt);
          if (p) p.input(e.pkt, this.now);
          else this.stray.push(e.pkt);
        }
      }
      if (sd <= this.now) this.stack.handleTimeout(this.now);
      for (const p of this.peers) if (p.deadline() <= this.now) p.onTimeout(this.now);
    }
    throw new Error("SimLink: step limit");
  }
}

/** Deterministic bytes for transfers. */
export function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  const r = prng(seed);
  for (let i = 0; i < n; i += 4) {
    const v = (r() * 4294967296) >>> 0;
    b[i] = v;
    if (i + 1 < n) b[i + 1] = v >>> 8;
    if (i + 2 < n) b[i + 2] = v >>> 16;
    if (i + 3 < n) b[i + 3] = v >>> 24;
  }
  return b;
}

/**
 * One TCP connection of the stack, RFC 9293, passive side only (the application's kernel
 * opens, we answer once the embedder's outbound connected). Sans-I/O: {@link TcpConnection.
 * onSegment} takes a parsed segment and `now`, {@link TcpConnection.poll} writes the next
 * IP packet to send, {@link TcpConnection.deadline} / {@link TcpConnection.onTimeout}
 * replace timers. It never reads the clock and allocates only its two rings (at accept).
 *
 * Sequence numbers are kept as *offsets* from the initial sequence numbers (ours: `iss`,
 * the application's: `irs`) in plain numbers, so comparisons need no modular arithmetic:
 * offset 0 is the SYN, data byte k is offset k + 1, the FIN follows the last byte. 32-bit
 * values from the wire are turned into offsets relative to a known point (`sndUna`,
 * `rcvNxt`) with a signed 32-bit difference. The rings are addressed by data offsets
 * (sequence offset − 1).
 *
 * What is implemented, and the RFC choices, are in docs/netstack.md.
 * @module
 */

import { emitIpHeader, ipHeaderLength, type IpRepr } from "../wire/packet.ts";
import {
  emitTcp,
  TCP_HEADER_LENGTH,
  TcpFlags,
  tcpHeaderLength,
  type TcpRepr,
  type TcpSegment,
} from "../wire/tcp.ts";
import { IpProtocol } from "../wire/ip_protocol.ts";
import type { StackEvent, TcpCloseReason } from "../events.ts";
import { ReadResult } from "../events.ts";
import type { TcpConfig } from "./config.ts";
import { ByteRing } from "./ring.ts";
import { RangeSet } from "./ranges.ts";

/** Connection states (RFC 9293 §3.3.2; `syn-pending` = SYN held until the embedder decides). */
export const TcpState = {
  /** SYN received, waiting for `accept` / `refuse` (no SYN-ACK sent yet). */
  SynPending: "syn-pending",
  /** SYN-ACK sent. */
  SynReceived: "syn-received",
  /** Data flows both ways. */
  Established: "established",
  /** Our FIN sent, not acknowledged. */
  FinWait1: "fin-wait-1",
  /** Our FIN acknowledged, the application's not received. */
  FinWait2: "fin-wait-2",
  /** The application's FIN received, ours not sent. */
  CloseWait: "close-wait",
  /** Both FINs sent, ours not acknowledged, theirs received before ours was acked. */
  Closing: "closing",
  /** The application's FIN received, ours sent, not acknowledged. */
  LastAck: "last-ack",
  /** We closed first and everything is acknowledged: waiting briefly for retransmissions. */
  TimeWait: "time-wait",
  /** Gone. */
  Closed: "closed",
} as const;

/** One of the {@link TcpState} values. */
export type TcpState = typeof TcpState[keyof typeof TcpState];

/** What a connection needs from the stack that holds it. */
export interface TcpHost {
  /** Queues an event for the embedder. */
  event(ev: StackEvent): void;
  /** The connection has something to send (or changed its deadline). */
  wake(c: TcpConnection): void;
  /** The connection entered TIME-WAIT (the stack bounds how many wait). */
  timeWait(c: TcpConnection): void;
}

/** Options and numbers of the SYN that opened a connection. */
export interface SynInfo {
  /** The SYN's sequence number. */
  seq: number;
  /** Its window field (never scaled in a SYN). */
  window: number;
  /** MSS option, -1 if absent. */
  mss: number;
  /** Window scale option, -1 if absent. */
  windowScale: number;
  /** SACK-permitted option. */
  sackPermitted: boolean;
  /** Timestamps option present. */
  hasTimestamps: boolean;
  /** TSval. */
  tsVal: number;
}

const R: TcpRepr & { sackBlocks: Uint32Array } = {
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
  sackCount: 0,
  sackBlocks: new Uint32Array(8),
};
const IPR: IpRepr = {
  src: new Uint8Array(4),
  dst: new Uint8Array(4),
  protocol: IpProtocol.Tcp,
  ttl: 64,
  payloadLength: 0,
  dontFragment: true,
};

/** Counters of one connection (for tests and statistics). */
export interface TcpConnStats {
  /** Segments sent. */
  segmentsSent: number;
  /** Data segments retransmitted (RTO, fast retransmit, SACK holes). */
  retransmits: number;
  /** RTO expiries. */
  timeouts: number;
  /** Fast retransmits (3 duplicate ACKs). */
  fastRetransmits: number;
  /** Zero-window probes sent. */
  windowProbes: number;
  /** Segments received. */
  segmentsReceived: number;
  /** Out-of-order segments dropped because the out-of-order queue was full. */
  oooDropped: number;
}

/** A TCP connection (see the module doc). */
export class TcpConnection {
  /** Current state. */
  state: TcpState = TcpState.SynPending;
  /** Counters. */
  readonly stats: TcpConnStats = {
    segmentsSent: 0,
    retransmits: 0,
    timeouts: 0,
    fastRetransmits: 0,
    windowProbes: 0,
    segmentsReceived: 0,
    oooDropped: 0,
  };
  /** Why it closed (set with the `closed` event). */
  closeReason: TcpCloseReason | null = null;
  /** Deadline of the SYN queue (pending) state, ms. */
  synDeadline = Infinity;
  /** TIME-WAIT expiry, ms. */
  twAt = Infinity;

  // Negotiated.
  readonly #localMss: number;
  #peerMss: number;
  #sndShift = 0;
  #rcvShift = 0;
  #wsOk = false;
  #sackOk = false;
  #tsOk = false;
  #tsRecent = 0;
  #tsOffset: number;
  readonly #iss: number;
  readonly #irs: number;

  // Send side (sequence offsets from iss).
  #sndUna = 0;
  #sndNxt = 0;
  #sndMax = 0;
  #sndWnd = 0;
  #maxSndWnd = 0;
  #sndWl1 = 0;
  #sndWl2 = 0;
  #tx: ByteRing | null = null;
  #finQueued = false;

  // Receive side (sequence offsets from irs).
  #rcvNxt = 1;
  #rx: ByteRing | null = null;
  readonly #ooo: RangeSet;
  #rcvAdvRight = 1;
  #lastAckSent = 0;
  #peerFinOff = -1;
  #finIn = false;

  // RTT (RFC 6298).
  #srtt = 0;
  #rttvar = 0;
  #rto: number;
  #rttSeq = -1;
  #rttTime = 0;
  #retries = 0;

  // Congestion (RFC 5681 / 6582) and SACK scoreboard (RFC 2018 / 6675-lite).
  #cwnd = 0;
  #ssthresh = Infinity;
  #dupAcks = 0;
  #recover = 0;
  #inRecovery = false;
  #rtxNow = false;
  #rtxPtr = 0;
  readonly #sacked: RangeSet;
  #highSacked = 0;

  // Timers (Infinity = off).
  #rtoAt = Infinity;
  /** Tail loss probe (RFC 8985 §7, simplified): fires before the RTO when ACKs stop. */
  #tlpAt = Infinity;
  #tlpDue = false;
  #tlpOut = false;
  /** Lost-retransmission detection: SND.UNA when its hole was resent, and SND.MAX then. */
  #rtxHole = -1;
  #rtxMark = 0;
  #persistAt = Infinity;
  #persistShift = 0;
  #probing = false;
  #probeDue = false;
  #ackAt = Infinity;
  #keepAt = Infinity;
  #keepProbes = 0;
  #keepDue = false;

  // Flags.
  #ackNow = false;
  #rstDue = false;
  #rstReplySeq = -1;
  #lastChallenge = -Infinity;
  #readSignaled = false;
  #wantWritable = false;
  #reset = false;
  #closedEmitted = false;

  /**
   * A connection for a SYN from `remote:remotePort` (the application) to
   * `local:localPort`, in {@link TcpState.SynPending}. `localMss` is what our MTU allows
   * (MTU − IP header − 20); `iss` our initial sequence number; `tsOffset` a random offset
   * for our timestamps.
   */
  constructor(
    readonly flow: number,
    readonly local: Uint8Array,
    readonly localPort: number,
    readonly remote: Uint8Array,
    readonly remotePort: number,
    syn: SynInfo,
    readonly cfg: TcpConfig,
    readonly host: TcpHost,
    localMss: number,
    iss: number,
    tsOffset: number,
  ) {
    this.#localMss = localMss;
    this.#iss = iss >>> 0;
    this.#irs = syn.seq >>> 0;
    this.#tsOffset = tsOffset >>> 0;
    this.#peerMss = syn.mss > 0 ? syn.mss : (local.length === 16 ? 1220 : 536);
    if (cfg.windowScale && syn.windowScale >= 0) {
      this.#wsOk = true;
      this.#sndShift = syn.windowScale;
      let s = 0;
      while (s < 14 && (cfg.recvBuffer >> s) > 0xffff) s++;
      this.#rcvShift = s;
    }
    this.#sackOk = cfg.sack && syn.sackPermitted;
    this.#tsOk = cfg.timestamps && syn.hasTimestamps;
    this.#tsRecent = syn.tsVal >>> 0;
    this.#sndWnd = syn.window;
    this.#maxSndWnd = syn.window;
    this.#rto = cfg.initialRto;
    this.#ooo = new RangeSet(Math.max(1, cfg.maxOutOfOrder));
    this.#sacked = new RangeSet(16);
  }

  /** Data bytes per segment we send (peer's MSS and our MTU, minus the timestamps option). */
  get sendMss(): number {
    return Math.min(this.#peerMss, this.#localMss) - (this.#tsOk ? 12 : 0);
  }

  /** The MSS option value we announce. */
  get localMss(): number {
    return this.#localMss;
  }

  /** Window shift we apply to the application's windows (its SYN's option), 0 without. */
  get sendShift(): number {
    return this.#sndShift;
  }

  /** Window shift we announced (0 when the application did not offer scaling). */
  get receiveShift(): number {
    return this.#rcvShift;
  }

  /** True when SACK was negotiated. */
  get sackEnabled(): boolean {
    return this.#sackOk;
  }

  /** True when timestamps were negotiated. */
  get timestampsEnabled(): boolean {
    return this.#tsOk;
  }

  /** Current retransmission timeout (ms). */
  get rto(): number {
    return this.#rto;
  }

  /** Congestion window (bytes). */
  get cwnd(): number {
    return this.#cwnd;
  }

  /** Bytes held in the rings (received unread + sent unacknowledged or unsent). */
  get bufferedBytes(): number {
    return (this.#rx ? this.#rx.length + this.#ooo.total : 0) + (this.#tx ? this.#tx.length : 0);
  }

  /** Bytes of memory allocated by this connection's rings. */
  get allocatedBytes(): number {
    return (this.#rx?.capacity ?? 0) + (this.#tx?.capacity ?? 0);
  }

  /** Bytes written by the embedder not yet acknowledged by the application. */
  get unacknowledged(): number {
    return this.#tx ? this.#tx.length : 0;
  }

  /** Room for {@link write} now. */
  get writable(): number {
    if (!this.#tx || this.#finQueued || this.#reset) return 0;
    return this.#tx.free;
  }

  /** Out-of-order ranges held (the SACK blocks we report). */
  get outOfOrderRanges(): number {
    return this.#ooo.count;
  }

  /** True once the connection is gone and has nothing left to send. */
  get finished(): boolean {
    return this.state === TcpState.Closed && !this.#rstDue && this.#rstReplySeq < 0 &&
      this.#closedEmitted;
  }

  // ---------------------------------------------------------------- sequence helpers

  #sndSeq(off: number): number {
    return (this.#iss + off) >>> 0;
  }

  #rcvSeq(off: number): number {
    return (this.#irs + off) >>> 0;
  }

  #sndOff(seq: number): number {
    return this.#sndUna + ((seq - this.#sndSeq(this.#sndUna)) | 0);
  }

  #rcvOff(seq: number): number {
    return this.#rcvNxt + ((seq - this.#rcvSeq(this.#rcvNxt)) | 0);
  }

  #tsNow(now: number): number {
    return (Math.floor(now) + this.#tsOffset) >>> 0;
  }

  // ---------------------------------------------------------------- embedder API

  /** The outbound connected: allocate the buffers and answer the SYN with a SYN-ACK. */
  accept(now: number): void {
    if (this.state !== TcpState.SynPending) return;
    this.#rx = new ByteRing(this.cfg.recvBuffer);
    this.#tx = new ByteRing(this.cfg.sendBuffer);
    this.#cwnd = this.cfg.initialCwnd * this.sendMss;
    // The SYN-ACK's window is never scaled (RFC 7323 §2.2).
    this.#rcvAdvRight = this.#rcvNxt + Math.min(this.cfg.recvBuffer, 0xffff);
    this.state = TcpState.SynReceived;
    this.synDeadline = Infinity;
    this.#sndNxt = 0;
    this.#keepAt = Infinity;
    this.host.wake(this);
    void now;
  }

  /** Refuse with a RST (the outbound was refused); the `closed` event follows. */
  refuseReset(): void {
    if (this.state !== TcpState.SynPending) return;
    this.#rstDue = true;
    this.#die("aborted");
  }

  /** Drops a pending SYN without an answer (the stack sends an ICMP error instead). */
  dropPending(reason: TcpCloseReason): void {
    this.#die(reason);
  }

  /** Reads received bytes into `into`: a count, or {@link ReadResult} WOULD_BLOCK/END/RESET. */
  read(into: Uint8Array): number {
    if (this.#reset) return ReadResult.RESET;
    const rx = this.#rx;
    if (!rx) return ReadResult.WOULD_BLOCK;
    const n = rx.read(into);
    if (n > 0) {
      if (rx.length === 0) this.#readSignaled = false;
      this.#maybeWindowUpdate();
      return n;
    }
    if (into.length === 0) return 0;
    if (this.#finIn) {
      this.#maybeDone();
      return ReadResult.END;
    }
    this.#readSignaled = false;
    return ReadResult.WOULD_BLOCK;
  }

  /** Bytes ready to read now. */
  get readable(): number {
    return this.#rx ? this.#rx.length : 0;
  }

  /**
   * Queues bytes for the application: the count accepted (maybe short: a `writable` event
   * follows), or RESET (-2) when the connection cannot send any more.
   */
  write(data: Uint8Array): number {
    if (this.#reset || this.#finQueued || !this.#tx) return ReadResult.RESET;
    if (
      this.state !== TcpState.Established && this.state !== TcpState.CloseWait &&
      this.state !== TcpState.SynReceived
    ) return ReadResult.RESET;
    const n = this.#tx.append(data);
    if (n < data.length) this.#wantWritable = true;
    if (n > 0) this.host.wake(this);
    return n;
  }

  /** Our side is done writing: a FIN follows the queued bytes. */
  close(): void {
    if (this.#reset || this.#finQueued) return;
    if (this.state === TcpState.SynPending) {
      this.refuseReset();
      return;
    }
    this.#finQueued = true;
    this.host.wake(this);
  }

  /** Resets the connection (RST to the application); the `closed` event follows. */
  abort(): void {
    if (this.state === TcpState.Closed) {
      // Gone already, with unread data: release it.
      if (!this.#closedEmitted) {
        this.#reset = true;
        this.#emitClosed("aborted");
        this.host.wake(this);
      }
      return;
    }
    if (this.state !== TcpState.TimeWait) this.#rstDue = true;
    this.#die("aborted");
  }

  #die(reason: TcpCloseReason): void {
    if (reason !== "done") this.#reset = true;
    this.state = TcpState.Closed;
    this.#rtoAt = Infinity;
    this.#persistAt =
      this.#ackAt =
      this.#keepAt =
      this.#tlpAt =
        Infinity;
    this.synDeadline = this.twAt = Infinity;
    this.#emitClosed(reason);
    this.host.wake(this);
  }

  #emitClosed(reason: TcpCloseReason): void {
    if (this.#closedEmitted) return;
    this.#closedEmitted = true;
    this.closeReason = reason;
    this.host.event({ type: "closed", flow: this.flow, reason });
  }

  /** `closed: done` once both directions are over and everything was read. */
  #maybeDone(): void {
    if (this.#closedEmitted) return;
    if (
      (this.state === TcpState.TimeWait || this.state === TcpState.Closed) &&
      this.#rx !== null && this.#rx.length === 0 && this.#finIn
    ) this.#emitClosed("done");
  }

  #signalReadable(): void {
    if (this.#readSignaled) return;
    this.#readSignaled = true;
    this.host.event({ type: "readable", flow: this.flow });
  }

  /** Receiver SWS avoidance (RFC 9293 §3.8.6.2.2): the right edge we could advertise. */
  #openRight(): number {
    const rx = this.#rx!;
    return rx.start + 1 + rx.capacity + (this.#finIn ? 1 : 0);
  }

  #swsThreshold(): number {
    return Math.min(this.#rx!.capacity >> 1, this.#localMss);
  }

  #maybeWindowUpdate(): void {
    if (this.state === TcpState.SynReceived || this.#finIn || this.state === TcpState.Closed) {
      return;
    }
    const right = this.#openRight();
    const cur = this.#rcvAdvRight - this.#rcvNxt;
    if (right - this.#rcvAdvRight >= this.#swsThreshold() && cur < (this.#rx!.capacity >> 1)) {
      this.#ackNow = true;
      this.host.wake(this);
    }
  }

  /** The window field to send, moving the advertised right edge (never backwards). */
  #windowField(syn: boolean): number {
    if (!this.#rx) return 0;
    if (syn) return Math.min(this.#rcvAdvRight - this.#rcvNxt, 0xffff);
    const right = this.#openRight();
    if (right - this.#rcvAdvRight >= this.#swsThreshold()) this.#rcvAdvRight = right;
    const wnd = Math.max(0, this.#rcvAdvRight - this.#rcvNxt);
    const field = Math.min(Math.floor(wnd / (1 << this.#rcvShift)), 0xffff);
    return field;
  }

  // ---------------------------------------------------------------- input

  /**
   * Processes a segment of this connection (its checksum already verified). `payload`
   * views are copied into the rings; nothing of `seg` is kept.
   */
  onSegment(seg: TcpSegment, now: number): void {
    this.stats.segmentsReceived++;
    const f = seg.flags;
    const st = this.state;
    if (st === TcpState.Closed) return;
    if (st === TcpState.SynPending) {
      if (f & TcpFlags.RST) {
        if ((seg.seq >>> 0) === ((this.#irs + 1) >>> 0)) this.#die("reset");
      }
      return; // a retransmitted SYN: still waiting for the embedder
    }
    if (st === TcpState.SynReceived && (f & TcpFlags.SYN) && !(f & TcpFlags.ACK)) {
      if ((seg.seq >>> 0) === this.#irs) {
        // The SYN-ACK was lost: answer again.
        this.#sndNxt = 0;
        this.host.wake(this);
      }
      return;
    }
    const segOff = this.#rcvOff(seg.seq);
    const dataLen = seg.payload.length;
    const seqLen = dataLen + ((f & TcpFlags.SYN) ? 1 : 0) + ((f & TcpFlags.FIN) ? 1 : 0);
    const wnd = Math.max(0, this.#rcvAdvRight - this.#rcvNxt);
    const nxt = this.#rcvNxt;
    let ok: boolean;
    if (seqLen === 0) {
      ok = wnd === 0 ? segOff === nxt : segOff >= nxt && segOff < nxt + wnd;
    } else if (wnd === 0) {
      ok = false;
    } else {
      const last = segOff + seqLen - 1;
      ok = (segOff >= nxt && segOff < nxt + wnd) || (last >= nxt && last < nxt + wnd);
    }
    // A FIN (or data) exactly at rcvNxt with a zero window: take the FIN (as Linux does).
    if (!ok && wnd === 0 && segOff === nxt && (f & TcpFlags.FIN)) ok = true;
    if (st === TcpState.TimeWait) {
      if (f & TcpFlags.RST) {
        if (ok) this.#twEnd();
        return;
      }
      // A retransmitted FIN: ACK it again and restart the wait.
      if (f & TcpFlags.FIN) this.twAt = now + this.cfg.timeWait;
      this.#ackNow = true;
      this.host.wake(this);
      return;
    }
    if (!ok) {
      if (!(f & TcpFlags.RST)) {
        this.#ackNow = true;
        this.host.wake(this);
      }
      return;
    }
    // RST (RFC 5961 §3.2): exact match resets, else a challenge ACK.
    if (f & TcpFlags.RST) {
      if (segOff === nxt) this.#die("reset");
      else this.#challenge(now);
      return;
    }
    // SYN in a synchronized state (RFC 5961 §4.2): challenge ACK.
    if (f & TcpFlags.SYN) {
      this.#challenge(now);
      return;
    }
    if (!(f & TcpFlags.ACK)) return;
    // Timestamps (RFC 7323 §4.3, simplified: no PAWS).
    if (this.#tsOk && seg.hasTimestamps && segOff <= this.#lastAckSent) {
      this.#tsRecent = seg.tsVal >>> 0;
    }
    this.#keepProbes = 0;
    if (this.cfg.keepaliveIdle > 0) this.#keepAt = now + this.cfg.keepaliveIdle;
    if (!this.#onAck(seg, segOff, now)) return;
    if (this.state === TcpState.Closed || this.state === TcpState.TimeWait) return;
    // Data.
    if (dataLen > 0 && this.#acceptsData()) this.#onData(seg.payload, segOff, now);
    if (f & TcpFlags.FIN && this.#acceptsData()) {
      const finOff = segOff + dataLen;
      if (this.#peerFinOff < 0 && finOff < nxt + wnd + 1) this.#peerFinOff = finOff;
      this.#ackNow = true;
      this.host.wake(this);
    }
    if (this.#peerFinOff >= 0 && !this.#finIn && this.#rcvNxt === this.#peerFinOff) {
      this.#finIn = true;
      this.#rcvNxt++;
      this.#ackNow = true;
      switch (this.state) {
        case TcpState.Established:
          this.state = TcpState.CloseWait;
          break;
        case TcpState.FinWait1:
          this.state = TcpState.Closing;
          break;
        case TcpState.FinWait2:
          this.#enterTimeWait(now);
          break;
      }
      this.#signalReadable();
      this.host.wake(this);
    }
  }

  #acceptsData(): boolean {
    const s = this.state;
    return !this.#finIn &&
      (s === TcpState.Established || s === TcpState.FinWait1 || s === TcpState.FinWait2);
  }

  #challenge(now: number): void {
    if (now - this.#lastChallenge < 20) return; // RFC 5961 §7: rate-limited
    this.#lastChallenge = now;
    this.#ackNow = true;
    this.host.wake(this);
  }

  /** ACK processing; false when the segment must be dropped. */
  #onAck(seg: TcpSegment, segOff: number, now: number): boolean {
    const ackOff = this.#sndOff(seg.ack);
    if (this.state === TcpState.SynReceived) {
      if (ackOff < 1 || ackOff > this.#sndMax) {
        this.#rstReplySeq = seg.ack >>> 0;
        this.host.wake(this);
        return false;
      }
      this.state = TcpState.Established;
      this.#sndWl1 = segOff;
      this.#sndWl2 = ackOff;
      this.#sndWnd = seg.window << this.#sndShift;
      this.#maxSndWnd = Math.max(this.#maxSndWnd, this.#sndWnd);
      if (this.cfg.keepaliveIdle > 0) this.#keepAt = now + this.cfg.keepaliveIdle;
      this.#ackNow = true; // announce the scaled window right away
    }
    if (ackOff > this.#sndMax) {
      this.#ackNow = true;
      this.host.wake(this);
      return false;
    }
    // RFC 5961 §5.2: an ACK older than the largest window the peer offered is suspect.
    if (ackOff < this.#sndUna - Math.max(this.#maxSndWnd, 65535)) {
      this.#challenge(now);
      return false;
    }
    const w = seg.window * (1 << this.#sndShift);
    let windowChanged = false;
    if (
      segOff > this.#sndWl1 || (segOff === this.#sndWl1 && ackOff >= this.#sndWl2)
    ) {
      windowChanged = w !== this.#sndWnd;
      this.#sndWnd = w;
      this.#sndWl1 = segOff;
      this.#sndWl2 = ackOff;
      if (w > this.#maxSndWnd) this.#maxSndWnd = w;
    }
    const mss = this.sendMss;
    if (this.#sackOk && seg.sackCount > 0) {
      for (let i = 0; i < seg.sackCount; i++) {
        const l = this.#sndOff(seg.sackBlocks[2 * i]);
        const r = this.#sndOff(seg.sackBlocks[2 * i + 1]);
        if (l > Math.max(ackOff, this.#sndUna) && r > l && r <= this.#sndMax) {
          this.#sacked.add(l, r);
          if (r > this.#highSacked) this.#highSacked = r;
        }
      }
    }
    if (ackOff > this.#sndUna) {
      const acked = ackOff - this.#sndUna;
      // RTT sample (timestamps: RFC 7323 RTTM; otherwise Karn's timed segment).
      if (this.#tsOk && seg.hasTimestamps && seg.tsEcr !== 0) {
        const r = (this.#tsNow(now) - (seg.tsEcr >>> 0)) >>> 0;
        if (r < 60_000) this.#rttSample(Math.max(r, 1));
      } else if (this.#rttSeq >= 0 && ackOff >= this.#rttSeq) {
        this.#rttSample(Math.max(now - this.#rttTime, 1));
        this.#rttSeq = -1;
      }
      this.#retries = 0;
      this.#probing = false;
      this.#persistShift = 0;
      // Congestion control.
      if (this.#inRecovery) {
        if (ackOff >= this.#recover) {
          this.#inRecovery = false;
          const flight = this.#sndMax - ackOff;
          this.#cwnd = Math.max(Math.min(this.#ssthresh, flight + mss), this.#minSsthresh());
        } else {
          this.#cwnd = Math.max(this.#cwnd - acked + mss, mss);
          if (ackOff >= this.#rtxPtr) this.#rtxNow = true;
          else {
            // The new first hole was resent already: watch it like the first one.
            this.#rtxHole = ackOff;
            this.#rtxMark = this.#sndMax;
          }
        }
      } else if (this.#cwnd < this.#ssthresh) {
        this.#cwnd += Math.min(acked, 2 * mss); // RFC 3465 ABC, L = 2·SMSS
      } else {
        this.#cwnd += Math.max(1, Math.floor(mss * Math.min(acked, 2 * mss) / this.#cwnd));
      }
      this.#dupAcks = 0;
      this.#sndUna = ackOff;
      if (this.#sndNxt < ackOff) this.#sndNxt = ackOff;
      if (this.#rtxPtr < ackOff) this.#rtxPtr = ackOff;
      const tx = this.#tx!;
      tx.consumeTo(Math.min(ackOff - 1, tx.end));
      this.#sacked.trimBelow(ackOff);
      if (this.#highSacked < ackOff) this.#highSacked = ackOff;
      this.#rtoAt = this.#sndUna >= this.#sndMax ? Infinity : now + this.#rto;
      this.#tlpOut = false;
      this.#armTlp(now);
      if (this.#wantWritable && this.writable > 0) {
        this.#wantWritable = false;
        this.host.event({ type: "writable", flow: this.flow });
      }
      this.#afterFinAcked(now);
      this.host.wake(this);
    } else if (ackOff === this.#sndUna) {
      if (this.#probing) {
        // The window probe was answered without being taken: the peer is alive.
        this.#sndNxt = this.#sndMax = this.#sndUna;
        this.#retries = 0;
        this.#rtoAt = Infinity;
        if (this.#sndWnd === 0) {
          this.#persistShift = Math.min(this.#persistShift + 1, 16);
          this.#armPersist(now);
        } else {
          this.#probing = false;
          this.#persistAt = Infinity;
          this.host.wake(this);
        }
      } else if (
        seg.payload.length === 0 && !(seg.flags & TcpFlags.FIN) && this.#sndMax > this.#sndUna
      ) {
        // A duplicate ACK (RFC 5681 §2). A receiver holding out-of-order data may change
        // its window as it goes (Linux does): with SACK blocks it is a duplicate anyway.
        if (!windowChanged || seg.sackCount > 0) {
          this.#dupAcks++;
          if (this.#inRecovery && !this.#sackOk) this.#cwnd += mss; // NewReno inflation
          this.host.wake(this);
        }
      }
      if (windowChanged) this.host.wake(this);
    }
    // A lost retransmission (RACK's idea, by sequence instead of time): data sent after the
    // first hole was resent got SACKed while the hole is still missing: resend it again.
    if (
      this.#inRecovery && this.#sackOk && this.#rtxHole === this.#sndUna &&
      this.#highSacked > this.#rtxMark
    ) {
      this.#rtxNow = true;
      this.#rtxPtr = this.#sndUna;
      this.host.wake(this);
    }
    // Loss detection: three duplicate ACKs, or (RFC 6675 IsLost) three segments' worth
    // SACKed above SND.UNA. RFC 6582: once per window of data (past `recover`).
    if (
      !this.#inRecovery && this.#sndMax > this.#sndUna && ackOff >= this.#recover &&
      (this.#dupAcks >= 3 || (this.#sackOk && this.#sacked.total >= 3 * mss))
    ) {
      const flight = this.#sndMax - this.#sndUna;
      this.#ssthresh = Math.max(Math.floor(flight / 2), this.#minSsthresh());
      this.#cwnd = this.#sackOk ? this.#ssthresh : this.#ssthresh + 3 * mss;
      this.#recover = this.#sndMax;
      this.#inRecovery = true;
      this.#rtxNow = true;
      this.#rtxPtr = this.#sndUna;
      this.stats.fastRetransmits++;
      this.host.wake(this);
    }
    return true;
  }

  /**
   * Bytes in flight during SACK recovery (RFC 6675 "pipe", simplified): sent and not
   * acknowledged, minus SACKed bytes, minus holes below the highest SACKed byte that were
   * not yet retransmitted (taken as lost).
   */
  #pipe(): number {
    let lost = 0;
    const p = Math.max(this.#rtxPtr, this.#sndUna);
    if (this.#sacked.count > 0 && p < this.#highSacked) {
      lost = (this.#highSacked - p) - this.#sacked.coveredIn(p, this.#highSacked);
    }
    return (this.#sndMax - this.#sndUna) - this.#sacked.total - lost;
  }

  #afterFinAcked(now: number): void {
    if (!this.#finQueued) return;
    const finOff = this.#tx!.end + 1;
    if (this.#sndUna <= finOff) return;
    switch (this.state) {
      case TcpState.FinWait1:
        this.state = TcpState.FinWait2;
        break;
      case TcpState.Closing:
        this.#enterTimeWait(now);
        break;
      case TcpState.LastAck:
        this.state = TcpState.Closed;
        this.#rtoAt =
          this.#keepAt =
          this.#ackAt =
          this.#persistAt =
            Infinity;
        this.#maybeDone();
        break;
    }
  }

  #enterTimeWait(now: number): void {
    this.state = TcpState.TimeWait;
    this.twAt = now + this.cfg.timeWait;
    this.#rtoAt =
      this.#keepAt =
      this.#persistAt =
      this.#tlpAt =
        Infinity;
    this.#maybeDone();
    this.host.timeWait(this);
  }

  #twEnd(): void {
    this.state = TcpState.Closed;
    this.twAt = Infinity;
    this.#maybeDone();
    // Unread data at that point stays readable; "done" follows the read to the end.
    this.host.wake(this);
  }

  #rttSample(r: number): void {
    if (this.#srtt === 0) {
      this.#srtt = r;
      this.#rttvar = r / 2;
    } else {
      this.#rttvar = 0.75 * this.#rttvar + 0.25 * Math.abs(this.#srtt - r);
      this.#srtt = 0.875 * this.#srtt + 0.125 * r;
    }
    this.#rto = Math.min(
      Math.max(this.cfg.minRto, this.#srtt + Math.max(1, 4 * this.#rttvar)),
      this.cfg.maxRto,
    );
  }

  #onData(payload: Uint8Array, segOff: number, now: number): void {
    const rx = this.#rx!;
    let start = segOff;
    let end = segOff + payload.length;
    if (this.#peerFinOff >= 0 && end > this.#peerFinOff) end = this.#peerFinOff;
    const nxt = this.#rcvNxt;
    // Trim to what we hold: [rcvNxt, ring end).
    const limit = rx.start + 1 + rx.capacity;
    if (start < nxt) start = nxt;
    if (end > limit) end = limit;
    if (end <= start) {
      this.#ackNow = true; // a duplicate: ACK (with SACK) at once
      return;
    }
    const data = payload.subarray(start - segOff, end - segOff);
    if (start === nxt) {
      rx.writeAt(start - 1, data);
      this.#rcvNxt = end;
      // Pull in out-of-order ranges now contiguous.
      if (this.#ooo.count > 0) {
        if (this.#ooo.start(0) <= this.#rcvNxt) {
          this.#rcvNxt = Math.max(this.#rcvNxt, this.#ooo.end(0));
        }
        this.#ooo.trimBelow(this.#rcvNxt);
        // Any still held means a hole remains: ACK now so SACK blocks go out.
        this.#ackNow = true;
      }
      rx.end = this.#rcvNxt - 1;
      this.#signalReadable();
      if (this.#rcvNxt - this.#lastAckSent >= 2 * this.#localMss) this.#ackNow = true;
      else if (this.#ackAt === Infinity) this.#ackAt = now + this.cfg.ackDelay;
    } else {
      // Out of order: keep it if the queue has room (RFC 9293 §3.10.7.4), SACK it.
      if (this.#ooo.add(start, end)) rx.writeAt(start - 1, data);
      else this.stats.oooDropped++;
      this.#ackNow = true;
    }
    this.host.wake(this);
  }

  // ---------------------------------------------------------------- timers

  /** Earliest time {@link onTimeout} has work, ms (`Infinity` when none). */
  deadline(): number {
    return Math.min(
      this.#rtoAt,
      this.#tlpAt,
      this.#persistAt,
      this.#ackAt,
      this.#keepAt,
      this.twAt,
      this.synDeadline,
    );
  }

  /** Runs the timers due at `now`. */
  onTimeout(now: number): void {
    if (this.synDeadline <= now) {
      this.synDeadline = Infinity;
      if (this.state === TcpState.SynPending) {
        this.#rstDue = true;
        this.#die("timeout");
        return;
      }
    }
    if (this.twAt <= now) {
      this.twAt = Infinity;
      if (this.state === TcpState.TimeWait) this.#twEnd();
      return;
    }
    if (this.#ackAt <= now) {
      this.#ackAt = Infinity;
      this.#ackNow = true;
      this.host.wake(this);
    }
    if (this.#tlpAt <= now) {
      this.#tlpAt = Infinity;
      if (this.#sndMax > this.#sndUna && !this.#inRecovery && !this.#probing) {
        this.#tlpDue = true;
        this.host.wake(this);
      }
    }
    if (this.#rtoAt <= now) this.#onRto(now);
    if (this.#persistAt <= now) {
      this.#persistAt = Infinity;
      if (this.#probing) {
        if (++this.#retries > this.cfg.maxRetries) {
          this.#rstDue = true;
          this.#die("timeout");
          return;
        }
        this.#persistShift = Math.min(this.#persistShift + 1, 16);
      }
      this.#probeDue = true;
      this.host.wake(this);
    }
    if (this.#keepAt <= now) {
      if (this.#keepProbes >= this.cfg.keepaliveCount) {
        this.#rstDue = true;
        this.#die("timeout");
        return;
      }
      this.#keepProbes++;
      this.#keepDue = true;
      this.#keepAt = now + this.cfg.keepaliveInterval;
      this.host.wake(this);
    }
  }

  #onRto(now: number): void {
    this.#rtoAt = Infinity;
    this.#tlpAt = Infinity;
    this.#tlpOut = false;
    if (this.#sndUna >= this.#sndMax || this.#probing) return;
    if (++this.#retries > this.cfg.maxRetries) {
      this.#rstDue = true;
      this.#die("timeout");
      return;
    }
    this.stats.timeouts++;
    const mss = this.sendMss;
    if (this.state !== TcpState.SynReceived) {
      const flight = this.#sndMax - this.#sndUna;
      if (this.#retries === 1) {
        this.#ssthresh = Math.max(Math.floor(flight / 2), this.#minSsthresh());
      }
      this.#cwnd = mss;
    }
    this.#inRecovery = false;
    this.#rtxNow = false;
    this.#dupAcks = 0;
    this.#recover = this.#sndMax;
    this.#sndNxt = this.#sndUna;
    if (this.#retries >= 2) {
      // RFC 2018 §8: the receiver may have reneged. The first expiry keeps the scoreboard
      // (go-back-N skips what was SACKed, as Linux does); a second one forgets it.
      this.#sacked.clear();
      this.#highSacked = this.#sndUna;
    }
    this.#rttSeq = -1;
    this.#rto = Math.min(this.#rto * 2, this.cfg.maxRto);
    this.#rtoAt = now + this.#rto;
    this.host.wake(this);
  }

  /** PTO = 2·SRTT (+ the peer's delayed-ACK allowance with one segment out), ≥ 10 ms, < RTO. */
  #armTlp(now: number): void {
    if (this.#sndMax <= this.#sndUna) {
      this.#tlpAt = Infinity;
      return;
    }
    if (
      this.#srtt === 0 || this.#tlpOut || this.#inRecovery || this.state === TcpState.SynReceived
    ) return;
    let pto = Math.max(2 * this.#srtt, 10);
    if (this.#sndMax - this.#sndUna <= this.sendMss) pto += 50;
    this.#tlpAt = pto < this.#rto ? now + pto : Infinity;
  }

  /**
   * Floor of ssthresh after a loss: `minSsthresh` segments (RFC 5681 says 2; the TUN is a
   * local link whose losses are rarely congestion, so the default floor is 4).
   */
  #minSsthresh(): number {
    return Math.max(2, this.cfg.minSsthresh) * this.sendMss;
  }

  #armPersist(now: number): void {
    if (this.#persistAt !== Infinity) return;
    const base = Math.max(this.#rto, this.cfg.minRto);
    this.#persistAt = now + Math.min(base * 2 ** this.#persistShift, this.cfg.maxPersist);
  }

  // ---------------------------------------------------------------- output

  /**
   * Writes the next packet to send (IP header included) at `out[0]` and returns its
   * length, or 0 when there is nothing to send now. `out` must hold the MTU.
   */
  poll(now: number, out: Uint8Array): number {
    if (this.#rstReplySeq >= 0) {
      const seq = this.#rstReplySeq;
      this.#rstReplySeq = -1;
      return this.#emit(out, TcpFlags.RST, seq, 0, 0, false, now, true);
    }
    if (this.#rstDue) {
      this.#rstDue = false;
      const seq = this.#tx ? this.#sndSeq(this.#sndNxt) : 0;
      return this.#emit(out, TcpFlags.RST | TcpFlags.ACK, seq, 0, 0, false, now, true);
    }
    const st = this.state;
    if (st === TcpState.Closed || st === TcpState.SynPending) return 0;
    if (st === TcpState.SynReceived) {
      if (this.#sndNxt === 0) {
        this.#sndNxt = 1;
        if (this.#sndMax < 1) this.#sndMax = 1;
        if (this.#rtoAt === Infinity) this.#rtoAt = now + this.#rto;
        return this.#emit(out, TcpFlags.SYN | TcpFlags.ACK, this.#iss, 0, 0, true, now, false);
      }
      return 0;
    }
    if (st !== TcpState.TimeWait) {
      const n = this.#sendData(now, out);
      if (n > 0) return n;
    }
    if (this.#ackNow) return this.#pureAck(out, now, this.#sndSeq(this.#sndNxt));
    if (this.#keepDue) {
      this.#keepDue = false;
      return this.#pureAck(out, now, this.#sndSeq(this.#sndUna - 1));
    }
    return 0;
  }

  #pureAck(out: Uint8Array, now: number, seq: number): number {
    return this.#emit(out, TcpFlags.ACK, seq, 0, 0, false, now, false);
  }

  #sendData(now: number, out: Uint8Array): number {
    const tx = this.#tx;
    if (!tx) return 0;
    const finSeq = this.#finQueued ? tx.end + 1 : Infinity; // FIN's sequence offset
    const mss = this.#dataRoom();
    if (mss <= 0) return 0;
    // 1. Fast retransmit / partial ACK: the first unacknowledged segment, now.
    if (this.#rtxNow) {
      this.#rtxNow = false;
      const seq = this.#sndUna;
      if (seq < this.#sndMax) {
        const len = this.#segLen(seq, mss, finSeq);
        const fin = seq + len === finSeq && finSeq < this.#sndMax;
        if (len > 0 || fin) {
          this.#rtxPtr = Math.max(this.#rtxPtr, seq + len + (fin ? 1 : 0));
          this.#rtxHole = seq;
          this.#rtxMark = this.#sndMax;
          this.stats.retransmits++;
          return this.#sendSegment(out, now, seq, len, fin, true);
        }
      }
    }
    // 2. SACK recovery: holes below the highest SACKed byte, while the pipe allows.
    if (this.#inRecovery && this.#sackOk && this.#sacked.count > 0) {
      let p = Math.max(this.#rtxPtr, this.#sndUna);
      while (p < this.#highSacked && this.#sacked.contains(p)) {
        p = this.#sacked.end(this.#sacked.firstEndingAfter(p));
      }
      if (p < this.#highSacked) {
        if (this.#pipe() < this.#cwnd) {
          const len = this.#segLen(p, mss, finSeq);
          if (len > 0) {
            this.#rtxPtr = p + len;
            this.stats.retransmits++;
            return this.#sendSegment(out, now, p, len, false, true);
          }
        }
      }
    }
    // 3. Zero-window probe: one byte past the closed window (RFC 9293 §3.8.6.1).
    if (this.#probeDue) {
      this.#probeDue = false;
      const seq = this.#sndUna;
      const avail = tx.end - (seq - 1);
      if (avail > 0 && this.#sndMax <= seq + 1) {
        const len = Math.max(1, Math.min(this.#sndWnd, avail, mss));
        if (this.#sndWnd === 0) {
          this.#probing = true;
          this.stats.windowProbes++;
          this.#armPersist(now);
        }
        return this.#sendSegment(out, now, seq, len, false, seq < this.#sndMax);
      }
      if (seq === finSeq && this.#sndMax <= seq) {
        return this.#sendSegment(out, now, seq, 0, true, false);
      }
    }
    // 3b. Tail loss probe: new data if the windows allow, else the last segment again, so
    // that the receiver's SACKs start a fast recovery instead of waiting for the RTO.
    if (this.#tlpDue) {
      this.#tlpDue = false;
      if (this.#sndMax > this.#sndUna && !this.#inRecovery) {
        this.#tlpOut = true;
        const avail = tx.end - (this.#sndMax - 1);
        const wndRoom = this.#sndUna + this.#sndWnd - this.#sndMax;
        if (avail > 0 && this.#sndNxt === this.#sndMax && wndRoom > 0 && finSeq === Infinity) {
          const len = Math.min(avail, mss, wndRoom);
          return this.#sendSegment(out, now, this.#sndMax, len, false, false);
        }
        const finSent = finSeq !== Infinity && this.#sndMax > finSeq;
        const dataEnd = finSent ? finSeq : this.#sndMax;
        const start = Math.max(this.#sndUna, dataEnd - mss);
        if (dataEnd > start || finSent) {
          this.stats.retransmits++;
          return this.#sendSegment(out, now, start, dataEnd - start, finSent, true);
        }
      }
    }
    // 4. New data (or go-back-N after an RTO), SACKed ranges skipped.
    let seq = this.#sndNxt;
    if (seq < this.#sndMax && this.#sacked.count > 0) {
      while (seq < this.#sndMax && this.#sacked.contains(seq)) {
        seq = this.#sacked.end(this.#sacked.firstEndingAfter(seq));
      }
      if (seq > this.#sndMax) seq = this.#sndMax;
      this.#sndNxt = seq;
    }
    if (this.#probing) return 0;
    const avail = Math.max(0, tx.end - (seq - 1));
    const flight = this.#inRecovery && this.#sackOk ? this.#pipe() : this.#sndNxt - this.#sndUna;
    // RFC 3042 limited transmit: one new segment per each of the first two duplicate ACKs.
    const limited = !this.#inRecovery && this.#dupAcks > 0 && this.#dupAcks < 3
      ? this.#dupAcks * mss
      : 0;
    const room = Math.min(this.#sndUna + this.#sndWnd - seq, this.#cwnd + limited - flight);
    let len = Math.min(avail, mss, Math.max(0, room));
    if (seq < this.#sndMax) len = Math.min(len, this.#segLen(seq, mss, finSeq));
    const fin = finSeq !== Infinity && seq + len === finSeq;
    if (len === 0 && !fin) {
      if (avail > 0 && this.#sndMax === this.#sndUna && this.#sndWnd < Math.min(avail, mss)) {
        this.#armPersist(now);
      }
      return 0;
    }
    if (len === 0 && fin && this.#cwnd - flight <= 0 && seq >= this.#sndMax) return 0;
    // Sender SWS avoidance (RFC 9293 §3.8.6.2.1), Nagle off: send a full segment, all
    // that is queued, or at least half the largest window the application offered.
    if (
      seq >= this.#sndMax && len > 0 && len < mss && len < avail &&
      len < (this.#maxSndWnd >> 1)
    ) {
      if (this.#sndMax === this.#sndUna) this.#armPersist(now);
      return 0;
    }
    const rtx = seq < this.#sndMax;
    if (rtx) this.stats.retransmits++;
    return this.#sendSegment(out, now, seq, len, fin, rtx);
  }

  /** Bytes of data a segment can carry now (options we add included). */
  #dataRoom(): number {
    let opt = this.#tsOk ? 12 : 0;
    const blocks = this.#sackBlocksToSend();
    if (blocks > 0) opt += (this.#tsOk ? 0 : 0) + 4 + 8 * blocks;
    return Math.min(this.#peerMss, this.#localMss) - opt;
  }

  #sackBlocksToSend(): number {
    if (!this.#sackOk) return 0;
    return Math.min(this.#ooo.count, this.#tsOk ? 3 : 4);
  }

  /** Length of a (re)transmission at `seq`: up to `mss`, the data end, the next SACKed range. */
  #segLen(seq: number, mss: number, finSeq: number): number {
    const tx = this.#tx!;
    let len = Math.min(mss, tx.end - (seq - 1));
    const i = this.#sacked.firstEndingAfter(seq);
    if (i >= 0 && this.#sacked.start(i) > seq) len = Math.min(len, this.#sacked.start(i) - seq);
    void finSeq;
    return Math.max(0, len);
  }

  #sendSegment(
    out: Uint8Array,
    now: number,
    seq: number,
    len: number,
    fin: boolean,
    rtx: boolean,
  ): number {
    const flags = TcpFlags.ACK | (fin ? TcpFlags.FIN : 0) |
      (len > 0 && seq - 1 + len === this.#tx!.end ? TcpFlags.PSH : 0);
    const end = seq + len + (fin ? 1 : 0);
    if (seq === this.#sndNxt || end > this.#sndNxt) {
      if (end > this.#sndNxt) this.#sndNxt = end;
    }
    if (end > this.#sndMax) {
      if (!this.#tsOk && this.#rttSeq < 0 && !rtx && len > 0) {
        this.#rttSeq = end;
        this.#rttTime = now;
      }
      this.#sndMax = end;
    }
    if (rtx && this.#rttSeq >= 0 && seq < this.#rttSeq) this.#rttSeq = -1; // Karn
    if (!this.#probing && this.#rtoAt === Infinity) this.#rtoAt = now + this.#rto;
    if (!this.#probing) this.#persistAt = Infinity;
    if (!rtx) this.#armTlp(now);
    if (fin) {
      if (this.state === TcpState.Established) this.state = TcpState.FinWait1;
      else if (this.state === TcpState.CloseWait) this.state = TcpState.LastAck;
    }
    return this.#emit(out, flags, this.#sndSeq(seq), seq - 1, len, false, now, false);
  }

  #emit(
    out: Uint8Array,
    flags: number,
    seq: number,
    dataOff: number,
    len: number,
    syn: boolean,
    now: number,
    bareRst: boolean,
  ): number {
    const r = R;
    r.srcPort = this.localPort;
    r.dstPort = this.remotePort;
    r.seq = seq >>> 0;
    r.flags = flags;
    r.ack = (flags & TcpFlags.ACK) ? this.#rcvSeq(this.#rcvNxt) : 0;
    r.mss = -1;
    r.windowScale = -1;
    r.sackPermitted = false;
    r.hasTimestamps = false;
    r.sackCount = 0;
    if (bareRst) {
      r.window = 0;
    } else {
      r.window = this.#windowField(syn);
      if (syn) {
        r.mss = this.#localMss;
        r.windowScale = this.#wsOk ? this.#rcvShift : -1;
        r.sackPermitted = this.#sackOk;
      }
      if (this.#tsOk) {
        r.hasTimestamps = true;
        r.tsVal = this.#tsNow(now);
        r.tsEcr = this.#tsRecent;
      }
      if (!syn) {
        const n = this.#sackBlocksToSend();
        if (n > 0) {
          const o = this.#ooo;
          let k = 0;
          const first = o.last >= 0 && o.last < o.count ? o.last : o.count - 1;
          r.sackBlocks[0] = this.#rcvSeq(o.start(first));
          r.sackBlocks[1] = this.#rcvSeq(o.end(first));
          k = 1;
          for (let i = o.count - 1; i >= 0 && k < n; i--) {
            if (i === first) continue;
            r.sackBlocks[2 * k] = this.#rcvSeq(o.start(i));
            r.sackBlocks[2 * k + 1] = this.#rcvSeq(o.end(i));
            k++;
          }
          r.sackCount = k;
        }
      }
      if (flags & TcpFlags.ACK) {
        this.#ackNow = false;
        this.#ackAt = Infinity;
        this.#lastAckSent = this.#rcvNxt;
      }
    }
    const hl = ipHeaderLength(this.local);
    const thl = tcpHeaderLength(r);
    if (len > 0) this.#tx!.copyOut(dataOff, len, out, hl + thl);
    const tcpLen = emitTcp(r, len, this.local, this.remote, out, hl);
    const ip = IPR;
    ip.src = this.local;
    ip.dst = this.remote;
    ip.payloadLength = tcpLen;
    emitIpHeader(ip, out, 0);
    this.stats.segmentsSent++;
    return hl + tcpLen;
  }

  /** Header room a segment needs at most (IP + TCP with options). */
  static maxHeader(ipv6: boolean): number {
    return (ipv6 ? 40 : 20) + TCP_HEADER_LENGTH + 40;
  }
}

/**
 * The OSTP session state machine, sans I/O: it takes authenticated-or-not
 * datagrams and the current time, and gives back datagrams to send, events,
 * and the next deadline. It owns no socket and no timer and never reads the
 * clock: the caller passes `now` (milliseconds, fractional allowed).
 *
 * It implements the frame layer of PROTOCOL.md part B: coalesced frames,
 * streams with per-stream ordering and flow control, unreliable datagrams,
 * loss recovery with new packet numbers for every retransmission, BBR with
 * pacing, keepalive, idle timeout and close. It also tells when the peer
 * stopped answering (`unresponsive`): a restarted server drops the old
 * session's packets in silence, so only the missing answers reveal it.
 * @module
 */

import {
  datagramFrameSize,
  DecodeError,
  type FrameSink,
  parseFrames,
  streamHeaderSize,
  writeAck,
  writeClose,
  writeDatagram,
  writeMaxData,
  writeMaxStreamData,
  writePing,
  writeResetStream,
  writeStreamHeader,
} from "../wire/frames.ts";

import { MIN_PLAINTEXT_LENGTH, PACKET_OVERHEAD, ReplayWindow } from "../wire/packet.ts";
import { Bbr, type RateSample } from "./congestion.ts";
import { RangeSet } from "./ranges.ts";
import { RttEstimator } from "./rtt.ts";
import { RecvBuffer, SendBuffer } from "./stream.ts";

/** Seals and opens data datagrams (PROTOCOL.md A3); `shared/wire/packet.ts` implements it. */
export interface PacketProtector {
  /** Writes the wire datagram for `plaintext` under `pn` into `out`; returns its length. */
  seal(pn: number, plaintext: Uint8Array, out: Uint8Array): number;
  /** Authenticates and decrypts `wire` into `out`; plaintext length or -1. Sets `lastPn`. */
  open(wire: Uint8Array, out: Uint8Array): number;
  /** Packet number of the last datagram `open` accepted. */
  readonly lastPn: number;
}

export { PACKET_OVERHEAD };
const MIN_PLAINTEXT = MIN_PLAINTEXT_LENGTH;

/** Limits a session advertises to its peer in the handshake. */
export interface TransportParams {
  /** Session-wide receive window in bytes. */
  maxData: number;
  /** Per-stream receive window in bytes. */
  maxStreamData: number;
  /** Peer-initiated streams open at once. */
  maxStreams: number;
}

/** Tunables of one session; every field has a default in {@link defaultSessionConfig}. */
export interface SessionConfig extends TransportParams {
  /** Largest datagram on the wire, bytes. */
  maxDatagramSize: number;
  /** Per-stream send buffer, bytes. */
  sendBuffer: number;
  /** Close after this long without an authenticated packet, ms. */
  idleTimeout: number;
  /** Send a PING after this long without sending anything ack-eliciting, ms. */
  keepalive: number;
  /** Longest we delay an ACK, ms. */
  maxAckDelay: number;
  /** Unreliable datagrams queued for sending before the oldest is dropped. */
  datagramQueue: number;
  /** Largest congestion window, bytes (bounds memory per session). */
  maxCwnd: number;
  /**
   * Report the peer `unresponsive` once ack-eliciting packets went unanswered
   * this long, ms; never sooner than 3 PTOs; 0 never reports.
   */
  unresponsiveTimeout: number;
  /**
   * When the peer, after sending more than PINGs, has been silent this long and
   * nothing of ours awaits an ack, send one PING so that a vanished peer gets
   * noticed, ms; never sooner than 2 PTOs; 0 never probes.
   */
  silenceProbe: number;
}

/** Defaults suited to a tunnel carrying bulk and interactive traffic. */
export const defaultSessionConfig: SessionConfig = {
  maxDatagramSize: 1350,
  maxData: 32 * 1024 * 1024,
  maxStreamData: 8 * 1024 * 1024,
  maxStreams: 8192,
  sendBuffer: 4 * 1024 * 1024,
  idleTimeout: 30_000,
  keepalive: 10_000,
  maxAckDelay: 10,
  datagramQueue: 512,
  maxCwnd: 64 * 1024 * 1024,
  unresponsiveTimeout: 1000,
  silenceProbe: 500,
};

/** Session close codes carried in CLOSE frames. */
export const CloseCode = {
  NORMAL: 0,
  PROTOCOL_VIOLATION: 1,
  FLOW_CONTROL: 2,
  IDLE_TIMEOUT: 3,
  SHUTDOWN: 4,
  KICKED: 5,
  LIMIT_REACHED: 6,
  INTERNAL: 7,
  EXHAUSTED: 8,
} as const;

/** Stream reset codes carried in RESET_STREAM frames. */
export const ResetCode = {
  CANCELLED: 0,
  REFUSED: 1,
  INTERNAL: 2,
} as const;

/** What {@link Session.receive} made of a datagram. */
export const Receive = {
  /** Failed authentication, replayed, or session closed: nothing changed. */
  DROPPED: 0,
  /** Authenticated and accepted. */
  ACCEPTED: 1,
  /** Accepted and carried the highest packet number so far (roaming may follow it). */
  ACCEPTED_HIGHEST: 2,
} as const;

/** Result of {@link Session.streamRead} besides a positive byte count. */
export const ReadResult = {
  /** Nothing to read now; a `readable` event follows. */
  WOULD_BLOCK: 0,
  /** The peer finished the stream and everything was read. */
  END: -1,
  /** The stream was reset (by the peer or locally). */
  RESET: -2,
} as const;

/** Something the application should react to. */
export type SessionEvent =
  | { type: "stream"; id: number }
  | { type: "readable"; id: number }
  | { type: "writable"; id: number }
  | { type: "datagram"; data: Uint8Array }
  /** Ack-eliciting packets sent since `since` (ms) got no authenticated answer ({@link SessionConfig.unresponsiveTimeout}). */
  | { type: "unresponsive"; since: number }
  /** An authenticated packet arrived after `unresponsive`. */
  | { type: "responsive" }
  | { type: "closed"; code: number; reason: string; remote: boolean };

/** Counters for statistics and events. */
export interface SessionStats {
  packetsSent: number;
  packetsReceived: number;
  bytesSent: number;
  bytesReceived: number;
  packetsLost: number;
  retransmittedBytes: number;
  authFailures: number;
  replays: number;
  datagramsDropped: number;
}

const FRAME_STREAM = 0;
const FRAME_RESET = 1;
const FRAME_MAX_DATA = 2;
const FRAME_MAX_STREAM_DATA = 3;
const FRAME_PING = 4;

interface SentFrame {
  kind: number;
  id: number;
  offset: number;
  len: number;
  fin: boolean;
}

interface SentPacket {
  pn: number;
  time: number;
  size: number;
  ackEliciting: boolean;
  done: boolean;
  frames: SentFrame[];
  delivered: number;
  deliveredTime: number;
  firstSentTime: number;
  appLimited: boolean;
}

interface StreamState {
  id: number;
  send: SendBuffer;
  recv: RecvBuffer;
  peerMax: number;
  localMax: number;
  finWritten: boolean;
  finPending: boolean;
  finAcked: boolean;
  resetSent: boolean;
  resetPending: boolean;
  resetAcked: boolean;
  resetCode: number;
  peerReset: boolean;
  maxStreamDataPending: boolean;
  queued: boolean;
  controlQueued: boolean;
  readWanted: boolean;
  writeWanted: boolean;
  peerInitiated: boolean;
}

const PACKET_THRESHOLD = 3;

/**
 * Decryption scratch shared by every session: `receive` is synchronous and
 * copies what it keeps, so one 64 KiB buffer serves a thousand sessions.
 */
const RX = new Uint8Array(65536);

/** Small fast PRNG for padding lengths (the padding content is zeros under encryption). */
function seedRandom(): number {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return a[0] | 1;
}

/** One OSTP session between a client and a server, after the handshake. */
export class Session implements FrameSink {
  /** Configuration in force. */
  readonly config: SessionConfig;
  /** True on the client side (it opens even stream ids). */
  readonly isClient: boolean;
  /** Counters. */
  readonly stats: SessionStats = {
    packetsSent: 0,
    packetsReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    packetsLost: 0,
    retransmittedBytes: 0,
    authFailures: 0,
    replays: 0,
    datagramsDropped: 0,
  };
  /** RTT estimator. */
  readonly rtt: RttEstimator = new RttEstimator();
  /** Congestion controller. */
  readonly cc: Bbr;

  private readonly protector: PacketProtector;
  private readonly maxPlain: number;
  private readonly plain: Uint8Array;
  private state: "open" | "closing" | "closed" = "open";
  private closeCode = 0;
  private closeReason = "";
  private goingAway = false;
  private rand: number;

  // Packet numbers and anti-replay.
  private nextPn = 0;
  private largestRecv = -1;
  private readonly replay = new ReplayWindow();
  private readonly received = new RangeSet();
  private ackElicitingSinceAck = 0;
  private ackDeadline = Infinity;
  private largestRecvTime = 0;
  private ackImmediate = false;

  // Loss recovery.
  private sent: SentPacket[] = [];
  private sentHead = 0;
  private largestAcked = -1;
  private bytesInFlight = 0;
  private lossTime = Infinity;
  private ptoCount = 0;
  private probes = 0;
  private lastAckElicitingSent = 0;
  private lastRecv: number;
  private lastSendTime: number;
  private pingPending = false;
  private delivered = 0;
  private deliveredTime = 0;
  private firstSentTime = 0;
  private appLimitedUntil = 0;

  // Liveness: a vanished peer (a restarted server) drops our packets silently.
  private unanswered = Infinity;
  private silentReported = false;
  private peerSpoke = false;
  private rxPing = false;

  // Pacing.
  private paceTokens = 0;
  private paceTime = 0;

  // Flow control.
  private peerMaxData: number;
  private peerMaxStreamData: number;
  private peerMaxStreams: number;
  private sessionSent = 0;
  private localMaxData: number;
  private sessionReceived = 0;
  private sessionConsumed = 0;
  private maxDataPending = false;

  // Streams.
  private readonly streams = new Map<number, StreamState>();
  private nextLocalId: number;
  private highestPeerId: number;
  private peerStreamCount = 0;
  private localStreamCount = 0;
  private sendQueue: StreamState[] = [];
  private controlQueue: StreamState[] = [];

  // Datagrams and events.
  private datagrams: Uint8Array[] = [];
  private events: SessionEvent[] = [];
  private eventHead = 0;

  /**
   * Creates a session. `peer` holds the limits the peer announced in its
   * handshake; `now` is the current time in ms.
   */
  constructor(opts: {
    protector: PacketProtector;
    isClient: boolean;
    peer: TransportParams;
    now: number;
    config?: Partial<SessionConfig>;
  }) {
    this.config = { ...defaultSessionConfig, ...opts.config };
    this.protector = opts.protector;
    this.isClient = opts.isClient;
    this.maxPlain = this.config.maxDatagramSize - PACKET_OVERHEAD;
    this.plain = new Uint8Array(this.maxPlain);
    this.cc = new Bbr(this.config.maxDatagramSize, this.config.maxCwnd);
    this.peerMaxData = opts.peer.maxData;
    this.peerMaxStreamData = opts.peer.maxStreamData;
    this.peerMaxStreams = opts.peer.maxStreams;
    this.localMaxData = this.config.maxData;
    this.nextLocalId = opts.isClient ? 0 : 1;
    this.highestPeerId = opts.isClient ? -1 : -2;
    this.lastRecv = opts.now;
    this.lastSendTime = opts.now;
    this.lastAckElicitingSent = opts.now;
    this.paceTime = opts.now;
    this.rand = seedRandom();
  }

  /** True until the session closed (locally or by the peer). */
  get isOpen(): boolean {
    return this.state === "open";
  }

  /** True once nothing more will be sent or received. */
  get isClosed(): boolean {
    return this.state === "closed";
  }

  /** Streams currently tracked. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Bytes sent and not yet acknowledged or declared lost. */
  get inFlight(): number {
    return this.bytesInFlight;
  }

  /** Largest unreliable datagram payload that fits one packet. */
  get maxDatagramPayload(): number {
    return this.maxPlain - 1 - 3 - 64;
  }

  // ---------------------------------------------------------------- input

  /** Processes one datagram from the network. */
  receive(wire: Uint8Array, now: number): number {
    if (this.state === "closed") return Receive.DROPPED;
    const n = this.protector.open(wire, RX);
    if (n < 0) {
      this.stats.authFailures++;
      return Receive.DROPPED;
    }
    const pn = this.protector.lastPn;
    if (!this.replay.update(pn)) {
      this.stats.replays++;
      return Receive.DROPPED;
    }
    this.stats.packetsReceived++;
    this.stats.bytesReceived += wire.length;
    this.lastRecv = now;
    this.unanswered = Infinity;
    if (this.silentReported) {
      this.silentReported = false;
      this.events.push({ type: "responsive" });
    }
    const highest = pn > this.largestRecv;
    if (highest) {
      if (pn !== this.largestRecv + 1) this.ackImmediate = true;
      this.largestRecv = pn;
      this.largestRecvTime = now;
    } else {
      this.ackImmediate = true;
    }
    this.received.add(pn, pn + 1);
    if (this.received.length > 64) this.received.truncate(48);
    let eliciting: boolean;
    this.rxPing = false;
    try {
      eliciting = parseFrames(RX, n, this);
    } catch (e) {
      if (e instanceof DecodeError || e instanceof ProtocolError) {
        const code = e instanceof ProtocolError ? e.code : CloseCode.PROTOCOL_VIOLATION;
        this.close(code, e.message);
        return Receive.ACCEPTED;
      }
      throw e;
    }
    if (eliciting && !this.rxPing) this.peerSpoke = true;
    if (eliciting && this.state === "open") {
      if (this.ackElicitingSinceAck === 0) this.ackDeadline = now + this.config.maxAckDelay;
      this.ackElicitingSinceAck++;
    }
    return highest ? Receive.ACCEPTED_HIGHEST : Receive.ACCEPTED;
  }

  // ------------------------------------------------------ frame handlers

  /** @internal frame handler */
  onPing(): void {
    this.rxPing = true;
  }

  /** @internal frame handler */
  onAck(ranges: number[], count: number, delayUs: number): void {
    const now = this.lastRecv;
    const largest = ranges[1];
    if (largest >= this.nextPn) {
      throw new ProtocolError(CloseCode.PROTOCOL_VIOLATION, "ack of unsent packet");
    }
    let rttSample = 0;
    let newlyAcked = false;
    let rs: RateSample | null = null;
    let priorDelivered = -1;
    let priorTime = 0;
    let sendElapsed = 0;
    let ackElapsed = 0;
    let appLimited = false;
    let ackedBytes = 0;
    for (let r = 0; r < count; r++) {
      const lo = ranges[2 * r];
      const hi = ranges[2 * r + 1];
      let i = this.findSent(lo);
      while (i < this.sent.length) {
        const p = this.sent[i++];
        if (p.pn > hi) break;
        if (p.done) continue;
        p.done = true;
        newlyAcked = true;
        ackedBytes += p.size;
        if (p.ackEliciting) this.bytesInFlight -= p.size;
        if (p.pn === largest && p.ackEliciting) rttSample = now - p.time;
        this.delivered += p.size;
        this.deliveredTime = now;
        if (p.delivered > priorDelivered) {
          priorDelivered = p.delivered;
          priorTime = p.deliveredTime;
          appLimited = p.appLimited;
          sendElapsed = p.time - p.firstSentTime;
          ackElapsed = now - p.deliveredTime;
          this.firstSentTime = p.time;
        }
        for (const f of p.frames) this.onFrameAcked(f);
      }
    }
    if (!newlyAcked) return;
    if (largest > this.largestAcked) this.largestAcked = largest;
    if (rttSample > 0) {
      this.rtt.update(rttSample, Math.min(delayUs / 1000, this.config.maxAckDelay));
    }
    if (priorDelivered >= 0) {
      const interval = Math.max(sendElapsed, ackElapsed);
      rs = {
        delivered: this.delivered - priorDelivered,
        interval: interval >= this.rtt.min * 0.5 ? interval : 0,
        appLimited,
        priorDelivered,
        totalDelivered: this.delivered,
      };
      void priorTime;
    }
    this.ptoCount = 0;
    this.detectLost(now);
    this.cc.onAck(now, rs, rttSample, this.bytesInFlight, ackedBytes);
    this.compactSent();
  }

  /** @internal frame handler */
  onStream(id: number, offset: number, data: Uint8Array, fin: boolean): void {
    const st = this.streamForFrame(id);
    if (!st) return;
    const end = offset + data.length;
    const recv = st.recv;
    if (recv.finalSize >= 0 && (end > recv.finalSize || (fin && end !== recv.finalSize))) {
      throw new ProtocolError(CloseCode.PROTOCOL_VIOLATION, "data past final size");
    }
    if (end > st.localMax) {
      throw new ProtocolError(CloseCode.FLOW_CONTROL, "stream credit exceeded");
    }
    if (fin) recv.finalSize = end;
    if (st.resetSent || st.peerReset) {
      // Discarding: count toward session credit, keep nothing.
      if (end > recv.highest) {
        const grew = end - recv.highest;
        recv.highest = end;
        this.sessionReceived += grew;
        this.consumeSession(grew);
      }
      recv.readOffset = recv.contiguous = recv.highest;
      this.maybeRemove(st);
      return;
    }
    const before = recv.readable;
    const grew = recv.insert(offset, data);
    this.sessionReceived += grew;
    if (this.sessionReceived > this.localMaxData) {
      throw new ProtocolError(CloseCode.FLOW_CONTROL, "session credit exceeded");
    }
    if (st.readWanted && (recv.readable > before || recv.finished)) {
      st.readWanted = false;
      this.events.push({ type: "readable", id: st.id });
    }
  }

  /** @internal frame handler */
  onResetStream(id: number, _code: number, finalSize: number): void {
    const st = this.streamForFrame(id);
    if (!st) return;
    const recv = st.recv;
    if (recv.finalSize >= 0 && recv.finalSize !== finalSize) {
      throw new ProtocolError(CloseCode.PROTOCOL_VIOLATION, "final size changed");
    }
    if (finalSize < recv.highest || finalSize > st.localMax) {
      throw new ProtocolError(CloseCode.PROTOCOL_VIOLATION, "bad final size");
    }
    if (st.peerReset) return;
    st.peerReset = true;
    recv.finalSize = finalSize;
    this.sessionReceived += finalSize - recv.highest;
    recv.highest = finalSize;
    if (!st.resetSent) {
      this.consumeSession(recv.discard());
      recv.readOffset = finalSize;
      if (!sendComplete(st)) this.sendReset(st, ResetCode.CANCELLED);
    } else {
      this.consumeSession(finalSize - recv.readOffset);
      recv.readOffset = recv.contiguous = finalSize;
    }
    this.events.push({ type: "readable", id: st.id });
    if (st.writeWanted) this.events.push({ type: "writable", id: st.id });
    st.readWanted = st.writeWanted = false;
    this.maybeRemove(st);
  }

  /** @internal frame handler */
  onMaxData(max: number): void {
    if (max > this.peerMaxData) {
      this.peerMaxData = max;
      this.requeueAllBlocked();
    }
  }

  /** @internal frame handler */
  onMaxStreamData(id: number, max: number): void {
    const st = this.streamForFrame(id);
    if (!st) return;
    if (max > st.peerMax) {
      st.peerMax = max;
      if (st.send.hasPending) this.enqueue(st);
    }
  }

  /** @internal frame handler */
  onDatagram(data: Uint8Array): void {
    this.events.push({ type: "datagram", data: data.slice() });
  }

  /** @internal frame handler */
  onClose(code: number, reason: string): void {
    this.finishClose(code, reason, true);
  }

  // ------------------------------------------------------------ streams

  /** Opens a stream; returns its id, or -1 if the session is closing or the peer's limit is reached. */
  openStream(): number {
    if (this.state !== "open" || this.goingAway) return -1;
    if (this.localStreamCount >= this.peerMaxStreams) return -1;
    const id = this.nextLocalId;
    this.nextLocalId += 2;
    this.streams.set(id, this.newStream(id, false));
    this.localStreamCount++;
    return id;
  }

  /** Queues bytes on a stream; returns how many were taken (0 when full: wait for `writable`). */
  streamWrite(id: number, data: Uint8Array): number {
    const st = this.streams.get(id);
    if (!st || st.finWritten || st.resetSent || st.peerReset || this.state !== "open") return -1;
    const n = st.send.write(data);
    if (n < data.length) st.writeWanted = true;
    if (n > 0) this.enqueue(st);
    return n;
  }

  /** Room in a stream's send buffer (0 for unknown or finished streams). */
  streamWritable(id: number): number {
    const st = this.streams.get(id);
    if (!st || st.finWritten || st.resetSent || st.peerReset) return 0;
    return st.send.room;
  }

  /** Ends the stream's sending direction after what was written (FIN). */
  streamFinish(id: number): void {
    const st = this.streams.get(id);
    if (!st || st.finWritten || st.resetSent || st.peerReset) return;
    st.finWritten = true;
    st.finPending = true;
    this.enqueue(st);
  }

  /** Reads ready bytes into `out`: a count, or a {@link ReadResult}. */
  streamRead(id: number, out: Uint8Array): number {
    const st = this.streams.get(id);
    if (!st) return ReadResult.RESET;
    if (st.peerReset || st.resetSent) return ReadResult.RESET;
    const recv = st.recv;
    if (recv.readable === 0) {
      if (recv.finished) {
        this.maybeRemove(st);
        return ReadResult.END;
      }
      st.readWanted = true;
      return ReadResult.WOULD_BLOCK;
    }
    const n = recv.read(out);
    this.consumeSession(n);
    if (st.localMax - recv.readOffset < this.config.maxStreamData / 2 && recv.finalSize < 0) {
      st.localMax = recv.readOffset + this.config.maxStreamData;
      st.maxStreamDataPending = true;
      this.enqueueControl(st);
    }
    return n;
  }

  /** Abandons a stream in both directions, telling the peer with `code`. */
  streamReset(id: number, code: number = ResetCode.CANCELLED): void {
    const st = this.streams.get(id);
    if (!st) return;
    if (st.peerReset) {
      this.maybeRemove(st);
      return;
    }
    if (!st.resetSent && !(sendComplete(st) && st.recv.finished)) {
      // Send RESET_STREAM even when our sending side already completed: it is
      // the only signal that stops the peer's direction (final size = our FIN).
      this.sendReset(st, code);
      const recv = st.recv;
      this.consumeSession(recv.discard());
    }
    st.readWanted = st.writeWanted = false;
    this.maybeRemove(st);
  }

  private sendReset(st: StreamState, code: number): void {
    st.resetSent = true;
    st.resetPending = true;
    st.resetCode = code;
    st.send.discard();
    st.finPending = false;
    this.enqueueControl(st);
  }

  /**
   * Sends a PING soon, even past a full congestion window (elicits an ack:
   * liveness checks, path changes).
   */
  ping(): void {
    if (this.state !== "open") return;
    this.pingPending = true;
    if (this.probes === 0) this.probes = 1;
  }

  /**
   * Send time (ms) of the first ack-eliciting packet sent since the last
   * authenticated packet arrived: how long the peer has left us unanswered.
   * Infinity when nothing waits for an answer.
   */
  get unansweredSince(): number {
    return this.unanswered;
  }

  /** Queues an unreliable datagram; false if it can never fit a packet or the session is closed. */
  sendDatagram(data: Uint8Array): boolean {
    if (this.state !== "open" || data.length > this.maxDatagramPayload) return false;
    if (this.datagrams.length >= this.config.datagramQueue) {
      this.datagrams.shift();
      this.stats.datagramsDropped++;
    }
    this.datagrams.push(data);
    return true;
  }

  /** Next event, or undefined. */
  pollEvent(): SessionEvent | undefined {
    if (this.eventHead >= this.events.length) {
      if (this.eventHead > 0) {
        this.events.length = 0;
        this.eventHead = 0;
      }
      return undefined;
    }
    const ev = this.events[this.eventHead];
    this.events[this.eventHead++] = undefined as unknown as SessionEvent;
    return ev;
  }

  /** Closes the session now with a code and a reason the peer will see. */
  close(code: number = CloseCode.NORMAL, reason = ""): void {
    if (this.state !== "open") return;
    this.state = "closing";
    this.closeCode = code;
    this.closeReason = reason;
  }

  /** Graceful close: no new streams; closes once every stream finished. */
  shutdown(code: number = CloseCode.NORMAL, reason = ""): void {
    this.goingAway = true;
    this.closeCode = code;
    this.closeReason = reason;
    if (this.streams.size === 0) this.close(code, reason);
  }

  // ------------------------------------------------------------- output

  /**
   * Writes the next datagram to send into `out` (at least `maxDatagramSize`
   * bytes) and returns its length, or 0 when nothing may be sent now.
   */
  pollTransmit(now: number, out: Uint8Array): number {
    if (this.state === "closed") return 0;
    if (this.state === "closing") {
      let pos = writeClose(this.plain, 0, this.closeCode, this.closeReason);
      pos = this.pad(pos);
      const len = this.seal(pos, out);
      this.finishClose(this.closeCode, this.closeReason, false);
      return len;
    }
    if (this.nextPn >= 2 ** 52) {
      this.close(CloseCode.EXHAUSTED, "packet numbers exhausted");
      return this.pollTransmit(now, out);
    }
    const ackDue = this.ackElicitingSinceAck > 0 &&
      (this.ackImmediate || this.ackElicitingSinceAck >= 2 || now >= this.ackDeadline);
    const mss = this.config.maxDatagramSize;
    const cwndOpen = this.probes > 0 || this.bytesInFlight + mss <= this.cc.cwnd;
    this.refillPacing(now);
    const paceOpen = this.probes > 0 || this.paceTokens >= 0;
    const buf = this.plain;
    const limit = this.maxPlain;
    let pos = 0;
    const frames: SentFrame[] = [];
    if (ackDue || (this.ackElicitingSinceAck > 0 && cwndOpen && paceOpen)) {
      const delay = Math.max(0, Math.round((now - this.largestRecvTime) * 1000));
      pos = writeAck(buf, pos, 200, this.received.starts, this.received.ends, delay);
    }
    const ackEnd = pos;
    if (cwndOpen && paceOpen) {
      pos = this.writeControl(buf, pos, limit, frames);
      pos = this.writeDatagrams(buf, pos, limit);
      pos = this.writeStreams(buf, pos, limit, frames);
      if (this.pingPending && pos === ackEnd && limit - pos > 1) {
        pos = writePing(buf, pos);
        frames.push({ kind: FRAME_PING, id: 0, offset: 0, len: 0, fin: false });
      }
      if (this.pingPending && pos > ackEnd) this.pingPending = false;
      if (this.goingAway && this.streams.size === 0) this.close(this.closeCode, this.closeReason);
    }
    const eliciting = pos > ackEnd;
    if (!eliciting && !ackDue) pos = 0; // an ACK alone waits until it is due
    if (pos === 0) {
      // Only a sender that could have sent and had nothing is application-limited;
      // one held back by the window or the pacer is not (else BBR never leaves startup).
      if (cwndOpen && paceOpen && !this.hasSendable()) this.markAppLimited();
      return 0;
    }
    if (ackEnd > 0) {
      this.ackElicitingSinceAck = 0;
      this.ackDeadline = Infinity;
      this.ackImmediate = false;
    }
    pos = this.pad(pos);
    const pn = this.nextPn;
    const len = this.seal(pos, out);
    if (eliciting) {
      if (this.bytesInFlight === 0) {
        this.firstSentTime = now;
        this.deliveredTime = now;
      }
      this.sent.push({
        pn,
        time: now,
        size: len,
        ackEliciting: true,
        done: false,
        frames,
        delivered: this.delivered,
        deliveredTime: this.deliveredTime,
        firstSentTime: this.firstSentTime,
        appLimited: this.delivered < this.appLimitedUntil,
      });
      this.bytesInFlight += len;
      this.lastAckElicitingSent = now;
      if (this.unanswered === Infinity) this.unanswered = now;
      this.paceTokens -= len;
      if (this.probes > 0) this.probes--;
    }
    this.lastSendTime = now;
    return len;
  }

  private seal(pos: number, out: Uint8Array): number {
    const len = this.protector.seal(this.nextPn++, this.plain.subarray(0, pos), out);
    this.stats.packetsSent++;
    this.stats.bytesSent += len;
    return len;
  }

  private pad(pos: number): number {
    // Round up to a 64-byte bucket, add 0..31 bytes of jitter, stay within the MTU.
    let r = this.rand;
    r ^= r << 13;
    r ^= r >>> 17;
    r ^= r << 5;
    this.rand = r;
    let target = Math.ceil(Math.max(pos, MIN_PLAINTEXT) / 64) * 64 + ((r >>> 0) & 31);
    if (target > this.maxPlain) target = this.maxPlain;
    if (target < MIN_PLAINTEXT) target = MIN_PLAINTEXT;
    if (target > pos) this.plain.fill(0, pos, target);
    return Math.max(target, pos);
  }

  private refillPacing(now: number): void {
    const rate = this.cc.pacingRate;
    const burst = Math.max(16 * this.config.maxDatagramSize, rate * 2);
    this.paceTokens = Math.min(burst, this.paceTokens + (now - this.paceTime) * rate);
    this.paceTime = now;
  }

  private markAppLimited(): void {
    if (this.bytesInFlight < this.cc.cwnd) {
      this.appLimitedUntil = this.delivered + this.bytesInFlight + 1;
    }
  }

  private writeControl(buf: Uint8Array, pos: number, limit: number, frames: SentFrame[]): number {
    if (this.maxDataPending && limit - pos >= 9) {
      pos = writeMaxData(buf, pos, this.localMaxData);
      frames.push({ kind: FRAME_MAX_DATA, id: 0, offset: 0, len: 0, fin: false });
      this.maxDataPending = false;
    }
    const q = this.controlQueue;
    let i = 0;
    for (; i < q.length; i++) {
      const st = q[i];
      if (limit - pos < 30) break;
      st.controlQueued = false;
      if (st.resetPending) {
        pos = writeResetStream(buf, pos, st.id, st.resetCode, st.send.nextSend);
        frames.push({ kind: FRAME_RESET, id: st.id, offset: 0, len: 0, fin: false });
        st.resetPending = false;
      }
      if (st.maxStreamDataPending) {
        if (!st.resetSent && !st.peerReset) {
          pos = writeMaxStreamData(buf, pos, st.id, st.localMax);
          frames.push({ kind: FRAME_MAX_STREAM_DATA, id: st.id, offset: 0, len: 0, fin: false });
        }
        st.maxStreamDataPending = false;
      }
    }
    if (i > 0) q.splice(0, i);
    return pos;
  }

  private writeDatagrams(buf: Uint8Array, pos: number, limit: number): number {
    const q = this.datagrams;
    let i = 0;
    while (i < q.length && datagramFrameSize(q[i].length) <= limit - pos) {
      pos = writeDatagram(buf, pos, q[i++]);
    }
    if (i > 0) q.splice(0, i);
    return pos;
  }

  private writeStreams(buf: Uint8Array, pos: number, limit: number, frames: SentFrame[]): number {
    const q = this.sendQueue;
    let visited = 0;
    while (q.length > 0 && visited < q.length && limit - pos > 24) {
      const st = q.shift()!;
      st.queued = false;
      pos = this.writeStreamFrame(st, buf, pos, limit, frames);
      if (this.streamHasSendable(st)) {
        st.queued = true;
        q.push(st);
        visited++;
      }
    }
    return pos;
  }

  private streamHasSendable(st: StreamState): boolean {
    if (st.resetSent || st.peerReset) return false;
    const s = st.send;
    if (!s.lost.empty) return true;
    if (s.nextSend < s.writeOffset) {
      return s.nextSend < st.peerMax && this.sessionSent < this.peerMaxData;
    }
    return st.finPending;
  }

  private writeStreamFrame(
    st: StreamState,
    buf: Uint8Array,
    pos: number,
    limit: number,
    frames: SentFrame[],
  ): number {
    if (st.resetSent || st.peerReset) return pos;
    const s = st.send;
    const room = limit - pos;
    if (!s.lost.empty) {
      const start = s.lost.starts[0];
      const end = s.lost.ends[0];
      const hdr = streamHeaderSize(st.id, start, Math.min(end - start, room));
      const len = Math.min(end - start, room - hdr);
      if (len <= 0) return pos;
      const fin = st.finWritten && start + len === s.writeOffset;
      pos = writeStreamHeader(buf, pos, st.id, start, len, fin);
      s.copyTo(start, len, buf, pos);
      s.lost.remove(start, start + len);
      if (fin) st.finPending = false;
      frames.push({ kind: FRAME_STREAM, id: st.id, offset: start, len, fin });
      this.stats.retransmittedBytes += len;
      return pos + len;
    }
    const avail = Math.min(
      s.writeOffset - s.nextSend,
      st.peerMax - s.nextSend,
      this.peerMaxData - this.sessionSent,
    );
    if (avail > 0) {
      const hdr = streamHeaderSize(st.id, s.nextSend, Math.min(avail, room));
      const len = Math.min(avail, room - hdr);
      if (len <= 0) return pos;
      const start = s.nextSend;
      const fin = st.finWritten && start + len === s.writeOffset;
      pos = writeStreamHeader(buf, pos, st.id, start, len, fin);
      s.copyTo(start, len, buf, pos);
      s.nextSend += len;
      this.sessionSent += len;
      if (fin) st.finPending = false;
      frames.push({ kind: FRAME_STREAM, id: st.id, offset: start, len, fin });
      return pos + len;
    }
    if (st.finPending && s.nextSend === s.writeOffset) {
      if (room < streamHeaderSize(st.id, s.nextSend, 0)) return pos;
      pos = writeStreamHeader(buf, pos, st.id, s.nextSend, 0, true);
      st.finPending = false;
      frames.push({ kind: FRAME_STREAM, id: st.id, offset: s.nextSend, len: 0, fin: true });
    }
    return pos;
  }

  // -------------------------------------------------------------- timers

  /** Absolute time (ms) at which {@link handleTimeout} must run; Infinity if never. */
  nextTimeout(): number {
    if (this.state === "closed") return Infinity;
    if (this.state === "closing") return 0;
    let t = this.lastRecv + this.config.idleTimeout;
    if (this.ackElicitingSinceAck > 0) t = Math.min(t, this.ackDeadline);
    if (this.lossTime < t) t = this.lossTime;
    if (this.bytesInFlight > 0) t = Math.min(t, this.ptoDeadline());
    t = Math.min(t, this.lastAckElicitingSent + this.config.keepalive);
    if (
      this.unanswered !== Infinity && !this.silentReported && this.config.unresponsiveTimeout > 0
    ) {
      t = Math.min(t, this.unanswered + this.unresponsiveDelay());
    }
    if (this.peerSpoke && this.bytesInFlight === 0 && this.config.silenceProbe > 0) {
      t = Math.min(t, this.lastRecv + this.silenceDelay());
    }
    if (this.hasSendable() && this.paceTokens < 0) {
      t = Math.min(t, this.paceTime + -this.paceTokens / Math.max(this.cc.pacingRate, 1e-3));
    }
    return t;
  }

  /** True when stream data, datagrams or control frames wait to be sent. */
  hasSendable(): boolean {
    return this.sendQueue.length > 0 || this.controlQueue.length > 0 ||
      this.datagrams.length > 0 || this.maxDataPending || this.pingPending;
  }

  private ptoDeadline(): number {
    return this.lastAckElicitingSent + this.rtt.pto(this.config.maxAckDelay) * 2 ** this.ptoCount;
  }

  private unresponsiveDelay(): number {
    return Math.max(3 * this.rtt.pto(this.config.maxAckDelay), this.config.unresponsiveTimeout);
  }

  private silenceDelay(): number {
    return Math.max(2 * this.rtt.pto(this.config.maxAckDelay), this.config.silenceProbe);
  }

  /** Runs expired timers: idle timeout, loss detection, probes, keepalive, liveness. */
  handleTimeout(now: number): void {
    if (this.state !== "open") return;
    if (now >= this.lastRecv + this.config.idleTimeout) {
      this.finishClose(CloseCode.IDLE_TIMEOUT, "idle timeout", false);
      return;
    }
    if (now >= this.lossTime) this.detectLost(now);
    if (this.bytesInFlight > 0 && now >= this.ptoDeadline()) {
      this.ptoCount = Math.min(this.ptoCount + 1, 8);
      this.probes = 2;
      this.requeueOldest(2);
      this.pingPending = true;
      this.lastAckElicitingSent = now;
    }
    if (now >= this.lastAckElicitingSent + this.config.keepalive) {
      this.pingPending = true;
    }
    if (
      this.peerSpoke && this.bytesInFlight === 0 && this.config.silenceProbe > 0 &&
      now >= this.lastRecv + this.silenceDelay()
    ) {
      this.peerSpoke = false;
      this.pingPending = true;
    }
    if (
      this.unanswered !== Infinity && !this.silentReported && this.config.unresponsiveTimeout > 0 &&
      now >= this.unanswered + this.unresponsiveDelay()
    ) {
      this.silentReported = true;
      this.events.push({ type: "unresponsive", since: this.unanswered });
    }
  }

  // ------------------------------------------------------- loss recovery

  private findSent(pn: number): number {
    let lo = this.sentHead;
    let hi = this.sent.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.sent[mid].pn < pn) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private compactSent(): void {
    while (this.sentHead < this.sent.length && this.sent[this.sentHead].done) this.sentHead++;
    if (this.sentHead > 1024 && this.sentHead * 2 > this.sent.length) {
      this.sent = this.sent.slice(this.sentHead);
      this.sentHead = 0;
    } else if (this.sentHead === this.sent.length) {
      this.sent.length = 0;
      this.sentHead = 0;
    }
  }

  private detectLost(now: number): void {
    this.lossTime = Infinity;
    const delay = Math.max(1.125 * Math.max(this.rtt.latest, this.rtt.smoothed), 1);
    let lostBytes = 0;
    for (let i = this.sentHead; i < this.sent.length; i++) {
      const p = this.sent[i];
      if (p.pn >= this.largestAcked) break;
      if (p.done) continue;
      if (this.largestAcked - p.pn >= PACKET_THRESHOLD || p.time <= now - delay) {
        p.done = true;
        this.bytesInFlight -= p.size;
        lostBytes += p.size;
        this.stats.packetsLost++;
        for (const f of p.frames) this.onFrameLost(f);
      } else {
        this.lossTime = Math.min(this.lossTime, p.time + delay);
      }
    }
    if (lostBytes > 0) this.cc.onLoss(lostBytes);
    this.compactSent();
  }

  private requeueOldest(count: number): void {
    for (let i = this.sentHead; i < this.sent.length && count > 0; i++) {
      const p = this.sent[i];
      if (p.done) continue;
      count--;
      for (const f of p.frames) this.onFrameLost(f);
    }
  }

  private onFrameAcked(f: SentFrame): void {
    if (f.kind === FRAME_MAX_DATA || f.kind === FRAME_PING) return;
    const st = this.streams.get(f.id);
    if (!st) return;
    if (f.kind === FRAME_STREAM) {
      if (st.resetSent) return;
      const before = st.send.room;
      st.send.onAcked(f.offset, f.offset + f.len);
      if (f.fin) st.finAcked = true;
      if (st.writeWanted && st.send.room > before && st.send.room > 0) {
        st.writeWanted = false;
        this.events.push({ type: "writable", id: st.id });
      }
      if (sendComplete(st)) this.maybeRemove(st);
    } else if (f.kind === FRAME_RESET) {
      st.resetAcked = true;
      this.maybeRemove(st);
    }
  }

  private onFrameLost(f: SentFrame): void {
    if (f.kind === FRAME_MAX_DATA) {
      this.maxDataPending = true;
      return;
    }
    if (f.kind === FRAME_PING) return;
    const st = this.streams.get(f.id);
    if (!st) return;
    if (f.kind === FRAME_STREAM) {
      if (st.resetSent || st.peerReset) return;
      if (f.len > 0) st.send.onLost(f.offset, f.offset + f.len);
      if (f.fin) st.finPending = true;
      if (st.send.hasPending || st.finPending) this.enqueue(st);
    } else if (f.kind === FRAME_RESET) {
      if (!st.resetAcked) {
        st.resetPending = true;
        this.enqueueControl(st);
      }
    } else if (f.kind === FRAME_MAX_STREAM_DATA) {
      if (!st.peerReset && !st.resetSent && st.recv.finalSize < 0) {
        st.maxStreamDataPending = true;
        this.enqueueControl(st);
      }
    }
  }

  // ------------------------------------------------------------ helpers

  private newStream(id: number, peerInitiated: boolean): StreamState {
    return {
      id,
      send: new SendBuffer(this.config.sendBuffer),
      recv: new RecvBuffer(),
      peerMax: this.peerMaxStreamData,
      localMax: this.config.maxStreamData,
      finWritten: false,
      finPending: false,
      finAcked: false,
      resetSent: false,
      resetPending: false,
      resetAcked: false,
      resetCode: 0,
      peerReset: false,
      maxStreamDataPending: false,
      queued: false,
      controlQueued: false,
      readWanted: false,
      writeWanted: false,
      peerInitiated,
    };
  }

  private streamForFrame(id: number): StreamState | undefined {
    const st = this.streams.get(id);
    if (st) return st;
    const peerBit = this.isClient ? 1 : 0;
    if ((id & 1) !== peerBit) {
      if (id >= this.nextLocalId) {
        throw new ProtocolError(CloseCode.PROTOCOL_VIOLATION, "frame for unopened stream");
      }
      return undefined; // closed
    }
    if (id <= this.highestPeerId) return undefined; // closed
    if (this.goingAway || this.state !== "open") return undefined;
    const count = (id - this.highestPeerId) / 2;
    if (count > this.config.maxStreams) {
      throw new ProtocolError(CloseCode.LIMIT_REACHED, "stream id jump");
    }
    let last: StreamState | undefined;
    for (let sid = this.highestPeerId + 2; sid <= id; sid += 2) {
      last = this.newStream(sid, true);
      this.streams.set(sid, last);
      if (this.peerStreamCount >= this.config.maxStreams) {
        this.sendReset(last, ResetCode.REFUSED);
      } else {
        this.peerStreamCount++;
        this.events.push({ type: "stream", id: sid });
      }
    }
    this.highestPeerId = id;
    return last;
  }

  private maybeRemove(st: StreamState): void {
    const sendDone = st.resetSent ? st.resetAcked : sendComplete(st) || st.peerReset;
    const recvDone = st.recv.finalSize >= 0 &&
      (st.recv.readOffset >= st.recv.finalSize || st.resetSent || st.peerReset);
    if (!sendDone || !recvDone) return;
    if (!this.streams.delete(st.id)) return;
    if (st.peerInitiated) this.peerStreamCount--;
    else this.localStreamCount--;
    if (st.readWanted) this.events.push({ type: "readable", id: st.id });
    if (this.goingAway && this.streams.size === 0) this.close(this.closeCode, this.closeReason);
  }

  private consumeSession(n: number): void {
    if (n <= 0) return;
    this.sessionConsumed += n;
    if (this.localMaxData - this.sessionConsumed < this.config.maxData / 2) {
      this.localMaxData = this.sessionConsumed + this.config.maxData;
      this.maxDataPending = true;
    }
  }

  private enqueue(st: StreamState): void {
    if (!st.queued) {
      st.queued = true;
      this.sendQueue.push(st);
    }
  }

  private enqueueControl(st: StreamState): void {
    if (!st.controlQueued) {
      st.controlQueued = true;
      this.controlQueue.push(st);
    }
  }

  private requeueAllBlocked(): void {
    for (const st of this.streams.values()) {
      if (st.send.nextSend < st.send.writeOffset) this.enqueue(st);
    }
  }

  private finishClose(code: number, reason: string, remote: boolean): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.closeCode = code;
    this.closeReason = reason;
    for (const st of this.streams.values()) {
      if (st.readWanted) this.events.push({ type: "readable", id: st.id });
      if (st.writeWanted) this.events.push({ type: "writable", id: st.id });
    }
    this.events.push({ type: "closed", code, reason, remote });
  }

  /** Close code and reason once closed. */
  get closeInfo(): { code: number; reason: string } {
    return { code: this.closeCode, reason: this.closeReason };
  }
}

/** True when the FIN and every byte before it were acknowledged. */
function sendComplete(st: StreamState): boolean {
  return st.finAcked && st.send.ackedPrefix === st.send.writeOffset;
}

/** A peer broke the protocol inside an authenticated packet: the session closes. */
class ProtocolError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

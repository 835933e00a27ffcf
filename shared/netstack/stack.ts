/**
 * The userspace TCP/IP stack's front door, sans-I/O like `shared/session/session.ts`: fed
 * whole IP packets from a TUN device and the current time, it gives back packets to write
 * to the device ({@link Stack.poll}), events ({@link Stack.pollEvent}) and its next
 * deadline ({@link Stack.nextDeadline} / {@link Stack.handleTimeout}). It owns no socket
 * and no timer, never reads the clock, returns no promise.
 *
 * - IPv4 (fragments reassembled by `reassembly.ts`) and IPv6 (extension headers walked by
 *   the wire layer, fragments reassembled too); IP, TCP and UDP checksums verified on input,
 *   computed on output.
 * - TCP: every connection the application opens becomes a `tcp-syn` event; the embedder
 *   dials its outbound and answers with {@link Stack.accept} (SYN-ACK) or
 *   {@link Stack.refuse} (RST or ICMP unreachable). Then byte streams: {@link Stack.read},
 *   {@link Stack.write}, {@link Stack.close} (FIN), {@link Stack.abort} (RST). The state
 *   machine is `tcp/connection.ts`.
 * - UDP: full-cone flows (`udp_flows.ts`): `udp` events out, {@link Stack.sendUdp} in.
 * - ICMP: echo requests to any address answered here unless {@link StackOptions.echoPolicy}
 *   says no; "fragmentation needed" / "packet too big" for packets over the MTU and UDP
 *   datagrams over what the tunnel carries; port unreachable for refused flows.
 *
 * Input is untrusted: malformed packets are dropped and reported as a {@link InputResult}
 * (never a throw). Memory is bounded: connections, pending SYNs, TIME-WAITs, UDP flows,
 * queued packets and events, reassembly bytes, and per connection its two rings.
 * @module
 */

import { IpPacket, parseIp } from "./wire/packet.ts";
import { emitIpHeader, ipHeaderLength, type IpRepr } from "./wire/packet.ts";
import { parseTcp, TcpFlags, TcpSegment } from "./wire/tcp.ts";
import { emitTcp } from "./wire/tcp.ts";
import { emitUdp, parseUdp, UdpDatagram } from "./wire/udp.ts";
import {
  buildEchoReply,
  buildIcmpError,
  ICMP_ERROR_MAX_LENGTH,
  IcmpErrorKind,
  Icmpv4Type,
  Icmpv6Type,
} from "./wire/icmp.ts";
import { IpProtocol } from "./wire/ip_protocol.ts";
import { isUnicast } from "./wire/address.ts";
import type { WireError } from "./wire/error.ts";
import { Reassembler, type ReassemblerOptions } from "./reassembly.ts";
import { defaultTcpConfig, type TcpConfig } from "./tcp/config.ts";
import { type SynInfo, TcpConnection, type TcpHost, TcpState } from "./tcp/connection.ts";
import { endpointKey, UdpFlows } from "./udp_flows.ts";
import { type InputResult, ReadResult, type StackEvent } from "./events.ts";

export { ReadResult, TcpState };
export type { InputResult, StackEvent };

/** Settings of a {@link Stack}; every field has a default. */
export interface StackOptions {
  /** MTU of the device (packets we send and the MSS we announce). Default 1500. */
  mtu?: number;
  /** TCP settings (see `tcp/config.ts`). */
  tcp?: Partial<TcpConfig>;
  /** TCP connections at once (all states but TIME-WAIT). Default 1024. */
  maxConnections?: number;
  /** SYNs waiting for `accept` / `refuse`. Over it new SYNs are dropped. Default 128. */
  maxSynQueue?: number;
  /** Ms a SYN waits for the embedder before it is answered with a RST. Default 30000. */
  synTimeout?: number;
  /** Connections in TIME-WAIT at once; over it the oldest is dropped. Default 256. */
  maxTimeWait?: number;
  /** UDP mappings at once. Default 1024. */
  udpMaxFlows?: number;
  /** Idle ms before a UDP mapping expires. Default 60000. */
  udpIdleTimeout?: number;
  /**
   * Largest UDP payload the tunnel carries: a datagram from the application over it gets
   * "fragmentation needed" / "packet too big". Default: what the MTU allows.
   */
  udpMaxPayload?: number;
  /**
   * The same for IPv6 datagrams, when it differs (a relay header carrying the destination
   * address is larger for IPv6). Default: {@link udpMaxPayload}.
   */
  udpMaxPayload6?: number;
  /** Says whether an echo request from `src` to `dst` is answered. Default: always. */
  echoPolicy?: (src: Uint8Array, dst: Uint8Array) => boolean;
  /** Random numbers in [0, 1) for initial sequence numbers. Default: WebCrypto. */
  random?: () => number;
  /** Control packets (RST, ICMP, UDP replies) queued for {@link Stack.poll}. Default 512. */
  maxQueuedPackets?: number;
  /** Events queued for {@link Stack.pollEvent}; over it UDP datagrams are dropped. Default 4096. */
  maxQueuedEvents?: number;
  /** Fragment reassembly bounds. */
  reassembly?: ReassemblerOptions;
}

/** Counters of a {@link Stack}. */
export interface StackStats {
  /** Packets given to {@link Stack.input}. */
  packetsIn: number;
  /** Packets returned by {@link Stack.poll}. */
  packetsOut: number;
  /** Input dropped as malformed (any {@link WireError}). */
  malformed: number;
  /** Input dropped otherwise (not for us, limits, unknown protocol). */
  dropped: number;
  /** SYNs dropped because the SYN queue was full. */
  synDropped: number;
  /** SYNs refused (RST) because the connection table was full. */
  synRefused: number;
  /** RSTs sent for segments of no connection. */
  resetsSent: number;
  /** ICMP errors sent. */
  icmpErrors: number;
  /** Echo replies sent. */
  echoReplies: number;
  /** UDP datagrams to the embedder. */
  udpIn: number;
  /** UDP datagrams from the embedder. */
  udpOut: number;
  /** UDP datagrams dropped (event queue full, too big). */
  udpDropped: number;
  /** Packets whose processing hit a bug (an exception caught at the door); should stay 0. */
  internalErrors: number;
}

/** Per-packet facts the device knows (a vnet-hdr TUN with offload, see docs/tun.md). */
export interface InputOptions {
  /**
   * The transport checksum is partial or already verified (`CSUM_PARTIAL` /
   * `CSUM_VALID`): skip its verification. Such a packet may also be a GSO super-segment
   * larger than the MTU, which is then processed as one segment.
   */
  checksumOffloaded?: boolean;
}

/** How {@link Stack.refuse} answers the application. */
export type RefuseMode = "reset" | "unreachable";

const UNKNOWN = Symbol("unknown");

function defaultRandom(): number {
  const b = new Uint32Array(1);
  crypto.getRandomValues(b);
  return b[0] / 4294967296;
}

/** The stack (see the module doc). */
export class Stack implements TcpHost {
  /** Device MTU. */
  readonly mtu: number;
  /** TCP settings in force. */
  readonly tcpConfig: TcpConfig;
  /** Counters. */
  readonly stats: StackStats = {
    packetsIn: 0,
    packetsOut: 0,
    malformed: 0,
    dropped: 0,
    synDropped: 0,
    synRefused: 0,
    resetsSent: 0,
    icmpErrors: 0,
    echoReplies: 0,
    udpIn: 0,
    udpOut: 0,
    udpDropped: 0,
    internalErrors: 0,
  };

  readonly #maxConns: number;
  readonly #maxSyn: number;
  readonly #synTimeout: number;
  readonly #maxTw: number;
  readonly #maxQueued: number;
  readonly #maxEvents: number;
  #udpMaxPayload: number;
  #udpMaxPayload6: number;
  readonly #echoPolicy: (src: Uint8Array, dst: Uint8Array) => boolean;
  readonly #random: () => number;

  readonly #ip: IpPacket;
  readonly #ip2: IpPacket;
  readonly #seg = new TcpSegment();
  readonly #udp = new UdpDatagram();
  readonly #reasm: Reassembler;
  readonly #udpFlows: UdpFlows;

  /** TCP connections by 4-tuple key. */
  readonly #byTuple = new Map<number | string, Map<number | string, TcpConnection>>();
  readonly #byFlow = new Map<number, TcpConnection>();
  readonly #synCopies = new Map<number, Uint8Array>();
  readonly #pending = new Set<TcpConnection>();
  readonly #timeWait = new Set<TcpConnection>();
  readonly #active = new Set<TcpConnection>();
  #nextFlow = 1;

  readonly #events: StackEvent[] = [];
  #eventHead = 0;
  readonly #queue: Uint8Array[] = [];
  readonly #queueLen: number[] = [];
  #queueHead = 0;
  readonly #pool: Uint8Array[] = [];
  readonly #scratch: Uint8Array;

  /** Creates a stack (see {@link StackOptions}). */
  constructor(opts: StackOptions = {}) {
    this.mtu = Math.max(576, Math.min(opts.mtu ?? 1500, 65535));
    this.tcpConfig = { ...defaultTcpConfig, ...opts.tcp };
    this.#maxConns = opts.maxConnections ?? 1024;
    this.#maxSyn = opts.maxSynQueue ?? 128;
    this.#synTimeout = opts.synTimeout ?? 30_000;
    this.#maxTw = opts.maxTimeWait ?? 256;
    this.#maxQueued = opts.maxQueuedPackets ?? 512;
    this.#maxEvents = opts.maxQueuedEvents ?? 4096;
    this.#udpMaxPayload = opts.udpMaxPayload ?? this.mtu - 28;
    this.#udpMaxPayload6 = opts.udpMaxPayload6 ?? this.#udpMaxPayload;
    this.#echoPolicy = opts.echoPolicy ?? (() => true);
    this.#random = opts.random ?? defaultRandom;
    this.#reasm = new Reassembler({ maxDatagramSize: 65535, ...opts.reassembly });
    this.#udpFlows = new UdpFlows({
      maxFlows: opts.udpMaxFlows,
      idleTimeout: opts.udpIdleTimeout,
    });
    this.#ip = new IpPacket();
    this.#ip2 = new IpPacket();
    this.#scratch = new Uint8Array(Math.max(this.mtu, ICMP_ERROR_MAX_LENGTH) + 64);
  }

  // ------------------------------------------------------------------ introspection

  /** TCP connections held (TIME-WAIT and pending SYNs included). */
  get connectionCount(): number {
    return this.#byFlow.size;
  }

  /** SYNs waiting for the embedder. */
  get pendingSynCount(): number {
    return this.#pending.size;
  }

  /** Connections in TIME-WAIT. */
  get timeWaitCount(): number {
    return this.#timeWait.size;
  }

  /** UDP mappings held. */
  get udpFlowCount(): number {
    return this.#udpFlows.size;
  }

  /** Bytes buffered in every connection's rings, plus queued packets and reassembly. */
  get bufferedBytes(): number {
    let n = this.#reasm.bytesHeld;
    for (const c of this.#byFlow.values()) n += c.bufferedBytes;
    for (let i = this.#queueHead; i < this.#queue.length; i++) n += this.#queueLen[i];
    return n;
  }

  /** Bytes allocated for connection rings. */
  get allocatedBytes(): number {
    let n = 0;
    for (const c of this.#byFlow.values()) n += c.allocatedBytes;
    return n;
  }

  /** The connection of a TCP flow (for inspection and tests), or undefined. */
  connection(flow: number): TcpConnection | undefined {
    return this.#byFlow.get(flow);
  }

  /** Largest UDP payload the tunnel carries (see {@link StackOptions.udpMaxPayload}). */
  get udpMaxPayload(): number {
    return this.#udpMaxPayload;
  }

  /**
   * Sets {@link udpMaxPayload} (the tunnel's datagram room changed), for both families: set
   * {@link udpMaxPayload6} afterwards when IPv6's differs.
   */
  set udpMaxPayload(n: number) {
    this.#udpMaxPayload = Math.max(0, Math.min(n, this.mtu - 28));
    this.#udpMaxPayload6 = this.#udpMaxPayload;
  }

  /** Largest UDP payload of an IPv6 datagram the tunnel carries (see {@link udpMaxPayload}). */
  get udpMaxPayload6(): number {
    return this.#udpMaxPayload6;
  }

  /** Sets {@link udpMaxPayload6} alone. */
  set udpMaxPayload6(n: number) {
    this.#udpMaxPayload6 = Math.max(0, Math.min(n, this.mtu - 28));
  }

  // ------------------------------------------------------------------ TcpHost

  /** Queues an event (called by connections). @internal */
  event(ev: StackEvent): void {
    this.#events.push(ev);
  }

  /** Marks a connection as having output (called by connections). @internal */
  wake(c: TcpConnection): void {
    this.#active.add(c);
  }

  /** Bounds TIME-WAIT (called by connections entering it). @internal */
  timeWait(c: TcpConnection): void {
    this.#timeWait.add(c);
    if (this.#timeWait.size > this.#maxTw) {
      for (const old of this.#timeWait) {
        this.#timeWait.delete(old);
        old.abort(); // no RST from TIME-WAIT: just forget it
        this.#remove(old);
        break;
      }
    }
  }

  // ------------------------------------------------------------------ input

  /**
   * Takes one IP packet from the device. The packet's bytes are not kept (what must
   * outlive the call is copied). Returns what was done with it; never throws on input.
   */
  input(packet: Uint8Array, now: number, opts?: InputOptions): InputResult {
    this.stats.packetsIn++;
    this.#offloaded = opts?.checksumOffloaded === true;
    try {
      return this.#input(packet, now);
    } catch (e) {
      // A bug, not input to tolerate: counted (tests assert 0), the packet dropped, the
      // daemon and the other flows kept.
      this.stats.internalErrors++;
      if (this.stats.internalErrors === 1) console.error("netstack: internal error", e);
      return "dropped";
    }
  }

  #offloaded = false;

  #input(packet: Uint8Array, now: number): InputResult {
    let ip = parseIp(packet, this.#ip);
    if (typeof ip === "string") return this.#malformed(ip);
    if (ip.isFragment) {
      const whole = ip.version === 4
        ? this.#reasm.push(ip.v4, now)
        : this.#reasm.pushIpv6(ip.v6, now);
      if (whole === null) return "held";
      if (typeof whole === "string") return this.#malformed(whole);
      ip = parseIp(whole, this.#ip2);
      if (typeof ip === "string") return this.#malformed(ip);
    }
    if (!isUnicast(ip.src) || !isUnicast(ip.dst)) return this.#drop();
    switch (ip.protocol) {
      case IpProtocol.Tcp:
        return this.#inputTcp(ip, now);
      case IpProtocol.Udp:
        return this.#inputUdp(ip, now);
      case IpProtocol.Icmp:
        return ip.version === 4 ? this.#inputIcmp(ip, Icmpv4Type.EchoRequest) : this.#drop();
      case IpProtocol.Icmpv6:
        return ip.version === 6 ? this.#inputIcmp(ip, Icmpv6Type.EchoRequest) : this.#drop();
      case IpProtocol.NoNextHeader:
      case IpProtocol.Esp:
        return this.#drop();
      default:
        this.#icmpError(ip.buf, IcmpErrorKind.ProtocolUnreachable, 0);
        return this.#drop();
    }
  }

  #malformed(e: WireError): WireError {
    this.stats.malformed++;
    return e;
  }

  #drop(): "dropped" {
    this.stats.dropped++;
    return "dropped";
  }

  #tooBig(ip: IpPacket, limit: number): boolean {
    if (ip.buf.length <= limit) return false;
    if (ip.version === 6 || ip.v4.dontFragment) {
      this.#icmpError(ip.buf, IcmpErrorKind.PacketTooBig, limit);
      return true;
    }
    return false;
  }

  #inputTcp(ip: IpPacket, now: number): InputResult {
    const seg = parseTcp(ip.payload, ip.src, ip.dst, this.#seg, OFFLOADED[+this.#offloaded]);
    if (typeof seg === "string") return this.#malformed(seg);
    if (!this.#offloaded && this.#tooBig(ip, this.mtu)) return this.#drop();
    let c = this.#find(ip.src, seg.srcPort, ip.dst, seg.dstPort);
    const f = seg.flags;
    if (
      c && c.state === TcpState.TimeWait && (f & TcpFlags.SYN) && !(f & TcpFlags.ACK)
    ) {
      // A new connection reusing the 4-tuple (RFC 9293 §3.6.1 allows it from TIME-WAIT).
      this.#timeWait.delete(c);
      c.abort();
      this.#remove(c);
      c = undefined;
    }
    if (c) {
      c.onSegment(seg, now);
      if (c.finished) this.#remove(c);
      return "ok";
    }
    if (f & TcpFlags.RST) return this.#drop();
    if ((f & TcpFlags.SYN) && !(f & (TcpFlags.ACK | TcpFlags.FIN))) {
      if (this.#pending.size >= this.#maxSyn) {
        this.stats.synDropped++;
        return this.#drop();
      }
      if (this.#byFlow.size - this.#timeWait.size >= this.#maxConns) {
        this.stats.synRefused++;
        this.#resetFor(ip, seg);
        return "ok";
      }
      this.#openPending(ip, seg, now);
      return "ok";
    }
    this.#resetFor(ip, seg);
    return "ok";
  }

  #openPending(ip: IpPacket, seg: TcpSegment, now: number): void {
    const flow = this.#nextFlow++;
    const syn: SynInfo = {
      seq: seg.seq,
      window: seg.window,
      mss: seg.mss,
      windowScale: seg.windowScale,
      sackPermitted: seg.sackPermitted,
      hasTimestamps: seg.hasTimestamps,
      tsVal: seg.tsVal,
    };
    const local = ip.dst.slice();
    const remote = ip.src.slice();
    const localMss = Math.min(this.mtu - ipHeaderLength(local) - 20, 65495);
    const iss = Math.floor(this.#random() * 4294967296) >>> 0;
    const tsOff = Math.floor(this.#random() * 4294967296) >>> 0;
    const c = new TcpConnection(
      flow,
      local,
      seg.dstPort,
      remote,
      seg.srcPort,
      syn,
      this.tcpConfig,
      this,
      localMss,
      iss,
      tsOff,
    );
    c.synDeadline = now + this.#synTimeout;
    this.#insert(c);
    this.#pending.add(c);
    if (ip.buf.length <= 1500) this.#synCopies.set(flow, ip.buf.slice());
    this.event({
      type: "tcp-syn",
      flow,
      src: remote.slice(),
      srcPort: seg.srcPort,
      dst: local.slice(),
      dstPort: seg.dstPort,
    });
  }

  /** RFC 9293 §3.10.7.1: the answer to a segment of no connection. */
  #resetFor(ip: IpPacket, seg: TcpSegment): void {
    const f = seg.flags;
    const ack = (f & TcpFlags.ACK) !== 0;
    const len = seg.payload.length + ((f & TcpFlags.SYN) ? 1 : 0) + ((f & TcpFlags.FIN) ? 1 : 0);
    const R = RST_REPR;
    R.srcPort = seg.dstPort;
    R.dstPort = seg.srcPort;
    R.seq = ack ? seg.ack : 0;
    R.ack = ack ? 0 : (seg.seq + len) >>> 0;
    R.flags = ack ? TcpFlags.RST : TcpFlags.RST | TcpFlags.ACK;
    R.window = 0;
    const out = this.#scratch;
    const hl = ipHeaderLength(ip.src);
    // Copy the addresses: `ip` views the input, the header goes into our scratch.
    const src = ip.dst.length === 4 ? ADDR4A : ADDR16A;
    const dst = ip.src.length === 4 ? ADDR4B : ADDR16B;
    src.set(ip.dst);
    dst.set(ip.src);
    const tl = emitTcp(R, 0, src, dst, out, hl);
    IP_REPR.src = src;
    IP_REPR.dst = dst;
    IP_REPR.protocol = IpProtocol.Tcp;
    IP_REPR.payloadLength = tl;
    emitIpHeader(IP_REPR, out, 0);
    if (this.#enqueue(out, hl + tl)) this.stats.resetsSent++;
  }

  #inputUdp(ip: IpPacket, now: number): InputResult {
    const d = parseUdp(ip.payload, ip.src, ip.dst, this.#udp, OFFLOADED[+this.#offloaded]);
    if (typeof d === "string") return this.#malformed(d);
    const room = ip.version === 6 ? this.#udpMaxPayload6 : this.#udpMaxPayload;
    if (d.payload.length > room) {
      const limit = room + ipHeaderLength(ip.src) + 8;
      if (ip.version === 6 || ip.v4.dontFragment) {
        this.#icmpError(ip.buf, IcmpErrorKind.PacketTooBig, limit);
      }
      this.stats.udpDropped++;
      return this.#drop();
    }
    if (this.#events.length - this.#eventHead >= this.#maxEvents) {
      this.stats.udpDropped++;
      return this.#drop();
    }
    let fl = this.#udpFlows.find(ip.src, d.srcPort, now);
    if (!fl) {
      const flow = this.#nextFlow++;
      const ev = this.#udpFlows.add(flow, ip.src, d.srcPort, now);
      if (ev) this.event({ type: "udp-closed", flow: ev.flow });
      fl = this.#udpFlows.get(flow)!;
      this.event({ type: "udp-open", flow, src: fl.src.slice(), srcPort: fl.srcPort });
    }
    this.stats.udpIn++;
    this.event({
      type: "udp",
      flow: fl.flow,
      dst: ip.dst.slice(),
      dstPort: d.dstPort,
      payload: d.payload.slice(),
    });
    return "ok";
  }

  #inputIcmp(ip: IpPacket, echoType: number): InputResult {
    const p = ip.payload;
    if (p.length < 8 || p[0] !== echoType) return this.#drop(); // errors, NDP: ignored
    if (!this.#echoPolicy(ip.src, ip.dst)) return this.#drop();
    const out = this.#scratch;
    if (ip.buf.length > out.length) return this.#drop();
    const n = buildEchoReply(ip.buf, out);
    if (typeof n === "string") return this.#malformed(n);
    if (this.#enqueue(out, n)) this.stats.echoReplies++;
    return "ok";
  }

  #icmpError(offending: Uint8Array, kind: IcmpErrorKind, mtu: number): void {
    const out = this.#scratch;
    const n = buildIcmpError(offending, kind, out, { mtu, skipChecksum: true });
    if (typeof n === "string") return;
    if (this.#enqueue(out, n)) this.stats.icmpErrors++;
  }

  #enqueue(pkt: Uint8Array, len: number): boolean {
    if (this.#queue.length - this.#queueHead >= this.#maxQueued) return false;
    let b = this.#pool.pop();
    if (!b || b.length < len) b = new Uint8Array(Math.max(len, this.mtu));
    b.set(pkt.subarray(0, len));
    this.#queue.push(b);
    this.#queueLen.push(len);
    return true;
  }

  // ------------------------------------------------------------------ TCP table

  #find(
    src: Uint8Array,
    srcPort: number,
    dst: Uint8Array,
    dstPort: number,
  ): TcpConnection | undefined {
    return this.#byTuple.get(endpointKey(src, srcPort))?.get(endpointKey(dst, dstPort));
  }

  #insert(c: TcpConnection): void {
    const k1 = endpointKey(c.remote, c.remotePort);
    let m = this.#byTuple.get(k1);
    if (!m) this.#byTuple.set(k1, m = new Map());
    m.set(endpointKey(c.local, c.localPort), c);
    this.#byFlow.set(c.flow, c);
  }

  #remove(c: TcpConnection): void {
    if (this.#byFlow.get(c.flow) !== c) return;
    this.#byFlow.delete(c.flow);
    this.#synCopies.delete(c.flow);
    this.#pending.delete(c);
    this.#timeWait.delete(c);
    this.#active.delete(c);
    const k1 = endpointKey(c.remote, c.remotePort);
    const m = this.#byTuple.get(k1);
    if (m) {
      const k2 = endpointKey(c.local, c.localPort);
      if (m.get(k2) === c) m.delete(k2);
      if (m.size === 0) this.#byTuple.delete(k1);
    }
  }

  #tcp(flow: number): TcpConnection | typeof UNKNOWN {
    return this.#byFlow.get(flow) ?? UNKNOWN;
  }

  // ------------------------------------------------------------------ TCP API

  /** The outbound of a `tcp-syn` flow connected: answer the SYN. False if the flow is gone. */
  accept(flow: number, now: number): boolean {
    const c = this.#tcp(flow);
    if (c === UNKNOWN || c.state !== TcpState.SynPending) return false;
    this.#pending.delete(c);
    this.#synCopies.delete(flow);
    c.accept(now);
    return true;
  }

  /**
   * The outbound of a `tcp-syn` flow failed: answer with a RST ("reset": connection
   * refused) or an ICMP host/port unreachable ("unreachable"). A `closed` event follows.
   */
  refuse(flow: number, how: RefuseMode = "reset", kind: "host" | "port" = "port"): boolean {
    const c = this.#tcp(flow);
    if (c === UNKNOWN || c.state !== TcpState.SynPending) return false;
    if (how === "unreachable") {
      const syn = this.#synCopies.get(flow);
      if (syn) {
        this.#icmpError(
          syn,
          kind === "host" ? IcmpErrorKind.HostUnreachable : IcmpErrorKind.PortUnreachable,
          0,
        );
      }
      c.dropPending("aborted");
    } else {
      c.refuseReset();
    }
    return true;
  }

  /** Reads bytes the application sent: a count, or {@link ReadResult} WOULD_BLOCK/END/RESET. */
  read(flow: number, into: Uint8Array): number {
    const c = this.#tcp(flow);
    if (c === UNKNOWN) return ReadResult.RESET;
    const n = c.read(into);
    if (c.finished) this.#remove(c);
    return n;
  }

  /** Queues bytes for the application: the count taken (short: `writable` follows) or RESET. */
  write(flow: number, data: Uint8Array): number {
    const c = this.#tcp(flow);
    if (c === UNKNOWN) return ReadResult.RESET;
    return c.write(data);
  }

  /** Room {@link write} has now for the flow (0 when closed). */
  writable(flow: number): number {
    const c = this.#tcp(flow);
    return c === UNKNOWN ? 0 : c.writable;
  }

  /** The outbound's EOF: our FIN follows the queued bytes. */
  close(flow: number): void {
    const c = this.#tcp(flow);
    if (c !== UNKNOWN) c.close();
  }

  /** Resets the flow (RST to the application). */
  abort(flow: number): void {
    const c = this.#tcp(flow);
    if (c === UNKNOWN) return;
    c.abort();
  }

  // ------------------------------------------------------------------ UDP API

  /**
   * Sends a UDP datagram to the application of `flow`, from `src:srcPort` (any address:
   * full cone). False when the flow is unknown, the families differ, the datagram does not
   * fit the MTU or the packet queue is full.
   */
  sendUdp(
    flow: number,
    src: Uint8Array,
    srcPort: number,
    payload: Uint8Array,
    now: number,
  ): boolean {
    const fl = this.#udpFlows.get(flow);
    if (!fl || src.length !== fl.src.length) return false;
    const hl = ipHeaderLength(src);
    const total = hl + 8 + payload.length;
    if (total > this.mtu || srcPort < 0 || srcPort > 0xffff) {
      this.stats.udpDropped++;
      return false;
    }
    const out = this.#scratch;
    const ul = emitUdp({ srcPort, dstPort: fl.srcPort }, payload, src, fl.src, out, hl);
    IP_REPR.src = src;
    IP_REPR.dst = fl.src;
    IP_REPR.protocol = IpProtocol.Udp;
    IP_REPR.payloadLength = ul;
    emitIpHeader(IP_REPR, out, 0);
    if (!this.#enqueue(out, hl + ul)) {
      this.stats.udpDropped++;
      return false;
    }
    this.#udpFlows.touch(flow, now);
    this.stats.udpOut++;
    return true;
  }

  /** Forgets a UDP mapping (no event). */
  closeUdp(flow: number): void {
    this.#udpFlows.remove(flow);
  }

  // ------------------------------------------------------------------ output, events, time

  /**
   * Writes the next packet to send to the device at `out[0]` and returns its length, or 0
   * when there is nothing to send. `out` must hold {@link mtu} bytes. Call until 0.
   */
  poll(now: number, out: Uint8Array): number {
    if (this.#queueHead < this.#queue.length) {
      const b = this.#queue[this.#queueHead];
      const n = this.#queueLen[this.#queueHead];
      this.#queueHead++;
      if (this.#queueHead === this.#queue.length) {
        this.#queue.length = 0;
        this.#queueLen.length = 0;
        this.#queueHead = 0;
      }
      out.set(b.subarray(0, n));
      if (this.#pool.length < 64) this.#pool.push(b);
      this.stats.packetsOut++;
      return n;
    }
    for (const c of this.#active) {
      const n = c.poll(now, out);
      this.#active.delete(c);
      if (n > 0) {
        this.#active.add(c); // round robin: to the back of the line
        this.stats.packetsOut++;
        return n;
      }
      if (c.finished) this.#remove(c);
    }
    return 0;
  }

  /** The next event, or undefined. */
  pollEvent(): StackEvent | undefined {
    if (this.#eventHead >= this.#events.length) return undefined;
    const ev = this.#events[this.#eventHead++];
    if (this.#eventHead === this.#events.length) {
      this.#events.length = 0;
      this.#eventHead = 0;
    }
    return ev;
  }

  /** The earliest time {@link handleTimeout} has work (ms; `Infinity` when none). */
  nextDeadline(): number {
    let t = Math.min(this.#reasm.nextDeadline(), this.#udpFlows.nextDeadline());
    for (const c of this.#byFlow.values()) {
      const d = c.deadline();
      if (d < t) t = d;
    }
    return t;
  }

  /** Runs what is due at `now`: TCP timers, UDP expiry, reassembly expiry. */
  handleTimeout(now: number): void {
    for (const first of this.#reasm.expire(now)) {
      this.#icmpError(first, IcmpErrorKind.ReassemblyTimeExceeded, 0);
    }
    for (const flow of this.#udpFlows.expire(now)) this.event({ type: "udp-closed", flow });
    for (const c of this.#byFlow.values()) {
      if (c.deadline() <= now) {
        c.onTimeout(now);
        if (c.finished) this.#remove(c);
      }
    }
  }
}

const OFFLOADED = [{ skipChecksum: false }, { skipChecksum: true }];
const RST_REPR = { srcPort: 0, dstPort: 0, seq: 0, ack: 0, flags: 0, window: 0 };
const IP_REPR: IpRepr = {
  src: new Uint8Array(4),
  dst: new Uint8Array(4),
  protocol: IpProtocol.Tcp,
  ttl: 64,
  payloadLength: 0,
  dontFragment: true,
};
const ADDR4A = new Uint8Array(4);
const ADDR4B = new Uint8Array(4);
const ADDR16A = new Uint8Array(16);
const ADDR16B = new Uint8Array(16);

/**
 * Fake TCP as a carrier (issue 13): every carrier datagram is the payload of
 * one TCP segment that looks like a Linux connection's — a real three-way
 * handshake, advancing sequence and acknowledgment numbers, timestamps,
 * PSH|ACK data segments, correct checksums — sent and received on raw
 * sockets (`ffi/raw_linux.ts`), so firewalls and NAT boxes that pass only
 * TCP, and conntrack, see an ESTABLISHED flow. None of TCP's semantics: no
 * retransmission, ordering or congestion control (the session does that).
 *
 * The TCP-looking state is the sans-I/O {@link FakeTcpFlow} (`flow.ts`), the
 * bytes are `segment.ts`; this file is the I/O: sockets, timers, and the
 * host changes — an nftables table per port dropping the RSTs the kernel
 * would send for segments no kernel socket owns, made and undone through the
 * host journal (`shared/host/journal.ts`), so a crash leaves nothing behind
 * once {@link HostJournal.recover} runs. IPv4 only. docs/faketcp.md has the
 * wire format, the rules, keepalive and probing behaviour.
 * @module
 */

import type {
  CarrierDialer,
  CarrierLink,
  CarrierListener,
  Endpoint,
  OnEndpointDatagram,
} from "../carrier.ts";
import {
  type CommandChange,
  type CommandRunner,
  denoRunner,
  HostJournal,
} from "../../host/journal.ts";
import type { TcpSegment } from "../../netstack/wire/tcp.ts";
import { cryptoRand32, FakeTcpFlow, type FlowConfig, type Rand32, Rx } from "./flow.ts";
import {
  DATA_TCP_HEADER,
  emitSegment4,
  FAKETCP_OVERHEAD,
  InboundSegment,
  type Ip4Fields,
  IPV4_HEADER,
  parseSegment4,
  type TcpRepr,
} from "./segment.ts";
import {
  ipv4Bytes,
  type PortReservation,
  RAW_SEND_SLOT,
  RawTcpSocket,
  reserveTcpPort,
  routeSource,
} from "../../../ffi/raw_linux.ts";

/** Options both ends share. */
export interface FakeTcpCommonOptions {
  /**
   * The host journal the RST rules go through: a journal (its owner undoes
   * it; each rule is also removed when its carrier closes) or a path (the
   * carrier opens its own there, recovering a crashed run's leftovers first,
   * and undoes it on close).
   */
  journal: HostJournal | string;
  /** Open sockets and run nft inside this named network namespace (tests). */
  netns?: string;
  /** Runs nft (default: without a shell, `Deno.Command`). */
  runner?: CommandRunner;
  /** Link MTU the datagram size follows from (default 1500). */
  mtu?: number;
  /** Flow tunables (keepalive, windows, …). */
  flow?: Partial<FlowConfig>;
  /** Random source for ISNs, timestamps offsets, IP ids (default WebCrypto). */
  rand?: Rand32;
  /** Clock, ms (default `performance.now`). */
  now?: () => number;
  /** Firewall mark of sent packets, if any (TUN mode). */
  mark?: number;
}

/** Options of {@link FakeTcpListener.open}. */
export interface FakeTcpListenerOptions extends FakeTcpCommonOptions {
  /** Local IPv4 address (default "0.0.0.0": every address). */
  hostname?: string;
  /** TCP port (0: one the kernel picks). */
  port: number;
  /**
   * Which SYNs get a SYN-ACK (default: every well-formed one, as a real
   * server's kernel does); a refused SYN gets no answer at all.
   */
  admitSyn?: (syn: TcpSegment, from: Deno.NetAddr) => boolean;
  /** Most flows held at once (default 16384); SYNs beyond are not answered. */
  maxFlows?: number;
}

/** Counters of a listener or link. */
export interface FakeTcpCounters {
  /** Packets that failed to parse (checksum, truncated, fragment). */
  malformed: number;
  /** Segments of no known flow that were not an admitted SYN (dropped silently). */
  strangers: number;
  /** Datagrams dropped on send (no established flow, oversize, kernel refusal). */
  sendDrops: number;
}

const defaultNow = () => performance.now();

type Timer = ReturnType<typeof setTimeout>;

function nftExec(netns: string | undefined): string[] {
  return netns === undefined ? [] : ["ip", "netns", "exec", netns];
}

/** The nftables table that drops the kernel's RSTs for the server port `port`. */
export function serverRstChange(port: number, netns?: string): CommandChange {
  const t = `ostp-faketcp-${port}`;
  const ex = nftExec(netns);
  return {
    kind: "command",
    what: `fake-TCP: drop kernel RSTs from tcp port ${port} (nftables table inet ${t})`,
    apply: [
      ...ex,
      "nft",
      `add table inet ${t}; ` +
      `add chain inet ${t} out { type filter hook output priority raw; policy accept; }; ` +
      `add rule inet ${t} out tcp sport ${port} tcp flags & rst == rst drop`,
    ],
    undo: [...ex, "nft", `delete table inet ${t}`],
    undoMayFail: true,
  };
}

/** The table that drops the kernel's RSTs towards `server` from a client link's `localPort`. */
export function clientRstChange(
  localPort: number,
  server: Deno.NetAddr,
  netns?: string,
): CommandChange {
  const t = `ostp-faketcp-c${localPort}`;
  const ex = nftExec(netns);
  return {
    kind: "command",
    what:
      `fake-TCP: drop kernel RSTs from tcp port ${localPort} to ${server.hostname}:${server.port}`,
    apply: [
      ...ex,
      "nft",
      `add table inet ${t}; ` +
      `add chain inet ${t} out { type filter hook output priority raw; policy accept; }; ` +
      `add rule inet ${t} out ip daddr ${server.hostname} tcp sport ${localPort} ` +
      `tcp dport ${server.port} tcp flags & rst == rst drop`,
    ],
    undo: [...ex, "nft", `delete table inet ${t}`],
    undoMayFail: true,
  };
}

/** Journals and applies a change; returns how to take it back. */
async function applyChange(
  journal: HostJournal,
  change: CommandChange,
  runner: CommandRunner,
  owned: boolean,
): Promise<() => Promise<void>> {
  await journal.apply(change);
  if (owned) return () => Promise.resolve(); // the owner's undoAll does it
  let done = false;
  return async () => {
    if (done) return;
    done = true;
    await runner.run(change.undo);
  };
}

/** A fake-TCP flow as an {@link Endpoint}: the client's address and port. */
export class FakeTcpEndpoint implements Endpoint {
  readonly carrier = "faketcp";
  readonly key: string;
  constructor(readonly address: Deno.NetAddr, /** The listener's flow id. */ readonly id: number) {
    this.key = `faketcp|${address.hostname}|${address.port}`;
  }
}

interface ServerFlow {
  flow: FakeTcpFlow;
  endpoint: FakeTcpEndpoint;
  ip: Ip4Fields;
}

/** Largest datagram for an MTU: IPv4 20 + TCP 32 (timestamps) less. */
function maxFor(mtu: number): number {
  return Math.min(mtu, RAW_SEND_SLOT) - IPV4_HEADER - DATA_TCP_HEADER;
}

/** Builds and queues one segment of `flow` on `sock`. */
function emit(
  sock: RawTcpSocket,
  repr: TcpRepr,
  payload: Uint8Array | null,
  ip: Ip4Fields,
  flow: FakeTcpFlow,
): void {
  ip.id = flow.ipId;
  flow.ipId = (flow.ipId + 1) & 0xffff;
  const off = sock.slot();
  const len = emitSegment4(repr, payload ?? 0, ip, sock.sendBuffer, off);
  sock.commit(len, ip.dst);
}

function drainControl(sock: RawTcpSocket, f: FakeTcpFlow, ip: Ip4Fields, now: number): void {
  for (let i = 0; i < 4; i++) {
    const c = f.control(now);
    if (c === null) return;
    emit(sock, c, null, ip, f);
  }
}

/** The server's fake-TCP listener: one raw socket, every client flow. */
export class FakeTcpListener implements CarrierListener {
  readonly kind = "faketcp";
  readonly overhead = FAKETCP_OVERHEAD;
  readonly reliable = false;
  readonly maxDatagram: number;
  readonly local: Deno.NetAddr;
  /** Counters. */
  readonly counters: FakeTcpCounters = { malformed: 0, strangers: 0, sendDrops: 0 };

  private readonly flows = new Map<number, ServerFlow>();
  private readonly ackDue = new Set<ServerFlow>();
  private readonly seg = new InboundSegment();
  private readonly bindIp: Uint8Array | null;
  private closed = false;
  private ackTimer: Timer | null = null;
  private sweepTimer: Timer | null = null;
  private running: Promise<void> | null = null;
  private readonly cleanup: Promise<void>;
  private releaseCleanup!: () => void;

  private constructor(
    private readonly sock: RawTcpSocket,
    private readonly reservation: PortReservation,
    private readonly undo: () => Promise<void>,
    private readonly ownJournal: HostJournal | null,
    private readonly opts: FakeTcpListenerOptions,
    hostname: string,
  ) {
    this.local = { transport: "tcp", hostname, port: reservation.port };
    this.maxDatagram = maxFor(opts.mtu ?? 1500);
    this.bindIp = hostname === "0.0.0.0" ? null : ipv4Bytes(hostname);
    this.cleanup = new Promise((r) => (this.releaseCleanup = r));
    this.sweepTimer = setInterval(this.sweep, 1000);
    Deno.unrefTimer(this.sweepTimer as unknown as number);
  }

  /**
   * Reserves the TCP port (a bound, never listening socket: no kernel
   * listener can take it), journals and adds the RST rule, opens the raw
   * socket. Needs root or CAP_NET_RAW + CAP_NET_ADMIN.
   */
  static async open(opts: FakeTcpListenerOptions): Promise<FakeTcpListener> {
    const hostname = opts.hostname ?? "0.0.0.0";
    if (!ipv4Bytes(hostname)) throw new TypeError(`fake-TCP listens on IPv4 only: ${hostname}`);
    const runner = opts.runner ?? denoRunner;
    const reservation = reserveTcpPort(hostname, opts.port, opts.netns);
    let own: HostJournal | null = null;
    try {
      const journal = typeof opts.journal === "string"
        ? (own = (await HostJournal.open(opts.journal, { runner, owner: "ostp faketcp" }))
          .journal)
        : opts.journal;
      const undo = await applyChange(
        journal,
        serverRstChange(reservation.port, opts.netns),
        runner,
        own !== null,
      );
      let sock: RawTcpSocket;
      try {
        sock = new RawTcpSocket({
          localPort: reservation.port,
          bind: hostname,
          netns: opts.netns,
          mark: opts.mark,
        });
      } catch (e) {
        await undo();
        throw e;
      }
      return new FakeTcpListener(sock, reservation, undo, own, opts, hostname);
    } catch (e) {
      reservation.close();
      await own?.undoAll();
      throw e;
    }
  }

  /** Flows held now (tests, the API). */
  get flowCount(): number {
    return this.flows.size;
  }

  run(onDatagram: OnEndpointDatagram): Promise<void> {
    if (this.running) return this.running;
    const now = this.opts.now ?? defaultNow;
    const rand = this.opts.rand ?? cryptoRand32();
    const port = this.local.port;
    const b = this.bindIp;
    const bindU32 = b === null ? -1 : ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
    const maxFlows = this.opts.maxFlows ?? 16384;
    const flowConfig: Partial<FlowConfig> = { expireMs: 180_000, ...this.opts.flow, idleMs: 0 };
    const onPacket = (pkt: Uint8Array) => {
      const s = parseSegment4(pkt, this.seg, false);
      if (typeof s === "string") {
        this.counters.malformed++;
        return;
      }
      const ip = s.ip;
      const tcp = s.tcp;
      if (tcp.dstPort !== port) return;
      if (bindU32 !== -1 && ip.dstU32 !== bindU32) return;
      const id = ip.srcU32 * 65536 + tcp.srcPort;
      const t = now();
      let sf = this.flows.get(id);
      if (sf === undefined) {
        if (!FakeTcpFlow.isOpeningSyn(tcp) || this.flows.size >= maxFlows) {
          this.counters.strangers++;
          return;
        }
        const address: Deno.NetAddr = {
          transport: "tcp",
          hostname: `${ip.src[0]}.${ip.src[1]}.${ip.src[2]}.${ip.src[3]}`,
          port: tcp.srcPort,
        };
        if (this.opts.admitSyn && !this.opts.admitSyn(tcp, address)) {
          this.counters.strangers++;
          return;
        }
        sf = {
          flow: FakeTcpFlow.server(tcp, port, t, rand, flowConfig),
          endpoint: new FakeTcpEndpoint(address, id),
          ip: { src: ip.dst.slice(), dst: ip.src.slice(), id: 0, ttl: 64 },
        };
        this.flows.set(id, sf);
      } else {
        const r = sf.flow.receive(tcp, t);
        if (r === Rx.Restart) {
          sf.flow = FakeTcpFlow.server(tcp, port, t, rand, flowConfig);
        } else if (r === Rx.Data) {
          onDatagram(tcp.payload, sf.endpoint);
          if (!this.ackDue.has(sf)) {
            this.ackDue.add(sf);
            this.armAck();
          }
        } else if (r === Rx.Ignored) {
          return;
        }
      }
      if (sf.flow.hasControl) {
        drainControl(this.sock, sf.flow, sf.ip, t);
        if (sf.flow.ended) {
          this.flows.delete(id);
          this.ackDue.delete(sf);
        }
      }
    };
    this.running = this.sock.run(onPacket).finally(async () => {
      await this.cleanup;
    });
    return this.running;
  }

  private armAck(): void {
    if (this.ackTimer !== null || this.closed) return;
    const delay = this.opts.flow?.ackDelayMs ?? 40;
    this.ackTimer = setTimeout(this.onAckTimer, delay);
  }

  private readonly onAckTimer = (): void => {
    this.ackTimer = null;
    if (this.closed) return;
    const t = (this.opts.now ?? defaultNow)();
    for (const sf of this.ackDue) {
      const d = sf.flow.deadline();
      if (d <= t) {
        sf.flow.tick(t);
        drainControl(this.sock, sf.flow, sf.ip, t);
      }
      if (sf.flow.deadline() > t + 1000 || sf.flow.state === "dead") this.ackDue.delete(sf);
    }
    this.sock.flush();
    if (this.ackDue.size > 0) this.armAck();
  };

  /** Once a second: handshake retransmissions and forgetting silent flows. */
  private readonly sweep = (): void => {
    if (this.closed) return;
    const t = (this.opts.now ?? defaultNow)();
    for (const [id, sf] of this.flows) {
      if (sf.flow.deadline() > t) continue;
      if (sf.flow.tick(t) === "dead") {
        this.flows.delete(id);
        this.ackDue.delete(sf);
        continue;
      }
      drainControl(this.sock, sf.flow, sf.ip, t);
    }
    this.sock.flush();
  };

  send(data: Uint8Array, to: Endpoint): void {
    if (this.closed || !(to instanceof FakeTcpEndpoint)) return;
    const sf = this.flows.get(to.id);
    if (sf === undefined || data.length > this.maxDatagram || !sf.flow.canSend(data.length)) {
      this.counters.sendDrops++;
      return;
    }
    const t = (this.opts.now ?? defaultNow)();
    emit(this.sock, sf.flow.data(data.length, t), data, sf.ip, sf.flow);
  }

  flush(): void {
    this.sock.flush();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ackTimer !== null) clearTimeout(this.ackTimer);
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sock.close();
    this.reservation.close();
    this.flows.clear();
    this.ackDue.clear();
    const done = this.running ?? Promise.resolve();
    void done.catch(() => {});
    (async () => {
      try {
        await this.undo();
        await this.ownJournal?.undoAll();
      } catch {
        // the journal keeps what failed for recovery
      }
      this.releaseCleanup();
    })();
  }

  /** Resolves once closed and the host changes are undone. */
  get closedAndClean(): Promise<void> {
    return this.cleanup;
  }
}

/** Options of {@link FakeTcpDialer}. */
export interface FakeTcpDialerOptions extends FakeTcpCommonOptions {
  /** Gives up a handshake after this long, ms (default 5000). */
  handshakeMs?: number;
}

/** The client's fake-TCP path: one flow, its own raw socket and source port. */
export class FakeTcpLink implements CarrierLink {
  readonly kind = "faketcp";
  readonly overhead = FAKETCP_OVERHEAD;
  readonly reliable = false;
  readonly maxDatagram: number;
  readonly local: string;
  /** Called once when the path is found dead (keepalive unanswered); the link is closed then. */
  onDead: (() => void) | null = null;
  /** True once the keepalive found the path dead. */
  dead = false;
  /** Counters. */
  readonly counters: FakeTcpCounters = { malformed: 0, strangers: 0, sendDrops: 0 };

  private handler: ((data: Uint8Array) => void) | null = null;
  private closed = false;
  private timer: Timer | null = null;
  private timerAt = Infinity;
  private readonly seg = new InboundSegment();
  private readonly loop: Promise<void>;
  private readonly finished: Promise<void>;
  private established!: () => void;
  /** Resolves when the handshake completes. */
  readonly ready: Promise<void>;

  /** @internal use {@link FakeTcpDialer.dial}. */
  constructor(
    private readonly sock: RawTcpSocket,
    private readonly reservation: PortReservation,
    private readonly undo: () => Promise<void>,
    readonly flow: FakeTcpFlow,
    private readonly ip: Ip4Fields,
    readonly server: Deno.NetAddr,
    private readonly now: () => number,
    mtu: number,
  ) {
    this.maxDatagram = maxFor(mtu);
    this.local = `faketcp ${ip.src.join(".")}:${reservation.port}`;
    this.ready = new Promise((r) => (this.established = r));
    const srcU32 = ((ip.dst[0] << 24) | (ip.dst[1] << 16) | (ip.dst[2] << 8) | ip.dst[3]) >>> 0;
    this.loop = sock.run((pkt) => {
      const s = parseSegment4(pkt, this.seg, false);
      if (typeof s === "string") {
        this.counters.malformed++;
        return;
      }
      const tcp = s.tcp;
      if (
        s.ip.srcU32 !== srcU32 || tcp.srcPort !== server.port ||
        tcp.dstPort !== reservation.port
      ) {
        this.counters.strangers++;
        return;
      }
      const t = this.now();
      const wasEstablished = flow.established;
      const r = flow.receive(tcp, t);
      if (r === Rx.Data) {
        const h = this.handler;
        if (h !== null) h(tcp.payload);
      }
      if (flow.hasControl) drainControl(sock, flow, ip, t);
      if (!wasEstablished && flow.established) this.established();
      if (flow.ended && !this.closed) queueMicrotask(this.onTimer);
    }, () => this.arm());
    this.finished = this.loop.finally(() => this.undo()).catch(() => {});
    this.arm();
  }

  get localPort(): number {
    return this.reservation.port;
  }

  /** Sends the SYN (the dialer does it once the link exists). */
  start(): void {
    drainControl(this.sock, this.flow, this.ip, this.now());
    this.sock.flush();
    this.arm();
  }

  /** Keeps one timer at the flow's deadline (re-armed only when it moved earlier or fired). */
  private arm(): void {
    if (this.closed) return;
    const d = this.flow.deadline();
    if (d === Infinity || d >= this.timerAt) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerAt = d;
    this.timer = setTimeout(this.onTimer, Math.max(0, d - this.now()));
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    this.timerAt = Infinity;
    if (this.closed) return;
    const t = this.now();
    if (this.flow.tick(t) === "dead") {
      this.sock.flush();
      this.dead = true;
      const cb = this.onDead;
      this.close();
      try {
        cb?.();
      } catch {
        // the runner's business
      }
      return;
    }
    drainControl(this.sock, this.flow, this.ip, t);
    this.sock.flush();
    this.arm();
  };

  async run(onDatagram: (data: Uint8Array) => void): Promise<void> {
    this.handler = onDatagram;
    await this.finished;
  }

  send(data: Uint8Array): void {
    if (this.closed || data.length > this.maxDatagram || !this.flow.canSend(data.length)) {
      this.counters.sendDrops++;
      return;
    }
    emit(this.sock, this.flow.data(data.length, this.now()), data, this.ip, this.flow);
  }

  flush(): void {
    this.sock.flush();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.flow.kill();
    this.sock.close();
    this.reservation.close();
  }

  /** Resolves once closed and the RST rule is gone. */
  get closedAndClean(): Promise<void> {
    return this.finished;
  }
}

/** Opens fake-TCP links: a fresh source port, raw socket and handshake per dial. */
export class FakeTcpDialer implements CarrierDialer {
  readonly kind = "faketcp";
  private journal: Promise<HostJournal> | null = null;
  private readonly own: boolean;

  constructor(private readonly opts: FakeTcpDialerOptions) {
    this.own = typeof opts.journal === "string";
    if (!this.own) this.journal = Promise.resolve(opts.journal as HostJournal);
  }

  private journalNow(): Promise<HostJournal> {
    this.journal ??= HostJournal.open(this.opts.journal as string, {
      runner: this.opts.runner ?? denoRunner,
      owner: "ostp faketcp client",
    }).then((r) => r.journal);
    return this.journal;
  }

  async dial(server: Deno.NetAddr, signal?: AbortSignal): Promise<CarrierLink> {
    const o = this.opts;
    const dst = ipv4Bytes(server.hostname);
    if (!dst) throw new Error(`fake-TCP reaches IPv4 servers only: ${server.hostname}`);
    signal?.throwIfAborted();
    const runner = o.runner ?? denoRunner;
    const src = routeSource(server.hostname, o.netns);
    const reservation = reserveTcpPort(src, 0, o.netns);
    let undo: () => Promise<void>;
    try {
      const journal = await this.journalNow();
      const change = clientRstChange(reservation.port, server, o.netns);
      // Even with its own journal the dialer removes a link's rule when the link closes.
      await journal.apply(change);
      let done = false;
      undo = async () => {
        if (done) return;
        done = true;
        await runner.run(change.undo);
      };
    } catch (e) {
      reservation.close();
      throw e;
    }
    let sock: RawTcpSocket;
    try {
      sock = new RawTcpSocket({
        localPort: reservation.port,
        remotePort: server.port,
        bind: src,
        connect: server.hostname,
        netns: o.netns,
        mark: o.mark,
      });
    } catch (e) {
      reservation.close();
      await undo();
      throw e;
    }
    const now = o.now ?? defaultNow;
    const flow = FakeTcpFlow.client(
      reservation.port,
      server.port,
      now(),
      o.rand ?? cryptoRand32(),
      o.flow,
    );
    const ip: Ip4Fields = { src: ipv4Bytes(src)!, dst, id: 0, ttl: 64 };
    const link = new FakeTcpLink(sock, reservation, undo, flow, ip, server, now, o.mtu ?? 1500);
    link.start();
    const ms = o.handshakeMs ?? 5000;
    let timer: Timer | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await Promise.race([
        link.ready,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new Error(
                  `fake-TCP ${server.hostname}:${server.port}: no SYN-ACK within ${ms} ms ` +
                    "(filtered, or no fake-TCP listener there)",
                ),
              ),
            ms,
          );
          onAbort = () => reject(signal?.reason ?? new Error("aborted"));
          signal?.addEventListener("abort", onAbort, { once: true });
        }),
      ]);
    } catch (e) {
      link.close();
      await link.closedAndClean;
      throw e;
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener("abort", onAbort);
    }
    return link;
  }

  /** Undoes what the dialer's own journal (a path was given) still holds. */
  async close(): Promise<void> {
    if (this.own && this.journal) await (await this.journal).undoAll();
  }
}

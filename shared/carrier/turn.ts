/**
 * A TURN relay as a carrier (docs/nat.md): the client's one UDP socket talks
 * only to the TURN server; the {@link TurnClient} machine allocates a relayed
 * address with long-term credentials, installs a permission and a channel for
 * the ostp server, and from then on the session's datagrams ride as
 * ChannelData. The ostp server sees the relay's address as the client's and
 * changes nothing.
 *
 * The TURN server is reached over UDP (one socket: everything arriving from
 * another address than the TURN server's is dropped and counted, `foreign`),
 * or over TCP or TLS where UDP to it is blocked (RFC 8656 §12.5 framing:
 * STUN messages and padded ChannelData back to back on the stream); the relay
 * talks UDP to the ostp server either way.
 * @module
 */

import { type DatagramSocket, openUdp } from "../net/datagram.ts";
import { TurnClient, type TurnCredentials, type TurnEvent } from "../stun/turn_client.ts";
import { formatNetAddr, sameNetAddr } from "../net/ip.ts";
import type { RetransmitConfig } from "../stun/transactions.ts";
import type { CarrierDialer, CarrierLink } from "./carrier.ts";
import { STREAM_WRITE_CAP, StreamPath } from "./stream_path.ts";
import { RawWriter, TurnStreamReader } from "./turn_stream.ts";
import { connectTcp } from "./uot.ts";
import { connectTls } from "./tls.ts";
import { isIPv4, isIPv6 } from "../config/types.ts";

/** Largest datagram a TURN link takes (UDP's largest, less ChannelData's header). */
const TURN_MAX = 65507 - 4;

/** How often the silence watchdog looks, ms. */
const WATCHDOG_TICK_MS = 100;
/**
 * This long after a datagram went out with nothing heard back, the link asks
 * whether its allocation exists, ms: well before the session calls its peer
 * unresponsive (1 s), so a lost allocation is known when the new attempt starts.
 */
const SILENCE_PROBE_MS = 400;
/** At most one such question per this many ms. */
const PROBE_EVERY_MS = 5000;

/** How the client reaches the TURN server. */
export type TurnTransportKind = "udp" | "tcp" | "tls";

/**
 * Bytes a TURN link adds per datagram beyond plain UDP: ChannelData's 4
 * (and up to 3 of padding on a stream, whose TCP header is 12 bytes more than
 * UDP's; TLS adds its record's 22).
 */
const TURN_OVERHEAD: Record<TurnTransportKind, number> = {
  udp: 4,
  tcp: 4 + 3 + 12,
  tls: 4 + 3 + 12 + 22,
};

/** The path to the TURN server: one UDP socket, or one TCP/TLS connection. */
interface TurnTransport {
  /** "udp", "tcp" or "tls". */
  readonly kind: TurnTransportKind;
  /** The local port. */
  readonly localPort: number;
  /** Datagrams dropped because they came from elsewhere than the TURN server (UDP). */
  readonly foreign: number;
  /** Delivers each message from the TURN server until closed. */
  run(onMessage: (msg: Uint8Array) => void): Promise<void>;
  /** Queues one message (copied). */
  send(msg: Uint8Array): void;
  flush(): void;
  close(): void;
}

class UdpTurnTransport implements TurnTransport {
  readonly kind = "udp";
  foreign = 0;
  constructor(readonly socket: DatagramSocket, readonly turn: Deno.NetAddr) {}
  get localPort(): number {
    return this.socket.addr.port;
  }
  run(onMessage: (msg: Uint8Array) => void): Promise<void> {
    const turn = this.turn;
    return this.socket.run((data, from) => {
      if (!sameNetAddr(from, turn)) {
        this.foreign++;
        return;
      }
      onMessage(data);
    });
  }
  send(msg: Uint8Array): void {
    this.socket.send(msg, this.turn);
  }
  flush(): void {
    this.socket.flush();
  }
  close(): void {
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}

class StreamTurnTransport implements TurnTransport {
  readonly foreign = 0;
  private readonly path: StreamPath;
  constructor(readonly kind: "tcp" | "tls", readonly conn: Deno.Conn) {
    this.path = new StreamPath(conn, new TurnStreamReader(), STREAM_WRITE_CAP, new RawWriter());
  }
  get localPort(): number {
    return (this.conn.localAddr as Deno.NetAddr).port;
  }
  run(onMessage: (msg: Uint8Array) => void): Promise<void> {
    return this.path.readLoop(onMessage);
  }
  send(msg: Uint8Array): void {
    this.path.send(msg);
  }
  flush(): void {
    this.path.flush();
  }
  close(): void {
    this.path.close();
  }
}

/** Settings of {@link TurnDialer}. */
export interface TurnDialerOptions {
  /** The TURN server: a host name or address and port. */
  server: { host: string; port: number };
  /** The account (the password is never logged). */
  credentials: TurnCredentials;
  /** How the TURN server is reached (default "udp"). */
  transport?: TurnTransportKind;
  /** TLS: the name the TURN server's certificate must carry (default its host). */
  serverName?: string;
  /** TLS: CA certificates (PEM) trusted besides the system's. */
  caCerts?: string[];
  /** Lifetime to ask for, s. */
  lifetimeSec?: number;
  /** How often permission and channel are refreshed, s (default 120). */
  permissionRefreshSec?: number;
  /** How long an allocation may take, ms (default 10 s). */
  connectTimeoutMs?: number;
  /** Opens the UDP socket (default {@link openUdp}). */
  openSocket?: (hostname: string, port: number) => DatagramSocket;
  /** Resolves the TURN server's name (default `node:dns/promises` lookup). */
  lookup?: (host: string) => Promise<{ address: string }>;
  /** Every event of every link (logs, the client's status). */
  onEvent?: (e: TurnEvent, link: TurnLink) => void;
  /** Retransmission settings (tests). */
  retransmit?: RetransmitConfig;
}

/** Opens one TURN allocation per link. */
export class TurnDialer implements CarrierDialer {
  readonly kind = "turn";
  private readonly live = new Set<TurnLink>();

  constructor(readonly opts: TurnDialerOptions) {}

  /** The TURN server's address, resolved. */
  private async resolve(): Promise<Deno.NetAddr> {
    const host = this.opts.server.host;
    let address = host;
    if (!isIPv4(host) && !isIPv6(host)) {
      const lookup = this.opts.lookup ??
        (async (h: string) => await (await import("node:dns/promises")).lookup(h));
      address = (await lookup(host)).address;
    }
    return { transport: "udp", hostname: address, port: this.opts.server.port };
  }

  /**
   * Allocates a relay for `server` (the ostp server, resolved); resolves
   * once the peer may be reached. Rejects with a reason a person can read:
   * no answer, TURN authentication failed, Allocate refused.
   */
  async dial(server: Deno.NetAddr, signal?: AbortSignal): Promise<CarrierLink> {
    const turn = await this.resolve();
    const kind = this.opts.transport ?? "udp";
    const ms = this.opts.connectTimeoutMs ?? 10_000;
    let transport: TurnTransport;
    if (kind === "udp") {
      const open = this.opts.openSocket ?? openUdp;
      transport = new UdpTurnTransport(
        open(turn.hostname.includes(":") ? "::" : "0.0.0.0", 0),
        turn,
      );
    } else {
      const at: Deno.NetAddr = { ...turn, transport: "tcp" };
      transport = kind === "tcp"
        ? new StreamTurnTransport("tcp", await connectTcp(at, ms, signal))
        : new StreamTurnTransport(
          "tls",
          await connectTls(at, {
            serverName: this.opts.serverName ?? this.opts.server.host,
            ...(this.opts.caCerts ? { caCerts: this.opts.caCerts } : {}),
            connectTimeoutMs: ms,
          }, signal).catch((e) => {
            // A TLS failure is named as TURN's; a TCP connect failure stays as it is.
            const m = (e as Error).message;
            throw m.startsWith("TLS: ") ? new Error(`TURN over ${m}`) : e;
          }),
        );
    }
    const client = new TurnClient({
      credentials: this.opts.credentials,
      peer: server,
      stream: kind !== "udp",
      ...(this.opts.lifetimeSec ? { lifetimeSec: this.opts.lifetimeSec } : {}),
      ...(this.opts.permissionRefreshSec
        ? { permissionRefreshSec: this.opts.permissionRefreshSec }
        : {}),
      ...(this.opts.retransmit ? { retransmit: this.opts.retransmit } : {}),
    });
    const link = new TurnLink(transport, turn, client, (e, l) => this.opts.onEvent?.(e, l));
    this.live.add(link);
    link.closed.then(() => this.live.delete(link));
    try {
      await link.ready(ms, signal);
    } catch (e) {
      link.abort();
      throw e;
    }
    return link;
  }

  /** Waits (up to `ms`) for the links closing now to finish deallocating. */
  async close(ms = 1500): Promise<void> {
    const all = [...this.live].map((l) => l.closed);
    if (all.length === 0) return;
    let t: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(all),
      new Promise((r) => (t = setTimeout(r, ms))),
    ]);
    clearTimeout(t);
  }
}

/** One allocation: the session's path through the relay. */
export class TurnLink implements CarrierLink {
  readonly kind = "turn";
  readonly overhead: number;
  readonly reliable = false;
  readonly maxDatagram = TURN_MAX;
  /** Resolves when the socket is closed (deallocated, failed or aborted). */
  readonly closed: Promise<void>;

  private onData: ((data: Uint8Array) => void) | null = null;
  private readonly runP: Promise<void>;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Infinity;
  private readyWaiter: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private isReady = false;
  private socketClosed = false;
  /** Messages in from the TURN server and datagrams out, for the silence watchdog. */
  private received = 0;
  private sent = 0;
  private watchdog: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly transport: TurnTransport,
    /** The TURN server's address: the only source taken. */
    readonly turn: Deno.NetAddr,
    /** The TURN machine. */
    readonly client: TurnClient,
    private readonly onEvent: (e: TurnEvent, link: TurnLink) => void,
  ) {
    this.overhead = TURN_OVERHEAD[transport.kind];
    this.runP = transport.run((data) => {
      this.received++;
      const payload = client.receive(data, performance.now());
      if (payload && this.onData) this.onData(payload);
      // ChannelData (the data path) never makes the machine send or report anything.
      if ((data[0] & 0xc0) !== 0x40) this.pump();
    });
    this.closed = this.runP.then(() => {}, () => {});
    client.start(performance.now());
    this.pump();
    this.startWatchdog();
  }

  /**
   * A relay that restarted drops ChannelData in silence: when nothing has
   * come back {@link SILENCE_PROBE_MS} after a datagram went out, a Refresh
   * asks whether the allocation still exists (at most every {@link PROBE_EVERY_MS}).
   * If it does not, the link closes and the session moves to a new one.
   */
  private startWatchdog(): void {
    let lastIn = this.received;
    let lastOut = this.sent;
    /** When a datagram first went out with nothing heard since (null: none waiting). */
    let unansweredSince: number | null = null;
    let lastProbe = -Infinity;
    this.watchdog = setInterval(() => {
      const now = performance.now();
      if (this.received !== lastIn) unansweredSince = null;
      else if (this.sent !== lastOut && unansweredSince === null) unansweredSince = now;
      lastIn = this.received;
      lastOut = this.sent;
      if (
        unansweredSince !== null && now - unansweredSince >= SILENCE_PROBE_MS &&
        now - lastProbe >= PROBE_EVERY_MS
      ) {
        lastProbe = now;
        this.client.probe(now);
        this.pump();
      }
    }, WATCHDOG_TICK_MS);
    Deno.unrefTimer(this.watchdog);
  }

  get local(): string {
    const r = this.client.relayed;
    const t = this.transport;
    return `turn ${r ? `${formatNetAddr(r)} ` : ""}via ${
      formatNetAddr(this.turn)
    } (${t.kind} ${t.localPort})`;
  }

  get localPort(): number {
    return this.transport.localPort;
  }

  /** Datagrams dropped because they came from elsewhere than the TURN server. */
  get foreign(): number {
    return this.transport.foreign;
  }

  /** Counters for the client's status. */
  stats(): Record<string, number | string> {
    const c = this.client;
    return {
      turnServer: formatNetAddr(this.turn),
      transport: this.transport.kind,
      relayed: c.relayed ? formatNetAddr(c.relayed) : "",
      ...(c.mapped ? { mapped: formatNetAddr(c.mapped) } : {}),
      lifetime: c.lifetime,
      channel: c.channel ? `0x${c.channel.toString(16)}` : "none",
      refreshes: c.counters.refreshes,
      staleNonces: c.counters.staleNonces,
      dropped: c.counters.dropped,
      foreign: this.foreign,
    };
  }

  /** Resolves once the peer may be reached, rejects on failure or after `ms`. */
  ready(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.isReady) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => done(new Error("no answer from the TURN server")), ms);
      const onAbort = () => done(new Error("aborted"));
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = (e?: Error) => {
        clearTimeout(t);
        signal?.removeEventListener("abort", onAbort);
        this.readyWaiter = null;
        if (e) reject(e);
        else resolve();
      };
      this.readyWaiter = { resolve: () => done(), reject: (e) => done(e) };
    });
  }

  run(onDatagram: (data: Uint8Array) => void): Promise<void> {
    this.onData = onDatagram;
    return this.runP;
  }

  send(data: Uint8Array): void {
    if (data.length > TURN_MAX) return; // no relay could send it on
    const b = this.client.wrap(data);
    if (!b) return;
    this.sent++;
    this.transport.send(b);
  }

  flush(): void {
    this.transport.flush();
  }

  /** Deallocates (LIFETIME 0), then closes the socket when answered or after a second. */
  close(): void {
    if (this.socketClosed) return;
    this.client.close(performance.now());
    this.pump();
  }

  /** Closes the socket at once (a dial that failed). */
  abort(): void {
    this.client.close(performance.now(), 0);
    this.closeSocket();
  }

  /** Sends what the machine queued, handles its events, schedules its next deadline. */
  private pump(): void {
    const out = this.client.takeTransmits();
    for (const b of out) this.transport.send(b);
    if (out.length > 0) this.transport.flush();
    for (const e of this.client.takeEvents()) {
      if ((e.type === "permitted" || e.type === "channel") && !this.isReady) {
        this.isReady = true;
        this.readyWaiter?.resolve();
      } else if (e.type === "failed") {
        this.readyWaiter?.reject(new Error(e.reason));
      }
      this.onEvent(e, this);
      if (e.type === "failed" || e.type === "deallocated") this.closeSocket();
    }
    if (this.socketClosed) return;
    const st = this.client.state;
    if (st === "closed") {
      this.closeSocket();
      return;
    }
    const at = this.client.nextDeadline();
    if (at === this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    if (at === Infinity) return;
    this.timer = setTimeout(() => {
      this.timerAt = Infinity;
      this.client.poll(performance.now());
      this.pump();
    }, Math.max(0, at - performance.now()));
  }

  private closeSocket(): void {
    if (this.socketClosed) return;
    this.socketClosed = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    this.timerAt = Infinity;
    this.transport.close();
  }
}

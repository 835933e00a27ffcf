/**
 * The "ostp" outbound: a pool of one or more sessions (`mux`) to the server.
 * Each session has its own runner and its own UDP socket, and is kept up
 * without limit: reconnect with exponential back-off and jitter, state changes
 * `idle → connecting → connected` reported once each. Flows go to the
 * connected session carrying the fewest streams, so losing one session's path
 * loses only that session's flows.
 * @module
 */

import { lookup } from "node:dns/promises";
import { deriveSecrets, type KeySecrets, Masker } from "../../shared/crypto/keys.ts";
import { type Dialer, DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import { Connection } from "../../shared/session/connection.ts";
import {
  buildClientHello,
  type ClientHello,
  type HelloParams,
  readServerHello,
} from "../../shared/session/handshake.ts";
import { CloseCode, Session, type SessionConfig } from "../../shared/session/session.ts";
import { encodeOpenRequest, readOpenReply } from "../../shared/wire/open.ts";
import { decodeUdpDatagram, encodeUdpDatagram } from "../../shared/wire/udp.ts";
import type { UdpFlow, UdpFlowOpener } from "../inbound/socks5_udp.ts";
import { PacketCodec } from "../../shared/wire/packet.ts";
import { writeAll } from "../../shared/pipe.ts";
import { type DatagramSocket, openUdp } from "../../shared/net/datagram.ts";
import "../../ffi/udp_linux.ts";

/** Lifecycle of one session runner. */
export type RunnerState = "idle" | "connecting" | "connected" | "stopped";

/** Settings of the pool. */
export interface OstpPoolOptions {
  server: { host: string; port: number };
  key: Uint8Array;
  mux: number;
  session: Partial<SessionConfig>;
  connectTimeoutMs: number;
  reconnect: { initialDelayMs: number; maxDelayMs: number };
  /** State change of runner `index` (each change reported once). */
  onState?: (index: number, state: RunnerState, detail?: string) => void;
  /** A connection attempt of runner `index` failed; `streak` counts failures in a row. */
  onAttemptFailed?: (index: number, reason: string, streak: number) => void;
}

/** Thrown when the handshake got no valid answer in time. */
export class HandshakeTimeoutError extends Error {
  constructor() {
    super("no answer from server");
    this.name = "HandshakeTimeoutError";
  }
}

/** Keeps one session to the server alive. */
export class SessionRunner {
  /** Current state. */
  state: RunnerState = "idle";
  /** The live connection, when connected. */
  conn: Connection | null = null;
  /** Successful handshakes so far. */
  connects = 0;
  /** Time of the last handshake round trip, ms. */
  handshakeMs = 0;
  /** Receives the unreliable datagrams of every connection this runner makes. */
  onDatagram: ((conn: Connection, data: Uint8Array) => void) | null = null;

  private socket: DatagramSocket | null = null;
  private stopped = false;
  private waiters: (() => void)[] = [];
  private sleepTimer: ReturnType<typeof setTimeout> | undefined;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;

  constructor(
    readonly index: number,
    private readonly opts: OstpPoolOptions,
    private readonly secrets: KeySecrets,
    private readonly masker: Masker,
  ) {}

  /** Starts the keep-alive loop. */
  start(): void {
    this.loop ??= this.run();
  }

  private setState(s: RunnerState, detail?: string): void {
    if (this.state === s) return;
    this.state = s;
    this.opts.onState?.(this.index, s, detail);
    if (s === "connected") {
      for (const w of this.waiters.splice(0)) w();
    }
  }

  /** Resolves when connected, or after `ms` (whichever first). */
  waitConnected(ms: number): Promise<void> {
    if (this.state === "connected") return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.waiters.push(done);
    });
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      this.setState("connecting");
      let lasted = false;
      try {
        const conn = await this.connectOnce();
        this.conn = conn;
        this.connects++;
        this.setState("connected");
        const started = performance.now();
        const info = await conn.closed;
        this.conn = null;
        this.closeSocket();
        lasted = performance.now() - started > 5000;
        if (this.stopped) break;
        this.setState("connecting", info.reason || `closed (code ${info.code})`);
      } catch (e) {
        this.closeSocket();
        if (this.stopped) break;
        this.opts.onAttemptFailed?.(this.index, (e as Error).message, attempt + 1);
      }
      attempt = lasted ? 0 : attempt + 1;
      if (attempt === 0) continue;
      const { initialDelayMs, maxDelayMs } = this.opts.reconnect;
      const base = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt - 1, 20));
      await this.sleep(base * (0.5 + Math.random() * 0.5));
    }
    this.setState("stopped");
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      this.wake = r;
      this.sleepTimer = setTimeout(r, ms);
    });
  }

  private closeSocket(): void {
    try {
      this.socket?.close();
    } catch {
      // already closed
    }
    this.socket = null;
  }

  private openSocket(): DatagramSocket {
    const v6 = this.serverAddr?.hostname.includes(":") ?? false;
    return openUdp(v6 ? "::" : "0.0.0.0", 0);
  }

  /** Local UDP port of the current socket (0 when none). */
  get localPort(): number {
    return this.socket ? this.socket.addr.port : 0;
  }

  /**
   * Moves the live session to a fresh UDP socket (a new source port) without a
   * new handshake: NAT rebinding on demand, and the "socket hopping" that
   * defeats per-flow throttling. The server follows once it has seen the
   * new address's authenticated packets. Returns false when not connected.
   */
  rebind(): boolean {
    if (!this.conn || !this.socket) return false;
    const old = this.socket;
    const sock = this.openSocket();
    this.socket = sock;
    this.receiveLoop(sock, null);
    // Elicit acks from the server so it sees the new address at once.
    this.conn.session.ping();
    this.conn.flush();
    setTimeout(() => {
      try {
        old.close();
      } catch {
        // already closed
      }
    }, 2000);
    return true;
  }

  private readonly send = (d: Uint8Array): void => {
    const to = this.serverAddr;
    if (!this.socket || !to) return;
    this.socket.send(d, to);
  };

  private serverAddr: Deno.NetAddr | null = null;
  private hello: ClientHello | null = null;
  private resolveConn: ((c: Connection) => void) | null = null;

  /** Reads one socket until it closes: handshake answers first, then session packets. */
  private receiveLoop(sock: DatagramSocket, params: HelloParams | null): void {
    sock.run((data, from) => {
      if (from.port !== this.serverAddr?.port) return;
      if (this.conn) {
        this.conn.receive(data);
        return;
      }
      if (!this.hello || !params || !this.resolveConn) return;
      const ok = readServerHello(this.hello, this.masker, data);
      if (!ok) return;
      const mtu = Math.min(params.maxDatagramSize, ok.params.maxDatagramSize);
      const session = new Session({
        protector: new PacketCodec({
          sessionId: this.hello.sessionId,
          sendKey: ok.keys.initiatorToResponder,
          recvKey: ok.keys.responderToInitiator,
          masker: this.masker,
        }),
        isClient: true,
        peer: ok.params,
        now: performance.now(),
        config: { ...this.opts.session, maxDatagramSize: mtu },
      });
      const conn = new Connection(session, this.send);
      conn.onDatagram = (d) => this.onDatagram?.(conn, d);
      this.conn = conn;
      // First packet confirms the session to the server.
      session.sendDatagram(new Uint8Array(0));
      conn.flush();
      this.resolveConn(conn);
    }).then(() => {
      // Only the current socket's end ends the session.
      if (sock === this.socket) this.conn?.close(CloseCode.INTERNAL, "socket closed");
    });
  }

  private async connectOnce(): Promise<Connection> {
    const { host, port } = this.opts.server;
    try {
      const r = await lookup(host);
      this.serverAddr = { transport: "udp", hostname: r.address, port };
    } catch (e) {
      throw new Error(`cannot resolve ${host}: ${(e as Error).message}`);
    }
    const sock = this.openSocket();
    this.socket = sock;
    const cfg = this.opts.session;
    const params: HelloParams = {
      maxData: cfg.maxData ?? 32 * 1024 * 1024,
      maxStreamData: cfg.maxStreamData ?? 8 * 1024 * 1024,
      maxStreams: cfg.maxStreams ?? 8192,
      maxDatagramSize: cfg.maxDatagramSize ?? 1350,
    };
    const started = performance.now();
    const hello = buildClientHello(this.secrets, this.masker, params, Date.now());
    this.hello = hello;
    const connected = new Promise<Connection>((r) => (this.resolveConn = r));
    this.receiveLoop(sock, params);
    // Send the hello, repeating it with back-off until answered or timed out.
    const deadline = started + this.opts.connectTimeoutMs;
    let wait = 500;
    while (!this.conn && !this.stopped) {
      this.socket?.send(hello.datagram, this.serverAddr!);
      const left = deadline - performance.now();
      if (left <= 0) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        connected,
        new Promise((r) => (timer = setTimeout(r, Math.min(wait, left)))),
      ]);
      clearTimeout(timer);
      wait *= 2;
    }
    this.hello = null;
    this.resolveConn = null;
    const conn = this.conn as Connection | null;
    if (!conn) {
      this.closeSocket();
      throw this.stopped ? new Error("stopped") : new HandshakeTimeoutError();
    }
    this.handshakeMs = performance.now() - started;
    return conn;
  }

  /** Stops the runner and closes its session with a reason. */
  async stop(reason = "client shutting down"): Promise<void> {
    this.stopped = true;
    clearTimeout(this.sleepTimer);
    this.wake?.();
    if (this.conn) {
      this.conn.close(CloseCode.SHUTDOWN, reason);
      await new Promise((r) => setTimeout(r, 10));
    }
    this.closeSocket();
    for (const w of this.waiters.splice(0)) w();
    await this.loop;
  }
}

/** UDP flows one session carries at most (the server enforces the same bound). */
export const MAX_UDP_FLOWS_PER_SESSION = 256;

/** Counters of the pool's UDP flows. */
export interface PoolUdpStats {
  /** Flows opened so far. */
  flows: number;
  /** Datagrams from the server dropped: malformed, or for an unknown flow. */
  repliesDropped: number;
}

interface PoolFlow {
  id: number;
  conn: Connection | null;
  onReply: (from: Target, data: Uint8Array) => void;
}

/** A pool of session runners that dials targets through the tunnel. */
export class OstpPool {
  /** One runner per parallel session. */
  readonly runners: SessionRunner[];
  /** UDP relay counters. */
  readonly udpStats: PoolUdpStats = { flows: 0, repliesDropped: 0 };
  private next = 0;
  private readonly udpFlows = new Map<number, PoolFlow>();
  private readonly udpCounts = new WeakMap<Connection, number>();
  private nextFlowId = crypto.getRandomValues(new Uint32Array(1))[0];

  constructor(private readonly opts: OstpPoolOptions) {
    const secrets = deriveSecrets(opts.key);
    const masker = new Masker(secrets.obfsKey);
    this.runners = Array.from(
      { length: Math.max(1, opts.mux) },
      (_, i) => new SessionRunner(i, opts, secrets, masker),
    );
    for (const r of this.runners) r.onDatagram = (c, d) => this.routeDatagram(c, d);
  }

  /** Starts every runner. */
  start(): void {
    for (const r of this.runners) r.start();
  }

  /** Stops every runner. */
  async stop(): Promise<void> {
    await Promise.all(this.runners.map((r) => r.stop()));
  }

  /** Picks the connected session with the fewest streams (round robin among ties). */
  private pick(): Connection | null {
    return this.pickBy((c) => c.session.streamCount, Infinity);
  }

  /**
   * The connected session with the lowest `load` below `limit`, starting the
   * scan one further each call so ties rotate.
   */
  private pickBy(load: (c: Connection) => number, limit: number): Connection | null {
    let best: Connection | null = null;
    let bestCount = limit;
    const n = this.runners.length;
    for (let i = 0; i < n; i++) {
      const r = this.runners[(this.next + i) % n];
      const c = r.conn;
      if (!c || !c.isOpen || r.state !== "connected") continue;
      const count = load(c);
      if (count < bestCount) {
        best = c;
        bestCount = count;
      }
    }
    this.next = (this.next + 1) % n;
    return best;
  }

  /** Opens a stream to `target` through the tunnel. */
  readonly dial: Dialer = async (target: Target): Promise<Duplex> => {
    const request = encodeOpenRequest(target);
    let conn = this.pick();
    if (!conn) {
      await Promise.race(this.runners.map((r) => r.waitConnected(this.opts.connectTimeoutMs)));
      conn = this.pick();
      if (!conn) throw new DialError("unavailable", "tunnel is not connected");
    }
    const stream = conn.openStream();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await writeAll(stream, request);
      await Promise.race([
        readOpenReply((p) => stream.read(p)),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new DialError("timeout", "no answer from the server for this stream")),
            this.opts.connectTimeoutMs,
          );
        }),
      ]);
      return stream;
    } catch (e) {
      stream.reset();
      if (e instanceof DialError) throw e;
      throw new DialError("unavailable", (e as Error).message);
    } finally {
      clearTimeout(timer);
    }
  };

  /** Connected session with the fewest UDP flows below the per-session bound. */
  private pickUdp(): Connection | null {
    return this.pickBy((c) => this.udpCounts.get(c) ?? 0, MAX_UDP_FLOWS_PER_SESSION);
  }

  private attach(f: PoolFlow, c: Connection | null): void {
    if (f.conn) this.udpCounts.set(f.conn, Math.max(0, (this.udpCounts.get(f.conn) ?? 1) - 1));
    f.conn = c;
    if (c) this.udpCounts.set(c, (this.udpCounts.get(c) ?? 0) + 1);
  }

  private routeDatagram(conn: Connection, data: Uint8Array): void {
    if (data.length === 0) return; // the session-confirming empty datagram
    const d = decodeUdpDatagram(data);
    const f = d ? this.udpFlows.get(d.flowId) : undefined;
    if (!d || !f || f.conn !== conn) {
      this.udpStats.repliesDropped++;
      return;
    }
    f.onReply({ host: d.host, port: d.port }, d.payload);
  }

  /**
   * Opens a UDP flow on one connected session (waiting up to the connect
   * timeout for one). Its datagrams carry a pool-unique flow id; replies come
   * back to `onReply`. If the session drops, the next datagram moves the flow
   * to a live session (the server then sees a new flow: UDP semantics).
   * @throws {DialError} "unavailable" when no session is connected or every
   *   connected session already carries {@link MAX_UDP_FLOWS_PER_SESSION} flows.
   */
  readonly openUdpFlow: UdpFlowOpener = async (onReply) => {
    let conn = this.pickUdp();
    if (!conn && !this.runners.some((r) => r.state === "connected")) {
      await Promise.race(this.runners.map((r) => r.waitConnected(this.opts.connectTimeoutMs)));
      conn = this.pickUdp();
    }
    if (!conn) throw new DialError("unavailable", "no session available for a UDP flow");
    let id = this.nextFlowId >>> 0;
    while (this.udpFlows.has(id)) id = (id + 1) >>> 0;
    this.nextFlowId = (id + 1) >>> 0;
    const f: PoolFlow = { id, conn: null, onReply };
    this.attach(f, conn);
    this.udpFlows.set(id, f);
    this.udpStats.flows++;
    let closed = false;
    const flow: UdpFlow = {
      send: (target, data) => {
        if (closed) return false;
        if (!f.conn?.isOpen) this.attach(f, this.pickUdp());
        const c = f.conn;
        if (!c) return false;
        const wire = encodeUdpDatagram(id, target, data);
        if (!wire || wire.length > c.session.maxDatagramPayload) return false;
        return c.sendDatagram(wire);
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.attach(f, null);
        this.udpFlows.delete(id);
      },
    };
    return flow;
  };
}

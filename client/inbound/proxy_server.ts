/**
 * The client's local proxy inbound: one TCP port speaking SOCKS5 and HTTP
 * proxy, told apart by the first byte (0x05 → SOCKS5, anything else → HTTP).
 * Every accepted request becomes a flow handed to the injected
 * {@link Outbound} (the router) with its context — the inbound's name, the
 * application's address and connection, the target — followed by a relay;
 * SOCKS5 UDP ASSOCIATE opens one UDP flow on the same outbound.
 * @module
 */

import type { Target } from "../../shared/duplex.ts";
import type { FlowOrigin, Outbound } from "../outbound/outbound.ts";
import { BufferedReader, closeQuietly, isExpectedDisconnect } from "../../shared/pipe.ts";
import { TimeoutLink, TimeoutQueue } from "../../shared/timeout_queue.ts";
import { handleHttpProxy } from "./http.ts";
import { handleSocks5, type ProxyCredentials } from "./socks5.ts";
import { newSocks5UdpStats, type Socks5UdpStats, UdpAssociation } from "./socks5_udp.ts";

/** Options for {@link ProxyServer}. */
export interface ProxyServerOptions {
  /** Address to listen on, e.g. "127.0.0.1". */
  hostname: string;
  /** Port to listen on; 0 picks a free one (see {@link ProxyServer.addr}). */
  port: number;
  /** Carries every request's flow (TCP streams and UDP associations). */
  outbound: Outbound;
  /** The inbound's name in flow contexts, which rules match (default `"proxy"`). */
  inbound?: string;
  /** When set, SOCKS5 requires user/password (RFC 1929) and HTTP requires Proxy-Authorization Basic. */
  auth?: ProxyCredentials;
  /** A client must finish its request within this long after connecting (or after starting a next HTTP request); default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /** An HTTP keep-alive connection may wait this long for its next request; default 60 000 ms. */
  idleTimeoutMs?: number;
  /** Receives unexpected errors; expected disconnects are not reported. */
  onError?: (e: unknown) => void;
  /** Called for every request once its target is known (after authentication). */
  onRequest?: (target: Target, protocol: "socks5" | "http") => void;
  /** When set, SOCKS5 UDP ASSOCIATE is served through the outbound's UDP flows (else it gets 0x07). */
  udp?: {
    /** An association without a datagram either way for this long ends; default 60 000 ms. */
    idleTimeoutMs?: number;
  };
}

/** One accepted client connection; its handshake or idle timeout sits in one of the server's queues. */
class Connection extends TimeoutLink {
  readonly ctl = new AbortController();
  constructor(readonly conn: Deno.TcpConn, private readonly kill: (c: Connection) => void) {
    super();
  }
  onTimeout(): void {
    this.kill(this);
  }
}

/** SOCKS5 + HTTP proxy listener. Call {@link ProxyServer.start}, then {@link ProxyServer.close}. */
export class ProxyServer {
  readonly #opts: ProxyServerOptions;
  readonly #handshakeTimeouts: TimeoutQueue;
  readonly #idleTimeouts: TimeoutQueue;
  readonly #killConn = (c: Connection) => this.#kill(c);
  #listener: Deno.TcpListener | undefined;
  #acceptLoop: Promise<void> | undefined;
  #conns = new Set<Connection>();
  #tasks = new Set<Promise<void>>();
  #accepted = 0;
  #closing = false;
  #closed: Promise<void> | undefined;
  #wakeAcceptLoop: (() => void) | undefined;
  #udpActive = 0;
  /** Counters of SOCKS5 UDP ASSOCIATE. */
  readonly udpStats: Socks5UdpStats = newSocks5UdpStats();

  constructor(opts: ProxyServerOptions) {
    this.#opts = opts;
    this.#handshakeTimeouts = new TimeoutQueue(opts.handshakeTimeoutMs ?? 10_000);
    this.#idleTimeouts = new TimeoutQueue(opts.idleTimeoutMs ?? 60_000);
  }

  /** Starts listening; resolves once the port is bound (accepting runs in the background). */
  // deno-lint-ignore require-await
  async start(): Promise<void> {
    if (this.#listener || this.#closing) throw new Error("ProxyServer already started or closed");
    this.#listener = Deno.listen({
      hostname: this.#opts.hostname,
      port: this.#opts.port,
      transport: "tcp",
    });
    this.#acceptLoop = this.#accept(this.#listener);
  }

  /** The bound address. @throws if not started. */
  get addr(): Deno.NetAddr {
    if (!this.#listener) throw new Error("ProxyServer not started");
    return this.#listener.addr;
  }

  /** Client connections currently open. */
  get activeConnections(): number {
    return this.#conns.size;
  }

  /** SOCKS5 UDP associations currently open. */
  get activeUdpAssociations(): number {
    return this.#udpActive;
  }

  /** Client connections accepted since {@link ProxyServer.start}. */
  get acceptedConnections(): number {
    return this.#accepted;
  }

  /** Stops listening, closes every live connection (and its upstream), and waits for all handlers to end. */
  close(): Promise<void> {
    this.#closed ??= this.#shutdown();
    return this.#closed;
  }

  async #shutdown(): Promise<void> {
    this.#closing = true;
    if (this.#listener) {
      try {
        this.#listener.close();
      } catch { /* already closed */ }
    }
    this.#wakeAcceptLoop?.();
    for (const c of this.#conns) this.#kill(c);
    await this.#acceptLoop;
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
    this.#handshakeTimeouts.clear();
    this.#idleTimeouts.clear();
  }

  #report(e: unknown): void {
    try {
      this.#opts.onError?.(e);
    } catch { /* a faulty callback must not break the server */ }
  }

  #kill(c: Connection): void {
    c.disarm();
    c.ctl.abort();
    closeQuietly(c.conn);
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    while (!this.#closing) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (this.#closing) break;
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) break;
        this.#report(e);
        // e.g. out of file descriptors: back off instead of spinning.
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 100);
          this.#wakeAcceptLoop = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.#wakeAcceptLoop = undefined;
        continue;
      }
      if (this.#closing) {
        closeQuietly(conn);
        break;
      }
      this.#accepted++;
      const c = new Connection(conn, this.#killConn);
      this.#conns.add(c);
      const task = this.#serve(c);
      this.#tasks.add(task);
      task.finally(() => this.#tasks.delete(task));
    }
  }

  async #serve(c: Connection): Promise<void> {
    try {
      try {
        c.conn.setNoDelay(true);
      } catch { /* not fatal */ }
      this.#handshakeTimeouts.arm(c);
      const reader = new BufferedReader(c.conn, 4096);
      const first = await reader.peekByte();
      if (first === null || c.ctl.signal.aborted) return;
      const protocol = first === 0x05 ? "socks5" : "http";
      const peer = c.conn.remoteAddr;
      const local = c.conn.localAddr;
      const source: Target = { host: peer.hostname, port: peer.port };
      const flow: FlowOrigin = {
        inbound: this.#opts.inbound ?? "proxy",
        source,
        conn: { network: "tcp", peer: source, local: { host: local.hostname, port: local.port } },
      };
      const common = {
        outbound: this.#opts.outbound,
        flow,
        auth: this.#opts.auth,
        signal: c.ctl.signal,
        onError: (e: unknown) => this.#report(e),
        onHandshakeDone: (target: Target) => {
          c.disarm();
          try {
            this.#opts.onRequest?.(target, protocol);
          } catch (e) {
            this.#report(e);
          }
        },
      };
      if (protocol === "socks5") {
        const udp = this.#opts.udp;
        const udpAssociate = udp
          ? async (hint: Target): Promise<UdpAssociation> => {
            let assoc: UdpAssociation;
            try {
              assoc = await UdpAssociation.open({
                outbound: this.#opts.outbound,
                flow: { ...flow, network: "udp", target: hint },
                localHost: c.conn.localAddr.hostname,
                clientHost: c.conn.remoteAddr.hostname,
                idleTimeoutMs: udp.idleTimeoutMs,
                stats: this.udpStats,
                signal: c.ctl.signal,
                onClose: () => this.#udpActive--,
              });
            } catch (e) {
              this.udpStats.refused++;
              throw e;
            }
            this.udpStats.associations++;
            this.#udpActive++;
            return assoc;
          }
          : undefined;
        await handleSocks5(c.conn, { ...common, udpAssociate }, reader);
      } else {
        await handleHttpProxy(c.conn, {
          ...common,
          onIdle: () => this.#idleTimeouts.arm(c),
          onRequestStart: () => this.#handshakeTimeouts.arm(c),
        }, reader);
      }
    } catch (e) {
      if (!isExpectedDisconnect(e)) this.#report(e);
    } finally {
      c.disarm();
      closeQuietly(c.conn);
      this.#conns.delete(c);
    }
  }
}

/**
 * The "direct" outbound: flows leave from this host, without the tunnel.
 * TCP goes through the direct dialer (`shared/net/direct.ts`: connect timeout,
 * errors mapped to DialError reasons). Each UDP flow gets its own local
 * socket per address family (opened on the flow's first datagram of that
 * family), sends to any target (names resolved here, with a small per-flow
 * cache) and delivers replies from any address with their source. The caller
 * closes idle flows; {@link DirectOutbound.close} closes every flow still open.
 * @module
 */

import { lookup } from "node:dns/promises";
import type { Dialer, Duplex, Target } from "../../shared/duplex.ts";
import { createDirectDialer, type DirectDialerOptions } from "../../shared/net/direct.ts";
import { type DatagramSocket, openUdp } from "../../shared/net/datagram.ts";
import { parseIPv4, parseIPv6 } from "../../shared/net/ip.ts";
import type { FlowContext, Outbound, UdpFlow, UdpReplyHandler } from "./outbound.ts";

/** Resolves a host name to one IP address literal (IPv4 dotted or IPv6 without brackets). */
export type HostResolver = (name: string) => Promise<string>;

/** Options of {@link DirectOutbound}. */
export interface DirectOutboundOptions extends DirectDialerOptions {
  /** The outbound's name (default `"direct"`). */
  name?: string;
  /** Dials TCP; default: {@link createDirectDialer} with these options. */
  dialer?: Dialer;
  /** Resolves names for UDP datagrams; default `node:dns` `lookup` (the system resolver). */
  resolve?: HostResolver;
  /** Local address of IPv4 UDP sockets (default `"0.0.0.0"`). */
  udpBind4?: string;
  /** Local address of IPv6 UDP sockets (default `"::"`). */
  udpBind6?: string;
  /** UDP socket implementation (see `shared/net/datagram.ts` `openUdp`); default: the best available. */
  udpImpl?: "deno" | "ffi";
}

/** Counters of the direct outbound's UDP flows. */
export interface DirectUdpStats {
  /** Flows opened so far. */
  flows: number;
  /** Datagrams sent (handed to a socket). */
  datagramsUp: number;
  /** Replies delivered. */
  datagramsDown: number;
  /** Datagrams not sent: bad target, name not resolvable, no socket for the family, queue full. */
  sendFailed: number;
  /** Name lookups that failed. */
  dnsFailures: number;
}

/** How long a resolved name is reused by one flow, ms. */
export const NAME_CACHE_MS = 60_000;
/** How long a failed lookup is remembered by one flow, ms. */
export const NAME_FAILURE_MS = 5_000;
/** Names one flow remembers at most (the oldest is forgotten first). */
export const NAME_CACHE_MAX = 256;
/** Datagrams held per name while it is being resolved (later ones are dropped). */
export const PENDING_MAX = 16;

const defaultResolve: HostResolver = async (name) => (await lookup(name)).address;

/** One resolved (or failed, or in-flight) name of a flow. */
interface NameEntry {
  /** The address, or null while resolving or after a failure. */
  ip: string | null;
  /** `performance.now()` after which the entry is stale. */
  expires: number;
  /** Datagrams waiting for the lookup (null once it settled). */
  pending: { port: number; data: Uint8Array }[] | null;
}

/** Carries flows from this host. */
export class DirectOutbound implements Outbound {
  /** The outbound's name. */
  readonly name: string;
  /** UDP counters over every flow. */
  readonly udpStats: DirectUdpStats = {
    flows: 0,
    datagramsUp: 0,
    datagramsDown: 0,
    sendFailed: 0,
    dnsFailures: 0,
  };
  readonly #dialer: Dialer;
  readonly #opts: DirectOutboundOptions;
  readonly #flows = new Set<DirectUdpFlow>();

  /** Creates the outbound; nothing is opened until a flow asks. */
  constructor(opts: DirectOutboundOptions = {}) {
    this.name = opts.name ?? "direct";
    this.#opts = opts;
    this.#dialer = opts.dialer ?? createDirectDialer(opts);
  }

  /** Connects to `ctx.target` over TCP (a name is resolved here). */
  dial(ctx: FlowContext, signal?: AbortSignal): Promise<Duplex> {
    return this.#dialer(ctx.target, signal);
  }

  /** Opens a UDP flow; its sockets are bound on its first datagram of each address family. */
  openUdp(_ctx: FlowContext, onReply: UdpReplyHandler): Promise<UdpFlow> {
    const flow = new DirectUdpFlow(
      this.#opts,
      this.udpStats,
      onReply,
      (f) => this.#flows.delete(f),
    );
    this.#flows.add(flow);
    this.udpStats.flows++;
    return Promise.resolve(flow);
  }

  /** Closes every UDP flow still open. */
  close(): void {
    for (const f of [...this.#flows]) f.close();
  }

  /** UDP flows open now. */
  get openFlows(): number {
    return this.#flows.size;
  }
}

/** One UDP flow of the direct outbound. */
class DirectUdpFlow implements UdpFlow {
  #v4: DatagramSocket | null = null;
  #v6: DatagramSocket | null = null;
  #closed = false;
  readonly #names = new Map<string, NameEntry>();
  readonly #resolve: HostResolver;
  /** The last reply's source object and the Target made for it (reused while they match). */
  #lastFrom: Deno.NetAddr | null = null;
  #lastTarget: Target = { host: "", port: 0 };

  constructor(
    private readonly opts: DirectOutboundOptions,
    private readonly stats: DirectUdpStats,
    private readonly onReply: UdpReplyHandler,
    private readonly onClose: (f: DirectUdpFlow) => void,
  ) {
    this.#resolve = opts.resolve ?? defaultResolve;
  }

  send(target: Target, data: Uint8Array): boolean {
    if (this.#closed) return false;
    const port = target.port;
    if (!Number.isInteger(port) || port < 1 || port > 65535) return this.#failed();
    const host = target.host;
    if (parseIPv4(host)) return this.#sendTo(host, false, port, data);
    if (host.includes(":")) {
      return parseIPv6(host) ? this.#sendTo(host, true, port, data) : this.#failed();
    }
    if (host.length === 0 || host.length > 253) return this.#failed();
    return this.#sendToName(host.toLowerCase(), port, data);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#v4?.close();
    this.#v6?.close();
    this.#v4 = this.#v6 = null;
    this.#names.clear();
    this.onClose(this);
  }

  #failed(): false {
    this.stats.sendFailed++;
    return false;
  }

  #sendTo(ip: string, v6: boolean, port: number, data: Uint8Array): boolean {
    const sock = this.#socket(v6);
    if (!sock) return this.#failed();
    sock.send(data, { transport: "udp", hostname: ip, port });
    this.stats.datagramsUp++;
    return true;
  }

  #sendToName(name: string, port: number, data: Uint8Array): boolean {
    const now = performance.now();
    let e = this.#names.get(name);
    if (e && e.pending === null && now >= e.expires) {
      this.#names.delete(name);
      e = undefined;
    }
    if (e) {
      if (e.pending) {
        if (e.pending.length >= PENDING_MAX) return this.#failed();
        e.pending.push({ port, data: data.slice() });
        return true;
      }
      if (e.ip === null) return this.#failed();
      return this.#sendTo(e.ip, e.ip.includes(":"), port, data);
    }
    if (this.#names.size >= NAME_CACHE_MAX) {
      // Forget the oldest settled entry (Map order is insertion order).
      for (const [k, v] of this.#names) {
        if (v.pending === null) {
          this.#names.delete(k);
          break;
        }
      }
      if (this.#names.size >= NAME_CACHE_MAX) return this.#failed();
    }
    const entry: NameEntry = { ip: null, expires: 0, pending: [{ port, data: data.slice() }] };
    this.#names.set(name, entry);
    this.#lookup(name, entry);
    return true;
  }

  async #lookup(name: string, entry: NameEntry): Promise<void> {
    let ip: string | null = null;
    try {
      const r = await this.#resolve(name);
      if (parseIPv4(r) || parseIPv6(r)) ip = r;
    } catch {
      // ip stays null: counted below
    }
    const pending = entry.pending ?? [];
    entry.pending = null;
    entry.ip = ip;
    entry.expires = performance.now() + (ip ? NAME_CACHE_MS : NAME_FAILURE_MS);
    if (this.#closed) return;
    if (!ip) {
      this.stats.dnsFailures++;
      this.stats.sendFailed += pending.length;
      return;
    }
    for (const p of pending) this.#sendTo(ip, ip.includes(":"), p.port, p.data);
  }

  /** The flow's socket for one family, opened on first use; null when it cannot be opened. */
  #socket(v6: boolean): DatagramSocket | null {
    const have = v6 ? this.#v6 : this.#v4;
    if (have) return have;
    let sock: DatagramSocket;
    try {
      sock = v6
        ? openUdp(this.opts.udpBind6 ?? "::", 0, { impl: this.opts.udpImpl })
        : openUdp(this.opts.udpBind4 ?? "0.0.0.0", 0, { impl: this.opts.udpImpl });
    } catch {
      return null;
    }
    if (v6) this.#v6 = sock;
    else this.#v4 = sock;
    sock.run(this.#onDatagram).catch(() => {});
    return sock;
  }

  readonly #onDatagram = (data: Uint8Array, from: Deno.NetAddr): void => {
    if (this.#closed) return;
    let t = this.#lastTarget;
    if (from !== this.#lastFrom || t.host !== from.hostname || t.port !== from.port) {
      t = this.#lastTarget = { host: from.hostname, port: from.port };
      this.#lastFrom = from;
    }
    this.stats.datagramsDown++;
    try {
      this.onReply(t, data);
    } catch {
      // A faulty reply handler must not stop the receive loop.
    }
  };
}

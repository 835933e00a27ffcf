/**
 * The server's UDP relay (docs/protocol.md, "UDP relay"): the DATAGRAM frames
 * of one session carry `flow id + address + payload`; per flow id the relay
 * keeps a UDP socket (one per address family, created on the first datagram
 * to that family), sends the payload to the target and returns every reply
 * as a DATAGRAM with the flow id and the reply's source address.
 *
 * Bounds: at most `maxFlows` flows per session (beyond: dropped and counted),
 * a flow without traffic for `idleTimeoutMs` is closed, and everything is
 * closed with the session. Host names are resolved here, with a short cache.
 * @module
 */

import { lookup } from "node:dns/promises";
import type { Connection } from "../shared/session/connection.ts";
import { type DatagramSocket, openUdp } from "../shared/net/datagram.ts";
import { parseIPv4, parseIPv6 } from "../shared/net/ip.ts";
import { decodeUdpDatagram, encodeUdpDatagram } from "../shared/wire/udp.ts";

/** UDP relay counters, summed over sessions. */
export interface UdpRelayStats {
  flowsOpened: number;
  datagramsUp: number;
  datagramsDown: number;
  /** Malformed DATAGRAM payloads. */
  malformed: number;
  /** Datagrams of new flows beyond the per-session bound. */
  flowLimitDropped: number;
  /** Names that did not resolve (datagram dropped). */
  dnsFailed: number;
  /** Replies too big for one DATAGRAM frame, or refused by the session. */
  downDropped: number;
}

/** Fresh zeroed counters. */
export function newUdpRelayStats(): UdpRelayStats {
  return {
    flowsOpened: 0,
    datagramsUp: 0,
    datagramsDown: 0,
    malformed: 0,
    flowLimitDropped: 0,
    dnsFailed: 0,
    downDropped: 0,
  };
}

/** Options of {@link UdpRelay}. */
export interface UdpRelayOptions {
  /** Flows per session at most; default 256. */
  maxFlows?: number;
  /** A flow without a datagram either way for this long is closed; default 60 000 ms. */
  idleTimeoutMs?: number;
  /** Counters to add to (shared by every session's relay). */
  stats?: UdpRelayStats;
  /** Told the payload bytes of every datagram relayed, up (to targets) or down (to the client). */
  account?: (up: number, down: number) => void;
  /** Name resolution (default: the system resolver with a 30 s cache). */
  resolve?: (host: string) => Promise<string | null>;
}

interface Flow {
  id: number;
  v4: DatagramSocket | null;
  v6: DatagramSocket | null;
  lastActive: number;
}

const DNS_TTL_MS = 30_000;
const DNS_NEGATIVE_TTL_MS = 5_000;
const DNS_CACHE_MAX = 4096;
const dnsCache = new Map<string, { address: string | null; expires: number }>();

/** Resolves `host` with the system resolver; caches answers briefly (process-wide). */
export async function resolveCached(host: string): Promise<string | null> {
  const now = performance.now();
  const hit = dnsCache.get(host);
  if (hit && hit.expires > now) return hit.address;
  let address: string | null = null;
  try {
    address = (await lookup(host)).address;
  } catch {
    address = null;
  }
  if (dnsCache.size >= DNS_CACHE_MAX) {
    for (const [k, v] of dnsCache) if (v.expires <= now) dnsCache.delete(k);
    if (dnsCache.size >= DNS_CACHE_MAX) dnsCache.clear();
  }
  dnsCache.set(host, {
    address,
    expires: now + (address ? DNS_TTL_MS : DNS_NEGATIVE_TTL_MS),
  });
  return address;
}

/** The UDP relay of one session. */
export class UdpRelay {
  readonly #conn: Connection;
  readonly #flows = new Map<number, Flow>();
  readonly #maxFlows: number;
  readonly #idleMs: number;
  readonly #resolve: (host: string) => Promise<string | null>;
  readonly stats: UdpRelayStats;
  readonly #account: ((up: number, down: number) => void) | undefined;
  #sweep: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(conn: Connection, opts: UdpRelayOptions = {}) {
    this.#conn = conn;
    this.#maxFlows = opts.maxFlows ?? 256;
    this.#idleMs = opts.idleTimeoutMs ?? 60_000;
    this.#resolve = opts.resolve ?? resolveCached;
    this.stats = opts.stats ?? newUdpRelayStats();
    this.#account = opts.account;
  }

  /** Live flows. */
  get flowCount(): number {
    return this.#flows.size;
  }

  /** Handles one DATAGRAM payload from the client. Never throws. */
  handle(data: Uint8Array): void {
    if (this.#closed || data.length === 0) return; // empty: the session-confirming datagram
    const d = decodeUdpDatagram(data);
    if (!d) {
      this.stats.malformed++;
      return;
    }
    let flow = this.#flows.get(d.flowId);
    if (!flow) {
      if (this.#flows.size >= this.#maxFlows) {
        this.stats.flowLimitDropped++;
        return;
      }
      flow = { id: d.flowId, v4: null, v6: null, lastActive: performance.now() };
      this.#flows.set(d.flowId, flow);
      this.stats.flowsOpened++;
      this.#sweep ??= setInterval(
        () => this.#expire(),
        Math.max(50, Math.min(5000, this.#idleMs / 4)),
      );
    }
    flow.lastActive = performance.now();
    const payload = d.payload.slice();
    const port = d.port;
    if (parseIPv4(d.host) || parseIPv6(d.host)) {
      this.#send(flow, d.host, port, payload);
    } else {
      this.#resolve(d.host).then((addr) => {
        if (!addr) this.stats.dnsFailed++;
        else this.#send(flow, addr, port, payload);
      }, () => this.stats.dnsFailed++);
    }
  }

  #send(flow: Flow, host: string, port: number, payload: Uint8Array): void {
    if (this.#closed || this.#flows.get(flow.id) !== flow) return;
    const v6 = host.includes(":");
    let sock = v6 ? flow.v6 : flow.v4;
    if (!sock) {
      try {
        sock = openUdp(v6 ? "::" : "0.0.0.0", 0, { impl: "deno" });
      } catch {
        this.stats.downDropped++;
        return;
      }
      if (v6) flow.v6 = sock;
      else flow.v4 = sock;
      const s = sock;
      s.run((data, from) => this.#reply(flow, s, data, from)).catch(() => {});
    }
    sock.send(payload, { transport: "udp", hostname: host, port });
    this.stats.datagramsUp++;
    this.#account?.(payload.length, 0);
  }

  #reply(flow: Flow, sock: DatagramSocket, data: Uint8Array, from: Deno.NetAddr): void {
    if (this.#closed || (flow.v4 !== sock && flow.v6 !== sock)) return;
    flow.lastActive = performance.now();
    const m = from.hostname.match(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i);
    const host = m ? m[1] : from.hostname;
    const wire = encodeUdpDatagram(flow.id, { host, port: from.port }, data);
    if (
      !wire || wire.length > this.#conn.session.maxDatagramPayload ||
      !this.#conn.sendDatagram(wire)
    ) {
      this.stats.downDropped++;
      return;
    }
    this.stats.datagramsDown++;
    this.#account?.(0, data.length);
  }

  #expire(): void {
    const now = performance.now();
    for (const f of this.#flows.values()) {
      if (now - f.lastActive >= this.#idleMs) this.#closeFlow(f);
    }
    if (this.#flows.size === 0) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }

  #closeFlow(f: Flow): void {
    this.#flows.delete(f.id);
    for (const s of [f.v4, f.v6]) {
      try {
        s?.close();
      } catch { /* already closed */ }
    }
    f.v4 = f.v6 = null;
  }

  /** Closes every flow; later datagrams are ignored. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const f of [...this.#flows.values()]) this.#closeFlow(f);
  }
}

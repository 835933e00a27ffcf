/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 §7), client side of the proxy: a local UDP
 * socket per association, the SOCKS UDP request header, and the hand-off of
 * each datagram to one UDP flow of an {@link Outbound} (the router, which
 * routes each datagram by its target).
 *
 * An association accepts datagrams only from the IP address of its TCP
 * control connection (and, once the first one arrived, only from that port),
 * refuses fragments (FRAG != 0: dropped and counted), and ends when the control
 * connection closes or after `idleTimeoutMs` without a datagram in either
 * direction.
 * @module
 */

import type { Duplex, Target } from "../../shared/duplex.ts";
import type { FlowContext, Outbound, UdpFlow } from "../outbound/outbound.ts";
import { type DatagramSocket, openUdp } from "../../shared/net/datagram.ts";
import { parseIPv4, parseIPv6 } from "../../shared/net/ip.ts";
import { readAddress } from "../../shared/wire/udp.ts";

/** A parsed SOCKS5 UDP request header plus its data. `data` is a view into the input. */
export interface Socks5UdpPacket {
  frag: number;
  atyp: number;
  host: string;
  port: number;
  data: Uint8Array;
}

/**
 * Parses `RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT DATA`. Returns null when
 * truncated, of an unknown address type, with a bad domain or port 0. RSV is
 * ignored (as most servers do); FRAG is returned for the caller to judge.
 * Never throws.
 */
export function parseSocks5Udp(buf: Uint8Array): Socks5UdpPacket | null {
  if (buf.length < 4) return null;
  const frag = buf[2];
  const a = readAddress(buf, 3);
  if (!a || a.port === 0) return null;
  return { frag, atyp: a.atyp, host: a.host, port: a.port, data: buf.subarray(a.end) };
}

/** Encodes a SOCKS5 UDP reply header (FRAG 0) for `from` followed by `data`; null for a bad address. */
export function encodeSocks5Udp(from: Target, data: Uint8Array): Uint8Array | null {
  const v4 = parseIPv4(from.host);
  const v6 = v4 ? null : parseIPv6(from.host);
  let atyp: number;
  let addr: Uint8Array;
  if (v4) {
    atyp = 1;
    addr = v4;
  } else if (v6) {
    atyp = 4;
    addr = v6;
  } else {
    const name = new TextEncoder().encode(from.host);
    if (name.length === 0 || name.length > 255) return null;
    atyp = 3;
    addr = new Uint8Array(1 + name.length);
    addr[0] = name.length;
    addr.set(name, 1);
  }
  if (!Number.isInteger(from.port) || from.port < 0 || from.port > 65535) return null;
  const out = new Uint8Array(4 + addr.length + 2 + data.length);
  out[3] = atyp;
  out.set(addr, 4);
  let p = 4 + addr.length;
  out[p++] = from.port >> 8;
  out[p++] = from.port & 0xff;
  out.set(data, p);
  return out;
}

export type { UdpFlow, UdpFlowOpener } from "../outbound/outbound.ts";

/** Counters of the UDP inbound, shared by every association of a proxy. */
export interface Socks5UdpStats {
  associations: number;
  refused: number;
  datagramsUp: number;
  datagramsDown: number;
  /** Datagrams with FRAG != 0 (fragmentation is not supported). */
  fragmentsDropped: number;
  /** Datagrams from an address other than the association's client. */
  foreignDropped: number;
  /** Datagrams with an unparsable header. */
  malformedDropped: number;
  /** Datagrams the outbound refused (too big for one packet, no session, blocked). */
  sendFailed: number;
}

/** Fresh zeroed counters. */
export function newSocks5UdpStats(): Socks5UdpStats {
  return {
    associations: 0,
    refused: 0,
    datagramsUp: 0,
    datagramsDown: 0,
    fragmentsDropped: 0,
    foreignDropped: 0,
    malformedDropped: 0,
    sendFailed: 0,
  };
}

/** Settings of a UDP association. */
export interface UdpAssociateOptions {
  /** Opens the association's UDP flow. */
  outbound: Outbound;
  /** The association's flow context (network `udp`; each datagram names its own target). */
  flow: FlowContext;
  /** Local address of the control connection: the UDP socket binds to its host. */
  localHost: string;
  /** IP address of the client (the control connection's peer). */
  clientHost: string;
  /** Idle timeout, ms (default 60 000). */
  idleTimeoutMs?: number;
  stats: Socks5UdpStats;
  signal?: AbortSignal;
  /** Called once when the association closes. */
  onClose?: () => void;
}

/** Normalises an IPv4-mapped IPv6 address to dotted IPv4, for address comparisons. */
function plainHost(h: string): string {
  const m = h.match(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i);
  return m ? m[1] : h;
}

/**
 * A live association: the bound UDP socket and the tunnel flow. Create with
 * {@link UdpAssociation.open}, then {@link UdpAssociation.run} until the
 * control connection ends.
 */
export class UdpAssociation {
  #sock: DatagramSocket;
  #flow: UdpFlow;
  #opts: UdpAssociateOptions;
  #clientHost: string;
  #clientPort = 0;
  #lastActive = performance.now();
  #closed = false;

  private constructor(sock: DatagramSocket, flow: UdpFlow, opts: UdpAssociateOptions) {
    this.#sock = sock;
    this.#flow = flow;
    this.#opts = opts;
    this.#clientHost = plainHost(opts.clientHost);
  }

  /** Opens the flow and binds the socket; rejects if either fails. */
  static async open(opts: UdpAssociateOptions): Promise<UdpAssociation> {
    let assoc: UdpAssociation | null = null;
    const flow = await opts.outbound.openUdp(opts.flow, (from, data) => assoc?.reply(from, data));
    let sock: DatagramSocket;
    try {
      sock = openUdp(plainHost(opts.localHost), 0, { impl: "deno" });
    } catch (e) {
      flow.close();
      throw e;
    }
    assoc = new UdpAssociation(sock, flow, opts);
    return assoc;
  }

  /** The bound UDP address to announce in the SOCKS reply. */
  get addr(): Deno.NetAddr {
    return this.#sock.addr;
  }

  private reply(from: Target, data: Uint8Array): void {
    if (this.#closed || this.#clientPort === 0) return;
    const out = encodeSocks5Udp(from, data);
    if (!out) return;
    this.#lastActive = performance.now();
    this.#opts.stats.datagramsDown++;
    this.#sock.send(out, { transport: "udp", hostname: this.#clientHost, port: this.#clientPort });
  }

  private onDatagram(data: Uint8Array, from: Deno.NetAddr): void {
    const st = this.#opts.stats;
    if (
      plainHost(from.hostname) !== this.#clientHost ||
      (this.#clientPort !== 0 && from.port !== this.#clientPort)
    ) {
      st.foreignDropped++;
      return;
    }
    const pkt = parseSocks5Udp(data);
    if (!pkt) {
      st.malformedDropped++;
      return;
    }
    if (pkt.frag !== 0) {
      st.fragmentsDropped++;
      return;
    }
    this.#clientPort = from.port;
    this.#lastActive = performance.now();
    if (this.#flow.send({ host: pkt.host, port: pkt.port }, pkt.data)) st.datagramsUp++;
    else st.sendFailed++;
  }

  /**
   * Serves the association until `control` ends (EOF or error), the signal
   * aborts, or the idle timeout; then closes the socket and the flow.
   */
  async run(control: Duplex): Promise<void> {
    const idleMs = this.#opts.idleTimeoutMs ?? 60_000;
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const onAbort = () => stop();
    this.#opts.signal?.addEventListener("abort", onAbort);
    if (this.#opts.signal?.aborted) stop();
    const tick = setInterval(() => {
      if (performance.now() - this.#lastActive >= idleMs) stop();
    }, Math.max(10, Math.min(1000, idleMs / 4)));
    const recv = this.#sock.run((d, f) => this.onDatagram(d, f));
    const watch = (async () => {
      const buf = new Uint8Array(512);
      try {
        // Anything the client sends on the control connection is ignored.
        while ((await control.read(buf)) !== null) { /* discard */ }
      } catch { /* reset: the association ends too */ }
      stop();
    })();
    try {
      await stopped;
    } finally {
      clearInterval(tick);
      this.#opts.signal?.removeEventListener("abort", onAbort);
      this.close();
      try {
        control.close();
      } catch { /* already closed */ }
      await Promise.allSettled([recv, watch]);
    }
  }

  /** Closes the socket and the flow. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#flow.close();
    this.#sock.close();
    try {
      this.#opts.onClose?.();
    } catch { /* a faulty callback must not break the proxy */ }
  }
}

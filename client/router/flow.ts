/**
 * What the router and the outbounds know about a flow: the one context an
 * inbound fills in per TCP connection or UDP association, which the router
 * reads to pick an outbound and the outbound reads to carry the flow. Nothing
 * here does I/O.
 * @module
 */

import type { Target } from "../../shared/duplex.ts";

/** Transport of a flow. */
export type Network = "tcp" | "udp";

/**
 * The application's own connection to an inbound, as accepted: its transport
 * and both ends. The router finds the program that owns it (process rules).
 */
export interface InboundConn {
  /** Transport of that connection (a SOCKS5 UDP association names its TCP control connection). */
  network: Network;
  /** The application's end: the accepted socket's remote address. */
  peer: Target;
  /** Our end: the accepted socket's local address. */
  local: Target;
}

/** One flow, as the router and the outbounds see it. */
export interface FlowContext {
  /** Name of the inbound that accepted the flow (`proxy`, `tun`, a mapping's name). */
  inbound: string;
  /** TCP stream or UDP flow. */
  network: Network;
  /**
   * What the application asked for: the SOCKS5 host name or address, the
   * HTTP `Host` / `CONNECT` authority, or the TUN packet's destination.
   * `host` is a domain name, dotted IPv4 or IPv6 without brackets. Outbounds
   * connect to this. For a UDP flow it is the association's declared
   * destination, and each datagram names its own target.
   */
  target: Target;
  /**
   * The destination address, when known: 16 bytes (IPv4 as IPv4-mapped IPv6,
   * `::ffff:a.b.c.d`) or 4 bytes of IPv4; from a resolution the caller did
   * after {@link RouteDecision.needsIp}, or given by the inbound (TUN). Any
   * other length is ignored. When absent and `target.host` is an IP literal,
   * the router parses the literal itself.
   */
  ip?: Uint8Array;
  /**
   * A name the flow is known by when `target.host` is an address: the name a
   * DNS answer gave that address, or the TLS server name / HTTP Host of its
   * first bytes (TUN inbound). Domain rules match it; outbounds still connect
   * to `target`, the address the application chose.
   */
  domain?: string;
  /** The application's own address, when the inbound knows it. */
  source?: Target;
  /**
   * File name of the application's executable (`curl`, `Discord.exe`), no
   * directory, when the inbound (or the router, from {@link conn}) found it.
   */
  process?: string;
  /** The application's connection to the inbound, for the process lookup. */
  conn?: InboundConn;
}

/**
 * What an inbound knows of a connection before the application names a
 * target: its name, the application's address and connection. Each request
 * adds `network` and `target` to make the {@link FlowContext}.
 */
export type FlowOrigin = Omit<FlowContext, "network" | "target">;

/** The router's answer for one flow. */
export interface RouteDecision {
  /** Index of the rule that matched (see `Router.rules`); -1: none, the default outbound. */
  rule: number;
  /** Name of the outbound the flow takes. */
  outbound: string;
  /**
   * True when the target is a host name without a known IP and a rule before
   * the one that matched has IP matchers that could match once the name is
   * resolved: resolving it and asking again may change the answer
   * (docs/routing.md, "Resolution").
   */
  needsIp: boolean;
}

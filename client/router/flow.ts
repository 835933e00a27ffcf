/**
 * What the router knows about a flow when it picks an outbound for it. An
 * inbound fills one in per TCP connection or UDP association and the router
 * reads it; nothing here does I/O.
 * @module
 */

import type { Target } from "../../shared/duplex.ts";

/** Transport of a flow. */
export type Network = "tcp" | "udp";

/** One flow, as the router sees it. */
export interface FlowContext {
  /** Name of the inbound that accepted the flow (`proxy`, `tun`, a mapping's name). */
  inbound: string;
  /** TCP stream or UDP flow. */
  network: Network;
  /**
   * What the application asked for: the SOCKS5 host name or address, the
   * HTTP `Host` / `CONNECT` authority, or the TUN packet's destination.
   * `host` is a domain name, dotted IPv4 or IPv6 without brackets.
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
  /** The application's own address, when the inbound knows it. */
  source?: Target;
  /**
   * File name of the application's executable (`curl`, `Discord.exe`), no
   * directory, when the inbound could find it.
   */
  process?: string;
}

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

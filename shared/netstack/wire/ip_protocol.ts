/**
 * IP protocol numbers (IPv4 "Protocol", IPv6 "Next Header"), IANA registry.
 * @module
 */

/** Protocol / next-header numbers the stack knows about. */
export const IpProtocol = {
  /** IPv6 Hop-by-Hop Options (RFC 8200 §4.3). */
  HopByHop: 0,
  /** ICMP for IPv4 (RFC 792). */
  Icmp: 1,
  /** TCP (RFC 9293). */
  Tcp: 6,
  /** UDP (RFC 768). */
  Udp: 17,
  /** IPv6 Routing header (RFC 8200 §4.4). */
  Routing: 43,
  /** IPv6 Fragment header (RFC 8200 §4.5). */
  Fragment: 44,
  /** Encapsulating Security Payload (RFC 4303): opaque, ends header parsing. */
  Esp: 50,
  /** Authentication Header (RFC 4302): length in 4-byte units. */
  Ah: 51,
  /** ICMP for IPv6 (RFC 4443). */
  Icmpv6: 58,
  /** IPv6 No Next Header (RFC 8200 §4.7). */
  NoNextHeader: 59,
  /** IPv6 Destination Options (RFC 8200 §4.6). */
  DestinationOptions: 60,
  /** Mobility header (RFC 6275), extension-header format. */
  Mobility: 135,
  /** Host Identity Protocol (RFC 7401), extension-header format. */
  Hip: 139,
  /** Shim6 (RFC 5533), extension-header format. */
  Shim6: 140,
} as const;

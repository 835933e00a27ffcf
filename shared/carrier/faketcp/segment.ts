/**
 * The fake-TCP segment codec: IPv4 + TCP (what a raw socket with IP_HDRINCL
 * sends and what an `AF_INET`/`IPPROTO_TCP` raw socket receives) and TCP
 * alone (pseudo-header checksum), on top of the netstack's wire codecs
 * (`shared/netstack/wire/`). Same failure convention: parsing never throws and
 * returns a view or a {@link WireError}; emitting throws `RangeError` only for
 * a programmer error (buffer too small, field out of range).
 *
 * Layouts are the ones a Linux peer uses (see docs/faketcp.md):
 * - SYN and SYN-ACK: MSS, SACK-permitted, timestamps, NOP, window scale
 *   (20 option bytes, a 40-byte header);
 * - every later segment: NOP, NOP, timestamps (a 32-byte header), so a data
 *   segment costs 20 (IPv4) + 32 (TCP) bytes, 24 more than UDP's 8 + 20.
 * @module
 */

import {
  emitIpv4,
  IPV4_HEADER_LENGTH,
  Ipv4Packet,
  type Ipv4Repr,
  parseIpv4,
} from "../../netstack/wire/ipv4.ts";
import { IpProtocol } from "../../netstack/wire/ip_protocol.ts";
import { emitTcp, parseTcp, tcpHeaderLength, TcpSegment } from "../../netstack/wire/tcp.ts";
import type { TcpRepr } from "../../netstack/wire/tcp.ts";
import { WireError } from "../../netstack/wire/error.ts";

export { TcpFlags } from "../../netstack/wire/tcp.ts";
export type { TcpRepr } from "../../netstack/wire/tcp.ts";
export { WireError } from "../../netstack/wire/error.ts";

/** TCP header length of every non-SYN segment: 20 + NOP NOP + timestamps. */
export const DATA_TCP_HEADER = 32;
/** TCP header length of a SYN or SYN-ACK with the Linux option set. */
export const SYN_TCP_HEADER = 40;
/** IPv4 header we emit (no options). */
export const IPV4_HEADER = IPV4_HEADER_LENGTH;
/** Bytes fake-TCP adds per datagram beyond plain UDP's 8-byte header. */
export const FAKETCP_OVERHEAD = DATA_TCP_HEADER - 8;

/** A parsed inbound IPv4 + TCP packet; reuse one per socket. */
export class InboundSegment {
  /** The IPv4 view. */
  readonly ip: Ipv4Packet = new Ipv4Packet();
  /** The TCP view (its `payload` is the carrier datagram). */
  readonly tcp: TcpSegment = new TcpSegment();
}

const SKIP = { skipChecksum: true };

/** Why an inbound packet was refused besides the wire errors: not TCP, or a fragment. */
export const SegmentError = {
  /** The IP protocol is not TCP. */
  NotTcp: "not-tcp",
  /** An IP fragment (a raw socket gets reassembled packets; a fragment here is forged). */
  Fragment: "fragment",
} as const;

/** One of {@link SegmentError} or a {@link WireError}. */
export type SegmentParseError = WireError | typeof SegmentError[keyof typeof SegmentError];

/**
 * Parses an IPv4 packet carrying one TCP segment into `out` (views into
 * `packet`), the IPv4 header checksum verified and the TCP one too unless
 * `verifyTcpChecksum` is false: a raw socket gets a local peer's segments
 * (veth, loopback) with the checksum left to offload (CHECKSUM_PARTIAL: only
 * the pseudo-header sum is there), so the carrier does not verify it — the
 * session's AEAD rejects a corrupted datagram anyway. Never throws.
 */
export function parseSegment4(
  packet: Uint8Array,
  out: InboundSegment,
  verifyTcpChecksum = true,
): InboundSegment | SegmentParseError {
  const ip = parseIpv4(packet, out.ip);
  if (typeof ip === "string") return ip;
  if (ip.protocol !== IpProtocol.Tcp) return SegmentError.NotTcp;
  if (ip.moreFragments || ip.fragmentOffset !== 0) return SegmentError.Fragment;
  const t = parseTcp(ip.payload, ip.src, ip.dst, out.tcp, verifyTcpChecksum ? undefined : SKIP);
  if (typeof t === "string") return t;
  return out;
}

/**
 * Parses a TCP segment alone (the IP payload) with the pseudo-header of
 * `src`/`dst` (4 or 16 bytes each). Never throws.
 */
export function parseSegment(
  seg: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  out: TcpSegment = new TcpSegment(),
): TcpSegment | WireError {
  if (src.length !== dst.length || (src.length !== 4 && src.length !== 16)) {
    return WireError.Unsupported;
  }
  return parseTcp(seg, src, dst, out);
}

/** IP-level fields of an emitted packet. */
export interface Ip4Fields {
  /** Source address, 4 bytes. */
  src: Uint8Array;
  /** Destination address, 4 bytes. */
  dst: Uint8Array;
  /** Identification (Linux: a per-flow counter from a random start). */
  id: number;
  /** TTL (64, as Linux). */
  ttl: number;
}

/** The TCP header length `repr` yields (20 + options). */
export function segmentHeaderLength(repr: TcpRepr): number {
  return tcpHeaderLength(repr);
}

/**
 * Writes TCP alone at `out[offset]`: header, options (Linux layout) and the
 * checksum over the pseudo header of `src`/`dst`. `payload` is the data
 * (copied) or the length of data already at `offset + header length`.
 * Returns the segment length.
 */
export function emitSegment(
  repr: TcpRepr,
  payload: Uint8Array | number,
  src: Uint8Array,
  dst: Uint8Array,
  out: Uint8Array,
  offset = 0,
): number {
  return emitTcp(repr, payload, src, dst, out, offset);
}

// Reused by emitSegment4: no object per packet.
const ipRepr: Ipv4Repr = {
  src: new Uint8Array(4),
  dst: new Uint8Array(4),
  protocol: IpProtocol.Tcp,
  ttl: 64,
  identification: 0,
  dscpEcn: 0,
  dontFragment: true,
  payloadLength: 0,
};

/**
 * Writes IPv4 (DF set, no options) + TCP at `out[offset]`; `payload` as in
 * {@link emitSegment}, counted from the TCP header's end. Returns the packet
 * length.
 */
export function emitSegment4(
  repr: TcpRepr,
  payload: Uint8Array | number,
  ip: Ip4Fields,
  out: Uint8Array,
  offset = 0,
): number {
  const tcpLen = emitTcp(repr, payload, ip.src, ip.dst, out, offset + IPV4_HEADER_LENGTH);
  ipRepr.src = ip.src;
  ipRepr.dst = ip.dst;
  ipRepr.identification = ip.id & 0xffff;
  ipRepr.ttl = ip.ttl;
  ipRepr.payloadLength = tcpLen;
  emitIpv4(ipRepr, out, offset);
  return IPV4_HEADER_LENGTH + tcpLen;
}

/**
 * One entry for a whole IP packet: {@link parseIp} dispatches on the version nibble and
 * gives the fields the stack dispatches on (version, addresses, transport protocol,
 * payload range, fragment status), with the version-specific view kept beside.
 * {@link emitIpHeader} is its counterpart for output. Failure convention: see `error.ts`.
 * @module
 */

import { WireError } from "./error.ts";
import { emitIpv4, IPV4_HEADER_LENGTH, Ipv4Packet, type Ipv4Repr, parseIpv4 } from "./ipv4.ts";
import { emitIpv6, IPV6_HEADER_LENGTH, Ipv6Packet, type Ipv6Repr, parseIpv6 } from "./ipv6.ts";

/** A parsed IPv4 or IPv6 packet; reuse one by passing it as `out` to {@link parseIp}. */
export class IpPacket {
  /** 4 or 6. */
  version: 4 | 6 = 4;
  /** The packet, cut to its length fields. */
  buf: Uint8Array = new Uint8Array(0);
  /** Source address (4 or 16 bytes, a view into the input). */
  src: Uint8Array = new Uint8Array(4);
  /** Destination address (4 or 16 bytes, a view into the input). */
  dst: Uint8Array = new Uint8Array(4);
  /** Transport protocol (IPv6: after the extension headers). */
  protocol = 0;
  /** TTL (IPv4) or hop limit (IPv6). */
  ttl = 0;
  /** Offset of the transport data in {@link buf}. */
  payloadOffset = 0;
  /** Length of the transport data. */
  payloadLength = 0;
  /** The transport data (a view into the input). */
  payload: Uint8Array = new Uint8Array(0);
  /** True for a fragment (IPv4 MF/offset; IPv6 Fragment header with M or offset). */
  isFragment = false;
  /** Fragment offset in bytes (0 for a whole datagram or a first fragment). */
  fragmentOffset = 0;
  /** The IPv4 view (meaningful when {@link version} is 4). */
  readonly v4: Ipv4Packet = new Ipv4Packet();
  /** The IPv6 view (meaningful when {@link version} is 6). */
  readonly v6: Ipv6Packet = new Ipv6Packet();
}

/** Options of {@link parseIp}. */
export interface IpParseOptions {
  /** Skip the IPv4 header checksum check. Default false. */
  skipChecksum?: boolean;
}

/**
 * Parses an IPv4 or IPv6 packet (see `parseIpv4`, `parseIpv6` for the checks). An empty
 * buffer is Truncated; a version other than 4 and 6 is BadVersion. Never throws.
 */
export function parseIp(
  buf: Uint8Array,
  out: IpPacket = new IpPacket(),
  opts?: IpParseOptions,
): IpPacket | WireError {
  if (buf.length === 0) return WireError.Truncated;
  const v = buf[0] >> 4;
  if (v === 4) {
    const p = parseIpv4(buf, out.v4, opts);
    if (typeof p === "string") return p;
    out.version = 4;
    out.buf = p.buf;
    out.src = p.src;
    out.dst = p.dst;
    out.protocol = p.protocol;
    out.ttl = p.ttl;
    out.payloadOffset = p.payloadOffset;
    out.payloadLength = p.payloadLength;
    out.payload = p.payload;
    out.isFragment = p.moreFragments || p.fragmentOffset !== 0;
    out.fragmentOffset = p.fragmentOffset;
    return out;
  }
  if (v === 6) {
    const p = parseIpv6(buf, out.v6);
    if (typeof p === "string") return p;
    out.version = 6;
    out.buf = p.buf;
    out.src = p.src;
    out.dst = p.dst;
    out.protocol = p.protocol;
    out.ttl = p.hopLimit;
    out.payloadOffset = p.payloadOffset;
    out.payloadLength = p.payloadLength;
    out.payload = p.payload;
    out.isFragment = p.isFragment;
    out.fragmentOffset = p.fragmentOffset;
    return out;
  }
  return WireError.BadVersion;
}

/** What {@link emitIpHeader} writes: the family follows the address length. */
export interface IpRepr {
  /** Source address (4 or 16 bytes). */
  src: Uint8Array;
  /** Destination address (same length as src). */
  dst: Uint8Array;
  /** Transport protocol. */
  protocol: number;
  /** TTL / hop limit. */
  ttl: number;
  /** Transport length (bytes after the IP header). */
  payloadLength: number;
  /** IPv4 identification; 0 if omitted. */
  identification?: number;
  /** IPv4 Don't Fragment; true if omitted. */
  dontFragment?: boolean;
  /** IPv4 DSCP/ECN or IPv6 traffic class; 0 if omitted. */
  trafficClass?: number;
}

/** Header length {@link emitIpHeader} writes for an address of this length: 20 or 40. */
export function ipHeaderLength(src: Uint8Array): number {
  return src.length === 16 ? IPV6_HEADER_LENGTH : IPV4_HEADER_LENGTH;
}

/**
 * Writes an IPv4 (20 bytes, checksum computed) or IPv6 (40 bytes) header for `repr` at
 * `out[offset]` and returns its length. Throws `RangeError` like `emitIpv4`/`emitIpv6`.
 */
export function emitIpHeader(repr: IpRepr, out: Uint8Array, offset = 0): number {
  if (repr.src.length === 16) {
    const r = V6_REPR;
    r.src = repr.src;
    r.dst = repr.dst;
    r.nextHeader = repr.protocol;
    r.hopLimit = repr.ttl;
    r.trafficClass = repr.trafficClass ?? 0;
    r.ipPayloadLength = repr.payloadLength;
    return emitIpv6(r, out, offset);
  }
  const r = V4_REPR;
  r.src = repr.src;
  r.dst = repr.dst;
  r.protocol = repr.protocol;
  r.ttl = repr.ttl;
  r.identification = repr.identification ?? 0;
  r.dontFragment = repr.dontFragment ?? true;
  r.dscpEcn = repr.trafficClass ?? 0;
  r.payloadLength = repr.payloadLength;
  return emitIpv4(r, out, offset);
}

/** Scratch reprs for {@link emitIpHeader}: no object per packet. */
const V4_REPR: Ipv4Repr = {
  src: new Uint8Array(4),
  dst: new Uint8Array(4),
  protocol: 0,
  ttl: 0,
  identification: 0,
  dontFragment: true,
  dscpEcn: 0,
  moreFragments: false,
  fragmentOffset: 0,
  payloadLength: 0,
};
const V6_REPR: Ipv6Repr = {
  src: new Uint8Array(16),
  dst: new Uint8Array(16),
  nextHeader: 0,
  hopLimit: 0,
  trafficClass: 0,
  flowLabel: 0,
  ipPayloadLength: 0,
};

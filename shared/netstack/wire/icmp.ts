/**
 * ICMPv4 (RFC 792, RFC 1191) and ICMPv6 (RFC 4443): parse and emit messages, and build the
 * two replies the stack sends itself: an echo reply ({@link buildEchoReply}) and an error
 * about a packet it cannot deliver ({@link buildIcmpError}).
 *
 * Errors follow RFC 1122 §3.2.2 and RFC 4443 §2.4: never about an ICMP error, a packet to a
 * multicast or broadcast address (except an IPv6 Packet Too Big), a packet from an address
 * that is not one host's, or a non-first fragment. The quote is the IP header + 8 bytes
 * for IPv4 (RFC 792) and as much of the packet as keeps the error within 1280 bytes for
 * IPv6. Failure convention: see `error.ts`.
 * @module
 */

import { isIpv4MulticastOrBroadcast, isIpv6Multicast, isUnicast } from "./address.ts";
import { checksumValid, finishChecksum, onesSum, pseudoHeaderSum } from "./checksum.ts";
import { WireError } from "./error.ts";
import { IpProtocol } from "./ip_protocol.ts";
import { emitIpv4, IPV4_HEADER_LENGTH, type Ipv4Packet, parseIpv4 } from "./ipv4.ts";
import { emitIpv6, IPV6_HEADER_LENGTH, IPV6_MIN_MTU, type Ipv6Packet, parseIpv6 } from "./ipv6.ts";

/** Length of the ICMP header (type, code, checksum, 4 type-specific bytes). */
export const ICMP_HEADER_LENGTH = 8;
/** Largest packet {@link buildIcmpError} writes: an `out` this long always suffices. */
export const ICMP_ERROR_MAX_LENGTH: number = IPV6_MIN_MTU;
/** Default TTL / hop limit of the packets built here. */
export const ICMP_DEFAULT_TTL = 64;

/** ICMPv4 types. */
export const Icmpv4Type = {
  /** Echo reply. */
  EchoReply: 0,
  /** Destination unreachable (codes: {@link Icmpv4Unreachable}). */
  DestinationUnreachable: 3,
  /** Source quench (deprecated, still an error). */
  SourceQuench: 4,
  /** Redirect. */
  Redirect: 5,
  /** Echo request. */
  EchoRequest: 8,
  /** Time exceeded (code 0 TTL, 1 reassembly). */
  TimeExceeded: 11,
  /** Parameter problem. */
  ParameterProblem: 12,
} as const;

/** ICMPv4 destination-unreachable codes. */
export const Icmpv4Unreachable = {
  /** Network unreachable. */
  Net: 0,
  /** Host unreachable. */
  Host: 1,
  /** Protocol unreachable. */
  Protocol: 2,
  /** Port unreachable. */
  Port: 3,
  /** Fragmentation needed and DF set (next-hop MTU in bytes 6–7, RFC 1191). */
  FragmentationNeeded: 4,
  /** Communication administratively prohibited (RFC 1812). */
  AdminProhibited: 13,
} as const;

/** ICMPv6 types. */
export const Icmpv6Type = {
  /** Destination unreachable (codes: {@link Icmpv6Unreachable}). */
  DestinationUnreachable: 1,
  /** Packet too big (MTU in bytes 4–7). */
  PacketTooBig: 2,
  /** Time exceeded (code 0 hop limit, 1 reassembly). */
  TimeExceeded: 3,
  /** Parameter problem (pointer in bytes 4–7). */
  ParameterProblem: 4,
  /** Echo request. */
  EchoRequest: 128,
  /** Echo reply. */
  EchoReply: 129,
  /** Router solicitation (NDP). */
  RouterSolicitation: 133,
  /** Router advertisement (NDP). */
  RouterAdvertisement: 134,
  /** Neighbor solicitation (NDP). */
  NeighborSolicitation: 135,
  /** Neighbor advertisement (NDP). */
  NeighborAdvertisement: 136,
} as const;

/** ICMPv6 destination-unreachable codes. */
export const Icmpv6Unreachable = {
  /** No route to destination. */
  NoRoute: 0,
  /** Communication administratively prohibited. */
  AdminProhibited: 1,
  /** Beyond scope of source address. */
  BeyondScope: 2,
  /** Address unreachable. */
  Address: 3,
  /** Port unreachable. */
  Port: 4,
} as const;

/** What {@link emitIcmpv4} / {@link emitIcmpv6} write; a parsed {@link IcmpMessage} is one. */
export interface IcmpRepr {
  /** Type. */
  type: number;
  /** Code. */
  code: number;
  /** Bytes 4–7 as a uint32 (echo: id << 16 | seq; PTB: MTU; v4 frag needed: MTU in low 16). */
  rest: number;
}

/** A parsed ICMPv4 or ICMPv6 message; reuse one by passing it as `out`. */
export class IcmpMessage implements IcmpRepr {
  /** 4 for ICMPv4, 6 for ICMPv6. */
  version: 4 | 6 = 4;
  /** The message (the IP payload). */
  buf: Uint8Array = new Uint8Array(0);
  /** Type. */
  type = 0;
  /** Code. */
  code = 0;
  /** Checksum as received. */
  checksum = 0;
  /** Bytes 4–7 as a uint32. */
  rest = 0;
  /** Echo identifier (bytes 4–5). */
  get identifier(): number {
    return this.rest >>> 16;
  }
  /** Echo sequence number (bytes 6–7). */
  get sequence(): number {
    return this.rest & 0xffff;
  }
  /** MTU of a Fragmentation Needed (v4, 16 bits) or Packet Too Big (v6); 0 otherwise. */
  mtu = 0;
  /** Bytes after the 8-byte header: echo data or the quoted packet (a view). */
  body: Uint8Array = new Uint8Array(0);

  /** True for an error message (v4: 3, 4, 5, 11, 12; v6: type < 128). */
  get isError(): boolean {
    return isIcmpErrorType(this.version, this.type);
  }
}

/** True when `type` is an ICMP error (not a query/informational message) of that version. */
export function isIcmpErrorType(version: 4 | 6, type: number): boolean {
  if (version === 6) return type < 128;
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

/** Options of the ICMP parsers. */
export interface IcmpParseOptions {
  /** Skip the checksum check. Default false. */
  skipChecksum?: boolean;
}

/**
 * Parses an ICMPv4 message (the IP payload). Errors: < 8 bytes → Truncated; checksum →
 * BadChecksum. Never throws.
 */
export function parseIcmpv4(
  buf: Uint8Array,
  out: IcmpMessage = new IcmpMessage(),
  opts?: IcmpParseOptions,
): IcmpMessage | WireError {
  if (buf.length < ICMP_HEADER_LENGTH) return WireError.Truncated;
  if (!opts?.skipChecksum && !checksumValid(buf)) return WireError.BadChecksum;
  fill(out, 4, buf);
  out.mtu = out.type === Icmpv4Type.DestinationUnreachable &&
      out.code === Icmpv4Unreachable.FragmentationNeeded
    ? out.rest & 0xffff
    : 0;
  return out;
}

/**
 * Parses an ICMPv6 message (the upper-layer payload); `src`/`dst` are the IPv6 addresses
 * for the pseudo-header checksum. Errors: < 8 bytes → Truncated; checksum → BadChecksum.
 * Never throws.
 */
export function parseIcmpv6(
  buf: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  out: IcmpMessage = new IcmpMessage(),
  opts?: IcmpParseOptions,
): IcmpMessage | WireError {
  if (buf.length < ICMP_HEADER_LENGTH) return WireError.Truncated;
  if (
    !opts?.skipChecksum &&
    !checksumValid(buf, 0, buf.length, pseudoHeaderSum(src, dst, IpProtocol.Icmpv6, buf.length))
  ) return WireError.BadChecksum;
  fill(out, 6, buf);
  out.mtu = out.type === Icmpv6Type.PacketTooBig ? out.rest : 0;
  return out;
}

function fill(out: IcmpMessage, version: 4 | 6, buf: Uint8Array): void {
  out.version = version;
  out.buf = buf;
  out.type = buf[0];
  out.code = buf[1];
  out.checksum = (buf[2] << 8) | buf[3];
  out.rest = ((buf[4] << 24) | (buf[5] << 16) | (buf[6] << 8) | buf[7]) >>> 0;
  out.body = buf.subarray(ICMP_HEADER_LENGTH);
}

function writeHeader(repr: IcmpRepr, body: Uint8Array | number, out: Uint8Array, o: number) {
  const blen = typeof body === "number" ? body : body.length;
  if (!Number.isInteger(blen) || blen < 0) throw new RangeError(`icmp: body length ${blen}`);
  const len = ICMP_HEADER_LENGTH + blen;
  if (o < 0 || o + len > out.length) throw new RangeError("icmp: output buffer too small");
  if (!(repr.type >= 0 && repr.type <= 255 && repr.code >= 0 && repr.code <= 255)) {
    throw new RangeError("icmp: type or code");
  }
  if (typeof body !== "number") out.set(body, o + ICMP_HEADER_LENGTH);
  out[o] = repr.type;
  out[o + 1] = repr.code;
  out[o + 2] = 0;
  out[o + 3] = 0;
  const r = repr.rest >>> 0;
  out[o + 4] = r >>> 24;
  out[o + 5] = (r >>> 16) & 0xff;
  out[o + 6] = (r >>> 8) & 0xff;
  out[o + 7] = r & 0xff;
  return len;
}

/**
 * Writes an ICMPv4 message at `out[offset]` with its checksum. `body` is the data after
 * the 8-byte header (copied) or the length of data already at `offset + 8`. Returns the
 * message length. Throws `RangeError` for a buffer too small or a field out of range.
 */
export function emitIcmpv4(
  repr: IcmpRepr,
  body: Uint8Array | number,
  out: Uint8Array,
  offset = 0,
): number {
  const len = writeHeader(repr, body, out, offset);
  const c = finishChecksum(onesSum(out, offset, offset + len));
  out[offset + 2] = c >> 8;
  out[offset + 3] = c & 0xff;
  return len;
}

/**
 * Writes an ICMPv6 message at `out[offset]` with its checksum over the pseudo header of
 * `src`/`dst` (16 bytes each). Otherwise like {@link emitIcmpv4}.
 */
export function emitIcmpv6(
  repr: IcmpRepr,
  body: Uint8Array | number,
  src: Uint8Array,
  dst: Uint8Array,
  out: Uint8Array,
  offset = 0,
): number {
  const len = writeHeader(repr, body, out, offset);
  const c = finishChecksum(
    onesSum(out, offset, offset + len, pseudoHeaderSum(src, dst, IpProtocol.Icmpv6, len)),
  );
  out[offset + 2] = c >> 8;
  out[offset + 3] = c & 0xff;
  return len;
}

/** `rest` of an echo request/reply: identifier and sequence number. */
export function echoRest(identifier: number, sequence: number): number {
  return (((identifier & 0xffff) << 16) | (sequence & 0xffff)) >>> 0;
}

/** The errors {@link buildIcmpError} builds, each mapped to its ICMPv4 and ICMPv6 form. */
export const IcmpErrorKind = {
  /** v4 3/0, v6 1/0 (no route). */
  NetUnreachable: "net-unreachable",
  /** v4 3/1, v6 1/3 (address unreachable). */
  HostUnreachable: "host-unreachable",
  /** v4 3/2, v6 4/1 (parameter problem: unrecognized next header, pointer to it). */
  ProtocolUnreachable: "protocol-unreachable",
  /** v4 3/3, v6 1/4. */
  PortUnreachable: "port-unreachable",
  /** v4 3/13, v6 1/1. */
  AdminProhibited: "admin-prohibited",
  /** v4 3/4 fragmentation needed with the next-hop MTU, v6 2/0 packet too big. */
  PacketTooBig: "packet-too-big",
  /** v4 11/0, v6 3/0: TTL / hop limit exceeded in transit. */
  TimeExceeded: "time-exceeded",
  /** v4 11/1, v6 3/1: fragment reassembly time exceeded (quote the first fragment). */
  ReassemblyTimeExceeded: "reassembly-time-exceeded",
} as const;

/** One of the {@link IcmpErrorKind} values. */
export type IcmpErrorKind = typeof IcmpErrorKind[keyof typeof IcmpErrorKind];

/** Options of {@link buildIcmpError}. */
export interface IcmpErrorOptions {
  /** MTU for {@link IcmpErrorKind.PacketTooBig} (required for it). */
  mtu?: number;
  /**
   * Source address of the error (4 or 16 bytes, the offending packet's family). Default:
   * the offending packet's destination, as a host answering for it does. Required when
   * that destination is multicast (an IPv6 Packet Too Big).
   */
  source?: Uint8Array;
  /** TTL / hop limit of the error. Default {@link ICMP_DEFAULT_TTL}. */
  ttl?: number;
  /** IPv4 identification. Default 0. */
  identification?: number;
  /** Skip the offending packet's IPv4 header checksum check. Default false. */
  skipChecksum?: boolean;
}

const V4_CODES: Record<IcmpErrorKind, [number, number]> = {
  "net-unreachable": [3, 0],
  "host-unreachable": [3, 1],
  "protocol-unreachable": [3, 2],
  "port-unreachable": [3, 3],
  "admin-prohibited": [3, 13],
  "packet-too-big": [3, 4],
  "time-exceeded": [11, 0],
  "reassembly-time-exceeded": [11, 1],
};
const V6_CODES: Record<IcmpErrorKind, [number, number]> = {
  "net-unreachable": [1, 0],
  "host-unreachable": [1, 3],
  "protocol-unreachable": [4, 1],
  "port-unreachable": [1, 4],
  "admin-prohibited": [1, 1],
  "packet-too-big": [2, 0],
  "time-exceeded": [3, 0],
  "reassembly-time-exceeded": [3, 1],
};

let scratch4: Ipv4Packet | undefined;
let scratch6: Ipv6Packet | undefined;

/**
 * Builds, at `out[0]`, a whole IP packet carrying the ICMP error `kind` about `offending`
 * (an IPv4 or IPv6 packet as received), addressed back to its source, and returns its
 * length; or returns a {@link WireError}: the offending packet's parse error, or
 * NotAllowed when RFC 1122 / RFC 4443 forbid this error (see the module doc).
 * `out` must not overlap `offending`; it must hold {@link ICMP_ERROR_MAX_LENGTH} bytes, or
 * at least the packet built (`RangeError` otherwise). A PacketTooBig without `mtu` throws
 * `RangeError`.
 */
export function buildIcmpError(
  offending: Uint8Array,
  kind: IcmpErrorKind,
  out: Uint8Array,
  opts: IcmpErrorOptions = {},
): number | WireError {
  if (kind === IcmpErrorKind.PacketTooBig && !(opts.mtu! >= 0)) {
    throw new RangeError("icmp: PacketTooBig needs an mtu");
  }
  const ttl = opts.ttl ?? ICMP_DEFAULT_TTL;
  const v = offending.length > 0 ? offending[0] >> 4 : 0;
  if (v === 4) {
    const p = parseIpv4(offending, scratch4, { skipChecksum: opts.skipChecksum });
    if (typeof p === "string") return p;
    scratch4 = p;
    if (p.fragmentOffset !== 0) return WireError.NotAllowed;
    if (!isUnicast(p.src) || isIpv4MulticastOrBroadcast(p.dst)) return WireError.NotAllowed;
    if (p.protocol === IpProtocol.Icmp) {
      if (p.payloadLength < 1 || isIcmpErrorType(4, p.payload[0])) return WireError.NotAllowed;
    }
    const source = opts.source ?? p.dst;
    if (source.length !== 4) throw new RangeError("icmp: source address family");
    const quote = p.headerLength + Math.min(8, p.payloadLength);
    const icmpLen = ICMP_HEADER_LENGTH + quote;
    if (out.length < IPV4_HEADER_LENGTH + icmpLen) throw new RangeError("icmp: output too small");
    const [type, code] = V4_CODES[kind];
    const rest = kind === IcmpErrorKind.PacketTooBig ? Math.min(opts.mtu!, 0xffff) : 0;
    // Copy the quote first: `source` may be a view of `offending`, never of `out`.
    out.set(offending.subarray(0, quote), IPV4_HEADER_LENGTH + ICMP_HEADER_LENGTH);
    emitIpv4(
      {
        src: source,
        dst: p.src,
        protocol: IpProtocol.Icmp,
        ttl,
        identification: opts.identification ?? 0,
        dontFragment: false,
        payloadLength: icmpLen,
      },
      out,
      0,
    );
    emitIcmpv4({ type, code, rest }, quote, out, IPV4_HEADER_LENGTH);
    return IPV4_HEADER_LENGTH + icmpLen;
  }
  if (v === 6) {
    const p = parseIpv6(offending, scratch6);
    if (typeof p === "string") return p;
    scratch6 = p;
    if (p.fragmentOffset !== 0) return WireError.NotAllowed;
    if (!isUnicast(p.src)) return WireError.NotAllowed;
    if (isIpv6Multicast(p.dst) && kind !== IcmpErrorKind.PacketTooBig) {
      return WireError.NotAllowed;
    }
    if (p.protocol === IpProtocol.Icmpv6) {
      if (p.payloadLength < 1 || isIcmpErrorType(6, p.payload[0])) return WireError.NotAllowed;
    }
    const source = opts.source ?? p.dst;
    if (source.length !== 16) throw new RangeError("icmp: source address family");
    if (!isUnicast(source)) return WireError.NotAllowed;
    const quote = Math.min(
      p.buf.length,
      ICMP_ERROR_MAX_LENGTH - IPV6_HEADER_LENGTH - ICMP_HEADER_LENGTH,
    );
    const icmpLen = ICMP_HEADER_LENGTH + quote;
    if (out.length < IPV6_HEADER_LENGTH + icmpLen) throw new RangeError("icmp: output too small");
    const [type, code] = V6_CODES[kind];
    const rest = kind === IcmpErrorKind.PacketTooBig
      ? opts.mtu! >>> 0
      : kind === IcmpErrorKind.ProtocolUnreachable
      ? p.protocolFieldOffset
      : 0;
    const dst = p.src;
    out.set(offending.subarray(0, quote), IPV6_HEADER_LENGTH + ICMP_HEADER_LENGTH);
    emitIpv6(
      {
        src: source,
        dst,
        nextHeader: IpProtocol.Icmpv6,
        hopLimit: ttl,
        ipPayloadLength: icmpLen,
      },
      out,
      0,
    );
    // The header now holds both addresses: use those copies for the pseudo header.
    emitIcmpv6(
      { type, code, rest },
      quote,
      out.subarray(8, 24),
      out.subarray(24, 40),
      out,
      IPV6_HEADER_LENGTH,
    );
    return IPV6_HEADER_LENGTH + icmpLen;
  }
  return offending.length === 0 ? WireError.Truncated : WireError.BadVersion;
}

/**
 * Builds, at `out[0]`, the echo reply to `request` (a whole IPv4 or IPv6 packet carrying
 * an echo request): addresses swapped, same identifier, sequence and data, TTL 64; returns
 * its length. Returns a {@link WireError} when the packet does not parse, is not an
 * unfragmented echo request, or was sent to (or from) a multicast or broadcast address.
 * `out` may be `request`'s own buffer; it must hold `request.length` bytes (`RangeError`
 * otherwise).
 */
export function buildEchoReply(request: Uint8Array, out: Uint8Array): number | WireError {
  if (out.length < request.length) throw new RangeError("icmp: output too small");
  const v = request.length > 0 ? request[0] >> 4 : 0;
  if (v === 4) {
    const p = parseIpv4(request, scratch4);
    if (typeof p === "string") return p;
    scratch4 = p;
    if (p.protocol !== IpProtocol.Icmp) return WireError.Unsupported;
    if (p.isFragment) return WireError.Unsupported;
    if (!isUnicast(p.src) || !isUnicast(p.dst)) return WireError.NotAllowed;
    const m = parseIcmpv4(p.payload, scratchMsg);
    if (typeof m === "string") return m;
    if (m.type !== Icmpv4Type.EchoRequest) return WireError.Unsupported;
    const icmpLen = m.buf.length;
    const rest = m.rest;
    copy4a.set(p.dst);
    copy4b.set(p.src);
    const id = p.identification;
    if (out === request) {
      out.copyWithin(IPV4_HEADER_LENGTH, p.payloadOffset, p.payloadOffset + icmpLen);
    } else {
      out.set(request.subarray(p.payloadOffset, p.payloadOffset + icmpLen), IPV4_HEADER_LENGTH);
    }
    emitIpv4(
      {
        src: copy4a,
        dst: copy4b,
        protocol: IpProtocol.Icmp,
        ttl: ICMP_DEFAULT_TTL,
        identification: id,
        dontFragment: false,
        payloadLength: icmpLen,
      },
      out,
      0,
    );
    emitIcmpv4({ type: Icmpv4Type.EchoReply, code: 0, rest }, icmpLen - 8, out, IPV4_HEADER_LENGTH);
    return IPV4_HEADER_LENGTH + icmpLen;
  }
  if (v === 6) {
    const p = parseIpv6(request, scratch6);
    if (typeof p === "string") return p;
    scratch6 = p;
    if (p.protocol !== IpProtocol.Icmpv6 || p.isFragment) return WireError.Unsupported;
    if (!isUnicast(p.src) || !isUnicast(p.dst)) return WireError.NotAllowed;
    const m = parseIcmpv6(p.payload, p.src, p.dst, scratchMsg);
    if (typeof m === "string") return m;
    if (m.type !== Icmpv6Type.EchoRequest) return WireError.Unsupported;
    const icmpLen = m.buf.length;
    const rest = m.rest;
    copy16a.set(p.dst);
    copy16b.set(p.src);
    const tc = p.trafficClass;
    if (out === request) {
      out.copyWithin(IPV6_HEADER_LENGTH, p.payloadOffset, p.payloadOffset + icmpLen);
    } else {
      out.set(request.subarray(p.payloadOffset, p.payloadOffset + icmpLen), IPV6_HEADER_LENGTH);
    }
    emitIpv6(
      {
        src: copy16a,
        dst: copy16b,
        nextHeader: IpProtocol.Icmpv6,
        hopLimit: ICMP_DEFAULT_TTL,
        trafficClass: tc,
        ipPayloadLength: icmpLen,
      },
      out,
      0,
    );
    emitIcmpv6(
      { type: Icmpv6Type.EchoReply, code: 0, rest },
      icmpLen - 8,
      copy16a,
      copy16b,
      out,
      IPV6_HEADER_LENGTH,
    );
    return IPV6_HEADER_LENGTH + icmpLen;
  }
  return request.length === 0 ? WireError.Truncated : WireError.BadVersion;
}

const scratchMsg = new IcmpMessage();
const copy4a = new Uint8Array(4);
const copy4b = new Uint8Array(4);
const copy16a = new Uint8Array(16);
const copy16b = new Uint8Array(16);

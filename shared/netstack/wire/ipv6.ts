/**
 * IPv6 (RFC 8200): the fixed header and a bounded walk over extension headers.
 *
 * The walk skips Hop-by-Hop (only right after the fixed header), Routing, Destination
 * Options, Mobility, HIP and Shim6 by `(Hdr Ext Len + 1) × 8`, AH by `(Payload Len + 2) × 4`
 * (RFC 4302), and reports a Fragment header (offset, M flag, identification). It stops at
 * ESP and No Next Header (their protocol is reported, the payload is opaque), at any other
 * next header (the upper layer) and at a non-first fragment (what follows is not a header).
 * At most {@link IPV6_MAX_EXTENSION_HEADERS} headers are walked.
 *
 * IPv6 fragments: this layer reports them; `reassembly.ts` can reassemble them too
 * ({@link Ipv6Packet.fragmentOffset} etc. feed `Reassembler.pushIpv6`). The stack may as well
 * drop them: a host sends IPv6 fragments only when an application sends a datagram larger
 * than the path MTU, which the TUN's MTU makes rare.
 *
 * Failure convention: see `error.ts`.
 * @module
 */

import { WireError } from "./error.ts";
import { IpProtocol } from "./ip_protocol.ts";

/** Length of the fixed IPv6 header. */
export const IPV6_HEADER_LENGTH = 40;
/** Length of an IPv6 Fragment header. */
export const IPV6_FRAGMENT_HEADER_LENGTH = 8;
/** Extension headers walked before a packet is rejected as {@link WireError.BadExtensionHeader}. */
export const IPV6_MAX_EXTENSION_HEADERS = 8;
/** The minimum link MTU of IPv6 (RFC 8200 §5). */
export const IPV6_MIN_MTU = 1280;

/** The fields of a fixed IPv6 header that {@link emitIpv6} writes (a parsed view is one). */
export interface Ipv6Repr {
  /** Source address, 16 bytes. */
  src: Uint8Array;
  /** Destination address, 16 bytes. */
  dst: Uint8Array;
  /** Next Header of the fixed header (the upper-layer protocol when there are no extensions). */
  nextHeader: number;
  /** Hop limit. */
  hopLimit: number;
  /** Traffic class; 0 if omitted. */
  trafficClass?: number;
  /** Flow label (20 bits); 0 if omitted. */
  flowLabel?: number;
  /** Payload length: every byte after the fixed header (extension headers included). */
  ipPayloadLength: number;
}

/** A parsed IPv6 packet; reuse one across packets by passing it as `out` to {@link parseIpv6}. */
export class Ipv6Packet implements Ipv6Repr {
  /** The packet: the input cut to 40 + payload length. */
  buf: Uint8Array = new Uint8Array(0);
  /** Traffic class. */
  trafficClass = 0;
  /** Flow label. */
  flowLabel = 0;
  /** Payload Length field (bytes after the fixed header). */
  ipPayloadLength = 0;
  /** Next Header of the fixed header. */
  nextHeader = 0;
  /** Hop limit. */
  hopLimit = 0;
  /** Source address (a 16-byte view into the input). */
  src: Uint8Array = new Uint8Array(16);
  /** Destination address (a 16-byte view into the input). */
  dst: Uint8Array = new Uint8Array(16);
  /**
   * The protocol after the extension headers: TCP, UDP, ICMPv6…, or ESP / No Next Header,
   * or, for a non-first fragment, the Fragment header's next header.
   */
  protocol = 0;
  /** Offset in {@link buf} where the upper-layer data starts. */
  payloadOffset = 0;
  /** Upper-layer length (from {@link payloadOffset} to the end of the packet). */
  payloadLength = 0;
  /** The upper-layer data (a view into the input). */
  payload: Uint8Array = new Uint8Array(0);
  /** Offset of the Fragment header in {@link buf}, or -1 without one. */
  fragmentHeaderOffset: number = -1;
  /** Fragment offset in bytes (0 without a Fragment header). */
  fragmentOffset = 0;
  /** The Fragment header's M flag. */
  moreFragments = false;
  /** The Fragment header's 32-bit identification. */
  fragmentId = 0;
  /** Number of extension headers walked. */
  extensionHeaders = 0;
  /**
   * Offset in {@link buf} of the Next Header byte that names {@link protocol} (6 without
   * extension headers): the pointer of an ICMPv6 Parameter Problem "unrecognized next
   * header".
   */
  protocolFieldOffset = 6;

  /**
   * True for a real fragment: a Fragment header with offset ≠ 0 or M set (an "atomic
   * fragment", offset 0 without M, is a whole datagram, RFC 6946).
   */
  get isFragment(): boolean {
    return this.fragmentHeaderOffset >= 0 && (this.moreFragments || this.fragmentOffset !== 0);
  }
}

/**
 * Parses an IPv6 packet and walks its extension headers (see the module doc). Checks:
 * at least 40 bytes, version 6, 40 + payload length ≤ buffer (bytes past it are ignored),
 * every extension header within the packet, Hop-by-Hop only first, at most
 * {@link IPV6_MAX_EXTENSION_HEADERS} headers. Jumbograms (payload length 0) are not
 * supported: their Hop-by-Hop header does not fit. Never throws.
 */
export function parseIpv6(
  buf: Uint8Array,
  out: Ipv6Packet = new Ipv6Packet(),
): Ipv6Packet | WireError {
  if (buf.length < IPV6_HEADER_LENGTH) return WireError.Truncated;
  if (buf[0] >> 4 !== 6) return WireError.BadVersion;
  const plen = (buf[4] << 8) | buf[5];
  const total = IPV6_HEADER_LENGTH + plen;
  if (total > buf.length) return WireError.Truncated;
  const p = total === buf.length ? buf : buf.subarray(0, total);
  out.buf = p;
  out.trafficClass = ((buf[0] & 0x0f) << 4) | (buf[1] >> 4);
  out.flowLabel = ((buf[1] & 0x0f) << 16) | (buf[2] << 8) | buf[3];
  out.ipPayloadLength = plen;
  out.nextHeader = buf[6];
  out.hopLimit = buf[7];
  out.src = p.subarray(8, 24);
  out.dst = p.subarray(24, 40);
  out.fragmentHeaderOffset = -1;
  out.fragmentOffset = 0;
  out.moreFragments = false;
  out.fragmentId = 0;
  let nh = buf[6];
  let off = IPV6_HEADER_LENGTH;
  let count = 0;
  let nhField = 6;
  walk: for (;;) {
    let len: number;
    switch (nh) {
      case IpProtocol.HopByHop:
        if (count !== 0) return WireError.BadExtensionHeader;
        /* falls through */
      case IpProtocol.Routing:
      case IpProtocol.DestinationOptions:
      case IpProtocol.Mobility:
      case IpProtocol.Hip:
      case IpProtocol.Shim6:
        if (off + 2 > total) return WireError.Truncated;
        len = (p[off + 1] + 1) * 8;
        break;
      case IpProtocol.Ah:
        if (off + 2 > total) return WireError.Truncated;
        len = (p[off + 1] + 2) * 4;
        break;
      case IpProtocol.Fragment: {
        if (out.fragmentHeaderOffset >= 0) return WireError.BadExtensionHeader;
        len = IPV6_FRAGMENT_HEADER_LENGTH;
        if (off + len > total) return WireError.Truncated;
        out.fragmentHeaderOffset = off;
        out.fragmentOffset = (p[off + 2] << 8) | (p[off + 3] & 0xf8);
        out.moreFragments = (p[off + 3] & 1) !== 0;
        out.fragmentId =
          ((p[off + 4] << 24) | (p[off + 5] << 16) | (p[off + 6] << 8) | p[off + 7]) >>> 0;
        if (out.fragmentOffset !== 0) {
          // A non-first fragment: what follows is a piece of data, not a header.
          if (++count > IPV6_MAX_EXTENSION_HEADERS) return WireError.BadExtensionHeader;
          nh = p[off];
          nhField = off;
          off += len;
          break walk;
        }
        break;
      }
      default:
        // ESP, No Next Header and every upper-layer protocol end the walk.
        break walk;
    }
    if (++count > IPV6_MAX_EXTENSION_HEADERS) return WireError.BadExtensionHeader;
    if (off + len > total) return WireError.Truncated;
    nh = p[off];
    nhField = off;
    off += len;
  }
  out.extensionHeaders = count;
  out.protocolFieldOffset = nhField;
  out.protocol = nh;
  out.payloadOffset = off;
  out.payloadLength = total - off;
  out.payload = p.subarray(off, total);
  return out;
}

/**
 * Writes a 40-byte fixed IPv6 header at `out[offset]` and returns 40. Extension headers,
 * if any, are the caller's (announce them with `nextHeader`). Throws `RangeError` when `out`
 * is too small or a field is out of range.
 */
export function emitIpv6(repr: Ipv6Repr, out: Uint8Array, offset = 0): number {
  if (offset < 0 || offset + IPV6_HEADER_LENGTH > out.length) {
    throw new RangeError("ipv6: output buffer too small");
  }
  if (repr.src.length !== 16 || repr.dst.length !== 16) {
    throw new RangeError("ipv6: address length");
  }
  const tc = repr.trafficClass ?? 0;
  const fl = repr.flowLabel ?? 0;
  const plen = repr.ipPayloadLength;
  if (!Number.isInteger(plen) || plen < 0 || plen > 0xffff) {
    throw new RangeError(`ipv6: payload length ${plen}`);
  }
  if (!(tc >= 0 && tc <= 255 && fl >= 0 && fl <= 0xfffff)) {
    throw new RangeError("ipv6: traffic class or flow label");
  }
  if (
    !(repr.nextHeader >= 0 && repr.nextHeader <= 255 && repr.hopLimit >= 0 && repr.hopLimit <= 255)
  ) {
    throw new RangeError("ipv6: next header or hop limit");
  }
  const o = offset;
  out[o] = 0x60 | (tc >> 4);
  out[o + 1] = ((tc & 0x0f) << 4) | (fl >> 16);
  out[o + 2] = (fl >> 8) & 0xff;
  out[o + 3] = fl & 0xff;
  out[o + 4] = plen >> 8;
  out[o + 5] = plen & 0xff;
  out[o + 6] = repr.nextHeader;
  out[o + 7] = repr.hopLimit;
  out.set(repr.src, o + 8);
  out.set(repr.dst, o + 24);
  return IPV6_HEADER_LENGTH;
}

/** Formats a 16-byte address in RFC 5952 form (for logs and tests). */
export function formatIpv6(a: Uint8Array): string {
  const w: number[] = [];
  for (let i = 0; i < 16; i += 2) w.push((a[i] << 8) | a[i + 1]);
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (ws: number[]) => ws.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(w);
  return `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

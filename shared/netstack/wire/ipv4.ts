/**
 * IPv4 header (RFC 791): parse with every bounds check, emit into a caller buffer.
 * Failure convention: see `error.ts` (parse returns a view or a {@link WireError}; emit
 * throws `RangeError` only for programmer errors).
 * @module
 */

import { checksumValid, internetChecksum } from "./checksum.ts";
import { WireError } from "./error.ts";

/** Length of an IPv4 header without options. */
export const IPV4_HEADER_LENGTH = 20;
/** Largest IPv4 datagram (the 16-bit total length). */
export const IPV4_MAX_LENGTH = 65535;

/** The fields of an IPv4 header that {@link emitIpv4} writes (a parsed view is one). */
export interface Ipv4Repr {
  /** Source address, 4 bytes. */
  src: Uint8Array;
  /** Destination address, 4 bytes. */
  dst: Uint8Array;
  /** Upper-layer protocol (see `IpProtocol`). */
  protocol: number;
  /** Time to live. */
  ttl: number;
  /** Identification. */
  identification: number;
  /** DSCP and ECN (the old TOS byte); 0 if omitted. */
  dscpEcn?: number;
  /** Don't Fragment flag. */
  dontFragment: boolean;
  /** More Fragments flag; false if omitted. */
  moreFragments?: boolean;
  /** Fragment offset in bytes (a multiple of 8); 0 if omitted. */
  fragmentOffset?: number;
  /** Bytes after the header (total length − header length). */
  payloadLength: number;
}

/**
 * A parsed IPv4 packet: fields plus views into the input. Reuse one across packets by
 * passing it as `out` to {@link parseIpv4}.
 */
export class Ipv4Packet implements Ipv4Repr {
  /** The packet: the input cut to its total length (link-layer padding removed). */
  buf: Uint8Array = new Uint8Array(0);
  /** Header length in bytes (IHL × 4), options included. */
  headerLength = 0;
  /** Total length field. */
  totalLength = 0;
  /** DSCP and ECN byte. */
  dscpEcn = 0;
  /** Identification. */
  identification = 0;
  /** Don't Fragment flag. */
  dontFragment = false;
  /** More Fragments flag. */
  moreFragments = false;
  /** Fragment offset in bytes. */
  fragmentOffset = 0;
  /** Time to live. */
  ttl = 0;
  /** Upper-layer protocol. */
  protocol = 0;
  /** Header checksum as received. */
  checksum = 0;
  /** Source address (a 4-byte view into the input). */
  src: Uint8Array = new Uint8Array(4);
  /** Destination address (a 4-byte view into the input). */
  dst: Uint8Array = new Uint8Array(4);
  /** Source address as an unsigned 32-bit number. */
  srcU32 = 0;
  /** Destination address as an unsigned 32-bit number. */
  dstU32 = 0;
  /** Offset of the payload in {@link buf} (= headerLength). */
  payloadOffset = 0;
  /** Payload length (totalLength − headerLength). */
  payloadLength = 0;
  /** The payload (a view into the input). */
  payload: Uint8Array = new Uint8Array(0);

  /** True when this packet is a fragment (MF set or a non-zero offset). */
  get isFragment(): boolean {
    return this.moreFragments || this.fragmentOffset !== 0;
  }
}

/** Options of {@link parseIpv4}. */
export interface Ipv4ParseOptions {
  /** Skip the header checksum check (e.g. a TUN that already verified it). Default false. */
  skipChecksum?: boolean;
}

/**
 * Parses an IPv4 packet. Checks: at least 20 bytes, version 4, IHL ≥ 5 and within the
 * buffer, total length ≥ header length and ≤ buffer, header checksum. Options are skipped,
 * bytes past the total length (padding) ignored. Never throws.
 */
export function parseIpv4(
  buf: Uint8Array,
  out: Ipv4Packet = new Ipv4Packet(),
  opts?: Ipv4ParseOptions,
): Ipv4Packet | WireError {
  if (buf.length < IPV4_HEADER_LENGTH) return WireError.Truncated;
  const b0 = buf[0];
  if (b0 >> 4 !== 4) return WireError.BadVersion;
  const hl = (b0 & 0x0f) * 4;
  if (hl < IPV4_HEADER_LENGTH) return WireError.BadHeaderLength;
  if (hl > buf.length) return WireError.Truncated;
  const total = (buf[2] << 8) | buf[3];
  if (total < hl) return WireError.BadLength;
  if (total > buf.length) return WireError.Truncated;
  if (!opts?.skipChecksum && !checksumValid(buf, 0, hl)) return WireError.BadChecksum;
  const p = total === buf.length ? buf : buf.subarray(0, total);
  out.buf = p;
  out.headerLength = hl;
  out.totalLength = total;
  out.dscpEcn = buf[1];
  out.identification = (buf[4] << 8) | buf[5];
  out.dontFragment = (buf[6] & 0x40) !== 0;
  out.moreFragments = (buf[6] & 0x20) !== 0;
  out.fragmentOffset = (((buf[6] & 0x1f) << 8) | buf[7]) * 8;
  out.ttl = buf[8];
  out.protocol = buf[9];
  out.checksum = (buf[10] << 8) | buf[11];
  out.src = p.subarray(12, 16);
  out.dst = p.subarray(16, 20);
  out.srcU32 = ((buf[12] << 24) | (buf[13] << 16) | (buf[14] << 8) | buf[15]) >>> 0;
  out.dstU32 = ((buf[16] << 24) | (buf[17] << 16) | (buf[18] << 8) | buf[19]) >>> 0;
  out.payloadOffset = hl;
  out.payloadLength = total - hl;
  out.payload = p.subarray(hl, total);
  return out;
}

/** True when the parsed packet is a fragment (MF set or offset ≠ 0). */
export function isIpv4Fragment(p: Ipv4Packet): boolean {
  return p.moreFragments || p.fragmentOffset !== 0;
}

function checkField(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`ipv4: ${name} ${v}`);
}

/**
 * Writes a 20-byte IPv4 header (no options) at `out[offset]`, checksum included, and
 * returns its length (20). The payload is the caller's business (it goes right after).
 * Throws `RangeError` when `out` is too small or a field is out of range.
 */
export function emitIpv4(repr: Ipv4Repr, out: Uint8Array, offset = 0): number {
  if (offset < 0 || offset + IPV4_HEADER_LENGTH > out.length) {
    throw new RangeError("ipv4: output buffer too small");
  }
  if (repr.src.length !== 4 || repr.dst.length !== 4) throw new RangeError("ipv4: address length");
  const total = IPV4_HEADER_LENGTH + repr.payloadLength;
  checkField("total length", total, IPV4_MAX_LENGTH);
  checkField("protocol", repr.protocol, 255);
  checkField("ttl", repr.ttl, 255);
  checkField("identification", repr.identification, 0xffff);
  const dscpEcn = repr.dscpEcn ?? 0;
  checkField("dscp/ecn", dscpEcn, 255);
  const fo = repr.fragmentOffset ?? 0;
  if (!Number.isInteger(fo) || fo < 0 || fo % 8 !== 0 || fo / 8 > 0x1fff) {
    throw new RangeError(`ipv4: fragment offset ${fo}`);
  }
  const o = offset;
  out[o] = 0x45;
  out[o + 1] = dscpEcn;
  out[o + 2] = total >> 8;
  out[o + 3] = total & 0xff;
  out[o + 4] = repr.identification >> 8;
  out[o + 5] = repr.identification & 0xff;
  const f = fo / 8;
  out[o + 6] = (repr.dontFragment ? 0x40 : 0) | (repr.moreFragments ? 0x20 : 0) | (f >> 8);
  out[o + 7] = f & 0xff;
  out[o + 8] = repr.ttl;
  out[o + 9] = repr.protocol;
  out[o + 10] = 0;
  out[o + 11] = 0;
  out.set(repr.src, o + 12);
  out.set(repr.dst, o + 16);
  const c = internetChecksum(out, o, o + IPV4_HEADER_LENGTH);
  out[o + 10] = c >> 8;
  out[o + 11] = c & 0xff;
  return IPV4_HEADER_LENGTH;
}

/**
 * Recomputes the header checksum of an IPv4 header already in `buf[offset..]` (after the
 * caller changed a field in place). Returns the new checksum. Throws `RangeError` if the
 * buffer does not hold the header its IHL announces.
 */
export function rewriteIpv4Checksum(buf: Uint8Array, offset = 0): number {
  const hl = (buf[offset] & 0x0f) * 4;
  if (hl < IPV4_HEADER_LENGTH || offset + hl > buf.length) {
    throw new RangeError("ipv4: no header to checksum");
  }
  buf[offset + 10] = 0;
  buf[offset + 11] = 0;
  const c = internetChecksum(buf, offset, offset + hl);
  buf[offset + 10] = c >> 8;
  buf[offset + 11] = c & 0xff;
  return c;
}

/** Formats a 4-byte address as dotted decimal (for logs and tests). */
export function formatIpv4(a: Uint8Array): string {
  return `${a[0]}.${a[1]}.${a[2]}.${a[3]}`;
}

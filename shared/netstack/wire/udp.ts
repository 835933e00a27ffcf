/**
 * UDP header (RFC 768; IPv6 rules RFC 8200 §8.1): parse with length and checksum checks,
 * emit with the checksum computed. Failure convention: see `error.ts`.
 * @module
 */

import { checksumValid, finishChecksum, onesSum, pseudoHeaderSum } from "./checksum.ts";
import { WireError } from "./error.ts";
import { IpProtocol } from "./ip_protocol.ts";

/** Length of the UDP header. */
export const UDP_HEADER_LENGTH = 8;

/** What {@link emitUdp} writes; a parsed {@link UdpDatagram} is one. */
export interface UdpRepr {
  /** Source port. */
  srcPort: number;
  /** Destination port. */
  dstPort: number;
}

/** A parsed UDP datagram; reuse one by passing it as `out` to {@link parseUdp}. */
export class UdpDatagram implements UdpRepr {
  /** The datagram, cut to its length field. */
  buf: Uint8Array = new Uint8Array(0);
  /** Source port. */
  srcPort = 0;
  /** Destination port. */
  dstPort = 0;
  /** Length field (header + data). */
  length = 0;
  /** Checksum as received (0: none, allowed over IPv4 only). */
  checksum = 0;
  /** The data (a view into the input). */
  payload: Uint8Array = new Uint8Array(0);
}

/** Options of {@link parseUdp}. */
export interface UdpParseOptions {
  /** Skip the checksum check (offloaded, already verified). Default false. */
  skipChecksum?: boolean;
}

/**
 * Parses a UDP datagram (the whole IP payload); `src`/`dst` are the IP addresses (4 or 16
 * bytes) for the pseudo header. Errors: < 8 bytes or length field past the buffer →
 * Truncated; length field < 8 → BadLength; a wrong checksum, or a zero checksum over
 * IPv6, → BadChecksum. Bytes past the length field are ignored. Never throws.
 */
export function parseUdp(
  buf: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  out: UdpDatagram = new UdpDatagram(),
  opts?: UdpParseOptions,
): UdpDatagram | WireError {
  if (buf.length < UDP_HEADER_LENGTH) return WireError.Truncated;
  const len = (buf[4] << 8) | buf[5];
  if (len < UDP_HEADER_LENGTH) return WireError.BadLength;
  if (len > buf.length) return WireError.Truncated;
  const csum = (buf[6] << 8) | buf[7];
  if (!opts?.skipChecksum) {
    if (csum === 0) {
      if (src.length !== 4) return WireError.BadChecksum;
    } else if (!checksumValid(buf, 0, len, pseudoHeaderSum(src, dst, IpProtocol.Udp, len))) {
      return WireError.BadChecksum;
    }
  }
  const d = len === buf.length ? buf : buf.subarray(0, len);
  out.buf = d;
  out.srcPort = (buf[0] << 8) | buf[1];
  out.dstPort = (buf[2] << 8) | buf[3];
  out.length = len;
  out.checksum = csum;
  out.payload = d.subarray(UDP_HEADER_LENGTH);
  return out;
}

/**
 * Writes a UDP datagram at `out[offset]` with its checksum (a computed 0 is sent as
 * 0xffff). `payload` is the data (copied) or the length of data already at
 * `offset + 8`. Returns the datagram length. Throws `RangeError` for a buffer too small,
 * a port out of range or a datagram over 65535 bytes.
 */
export function emitUdp(
  repr: UdpRepr,
  payload: Uint8Array | number,
  src: Uint8Array,
  dst: Uint8Array,
  out: Uint8Array,
  offset = 0,
): number {
  const plen = typeof payload === "number" ? payload : payload.length;
  const len = UDP_HEADER_LENGTH + plen;
  if (!Number.isInteger(plen) || plen < 0 || len > 0xffff) {
    throw new RangeError(`udp: length ${len}`);
  }
  if (offset < 0 || offset + len > out.length) throw new RangeError("udp: output buffer too small");
  checkPort(repr.srcPort);
  checkPort(repr.dstPort);
  if (typeof payload !== "number") out.set(payload, offset + UDP_HEADER_LENGTH);
  const o = offset;
  out[o] = repr.srcPort >> 8;
  out[o + 1] = repr.srcPort & 0xff;
  out[o + 2] = repr.dstPort >> 8;
  out[o + 3] = repr.dstPort & 0xff;
  out[o + 4] = len >> 8;
  out[o + 5] = len & 0xff;
  out[o + 6] = 0;
  out[o + 7] = 0;
  const c =
    finishChecksum(onesSum(out, o, o + len, pseudoHeaderSum(src, dst, IpProtocol.Udp, len))) ||
    0xffff;
  out[o + 6] = c >> 8;
  out[o + 7] = c & 0xff;
  return len;
}

function checkPort(p: number): void {
  if (!Number.isInteger(p) || p < 0 || p > 0xffff) throw new RangeError(`udp: port ${p}`);
}

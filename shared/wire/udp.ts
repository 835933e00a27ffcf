/**
 * The UDP relay header carried in OSTP unreliable DATAGRAM frames
 * (docs/protocol.md, "UDP relay"): `kind(1)=1, flow_id(u32be), atyp(1),
 * address, port(u16be), payload`. Address encoding as in the stream-open
 * exchange (`open.ts`): atyp 1 = IPv4 (4 bytes), 3 = domain (u8 length +
 * bytes), 4 = IPv6 (16 bytes). Client → server the address is the target;
 * server → client it is the source of the reply.
 *
 * Both functions take untrusted input and never throw: malformed → `null`.
 * @module
 */

import type { Target } from "../duplex.ts";
import { formatIPv6, parseIPv4, parseIPv6 } from "../net/ip.ts";

/** First byte of a DATAGRAM payload that carries a relayed UDP datagram. */
export const UDP_DATAGRAM_KIND = 0x01;

/** Fixed bytes of the header besides the address: kind, flow id, atyp, port. */
export const UDP_HEADER_FIXED = 1 + 4 + 1 + 2;

/** A decoded relayed datagram. `payload` is a view into the input. */
export interface UdpDatagram {
  flowId: number;
  host: string;
  port: number;
  payload: Uint8Array;
}

const enc = new TextEncoder();
const decFatal = new TextDecoder("utf-8", { fatal: true });

/** Size of the header for `host` (null when the host cannot be encoded). */
export function udpHeaderSize(host: string): number | null {
  if (parseIPv4(host)) return UDP_HEADER_FIXED + 4;
  if (parseIPv6(host)) return UDP_HEADER_FIXED + 16;
  const n = enc.encode(host).length;
  return n === 0 || n > 255 ? null : UDP_HEADER_FIXED + 1 + n;
}

/**
 * Encodes one relayed datagram. Returns null for an invalid flow id, port
 * (1..65535) or host (empty or longer than 255 bytes).
 */
export function encodeUdpDatagram(
  flowId: number,
  addr: Target,
  payload: Uint8Array,
): Uint8Array | null {
  const { host, port } = addr;
  if (!Number.isInteger(flowId) || flowId < 0 || flowId > 0xffffffff) return null;
  if (!Number.isInteger(port) || port < 1 || port > 65535) return null;
  const v4 = parseIPv4(host);
  const v6 = v4 ? null : parseIPv6(host);
  let atyp: number;
  let a: Uint8Array;
  if (v4) {
    atyp = 1;
    a = v4;
  } else if (v6) {
    atyp = 4;
    a = v6;
  } else {
    const name = enc.encode(host);
    if (name.length === 0 || name.length > 255) return null;
    atyp = 3;
    a = new Uint8Array(1 + name.length);
    a[0] = name.length;
    a.set(name, 1);
  }
  const out = new Uint8Array(UDP_HEADER_FIXED + a.length + payload.length);
  out[0] = UDP_DATAGRAM_KIND;
  new DataView(out.buffer).setUint32(1, flowId);
  out[5] = atyp;
  out.set(a, 6);
  let p = 6 + a.length;
  out[p++] = port >> 8;
  out[p++] = port & 0xff;
  out.set(payload, p);
  return out;
}

/**
 * Reads the address at `buf[pos]` (atyp, address, port) in the SOCKS5 / OSTP
 * encoding. Returns the host, port and the offset after the port, or null if
 * truncated, of an unknown type, or a domain that is empty, not UTF-8 or
 * contains control characters, spaces, `/`, `\` or `@`. Port 0 is returned as is.
 */
export function readAddress(
  buf: Uint8Array,
  pos: number,
): { host: string; port: number; atyp: number; end: number } | null {
  if (pos >= buf.length) return null;
  const atyp = buf[pos++];
  let host: string;
  if (atyp === 1) {
    if (pos + 4 > buf.length) return null;
    host = `${buf[pos]}.${buf[pos + 1]}.${buf[pos + 2]}.${buf[pos + 3]}`;
    pos += 4;
  } else if (atyp === 4) {
    if (pos + 16 > buf.length) return null;
    host = formatIPv6(buf.subarray(pos, pos + 16));
    pos += 16;
  } else if (atyp === 3) {
    if (pos >= buf.length) return null;
    const n = buf[pos++];
    if (n === 0 || pos + n > buf.length) return null;
    try {
      host = decFatal.decode(buf.subarray(pos, pos + n));
    } catch {
      return null;
    }
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x20\x7f/\\@]/.test(host)) return null;
    pos += n;
  } else {
    return null;
  }
  if (pos + 2 > buf.length) return null;
  const port = (buf[pos] << 8) | buf[pos + 1];
  return { host, port, atyp, end: pos + 2 };
}

/** Decodes one relayed datagram; null when malformed (wrong kind, truncated, bad address, port 0). */
export function decodeUdpDatagram(buf: Uint8Array): UdpDatagram | null {
  if (buf.length < UDP_HEADER_FIXED + 1 || buf[0] !== UDP_DATAGRAM_KIND) return null;
  const flowId = ((buf[1] << 24) | (buf[2] << 16) | (buf[3] << 8) | buf[4]) >>> 0;
  const a = readAddress(buf, 5);
  if (!a || a.port === 0) return null;
  return { flowId, host: a.host, port: a.port, payload: buf.subarray(a.end) };
}

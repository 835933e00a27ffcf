/**
 * STUN messages (RFC 8489) and TURN's ChannelData (RFC 8656 §12.4): parse
 * and emit, no I/O. Parsing is strict — the magic cookie, a length that is a
 * multiple of four and matches the datagram, attributes inside the message —
 * and reports malformed input one way: `null`. Emitting goes through
 * {@link StunWriter}, which adds MESSAGE-INTEGRITY and FINGERPRINT last.
 * @module
 */

import { hmac } from "@noble/hashes/hmac.js";
import { sha1 } from "@noble/hashes/legacy.js";
import { formatIPv6, parseIPv4, parseIPv6 } from "../net/ip.ts";

/** The fixed value in every RFC 5389/8489 header. */
export const MAGIC_COOKIE = 0x2112a442;
/** Header bytes. */
export const STUN_HEADER = 20;

/** Methods this project speaks. */
export const Method = {
  binding: 0x001,
  allocate: 0x003,
  refresh: 0x004,
  send: 0x006,
  data: 0x007,
  createPermission: 0x008,
  channelBind: 0x009,
} as const;

/** The four message classes. */
export type StunClass = "request" | "indication" | "success" | "error";

const CLASS_BITS: Record<StunClass, number> = {
  request: 0,
  indication: 1,
  success: 2,
  error: 3,
};
const CLASSES: readonly StunClass[] = ["request", "indication", "success", "error"];

/** Attribute types (RFC 8489 §18.3, RFC 8656 §18, RFC 5780 §7). */
export const Attr = {
  mappedAddress: 0x0001,
  changeRequest: 0x0003,
  username: 0x0006,
  messageIntegrity: 0x0008,
  errorCode: 0x0009,
  unknownAttributes: 0x000a,
  channelNumber: 0x000c,
  lifetime: 0x000d,
  xorPeerAddress: 0x0012,
  data: 0x0013,
  realm: 0x0014,
  nonce: 0x0015,
  xorRelayedAddress: 0x0016,
  requestedTransport: 0x0019,
  dontFragment: 0x001a,
  xorMappedAddress: 0x0020,
  responsePort: 0x0027,
  software: 0x8022,
  alternateServer: 0x8023,
  fingerprint: 0x8028,
  responseOrigin: 0x802b,
  otherAddress: 0x802c,
} as const;

/** One attribute as found in a parsed message. */
export interface StunAttribute {
  /** Its type. */
  readonly type: number;
  /** Its value (a view into the message, without padding). */
  readonly value: Uint8Array;
  /** Offset of its 4-byte header in the message. */
  readonly offset: number;
}

/** A parsed STUN message; views into the bytes it came from. */
export interface StunMessage {
  /** The method (12 bits). */
  readonly method: number;
  /** The class. */
  readonly cls: StunClass;
  /** The 96-bit transaction id. */
  readonly tid: Uint8Array;
  /** Attributes in order. */
  readonly attributes: readonly StunAttribute[];
  /** The whole message. */
  readonly raw: Uint8Array;
}

/** The 16-bit message type of `method` and `cls` (the class bits sit between method bits). */
export function messageType(method: number, cls: StunClass): number {
  const c = CLASS_BITS[cls];
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) |
    ((c & 1) << 4) | ((c & 2) << 7);
}

/**
 * True when `b` has a STUN header: the top two bits zero and the magic
 * cookie. A cheap test to tell STUN from ChannelData and other traffic.
 */
export function looksLikeStun(b: Uint8Array): boolean {
  return b.length >= STUN_HEADER && (b[0] & 0xc0) === 0 && b[4] === 0x21 && b[5] === 0x12 &&
    b[6] === 0xa4 && b[7] === 0x42;
}

/** Parses one STUN message filling `b` exactly; `null` when it is not one or is malformed. */
export function parseStun(b: Uint8Array): StunMessage | null {
  if (!looksLikeStun(b)) return null;
  const len = (b[2] << 8) | b[3];
  if ((len & 3) !== 0 || STUN_HEADER + len !== b.length) return null;
  const t = (b[0] << 8) | b[1];
  const method = (t & 0x000f) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0f80);
  const cls = CLASSES[((t >> 4) & 1) | ((t >> 7) & 2)];
  const attributes: StunAttribute[] = [];
  let off = STUN_HEADER;
  let afterIntegrity = false;
  while (off < b.length) {
    if (off + 4 > b.length) return null;
    const type = (b[off] << 8) | b[off + 1];
    const alen = (b[off + 2] << 8) | b[off + 3];
    const end = off + 4 + alen;
    if (end > b.length) return null;
    // RFC 8489 §14.5: what follows MESSAGE-INTEGRITY, except FINGERPRINT, is not covered: ignored.
    if (!afterIntegrity || type === Attr.fingerprint) {
      attributes.push({ type, value: b.subarray(off + 4, end), offset: off });
    }
    if (type === Attr.messageIntegrity) afterIntegrity = true;
    off = off + 4 + ((alen + 3) & ~3);
  }
  if (off !== b.length) return null;
  return { method, cls, tid: b.subarray(8, 20), attributes, raw: b };
}

/** The first attribute of `type` (RFC 8489: later duplicates are ignored), or undefined. */
export function findAttr(m: StunMessage, type: number): Uint8Array | undefined {
  for (const a of m.attributes) if (a.type === type) return a.value;
  return undefined;
}

/** A 32-bit attribute value (LIFETIME, …); undefined when absent or not 4 bytes. */
export function attrU32(m: StunMessage, type: number): number | undefined {
  const v = findAttr(m, type);
  if (!v || v.length !== 4) return undefined;
  return ((v[0] << 24) | (v[1] << 16) | (v[2] << 8) | v[3]) >>> 0;
}

const utf8 = new TextDecoder("utf-8", { fatal: false });
const utf8enc = new TextEncoder();

/** A UTF-8 attribute value (REALM, NONCE, SOFTWARE, …); undefined when absent. */
export function attrString(m: StunMessage, type: number): string | undefined {
  const v = findAttr(m, type);
  return v ? utf8.decode(v) : undefined;
}

/** ERROR-CODE's number (e.g. 401) and reason, or undefined. */
export function errorCode(m: StunMessage): { code: number; reason: string } | undefined {
  const v = findAttr(m, Attr.errorCode);
  if (!v || v.length < 4) return undefined;
  return { code: (v[2] & 7) * 100 + v[3], reason: utf8.decode(v.subarray(4)) };
}

/**
 * An address attribute; `xor` for the XOR-… forms (the address XORed with
 * the cookie, IPv6 also with the transaction id). Undefined when absent or
 * malformed.
 */
export function attrAddress(m: StunMessage, type: number, xor: boolean): Deno.NetAddr | undefined {
  const v = findAttr(m, type);
  if (!v || v.length < 8) return undefined;
  const family = v[1];
  let port = (v[2] << 8) | v[3];
  if (xor) port ^= MAGIC_COOKIE >>> 16;
  if (family === 1 && v.length === 8) {
    const a = v.slice(4, 8);
    if (xor) { for (let i = 0; i < 4; i++) a[i] ^= m.raw[4 + i]; }
    return { transport: "udp", hostname: a.join("."), port };
  }
  if (family === 2 && v.length === 20) {
    const a = v.slice(4, 20);
    if (xor) { for (let i = 0; i < 16; i++) a[i] ^= m.raw[4 + i]; }
    return { transport: "udp", hostname: formatIPv6(a), port };
  }
  return undefined;
}

/**
 * True when `m` carries a MESSAGE-INTEGRITY that `key` produced (HMAC-SHA1
 * over the message up to the attribute, the length field covering it).
 */
export function checkIntegrity(m: StunMessage, key: Uint8Array): boolean {
  const a = m.attributes.find((x) => x.type === Attr.messageIntegrity);
  if (!a || a.value.length !== 20) return false;
  const head = m.raw.slice(0, a.offset);
  const len = a.offset + 24 - STUN_HEADER;
  head[2] = len >> 8;
  head[3] = len & 0xff;
  const mac = hmac(sha1, key, head);
  let diff = 0;
  for (let i = 0; i < 20; i++) diff |= mac[i] ^ a.value[i];
  return diff === 0;
}

/** False only when `m` carries a FINGERPRINT that does not match (absent is fine). */
export function fingerprintOk(m: StunMessage): boolean {
  const last = m.attributes[m.attributes.length - 1];
  return !last || last.type !== Attr.fingerprint || checkFingerprint(m);
}

/** True when `m` ends with a FINGERPRINT matching its bytes. */
export function checkFingerprint(m: StunMessage): boolean {
  const last = m.attributes[m.attributes.length - 1];
  if (!last || last.type !== Attr.fingerprint || last.value.length !== 4) return false;
  const want = (crc32(m.raw.subarray(0, last.offset)) ^ 0x5354554e) >>> 0;
  const v = last.value;
  return (((v[0] << 24) | (v[1] << 16) | (v[2] << 8) | v[3]) >>> 0) === want;
}

let crcTable: Uint32Array | null = null;

/** CRC-32 (ISO/HDLC, as FINGERPRINT uses). */
export function crc32(b: Uint8Array): number {
  let t = crcTable;
  if (!t) {
    t = crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = t[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A fresh random 96-bit transaction id. */
export function newTransactionId(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(12));
}

/** True when two transaction ids are equal. */
export function sameTid(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== 12 || b.length !== 12) return false;
  for (let i = 0; i < 12; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Builds one STUN message; integrity and fingerprint are added by {@link StunWriter.finish}. */
export class StunWriter {
  private readonly parts: Uint8Array[] = [];
  private len = 0;

  /** Starts a message of `method`/`cls` with transaction id `tid` (12 bytes). */
  constructor(readonly method: number, readonly cls: StunClass, readonly tid: Uint8Array) {
    if (tid.length !== 12) throw new RangeError("a transaction id is 12 bytes");
  }

  /** Adds an attribute with a raw value, padded to four bytes with `pad` (default zero). */
  add(type: number, value: Uint8Array, pad = 0): this {
    if (value.length > 0xffff) throw new RangeError("attribute too long");
    const a = new Uint8Array(4 + ((value.length + 3) & ~3));
    a[0] = type >> 8;
    a[1] = type & 0xff;
    a[2] = value.length >> 8;
    a[3] = value.length & 0xff;
    a.set(value, 4);
    if (pad) a.fill(pad, 4 + value.length);
    this.parts.push(a);
    this.len += a.length;
    return this;
  }

  /** Adds a 32-bit value. */
  u32(type: number, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0);
    return this.add(type, b);
  }

  /** Adds a UTF-8 string. */
  string(type: number, s: string): this {
    return this.add(type, utf8enc.encode(s));
  }

  /** Adds an address attribute (XOR form when `xor`). */
  address(type: number, a: Deno.NetAddr, xor: boolean): this {
    const v4 = parseIPv4(a.hostname);
    const ip = v4 ?? parseIPv6(a.hostname);
    if (!ip) throw new RangeError("not an IP address");
    const v = new Uint8Array(4 + ip.length);
    v[1] = v4 ? 1 : 2;
    let port = a.port;
    if (xor) port ^= MAGIC_COOKIE >>> 16;
    v[2] = port >> 8;
    v[3] = port & 0xff;
    v.set(ip, 4);
    if (xor) {
      const mask = new Uint8Array(16);
      new DataView(mask.buffer).setUint32(0, MAGIC_COOKIE);
      mask.set(this.tid, 4);
      for (let i = 0; i < ip.length; i++) v[4 + i] ^= mask[i];
    }
    return this.add(type, v);
  }

  /**
   * The message's bytes, with MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) and
   * FINGERPRINT appended when asked.
   */
  finish(opts: { integrityKey?: Uint8Array; fingerprint?: boolean } = {}): Uint8Array {
    const extra = (opts.integrityKey ? 24 : 0) + (opts.fingerprint ? 8 : 0);
    const out = new Uint8Array(STUN_HEADER + this.len + extra);
    const dv = new DataView(out.buffer);
    dv.setUint16(0, messageType(this.method, this.cls));
    dv.setUint32(4, MAGIC_COOKIE);
    out.set(this.tid, 8);
    let off = STUN_HEADER;
    for (const p of this.parts) {
      out.set(p, off);
      off += p.length;
    }
    if (opts.integrityKey) {
      dv.setUint16(2, off + 24 - STUN_HEADER);
      const mac = hmac(sha1, opts.integrityKey, out.subarray(0, off));
      dv.setUint16(off, Attr.messageIntegrity);
      dv.setUint16(off + 2, 20);
      out.set(mac, off + 4);
      off += 24;
    }
    if (opts.fingerprint) {
      dv.setUint16(2, off + 8 - STUN_HEADER);
      const crc = (crc32(out.subarray(0, off)) ^ 0x5354554e) >>> 0;
      dv.setUint16(off, Attr.fingerprint);
      dv.setUint16(off + 2, 4);
      dv.setUint32(off + 4, crc);
      off += 8;
    }
    dv.setUint16(2, off - STUN_HEADER);
    return out;
  }
}

/** Smallest channel number (RFC 8656 §12: 0x4000–0x4FFF). */
export const CHANNEL_MIN = 0x4000;
/** Largest channel number. */
export const CHANNEL_MAX = 0x4fff;

/**
 * The channel number and payload of a ChannelData message filling `b`
 * (UDP may pad it to four bytes), or `null`. The payload is a view.
 */
export function parseChannelData(b: Uint8Array): { channel: number; data: Uint8Array } | null {
  if (b.length < 4) return null;
  const channel = (b[0] << 8) | b[1];
  if (channel < CHANNEL_MIN || channel > CHANNEL_MAX) return null;
  const len = (b[2] << 8) | b[3];
  if (4 + len > b.length || b.length - (4 + len) > 3) return null;
  return { channel, data: b.subarray(4, 4 + len) };
}

/** Writes ChannelData for `channel` around `data` into `out` (≥ 4 + data.length); returns its length. */
export function writeChannelData(channel: number, data: Uint8Array, out: Uint8Array): number {
  out[0] = channel >> 8;
  out[1] = channel & 0xff;
  out[2] = data.length >> 8;
  out[3] = data.length & 0xff;
  out.set(data, 4);
  return 4 + data.length;
}

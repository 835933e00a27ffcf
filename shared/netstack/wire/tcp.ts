/**
 * TCP header and options (RFC 9293; MSS, window scale and timestamps RFC 7323, SACK
 * RFC 2018): parse with the pseudo-header checksum verified, emit with options and the
 * checksum computed. Failure convention: see `error.ts`.
 *
 * Options are emitted in the order and padding Linux uses (MSS; SACK-permitted +
 * timestamps, or NOP NOP + timestamps, or NOP NOP + SACK-permitted; NOP + window scale;
 * NOP NOP + SACK blocks), so a parsed kernel segment re-emits byte for byte.
 * @module
 */

import { checksumValid, finishChecksum, onesSum, pseudoHeaderSum } from "./checksum.ts";
import { WireError } from "./error.ts";
import { IpProtocol } from "./ip_protocol.ts";

/** Length of a TCP header without options. */
export const TCP_HEADER_LENGTH = 20;
/** Longest TCP header (data offset 15). */
export const TCP_MAX_HEADER_LENGTH = 60;
/** Largest window scale shift (RFC 7323 §2.3); larger received values are clamped. */
export const TCP_MAX_WINDOW_SCALE = 14;
/** Most SACK blocks one segment carries (40 option bytes). */
export const TCP_MAX_SACK_BLOCKS = 4;

/** TCP flag bits (the low byte of the flags field). */
export const TcpFlags = {
  /** No more data from sender. */
  FIN: 0x01,
  /** Synchronize sequence numbers. */
  SYN: 0x02,
  /** Reset the connection. */
  RST: 0x04,
  /** Push. */
  PSH: 0x08,
  /** Acknowledgment field significant. */
  ACK: 0x10,
  /** Urgent pointer significant. */
  URG: 0x20,
  /** ECN-Echo (RFC 3168). */
  ECE: 0x40,
  /** Congestion Window Reduced (RFC 3168). */
  CWR: 0x80,
} as const;

/** Option kinds. */
export const TcpOption = {
  /** End of option list. */
  End: 0,
  /** No-operation (padding). */
  Nop: 1,
  /** Maximum segment size (SYN only). */
  Mss: 2,
  /** Window scale (SYN only). */
  WindowScale: 3,
  /** SACK permitted (SYN only). */
  SackPermitted: 4,
  /** SACK blocks. */
  Sack: 5,
  /** Timestamps. */
  Timestamps: 8,
} as const;

/** What {@link emitTcp} writes; a parsed {@link TcpSegment} is one. */
export interface TcpRepr {
  /** Source port. */
  srcPort: number;
  /** Destination port. */
  dstPort: number;
  /** Sequence number (uint32). */
  seq: number;
  /** Acknowledgment number (uint32; written whatever the ACK flag). */
  ack: number;
  /** Flag bits ({@link TcpFlags}), 0..0x1ff (bit 8 is the old NS/AE bit). */
  flags: number;
  /** Window field as sent (already scaled down by the sender's shift). */
  window: number;
  /** Urgent pointer; 0 if omitted. */
  urgent?: number;
  /** MSS option value, or -1 / omitted for none. */
  mss?: number;
  /** Window scale shift, or -1 / omitted for none. */
  windowScale?: number;
  /** SACK-permitted option. */
  sackPermitted?: boolean;
  /** Timestamps option present. */
  hasTimestamps?: boolean;
  /** TSval (uint32). */
  tsVal?: number;
  /** TSecr (uint32). */
  tsEcr?: number;
  /** Number of SACK blocks in {@link sackBlocks} (0..4). */
  sackCount?: number;
  /** SACK blocks as (left, right) uint32 pairs: `[l0, r0, l1, r1, …]`. */
  sackBlocks?: ArrayLike<number>;
}

/** A parsed TCP segment; reuse one by passing it as `out` to {@link parseTcp}. */
export class TcpSegment implements TcpRepr {
  /** The segment (the IP payload). */
  buf: Uint8Array = new Uint8Array(0);
  /** Source port. */
  srcPort = 0;
  /** Destination port. */
  dstPort = 0;
  /** Sequence number (uint32). */
  seq = 0;
  /** Acknowledgment number (uint32). */
  ack = 0;
  /** Header length in bytes (data offset × 4). */
  headerLength = 0;
  /** Flag bits (9 bits: NS/AE, CWR … FIN). */
  flags = 0;
  /** Window field (unscaled). */
  window = 0;
  /** Checksum as received. */
  checksum = 0;
  /** Urgent pointer. */
  urgent = 0;
  /** MSS option, -1 if absent. */
  mss: number = -1;
  /** Window scale shift (clamped to 14), -1 if absent. */
  windowScale: number = -1;
  /** SACK-permitted option present. */
  sackPermitted = false;
  /** Timestamps option present. */
  hasTimestamps = false;
  /** TSval. */
  tsVal = 0;
  /** TSecr. */
  tsEcr = 0;
  /** SACK blocks held in {@link sackBlocks}. */
  sackCount = 0;
  /** SACK blocks as (left, right) pairs. */
  readonly sackBlocks: Uint32Array = new Uint32Array(2 * TCP_MAX_SACK_BLOCKS);
  /** Offset of the data in {@link buf} (= headerLength). */
  payloadOffset = 0;
  /** The data (a view into the input). */
  payload: Uint8Array = new Uint8Array(0);

  /** True when every bit of `f` is set in {@link flags}. */
  has(f: number): boolean {
    return (this.flags & f) === f;
  }
}

/** Options of {@link parseTcp}. */
export interface TcpParseOptions {
  /** Skip the checksum check (offloaded, already verified). Default false. */
  skipChecksum?: boolean;
}

/**
 * Parses a TCP segment (the whole IP payload) and its options; `src`/`dst` are the IP
 * addresses (4 or 16 bytes each) for the pseudo-header checksum. Errors: shorter than 20
 * bytes or than the data offset → Truncated; data offset < 5 → BadHeaderLength; an option
 * whose length byte is missing, < 2, past the header, or wrong for its kind → BadOption;
 * checksum → BadChecksum. Unknown options are skipped by their length. Never throws.
 */
export function parseTcp(
  seg: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  out: TcpSegment = new TcpSegment(),
  opts?: TcpParseOptions,
): TcpSegment | WireError {
  const n = seg.length;
  if (n < TCP_HEADER_LENGTH) return WireError.Truncated;
  const hl = (seg[12] >> 4) * 4;
  if (hl < TCP_HEADER_LENGTH) return WireError.BadHeaderLength;
  if (hl > n) return WireError.Truncated;
  if (
    !opts?.skipChecksum &&
    !checksumValid(seg, 0, n, pseudoHeaderSum(src, dst, IpProtocol.Tcp, n))
  ) return WireError.BadChecksum;
  out.mss = -1;
  out.windowScale = -1;
  out.sackPermitted = false;
  out.hasTimestamps = false;
  out.tsVal = 0;
  out.tsEcr = 0;
  out.sackCount = 0;
  for (let i = TCP_HEADER_LENGTH; i < hl;) {
    const kind = seg[i];
    if (kind === TcpOption.End) break;
    if (kind === TcpOption.Nop) {
      i++;
      continue;
    }
    if (i + 1 >= hl) return WireError.BadOption;
    const len = seg[i + 1];
    if (len < 2 || i + len > hl) return WireError.BadOption;
    switch (kind) {
      case TcpOption.Mss:
        if (len !== 4) return WireError.BadOption;
        out.mss = (seg[i + 2] << 8) | seg[i + 3];
        break;
      case TcpOption.WindowScale:
        if (len !== 3) return WireError.BadOption;
        out.windowScale = Math.min(seg[i + 2], TCP_MAX_WINDOW_SCALE);
        break;
      case TcpOption.SackPermitted:
        if (len !== 2) return WireError.BadOption;
        out.sackPermitted = true;
        break;
      case TcpOption.Sack: {
        if ((len - 2) % 8 !== 0 || len === 2) return WireError.BadOption;
        const blocks = (len - 2) / 8;
        for (let b = 0, j = i + 2; b < blocks; b++, j += 8) {
          out.sackBlocks[2 * b] = u32(seg, j);
          out.sackBlocks[2 * b + 1] = u32(seg, j + 4);
        }
        out.sackCount = blocks;
        break;
      }
      case TcpOption.Timestamps:
        if (len !== 10) return WireError.BadOption;
        out.hasTimestamps = true;
        out.tsVal = u32(seg, i + 2);
        out.tsEcr = u32(seg, i + 6);
        break;
    }
    i += len;
  }
  out.buf = seg;
  out.srcPort = (seg[0] << 8) | seg[1];
  out.dstPort = (seg[2] << 8) | seg[3];
  out.seq = u32(seg, 4);
  out.ack = u32(seg, 8);
  out.headerLength = hl;
  out.flags = ((seg[12] & 1) << 8) | seg[13];
  out.window = (seg[14] << 8) | seg[15];
  out.checksum = (seg[16] << 8) | seg[17];
  out.urgent = (seg[18] << 8) | seg[19];
  out.payloadOffset = hl;
  out.payload = seg.subarray(hl);
  return out;
}

function u32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}

function put32(b: Uint8Array, i: number, v: number): void {
  b[i] = v >>> 24;
  b[i + 1] = (v >>> 16) & 0xff;
  b[i + 2] = (v >>> 8) & 0xff;
  b[i + 3] = v & 0xff;
}

/** Header length {@link emitTcp} writes for `repr`: 20 + options, a multiple of 4 (≤ 60). */
export function tcpHeaderLength(repr: TcpRepr): number {
  let n = TCP_HEADER_LENGTH;
  if (repr.mss !== undefined && repr.mss >= 0) n += 4;
  if (repr.hasTimestamps) n += 12;
  else if (repr.sackPermitted) n += 4;
  if (repr.windowScale !== undefined && repr.windowScale >= 0) n += 4;
  const sacks = repr.sackCount ?? 0;
  if (sacks > 0) n += 4 + 8 * sacks;
  return n;
}

function checkField(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`tcp: ${name} ${v}`);
}

/**
 * Writes a TCP segment at `out[offset]`: header, options (Linux layout) and checksum over
 * the pseudo header of `src`/`dst`. `payload` is either the data (copied after the header)
 * or the length of data the caller already placed at `offset + tcpHeaderLength(repr)`.
 * Returns the segment length. Throws `RangeError` for a buffer too small, a field out of
 * range or options that do not fit in 40 bytes.
 */
export function emitTcp(
  repr: TcpRepr,
  payload: Uint8Array | number,
  src: Uint8Array,
  dst: Uint8Array,
  out: Uint8Array,
  offset = 0,
): number {
  const hl = tcpHeaderLength(repr);
  if (hl > TCP_MAX_HEADER_LENGTH) throw new RangeError("tcp: options longer than 40 bytes");
  const plen = typeof payload === "number" ? payload : payload.length;
  const total = hl + plen;
  if (offset < 0 || !Number.isInteger(plen) || plen < 0 || offset + total > out.length) {
    throw new RangeError("tcp: output buffer too small");
  }
  checkField("source port", repr.srcPort, 0xffff);
  checkField("destination port", repr.dstPort, 0xffff);
  checkField("flags", repr.flags, 0x1ff);
  checkField("window", repr.window, 0xffff);
  const sacks = repr.sackCount ?? 0;
  checkField("SACK block count", sacks, TCP_MAX_SACK_BLOCKS);
  if (typeof payload !== "number") out.set(payload, offset + hl);
  const o = offset;
  out[o] = repr.srcPort >> 8;
  out[o + 1] = repr.srcPort & 0xff;
  out[o + 2] = repr.dstPort >> 8;
  out[o + 3] = repr.dstPort & 0xff;
  put32(out, o + 4, repr.seq);
  put32(out, o + 8, repr.ack);
  out[o + 12] = ((hl / 4) << 4) | (repr.flags >> 8);
  out[o + 13] = repr.flags & 0xff;
  out[o + 14] = repr.window >> 8;
  out[o + 15] = repr.window & 0xff;
  out[o + 16] = 0;
  out[o + 17] = 0;
  const urg = repr.urgent ?? 0;
  checkField("urgent pointer", urg, 0xffff);
  out[o + 18] = urg >> 8;
  out[o + 19] = urg & 0xff;
  let i = o + TCP_HEADER_LENGTH;
  if (repr.mss !== undefined && repr.mss >= 0) {
    checkField("MSS", repr.mss, 0xffff);
    out[i] = TcpOption.Mss;
    out[i + 1] = 4;
    out[i + 2] = repr.mss >> 8;
    out[i + 3] = repr.mss & 0xff;
    i += 4;
  }
  if (repr.hasTimestamps) {
    if (repr.sackPermitted) {
      out[i] = TcpOption.SackPermitted;
      out[i + 1] = 2;
    } else {
      out[i] = TcpOption.Nop;
      out[i + 1] = TcpOption.Nop;
    }
    out[i + 2] = TcpOption.Timestamps;
    out[i + 3] = 10;
    put32(out, i + 4, repr.tsVal ?? 0);
    put32(out, i + 8, repr.tsEcr ?? 0);
    i += 12;
  } else if (repr.sackPermitted) {
    out[i] = TcpOption.Nop;
    out[i + 1] = TcpOption.Nop;
    out[i + 2] = TcpOption.SackPermitted;
    out[i + 3] = 2;
    i += 4;
  }
  if (repr.windowScale !== undefined && repr.windowScale >= 0) {
    checkField("window scale", repr.windowScale, TCP_MAX_WINDOW_SCALE);
    out[i] = TcpOption.Nop;
    out[i + 1] = TcpOption.WindowScale;
    out[i + 2] = 3;
    out[i + 3] = repr.windowScale;
    i += 4;
  }
  if (sacks > 0) {
    const blocks = repr.sackBlocks;
    if (!blocks || blocks.length < 2 * sacks) throw new RangeError("tcp: missing SACK blocks");
    out[i] = TcpOption.Nop;
    out[i + 1] = TcpOption.Nop;
    out[i + 2] = TcpOption.Sack;
    out[i + 3] = 2 + 8 * sacks;
    i += 4;
    for (let b = 0; b < 2 * sacks; b++, i += 4) put32(out, i, blocks[b]);
  }
  const c = finishChecksum(
    onesSum(out, o, o + total, pseudoHeaderSum(src, dst, IpProtocol.Tcp, total)),
  );
  out[o + 16] = c >> 8;
  out[o + 17] = c & 0xff;
  return total;
}

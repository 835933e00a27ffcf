/**
 * The OSTP frame layer (PROTOCOL.md part B, encoding documented in
 * docs/protocol.md). A decrypted data datagram is a sequence of frames; a zero
 * byte starts padding that runs to the end. Parsing calls a {@link FrameSink}
 * method per frame, so the hot path allocates nothing but copies of stream data.
 * @module
 */

import { DecodeError, Reader, varintSize, writeVarint } from "./varint.ts";

/** Frame type codes. */
export const FrameType = {
  PADDING: 0x00,
  PING: 0x01,
  ACK: 0x02,
  RESET_STREAM: 0x03,
  MAX_DATA: 0x04,
  MAX_STREAM_DATA: 0x05,
  DATAGRAM: 0x06,
  CLOSE: 0x07,
  STREAM: 0x08,
  STREAM_FIN: 0x09,
} as const;

/** Most ACK ranges one ACK frame carries. */
export const MAX_ACK_RANGES = 32;
/** Longest CLOSE reason in bytes. */
export const MAX_REASON_BYTES = 255;

/** Receives parsed frames. Views passed in are only valid during the call. */
export interface FrameSink {
  /** PING: elicits an ack, carries nothing. */
  onPing(): void;
  /**
   * ACK: `ranges` holds inclusive `[lo, hi]` pairs, highest first; `delayUs`
   * is the time the peer held the largest packet before acknowledging.
   */
  onAck(ranges: number[], rangeCount: number, delayUs: number): void;
  /** STREAM data at `offset`; `fin` marks the stream's final byte. */
  onStream(id: number, offset: number, data: Uint8Array, fin: boolean): void;
  /** RESET_STREAM: the peer abandoned the stream; `finalSize` is its send-side size. */
  onResetStream(id: number, code: number, finalSize: number): void;
  /** MAX_DATA: new session-wide send credit. */
  onMaxData(max: number): void;
  /** MAX_STREAM_DATA: new per-stream send credit. */
  onMaxStreamData(id: number, max: number): void;
  /** DATAGRAM: an unreliable payload. */
  onDatagram(data: Uint8Array): void;
  /** CLOSE: the peer ended the session. */
  onClose(code: number, reason: string): void;
}

const decoder = new TextDecoder();
const ackScratch: number[] = new Array(MAX_ACK_RANGES * 2).fill(0);

/**
 * Parses frames from `buf[0..end)` into `sink`. Returns true if any frame
 * elicits an acknowledgement. Throws {@link DecodeError} on malformed input.
 */
export function parseFrames(buf: Uint8Array, end: number, sink: FrameSink): boolean {
  const r = new Reader(buf, end);
  let ackEliciting = false;
  while (r.remaining > 0) {
    const type = r.u8();
    switch (type) {
      case FrameType.PADDING:
        return ackEliciting;
      case FrameType.PING:
        ackEliciting = true;
        sink.onPing();
        break;
      case FrameType.ACK: {
        const largest = r.varint();
        const delay = r.varint();
        const count = r.varint();
        if (count < 1 || count > MAX_ACK_RANGES) throw new DecodeError("ack range count");
        let hi = largest;
        let lo = hi - r.varint();
        if (lo < 0) throw new DecodeError("ack range below zero");
        ackScratch[0] = lo;
        ackScratch[1] = hi;
        for (let i = 1; i < count; i++) {
          const gap = r.varint();
          const len = r.varint();
          hi = lo - gap - 2;
          lo = hi - len;
          if (lo < 0) throw new DecodeError("ack range below zero");
          ackScratch[2 * i] = lo;
          ackScratch[2 * i + 1] = hi;
        }
        sink.onAck(ackScratch, count, delay);
        break;
      }
      case FrameType.RESET_STREAM:
        ackEliciting = true;
        sink.onResetStream(r.varint(), r.varint(), r.varint());
        break;
      case FrameType.MAX_DATA:
        ackEliciting = true;
        sink.onMaxData(r.varint());
        break;
      case FrameType.MAX_STREAM_DATA:
        ackEliciting = true;
        sink.onMaxStreamData(r.varint(), r.varint());
        break;
      case FrameType.DATAGRAM: {
        ackEliciting = true;
        const len = r.varint();
        sink.onDatagram(r.bytes(len));
        break;
      }
      case FrameType.CLOSE: {
        const code = r.varint();
        const len = r.u8();
        sink.onClose(code, decoder.decode(r.bytes(len)));
        break;
      }
      case FrameType.STREAM:
      case FrameType.STREAM_FIN: {
        ackEliciting = true;
        const id = r.varint();
        const offset = r.varint();
        const len = r.varint();
        const data = r.bytes(len);
        if (offset + len > Number.MAX_SAFE_INTEGER) throw new DecodeError("stream offset");
        sink.onStream(id, offset, data, type === FrameType.STREAM_FIN);
        break;
      }
      default:
        throw new DecodeError(`unknown frame type ${type}`);
    }
  }
  return ackEliciting;
}

/** Bytes a STREAM frame header takes before its data. */
export function streamHeaderSize(id: number, offset: number, len: number): number {
  return 1 + varintSize(id) + varintSize(offset) + varintSize(len);
}

/** Writes a STREAM frame header; the caller writes `len` data bytes after it. */
export function writeStreamHeader(
  buf: Uint8Array,
  pos: number,
  id: number,
  offset: number,
  len: number,
  fin: boolean,
): number {
  buf[pos++] = fin ? FrameType.STREAM_FIN : FrameType.STREAM;
  pos = writeVarint(buf, pos, id);
  pos = writeVarint(buf, pos, offset);
  return writeVarint(buf, pos, len);
}

/** Writes a PING frame. */
export function writePing(buf: Uint8Array, pos: number): number {
  buf[pos] = FrameType.PING;
  return pos + 1;
}

/**
 * Writes an ACK frame for the received ranges (`starts`/`ends` half-open,
 * ascending), newest first, at most `maxRanges` and within `room` bytes.
 * Returns the new position, or `pos` if nothing fits.
 */
export function writeAck(
  buf: Uint8Array,
  pos: number,
  room: number,
  starts: number[],
  ends: number[],
  delayUs: number,
): number {
  const n = starts.length;
  if (n === 0) return pos;
  const limit = pos + room;
  const largest = ends[n - 1] - 1;
  const first = largest - starts[n - 1];
  let count = 1;
  let size = 1 + varintSize(largest) + varintSize(delayUs) + 1 + varintSize(first);
  if (size > room) return pos;
  for (let i = n - 2; i >= 0 && count < MAX_ACK_RANGES; i--) {
    const gap = starts[i + 1] - ends[i] - 1;
    const len = ends[i] - 1 - starts[i];
    const extra = varintSize(gap) + varintSize(len);
    if (size + extra > room) break;
    size += extra;
    count++;
  }
  buf[pos++] = FrameType.ACK;
  pos = writeVarint(buf, pos, largest);
  pos = writeVarint(buf, pos, delayUs);
  pos = writeVarint(buf, pos, count);
  pos = writeVarint(buf, pos, first);
  for (let i = n - 2, k = 1; k < count; i--, k++) {
    pos = writeVarint(buf, pos, starts[i + 1] - ends[i] - 1);
    pos = writeVarint(buf, pos, ends[i] - 1 - starts[i]);
  }
  if (pos > limit) throw new Error("ack overflow");
  return pos;
}

/** Writes RESET_STREAM. */
export function writeResetStream(
  buf: Uint8Array,
  pos: number,
  id: number,
  code: number,
  finalSize: number,
): number {
  buf[pos++] = FrameType.RESET_STREAM;
  pos = writeVarint(buf, pos, id);
  pos = writeVarint(buf, pos, code);
  return writeVarint(buf, pos, finalSize);
}

/** Writes MAX_DATA. */
export function writeMaxData(buf: Uint8Array, pos: number, max: number): number {
  buf[pos++] = FrameType.MAX_DATA;
  return writeVarint(buf, pos, max);
}

/** Writes MAX_STREAM_DATA. */
export function writeMaxStreamData(buf: Uint8Array, pos: number, id: number, max: number): number {
  buf[pos++] = FrameType.MAX_STREAM_DATA;
  pos = writeVarint(buf, pos, id);
  return writeVarint(buf, pos, max);
}

/** Bytes a DATAGRAM frame of `len` payload bytes takes. */
export function datagramFrameSize(len: number): number {
  return 1 + varintSize(len) + len;
}

/** Writes a DATAGRAM frame. */
export function writeDatagram(buf: Uint8Array, pos: number, data: Uint8Array): number {
  buf[pos++] = FrameType.DATAGRAM;
  pos = writeVarint(buf, pos, data.length);
  buf.set(data, pos);
  return pos + data.length;
}

/** Writes a CLOSE frame; the reason is cut to {@link MAX_REASON_BYTES} on a character boundary. */
export function writeClose(buf: Uint8Array, pos: number, code: number, reason: string): number {
  const all = new TextEncoder().encode(reason);
  let cut = Math.min(all.length, MAX_REASON_BYTES);
  // Never split a UTF-8 sequence: back off over continuation bytes (10xxxxxx).
  if (cut < all.length) { while (cut > 0 && (all[cut] & 0xc0) === 0x80) cut--; }
  const bytes = all.subarray(0, cut);
  buf[pos++] = FrameType.CLOSE;
  pos = writeVarint(buf, pos, code);
  buf[pos++] = bytes.length;
  buf.set(bytes, pos);
  return pos + bytes.length;
}

export { DecodeError };

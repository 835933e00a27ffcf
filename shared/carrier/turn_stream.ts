/**
 * TURN's framing on a byte stream (RFC 8656 §12.5, TURN over TCP and TLS):
 * STUN messages and ChannelData back to back, each self-delimiting — a STUN
 * message is its 20-byte header plus the length in it, ChannelData its
 * 4-byte header plus the length padded to four bytes. {@link TurnStreamReader}
 * splits a stream into them; {@link RawWriter} writes messages as they are
 * (the TURN client pads ChannelData itself on streams).
 * @module
 */

import type { StreamReader, StreamWriter } from "./stream_framing.ts";

/** Largest message: a STUN message's header and largest length. */
const MAX_MESSAGE = 20 + 0xffff;

/** Splits a TURN byte stream into STUN messages and ChannelData. */
export class TurnStreamReader implements StreamReader {
  readonly max = MAX_MESSAGE;
  private buf = new Uint8Array(4096);
  private have = 0;

  push(chunk: Uint8Array, onFrame: (frame: Uint8Array) => void): boolean {
    let src = chunk;
    if (this.have > 0) {
      if (this.have + chunk.length > this.buf.length) {
        const next = new Uint8Array(Math.max(this.have + chunk.length, this.buf.length * 2));
        next.set(this.buf.subarray(0, this.have));
        this.buf = next;
      }
      this.buf.set(chunk, this.have);
      this.have += chunk.length;
      src = this.buf.subarray(0, this.have);
    }
    let off = 0;
    while (src.length - off >= 4) {
      const top = src[off] & 0xc0;
      const len = (src[off + 2] << 8) | src[off + 3];
      let total: number;
      if (top === 0x00) {
        if ((len & 3) !== 0) return false;
        total = 20 + len;
      } else if (top === 0x40) {
        total = 4 + ((len + 3) & ~3);
      } else {
        return false;
      }
      if (src.length - off < total) break;
      onFrame(src.subarray(off, off + total));
      off += total;
    }
    const rest = src.length - off;
    if (rest > 0) {
      if (src === chunk) {
        if (rest > this.buf.length) this.buf = new Uint8Array(Math.max(rest, this.buf.length * 2));
        this.buf.set(chunk.subarray(off));
      } else {
        this.buf.copyWithin(0, off, src.length);
      }
    }
    this.have = rest;
    return true;
  }
}

/** Gathers messages unchanged into one write. */
export class RawWriter implements StreamWriter {
  private buf = new Uint8Array(64 * 1024);
  private used = 0;

  get size(): number {
    return this.used;
  }

  add(data: Uint8Array): void {
    const need = this.used + data.length;
    if (need > this.buf.length) {
      const next = new Uint8Array(Math.max(need, this.buf.length * 2));
      next.set(this.buf.subarray(0, this.used));
      this.buf = next;
    }
    this.buf.set(data, this.used);
    this.used = need;
  }

  take(): Uint8Array {
    const out = this.buf.slice(0, this.used);
    this.used = 0;
    return out;
  }
}

/**
 * QUIC-style variable-length integers (RFC 9000 §16): 1, 2, 4 or 8 bytes, the
 * two high bits of the first byte give the length. Values are JS numbers and
 * must stay below 2^53.
 * @module
 */

/** Largest value this codec encodes (2^53 - 1, JS safe integer). */
export const VARINT_MAX = Number.MAX_SAFE_INTEGER;

/** Bytes needed to encode `v`. */
export function varintSize(v: number): number {
  if (v < 0x40) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x40000000) return 4;
  return 8;
}

/** Writes `v` at `buf[pos]`; returns the new position. The caller ensures room. */
export function writeVarint(buf: Uint8Array, pos: number, v: number): number {
  if (v < 0x40) {
    buf[pos] = v;
    return pos + 1;
  }
  if (v < 0x4000) {
    buf[pos] = 0x40 | (v >>> 8);
    buf[pos + 1] = v & 0xff;
    return pos + 2;
  }
  if (v < 0x40000000) {
    buf[pos] = 0x80 | (v >>> 24);
    buf[pos + 1] = (v >>> 16) & 0xff;
    buf[pos + 2] = (v >>> 8) & 0xff;
    buf[pos + 3] = v & 0xff;
    return pos + 4;
  }
  const hi = Math.floor(v / 0x100000000);
  const lo = v >>> 0;
  buf[pos] = 0xc0 | (hi >>> 24);
  buf[pos + 1] = (hi >>> 16) & 0xff;
  buf[pos + 2] = (hi >>> 8) & 0xff;
  buf[pos + 3] = hi & 0xff;
  buf[pos + 4] = lo >>> 24;
  buf[pos + 5] = (lo >>> 16) & 0xff;
  buf[pos + 6] = (lo >>> 8) & 0xff;
  buf[pos + 7] = lo & 0xff;
  return pos + 8;
}

/** Thrown by {@link Reader} when input is truncated or a value is out of range. */
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DecodeError";
  }
}

/** A bounds-checked cursor over untrusted bytes. */
export class Reader {
  /** Current offset into `buf`. */
  pos = 0;
  /** Wraps `buf` (not copied). */
  constructor(readonly buf: Uint8Array, readonly end = buf.length) {}

  /** Bytes left. */
  get remaining(): number {
    return this.end - this.pos;
  }

  /** Reads one byte. */
  u8(): number {
    if (this.pos >= this.end) throw new DecodeError("truncated");
    return this.buf[this.pos++];
  }

  /** Reads a big-endian u16. */
  u16(): number {
    if (this.pos + 2 > this.end) throw new DecodeError("truncated");
    const v = (this.buf[this.pos] << 8) | this.buf[this.pos + 1];
    this.pos += 2;
    return v;
  }

  /** Reads a varint; rejects values above {@link VARINT_MAX}. */
  varint(): number {
    const b = this.buf;
    const p = this.pos;
    if (p >= this.end) throw new DecodeError("truncated");
    const first = b[p];
    const len = 1 << (first >>> 6);
    if (p + len > this.end) throw new DecodeError("truncated");
    this.pos = p + len;
    switch (len) {
      case 1:
        return first & 0x3f;
      case 2:
        return ((first & 0x3f) << 8) | b[p + 1];
      case 4:
        return ((first & 0x3f) * 0x1000000) + ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]);
      default: {
        const hi = ((first & 0x3f) * 0x1000000) +
          ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]);
        if (hi > 0x1fffff) throw new DecodeError("varint above 2^53");
        const lo = ((b[p + 4] << 24) | (b[p + 5] << 16) | (b[p + 6] << 8) | b[p + 7]) >>> 0;
        return hi * 0x100000000 + lo;
      }
    }
  }

  /** Returns a view of the next `n` bytes (no copy) after checking they arrived. */
  bytes(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.end) throw new DecodeError("truncated");
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
}

/**
 * Datagrams on a byte stream (the UDP-over-TCP and TLS carriers): each
 * datagram is a 2-byte big-endian length (1..65535; 0 is invalid) and that
 * many bytes. {@link FrameReader} reassembles frames across arbitrary chunk
 * boundaries; {@link FrameWriter} gathers a task's datagrams into one write.
 * @module
 */

/** Bytes of the length prefix. */
export const FRAME_HEADER = 2;

/** Splits a byte stream into messages (the framing of one stream carrier). */
export interface StreamReader {
  /** Largest message accepted. */
  readonly max: number;
  /**
   * Feeds one chunk; calls `onFrame` per complete message (valid only during
   * the call). False when the stream is broken: nothing more should be fed.
   */
  push(chunk: Uint8Array, onFrame: (frame: Uint8Array) => void): boolean;
}

/** Gathers a task's messages into one write (the framing's other half). */
export interface StreamWriter {
  /** Bytes queued. */
  readonly size: number;
  /** Appends one message (copied), framed. */
  add(data: Uint8Array): void;
  /** Everything queued as one fresh buffer; the writer starts empty again. */
  take(): Uint8Array;
}

/** Reassembles length-prefixed frames from stream chunks. */
export class FrameReader implements StreamReader {
  private readonly buf: Uint8Array;
  private have = 0;
  /** Frames delivered so far. */
  frames = 0;

  /** `max` is the largest frame accepted; a larger length (or 0) is a broken stream. */
  constructor(readonly max: number) {
    this.buf = new Uint8Array(FRAME_HEADER + max);
  }

  /** Bytes of an incomplete frame held. */
  get pending(): number {
    return this.have;
  }

  /** The bytes held so far, not yet a whole frame (a TLS fallback replays them). */
  held(): Uint8Array {
    return this.buf.subarray(0, this.have);
  }

  /**
   * Feeds one chunk; calls `onFrame` for each complete frame (valid only
   * during the call). Returns false when the stream is broken (a length of 0
   * or above `max`): nothing more should be fed.
   */
  push(chunk: Uint8Array, onFrame: (frame: Uint8Array) => void): boolean {
    let off = 0;
    const n = chunk.length;
    while (off < n) {
      if (this.have === 0 && n - off >= FRAME_HEADER) {
        // Fast path: whole frames straight from the chunk.
        const len = (chunk[off] << 8) | chunk[off + 1];
        if (len === 0 || len > this.max) return false;
        if (n - off - FRAME_HEADER >= len) {
          this.frames++;
          onFrame(chunk.subarray(off + FRAME_HEADER, off + FRAME_HEADER + len));
          off += FRAME_HEADER + len;
          continue;
        }
      }
      // Slow path: accumulate.
      if (this.have < FRAME_HEADER) {
        this.buf[this.have++] = chunk[off++];
        if (this.have === FRAME_HEADER) {
          const len = (this.buf[0] << 8) | this.buf[1];
          if (len === 0 || len > this.max) return false;
        }
        continue;
      }
      const len = (this.buf[0] << 8) | this.buf[1];
      const want = FRAME_HEADER + len - this.have;
      const take = Math.min(want, n - off);
      this.buf.set(chunk.subarray(off, off + take), this.have);
      this.have += take;
      off += take;
      if (this.have === FRAME_HEADER + len) {
        this.have = 0;
        this.frames++;
        onFrame(this.buf.subarray(FRAME_HEADER, FRAME_HEADER + len));
      }
    }
    return true;
  }
}

/** Gathers datagrams into one buffer of frames, reused between writes. */
export class FrameWriter implements StreamWriter {
  private buf: Uint8Array;
  private used = 0;

  constructor(initial = 64 * 1024) {
    this.buf = new Uint8Array(initial);
  }

  /** Bytes queued. */
  get size(): number {
    return this.used;
  }

  /** Appends one frame (`data` is copied). */
  add(data: Uint8Array): void {
    const need = this.used + FRAME_HEADER + data.length;
    if (need > this.buf.length) {
      const next = new Uint8Array(Math.max(need, this.buf.length * 2));
      next.set(this.buf.subarray(0, this.used));
      this.buf = next;
    }
    this.buf[this.used] = data.length >> 8;
    this.buf[this.used + 1] = data.length & 0xff;
    this.buf.set(data, this.used + FRAME_HEADER);
    this.used = need;
  }

  /** The queued frames as one fresh buffer (the writer starts empty again). */
  take(): Uint8Array {
    const out = this.buf.slice(0, this.used);
    this.used = 0;
    return out;
  }
}

/**
 * A fixed-capacity byte ring addressed by absolute stream offsets (numbers up to 2^53): the
 * send buffer (bytes the embedder wrote, from the oldest unacknowledged one) and the receive
 * buffer (bytes received, in order from the oldest unread one, plus out-of-order bytes
 * written at their offsets ahead of the contiguous end). Allocated once; nothing here
 * allocates afterwards.
 * @module
 */

/** A byte ring over `[start, start + capacity)` in absolute stream offsets. */
export class ByteRing {
  /** The storage. */
  readonly buf: Uint8Array;
  /** Absolute offset of the first byte held. */
  start = 0;
  /** Absolute offset after the last contiguous byte held. */
  end = 0;

  /** Creates a ring of `capacity` bytes. */
  constructor(readonly capacity: number) {
    this.buf = new Uint8Array(capacity);
  }

  /** Contiguous bytes held (`end - start`). */
  get length(): number {
    return this.end - this.start;
  }

  /** Room for appending (`capacity - length`). */
  get free(): number {
    return this.capacity - (this.end - this.start);
  }

  /** Appends as much of `data` as fits; returns the count. */
  append(data: Uint8Array): number {
    const n = Math.min(data.length, this.free);
    if (n > 0) this.writeAt(this.end, data.subarray(0, n));
    this.end += n;
    return n;
  }

  /**
   * Copies `data` to absolute offset `off` without moving {@link end} (out-of-order bytes).
   * The caller keeps `start <= off` and `off + data.length <= start + capacity`.
   */
  writeAt(off: number, data: Uint8Array): void {
    const cap = this.capacity;
    const i = off % cap;
    const first = Math.min(data.length, cap - i);
    this.buf.set(first === data.length ? data : data.subarray(0, first), i);
    if (first < data.length) this.buf.set(data.subarray(first), 0);
  }

  /** Copies `len` bytes from absolute offset `off` into `out[at..]`. */
  copyOut(off: number, len: number, out: Uint8Array, at: number): void {
    const cap = this.capacity;
    const i = off % cap;
    const first = Math.min(len, cap - i);
    out.set(this.buf.subarray(i, i + first), at);
    if (first < len) out.set(this.buf.subarray(0, len - first), at + first);
  }

  /** Copies up to `out.length` bytes from the start into `out` and drops them; returns the count. */
  read(out: Uint8Array): number {
    const n = Math.min(out.length, this.end - this.start);
    if (n > 0) this.copyOut(this.start, n, out, 0);
    this.start += n;
    return n;
  }

  /** Drops bytes before absolute offset `off` (clamped to {@link end}). */
  consumeTo(off: number): void {
    if (off > this.end) off = this.end;
    if (off > this.start) this.start = off;
  }
}

/**
 * Per-stream buffers: what was written and not yet acknowledged (send side),
 * and what arrived, possibly out of order, and was not yet read (receive side).
 * Ordering is per stream, so a loss on one stream never stalls another.
 * @module
 */

import { RangeSet } from "./ranges.ts";

/**
 * Bytes written by the application, kept from the lowest unacknowledged
 * offset up. Offsets are absolute stream offsets.
 */
export class SendBuffer {
  private buf: Uint8Array;
  /** Absolute offset of `buf[0]`. */
  private bufStart = 0;
  /** Total bytes written by the application (absolute end offset). */
  writeOffset = 0;
  /** First offset never sent. */
  nextSend = 0;
  /** Offsets below this are all acknowledged. */
  ackedPrefix = 0;
  /** Acknowledged ranges above `ackedPrefix`. */
  readonly acked = new RangeSet();
  /** Ranges declared lost and awaiting retransmission. */
  readonly lost = new RangeSet();

  /** `limit` bounds buffered bytes; the buffer starts small and grows. */
  constructor(readonly limit: number) {
    this.buf = new Uint8Array(0);
  }

  /** Bytes held (written and not yet acknowledged as a prefix). */
  get buffered(): number {
    return this.writeOffset - this.ackedPrefix;
  }

  /** Room left for the application. */
  get room(): number {
    return this.limit - this.buffered;
  }

  /** Appends up to `room` bytes of `data`; returns the count taken. */
  write(data: Uint8Array): number {
    const n = Math.min(data.length, this.room);
    if (n <= 0) return 0;
    const used = this.writeOffset - this.bufStart;
    if (used + n > this.buf.length) this.grow(used + n);
    this.buf.set(n === data.length ? data : data.subarray(0, n), this.writeOffset - this.bufStart);
    this.writeOffset += n;
    return n;
  }

  private grow(need: number): void {
    // Drop the acknowledged prefix first, then enlarge if still short.
    const drop = this.ackedPrefix - this.bufStart;
    const used = this.writeOffset - this.ackedPrefix;
    if (drop > 0 && need - drop <= this.buf.length) {
      this.buf.copyWithin(0, drop, drop + used);
      this.bufStart = this.ackedPrefix;
      return;
    }
    let cap = Math.max(this.buf.length * 2, 16384);
    while (cap < need - drop) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(drop, drop + used));
    this.buf = next;
    this.bufStart = this.ackedPrefix;
  }

  /** A view of `len` bytes at absolute `offset` (must be buffered). */
  view(offset: number, len: number): Uint8Array {
    const s = offset - this.bufStart;
    return this.buf.subarray(s, s + len);
  }

  /** Marks `[start, end)` acknowledged; frees memory once the prefix moves. */
  onAcked(start: number, end: number): void {
    if (end <= this.ackedPrefix) return;
    this.lost.remove(start, end);
    this.acked.add(Math.max(start, this.ackedPrefix), end);
    if (this.acked.starts.length > 0 && this.acked.starts[0] <= this.ackedPrefix) {
      this.ackedPrefix = this.acked.ends[0];
      this.acked.starts.shift();
      this.acked.ends.shift();
      if (this.ackedPrefix === this.writeOffset && this.buf.length > 65536) {
        // Idle stream: give the memory back.
        this.buf = new Uint8Array(0);
        this.bufStart = this.ackedPrefix;
      }
    }
  }

  /** Queues `[start, end)` for retransmission, except parts already acknowledged. */
  onLost(start: number, end: number): void {
    if (end <= this.ackedPrefix) return;
    start = Math.max(start, this.ackedPrefix);
    this.lost.add(start, end);
    for (let i = 0; i < this.acked.length; i++) {
      this.lost.remove(this.acked.starts[i], this.acked.ends[i]);
    }
  }

  /** True when a byte is waiting to be (re)sent. */
  get hasPending(): boolean {
    return !this.lost.empty || this.nextSend < this.writeOffset;
  }

  /** Drops everything (stream reset). */
  discard(): void {
    this.lost.clear();
    this.acked.clear();
    this.buf = new Uint8Array(0);
    this.ackedPrefix = this.writeOffset = this.nextSend;
    this.bufStart = this.nextSend;
  }
}

interface Segment {
  offset: number;
  data: Uint8Array;
}

/**
 * Received bytes of one stream. In-order data is queued for reading;
 * out-of-order data waits in sorted segments until the gap fills.
 */
export class RecvBuffer {
  /** Next offset the application will read. */
  readOffset = 0;
  /** Offsets below this have arrived contiguously. */
  contiguous = 0;
  /** Highest offset any frame reached (for flow control accounting). */
  highest = 0;
  /** Final size once FIN or RESET told it; -1 before. */
  finalSize = -1;
  private ready: Uint8Array[] = [];
  private readyHead = 0;
  private readyBytes = 0;
  private pending: Segment[] = [];

  /** Bytes ready to read. */
  get readable(): number {
    return this.readyBytes;
  }

  /** True when every byte up to the final size was read. */
  get finished(): boolean {
    return this.finalSize >= 0 && this.readOffset >= this.finalSize;
  }

  /**
   * Stores `data` (copied) at `offset`. Returns how far `highest` grew, for
   * session flow control.
   */
  insert(offset: number, data: Uint8Array): number {
    const end = offset + data.length;
    const grew = end > this.highest ? end - this.highest : 0;
    if (grew > 0) this.highest = end;
    if (end <= this.contiguous) return grew;
    if (offset <= this.contiguous) {
      this.push(data.subarray(this.contiguous - offset));
      this.drain();
      return grew;
    }
    // Out of order: pending segments are sorted and disjoint; store only the
    // parts of `data` no segment holds yet, so overlapping or repeated frames
    // never make the buffer hold more than the span they cover.
    const p = this.pending;
    let i = 0;
    let hi = p.length;
    while (i < hi) {
      const mid = (i + hi) >>> 1;
      if (p[mid].offset + p[mid].data.length <= offset) i = mid + 1;
      else hi = mid;
    }
    let at = offset;
    while (at < end) {
      if (i < p.length && p[i].offset <= at) {
        at = Math.max(at, p[i].offset + p[i].data.length);
        i++;
        continue;
      }
      const stop = i < p.length ? Math.min(end, p[i].offset) : end;
      p.splice(i++, 0, { offset: at, data: data.slice(at - offset, stop - offset) });
      at = stop;
    }
    return grew;
  }

  private push(data: Uint8Array): void {
    if (data.length === 0) return;
    this.ready.push(data.slice());
    this.readyBytes += data.length;
    this.contiguous += data.length;
  }

  private drain(): void {
    const p = this.pending;
    let i = 0;
    while (i < p.length && p[i].offset <= this.contiguous) {
      const s = p[i++];
      const end = s.offset + s.data.length;
      if (end > this.contiguous) {
        const part = s.data.subarray(this.contiguous - s.offset);
        this.ready.push(part);
        this.readyBytes += part.length;
        this.contiguous = end;
      }
    }
    if (i > 0) p.splice(0, i);
  }

  /** Copies up to `out.length` ready bytes into `out`; returns the count. */
  read(out: Uint8Array): number {
    let n = 0;
    while (n < out.length && this.readyHead < this.ready.length) {
      const chunk = this.ready[this.readyHead];
      const take = Math.min(chunk.length, out.length - n);
      out.set(take === chunk.length ? chunk : chunk.subarray(0, take), n);
      n += take;
      if (take === chunk.length) {
        this.ready[this.readyHead++] = EMPTY;
      } else {
        this.ready[this.readyHead] = chunk.subarray(take);
      }
    }
    if (this.readyHead > 64 && this.readyHead * 2 > this.ready.length) {
      this.ready.splice(0, this.readyHead);
      this.readyHead = 0;
    } else if (this.readyHead === this.ready.length) {
      this.ready.length = 0;
      this.readyHead = 0;
    }
    this.readyBytes -= n;
    this.readOffset += n;
    return n;
  }

  /** Drops everything buffered and returns how many unread bytes were dropped. */
  discard(): number {
    const dropped = this.highest - this.readOffset;
    this.ready.length = 0;
    this.readyHead = 0;
    this.readyBytes = 0;
    this.pending.length = 0;
    this.readOffset = this.contiguous = this.highest;
    return dropped;
  }
}

const EMPTY = new Uint8Array(0);

/**
 * Per-stream buffers: what was written and not yet acknowledged (send side),
 * and what arrived, possibly out of order, and was not yet read (receive side).
 * Ordering is per stream, so a loss on one stream never stalls another.
 * @module
 */

import { RangeSet } from "./ranges.ts";

/** Size of one send-buffer chunk. */
const CHUNK = 64 * 1024;

/**
 * Chunks given back by acknowledged or reset streams, for the next stream to
 * write (at most {@link CHUNK_POOL_MAX}, 4 MiB): a short stream otherwise
 * allocates and zeroes a whole chunk for a few hundred bytes. A pooled chunk is
 * never read beyond what its new owner wrote.
 */
const chunkPool: Uint8Array[] = [];
const CHUNK_POOL_MAX = 64;

function takeChunk(): Uint8Array {
  return chunkPool.pop() ?? new Uint8Array(CHUNK);
}

function giveChunks(chunks: Uint8Array[], from: number, to: number): void {
  for (let i = from; i < to && chunkPool.length < CHUNK_POOL_MAX; i++) chunkPool.push(chunks[i]);
}

/**
 * Bytes written by the application, kept from the lowest unacknowledged
 * offset up, in fixed 64 KiB chunks: writing appends, acknowledging drops
 * whole chunks from the front, and nothing is ever moved (a contiguous buffer
 * compacted on every write cost half the CPU of a bulk transfer).
 */
export class SendBuffer {
  private chunks: Uint8Array[] = [];
  /** Absolute offset of `chunks[0][0]`. */
  private base = 0;
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

  /** `limit` bounds buffered bytes; chunks are allocated as data arrives. */
  constructor(readonly limit: number) {}

  /** Bytes held (written and not yet acknowledged as a prefix). */
  get buffered(): number {
    return this.writeOffset - this.ackedPrefix;
  }

  /** Room left for the application. */
  get room(): number {
    return this.limit - this.buffered;
  }

  /** Bytes of memory the buffer holds now. */
  get capacity(): number {
    return this.chunks.length * CHUNK;
  }

  /** Appends up to `room` bytes of `data`; returns the count taken. */
  write(data: Uint8Array): number {
    const n = Math.min(data.length, this.room);
    if (n <= 0) return 0;
    let done = 0;
    while (done < n) {
      const at = this.writeOffset - this.base;
      let idx = Math.floor(at / CHUNK);
      if (idx >= this.chunks.length) {
        this.chunks.push(takeChunk());
        idx = this.chunks.length - 1;
      }
      const off = at - idx * CHUNK;
      const take = Math.min(n - done, CHUNK - off);
      this.chunks[idx].set(data.subarray(done, done + take), off);
      done += take;
      this.writeOffset += take;
    }
    return n;
  }

  /** Copies `len` buffered bytes at absolute `offset` into `out[pos..]`. */
  copyTo(offset: number, len: number, out: Uint8Array, pos: number): void {
    let at = offset - this.base;
    let left = len;
    while (left > 0) {
      const idx = Math.floor(at / CHUNK);
      const off = at - idx * CHUNK;
      const take = Math.min(left, CHUNK - off);
      const c = this.chunks[idx];
      out.set(take === CHUNK ? c : c.subarray(off, off + take), pos);
      pos += take;
      at += take;
      left -= take;
    }
  }

  /** A copy of `len` bytes at absolute `offset` (for tests and cold paths). */
  view(offset: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.copyTo(offset, len, out, 0);
    return out;
  }

  /** Marks `[start, end)` acknowledged; frees whole chunks once the prefix passes them. */
  onAcked(start: number, end: number): void {
    if (end <= this.ackedPrefix) return;
    this.lost.remove(start, end);
    this.acked.add(Math.max(start, this.ackedPrefix), end);
    if (this.acked.starts.length > 0 && this.acked.starts[0] <= this.ackedPrefix) {
      this.ackedPrefix = this.acked.ends[0];
      this.acked.starts.shift();
      this.acked.ends.shift();
      let free = Math.floor((this.ackedPrefix - this.base) / CHUNK);
      // Keep the tail chunk while it is still being filled.
      if (free > 0 && this.ackedPrefix === this.writeOffset && free === this.chunks.length) free--;
      if (free > 0) {
        giveChunks(this.chunks, 0, free);
        this.chunks.splice(0, free);
        this.base += free * CHUNK;
      }
      if (this.ackedPrefix === this.writeOffset && this.chunks.length > 0) {
        // Idle stream: give the memory back.
        giveChunks(this.chunks, 0, this.chunks.length);
        this.chunks.length = 0;
        this.base = this.writeOffset;
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
    giveChunks(this.chunks, 0, this.chunks.length);
    this.chunks.length = 0;
    this.ackedPrefix = this.writeOffset = this.nextSend;
    this.base = this.nextSend;
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

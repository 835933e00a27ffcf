/**
 * Byte-stream plumbing shared by inbounds and outbounds: a bidirectional
 * {@link relay} with half-close, {@link writeAll}, a {@link BufferedReader} for
 * parsing protocol headers without losing the bytes that follow them, and an
 * in-memory {@link duplexPair} for tests.
 * @module
 */

import type { Duplex } from "./duplex.ts";

/** Default per-direction copy buffer size used by {@link relay}. */
export const RELAY_BUFFER_SIZE = 64 * 1024;

/**
 * True for errors that mean "the peer went away" rather than a bug: connection
 * reset or aborted, broken pipe, unexpected EOF, an operation interrupted by a
 * local close, a resource already closed, a socket no longer connected.
 * Such errors are logged at most as debug events, never as failures.
 */
export function isExpectedDisconnect(e: unknown): boolean {
  return e instanceof Deno.errors.ConnectionReset ||
    e instanceof Deno.errors.ConnectionAborted ||
    e instanceof Deno.errors.BrokenPipe ||
    e instanceof Deno.errors.UnexpectedEof ||
    e instanceof Deno.errors.Interrupted ||
    e instanceof Deno.errors.BadResource ||
    e instanceof Deno.errors.NotConnected;
}

/**
 * Streams already closed through {@link closeQuietly}: a second close of a
 * `Deno.TcpConn` throws `BadResource`, and building that error (with its stack
 * trace) cost more than the rest of a short connection's teardown.
 */
const closedOnce = new WeakSet<Duplex>();

/** Closes `d` once; later calls for the same `d` do nothing, and any error a close throws is swallowed. */
export function closeQuietly(d: Duplex | undefined | null): void {
  if (!d || closedOnce.has(d)) return;
  closedOnce.add(d);
  try {
    d.close();
  } catch {
    // Already closed: nothing to release.
  }
}

/** Relay buffers kept for reuse (at most this many, 4 MiB). */
const POOL_MAX = 64;
const bufferPool: Uint8Array[] = [];

/**
 * A copy buffer of `size` bytes: for {@link RELAY_BUFFER_SIZE}, one from a
 * small pool when there is one (a short connection otherwise allocates and
 * zeroes two at each end). Its contents are whatever the last user left.
 * Give it back with {@link giveBuffer} once no read or write uses it.
 */
export function takeBuffer(size: number = RELAY_BUFFER_SIZE): Uint8Array {
  if (size === RELAY_BUFFER_SIZE) {
    const b = bufferPool.pop();
    if (b) return b;
  }
  return new Uint8Array(size);
}

/** Returns a buffer from {@link takeBuffer}; the caller must not touch it afterwards. */
export function giveBuffer(b: Uint8Array): void {
  if (b.length === RELAY_BUFFER_SIZE && bufferPool.length < POOL_MAX) bufferPool.push(b);
}

/**
 * Writes all of `p` to `d`, looping over short writes.
 * @throws {Deno.errors.WriteZero} if the stream accepts zero bytes of a non-empty write.
 */
export async function writeAll(d: Duplex, p: Uint8Array): Promise<void> {
  let off = 0;
  while (off < p.length) {
    const n = await d.write(off === 0 ? p : p.subarray(off));
    if (n <= 0) throw new Deno.errors.WriteZero("write returned 0");
    off += n;
  }
}

/** Options for {@link relay}. */
export interface RelayOptions {
  /** Copy buffer size per direction; default {@link RELAY_BUFFER_SIZE}. */
  bufferSize?: number;
  /** Aborting closes both streams, which ends the relay. */
  signal?: AbortSignal;
  /**
   * Called after each chunk is written on: `aToB` bytes moved from `a` to `b`,
   * or `bToA` from `b` to `a` (the other is 0). For live byte accounting without
   * wrapping a stream.
   */
  onBytes?: (aToB: number, bToA: number) => void;
}

/** Byte counts moved by {@link relay}. */
export interface RelayResult {
  /** Bytes read from `a` and written to `b`. */
  aToB: number;
  /** Bytes read from `b` and written to `a`. */
  bToA: number;
}

/**
 * Copies `a → b` and `b → a` concurrently until both directions end.
 *
 * When one side's read ends (EOF), the other side's sending direction is
 * half-closed (`closeWrite`) and the opposite direction keeps flowing. Both
 * streams are closed once both directions have finished, or as soon as either
 * direction fails. Expected disconnect errors (see {@link isExpectedDisconnect})
 * end the relay quietly; any other first error is rethrown after both streams
 * are closed. Each direction uses a single buffer, taken from (and given back to) a small pool.
 */
export async function relay(a: Duplex, b: Duplex, opts: RelayOptions = {}): Promise<RelayResult> {
  const size = opts.bufferSize ?? RELAY_BUFFER_SIZE;
  const result: RelayResult = { aToB: 0, bToA: 0 };
  let closed = false;
  let firstError: unknown = undefined;
  let failed = false;
  const closeBoth = () => {
    if (closed) return;
    closed = true;
    closeQuietly(a);
    closeQuietly(b);
  };
  const signal = opts.signal;
  const onBytes = opts.onBytes;
  if (signal?.aborted) closeBoth();
  signal?.addEventListener("abort", closeBoth, { once: true });

  const pump = async (src: Duplex, dst: Duplex, forward: boolean): Promise<void> => {
    const buf = takeBuffer(size);
    try {
      while (true) {
        const n = await src.read(buf);
        if (n === null) break;
        if (n === 0) continue;
        await writeAll(dst, buf.subarray(0, n));
        if (forward) {
          result.aToB += n;
          onBytes?.(n, 0);
        } else {
          result.bToA += n;
          onBytes?.(0, n);
        }
      }
      if (!closed) await dst.closeWrite();
    } catch (e) {
      if (!closed && !failed) {
        failed = true;
        firstError = e;
      }
      closeBoth();
    }
    // Every read and write on `buf` has settled: the pump awaited each one.
    giveBuffer(buf);
  };

  try {
    await Promise.all([pump(a, b, true), pump(b, a, false)]);
  } finally {
    signal?.removeEventListener("abort", closeBoth);
    closeBoth();
  }
  if (failed && !isExpectedDisconnect(firstError)) throw firstError;
  return result;
}

/** Thrown by {@link BufferedReader.readLine} when a line exceeds its allowed length. */
export class LineTooLongError extends Error {
  /** The limit that was exceeded, in bytes (terminator excluded). */
  readonly limit: number;
  constructor(limit: number) {
    super(`line longer than ${limit} bytes`);
    this.name = "LineTooLongError";
    this.limit = limit;
  }
}

/** Decodes bytes as ISO-8859-1 (byte `n` → code unit `n`): lossless for any bytes. */
export function decodeLatin1(p: Uint8Array): string {
  let s = "";
  for (let i = 0; i < p.length; i += 8192) {
    s += String.fromCharCode.apply(null, p.subarray(i, i + 8192) as unknown as number[]);
  }
  return s;
}

/** Encodes a string whose code units are all < 256 as bytes (the inverse of {@link decodeLatin1}); higher code units are truncated to their low byte. */
export function encodeLatin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

const EMPTY = new Uint8Array(0);

/**
 * A read buffer over a {@link Duplex} for protocol parsing.
 *
 * Header parsing reads ahead; the bytes past the header stay buffered and are
 * returned first by {@link BufferedReader.read}, so a `BufferedReader` can be
 * handed to {@link relay} in place of its source and nothing is lost. It is a
 * Duplex itself: writes, `closeWrite` and `close` go to the source.
 */
export class BufferedReader implements Duplex {
  #src: Duplex;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #eof = false;

  /** Wraps `src`; `initialSize` is the starting buffer capacity (it grows for long lines). */
  constructor(src: Duplex, initialSize = 4096) {
    this.#src = src;
    this.#buf = new Uint8Array(Math.max(16, initialSize));
  }

  /** The underlying stream. */
  get source(): Duplex {
    return this.#src;
  }

  /** How many bytes are buffered and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** The buffered, unconsumed bytes (a view, valid until the next read call). */
  peek(): Uint8Array {
    return this.#buf.subarray(this.#start, this.#end);
  }

  /** Removes and returns (a copy of) the buffered bytes. */
  take(): Uint8Array {
    if (this.#start === this.#end) return EMPTY;
    const out = this.#buf.slice(this.#start, this.#end);
    this.#start = this.#end = 0;
    return out;
  }

  /** Drops `n` buffered bytes (at most {@link BufferedReader.buffered}). */
  skip(n: number): void {
    this.#start += Math.min(n, this.#end - this.#start);
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }

  /**
   * Reads more bytes from the source into the buffer, growing it (up to
   * `maxCapacity`) only when it is full of unconsumed bytes.
   * Resolves to false at end of stream (or when the buffer may not grow).
   */
  async fill(maxCapacity = this.#buf.length): Promise<boolean> {
    if (this.#eof) return false;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buf.length) {
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      } else if (this.#buf.length < maxCapacity) {
        const grown = new Uint8Array(Math.min(maxCapacity, this.#buf.length * 2));
        grown.set(this.#buf.subarray(0, this.#end));
        this.#buf = grown;
      } else {
        return false;
      }
    }
    const n = await this.#src.read(this.#buf.subarray(this.#end));
    if (n === null) {
      this.#eof = true;
      return false;
    }
    this.#end += n;
    return true;
  }

  /** Resolves to the next byte without consuming it, or `null` at end of stream. */
  async peekByte(): Promise<number | null> {
    while (this.#start === this.#end) {
      if (!(await this.fill())) return null;
    }
    return this.#buf[this.#start];
  }

  /**
   * Reads one byte.
   * @throws {Deno.errors.UnexpectedEof} at end of stream.
   */
  async readByte(): Promise<number> {
    while (this.#start === this.#end) {
      if (!(await this.fill())) throw new Deno.errors.UnexpectedEof("unexpected end of stream");
    }
    return this.#buf[this.#start++];
  }

  /**
   * Reads exactly `n` bytes into a new array.
   * @throws {Deno.errors.UnexpectedEof} if the stream ends first.
   */
  async readExact(n: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let got = Math.min(n, this.#end - this.#start);
    out.set(this.#buf.subarray(this.#start, this.#start + got));
    this.#start += got;
    while (got < n) {
      const r = this.#eof ? null : await this.#src.read(out.subarray(got));
      if (r === null) {
        this.#eof = true;
        throw new Deno.errors.UnexpectedEof("unexpected end of stream");
      }
      got += r;
    }
    return out;
  }

  /**
   * Reads one line terminated by LF (a CR before the LF is removed too) and
   * decodes it as Latin-1, so any bytes survive a round trip through
   * {@link encodeLatin1}. Resolves to `null` at a clean end of stream.
   * @param maxLength longest allowed line in bytes, terminator excluded.
   * @throws {LineTooLongError} if the line is longer than `maxLength`.
   * @throws {Deno.errors.UnexpectedEof} if the stream ends inside a line.
   */
  async readLine(maxLength: number): Promise<string | null> {
    let scanned = 0;
    while (true) {
      const avail = this.#end - this.#start;
      const i = this.#buf.subarray(this.#start + scanned, this.#end).indexOf(10);
      if (i >= 0) {
        const lfAt = this.#start + scanned + i;
        let lineEnd = lfAt;
        if (lineEnd > this.#start && this.#buf[lineEnd - 1] === 13) lineEnd--;
        if (lineEnd - this.#start > maxLength) throw new LineTooLongError(maxLength);
        const line = decodeLatin1(this.#buf.subarray(this.#start, lineEnd));
        this.#start = lfAt + 1;
        return line;
      }
      scanned = avail;
      // Allow one extra byte for a CR that may precede the LF.
      if (avail > maxLength + 1) throw new LineTooLongError(maxLength);
      if (!(await this.fill(maxLength + 2))) {
        if (this.#end - this.#start === 0) return null;
        if (this.#eof) throw new Deno.errors.UnexpectedEof("unexpected end of stream in line");
        throw new LineTooLongError(maxLength);
      }
    }
  }

  /** Reads buffered bytes first, then straight from the source. */
  read(p: Uint8Array): Promise<number | null> {
    const avail = this.#end - this.#start;
    if (avail > 0) {
      const n = Math.min(avail, p.length);
      p.set(this.#buf.subarray(this.#start, this.#start + n));
      this.#start += n;
      if (this.#start === this.#end) this.#start = this.#end = 0;
      return Promise.resolve(n);
    }
    if (this.#eof) return Promise.resolve(null);
    return this.#src.read(p);
  }

  /** Writes to the source. */
  write(p: Uint8Array): Promise<number> {
    return this.#src.write(p);
  }

  /** Half-closes the source. */
  closeWrite(): Promise<void> {
    return this.#src.closeWrite();
  }

  /** Closes the source; never throws. */
  close(): void {
    closeQuietly(this.#src);
  }
}

/**
 * An in-memory, connected pair of {@link Duplex} streams (unbounded buffering):
 * what one end writes the other reads. `closeWrite` delivers EOF to the peer;
 * `close` rejects the closing end's pending read with `Interrupted`, makes its
 * later calls fail with `BadResource`, gives the peer EOF and makes the peer's
 * writes fail with `BrokenPipe`. For tests and in-process plumbing.
 */
export function duplexPair(): [Duplex, Duplex] {
  const a = new MemoryDuplex();
  const b = new MemoryDuplex();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

class MemoryDuplex implements Duplex {
  peer!: MemoryDuplex;
  #chunks: Uint8Array[] = [];
  #eof = false;
  #closed = false;
  #writeClosed = false;
  #waiter: { resolve: () => void; reject: (e: unknown) => void } | null = null;

  deliver(p: Uint8Array | null): void {
    if (this.#closed) return;
    if (p === null) this.#eof = true;
    else this.#chunks.push(p);
    const w = this.#waiter;
    this.#waiter = null;
    w?.resolve();
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (true) {
      if (this.#closed) throw new Deno.errors.BadResource("closed");
      if (this.#chunks.length > 0) {
        const c = this.#chunks[0];
        const n = Math.min(c.length, p.length);
        p.set(c.subarray(0, n));
        if (n === c.length) this.#chunks.shift();
        else this.#chunks[0] = c.subarray(n);
        return n;
      }
      if (this.#eof) return null;
      if (this.#waiter) throw new Deno.errors.Busy("concurrent read");
      await new Promise<void>((resolve, reject) => {
        this.#waiter = { resolve, reject };
      });
    }
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("closed"));
    if (this.#writeClosed || this.peer.isClosed) {
      return Promise.reject(new Deno.errors.BrokenPipe("peer closed"));
    }
    if (p.length > 0) this.peer.deliver(p.slice());
    return Promise.resolve(p.length);
  }

  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("closed"));
    if (!this.#writeClosed) {
      this.#writeClosed = true;
      this.peer.deliver(null);
    }
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#chunks = [];
    const w = this.#waiter;
    this.#waiter = null;
    w?.reject(new Deno.errors.Interrupted("operation canceled"));
    this.peer.deliver(null);
  }
}

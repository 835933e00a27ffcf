/**
 * One byte-stream connection carrying datagrams (UDP-over-TCP, TLS, TURN over
 * TCP): frames read with a {@link StreamReader} (length-prefixed by default),
 * a task's datagrams gathered into one write,
 * a cap on what may wait to be written (beyond it datagrams are dropped and
 * counted — the session above retransmits what matters), and a close that
 * is idempotent and never throws. Shared by the carriers' listeners and links.
 * @module
 */

import { FrameWriter, type StreamReader, type StreamWriter } from "./stream_framing.ts";

/** Bytes that may wait to be written on one connection before datagrams are dropped. */
export const STREAM_WRITE_CAP = 1 << 20;

/** Size of each read from the connection. */
const READ_CHUNK = 64 * 1024;

/** A connection carrying length-prefixed datagrams both ways. */
export class StreamPath {
  /** Datagrams dropped because the connection's writes backed up. */
  drops = 0;
  private writing = false;
  private flushQueued = false;
  private closed = false;
  private readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(
    readonly conn: Deno.Conn,
    readonly reader: StreamReader,
    private readonly cap = STREAM_WRITE_CAP,
    private readonly writer: StreamWriter = new FrameWriter(),
  ) {
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  /** True once closed (by either side). */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Resolves when the path is closed. */
  get closedPromise(): Promise<void> {
    return this.done;
  }

  /** Queues a datagram (copied); never throws. */
  send(data: Uint8Array): void {
    if (this.closed) return;
    if (data.length === 0 || data.length > this.reader.max) return;
    if (this.writer.size + data.length > this.cap) {
      this.drops++;
      return;
    }
    this.writer.add(data);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.kick);
    }
  }

  /** Starts writing what is queued now. */
  flush(): void {
    this.kick();
  }

  private readonly kick = (): void => {
    this.flushQueued = false;
    if (this.writing || this.closed || this.writer.size === 0) return;
    this.writing = true;
    void this.writeOut();
  };

  private async writeOut(): Promise<void> {
    try {
      while (!this.closed && this.writer.size > 0) {
        const buf = this.writer.take();
        let off = 0;
        while (off < buf.length) {
          const n = await this.conn.write(off === 0 ? buf : buf.subarray(off));
          if (n <= 0) throw new Deno.errors.WriteZero("write returned 0");
          off += n;
        }
      }
    } catch {
      this.close();
    } finally {
      this.writing = false;
    }
  }

  /**
   * Reads until the connection ends, calling `onFrame` per datagram (valid
   * only during the call); `first` chunks already read (a TLS admission
   * check) are fed first. Ends (and closes the path) on EOF, an error or a
   * broken frame.
   */
  async readLoop(onFrame: (frame: Uint8Array) => void): Promise<void> {
    const buf = new Uint8Array(READ_CHUNK);
    try {
      while (!this.closed) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        if (!this.reader.push(buf.subarray(0, n), onFrame)) break;
      }
    } catch {
      // reset, closed under us: the path ends
    } finally {
      this.close();
    }
  }

  /** Closes the connection; idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
    this.resolveDone();
  }
}

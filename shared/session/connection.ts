/**
 * Drives a sans-I/O {@link Session} with real time and an injected datagram
 * sender, and exposes its streams as {@link Duplex} byte streams. Both daemons
 * use it: the server with a shared UDP socket, the client with its own.
 * @module
 */

import type { Duplex } from "../duplex.ts";
import { ReadResult, Receive, ResetCode, type Session, type SessionEvent } from "./session.ts";

/** Sends one datagram to the peer's current address; must not keep `data` after returning. */
export type DatagramSender = (data: Uint8Array) => void;

/** Monotonic milliseconds for the session clock. */
export const monotonicNow = (): number => performance.now();

/**
 * Raised by stream operations after a reset or a closed session. It extends
 * `ConnectionReset` so relays treat it as the expected disconnect it is.
 */
export class StreamClosedError extends Deno.errors.ConnectionReset {
  constructor(message: string) {
    super(message);
    this.name = "StreamClosedError";
  }
}

type Waiter = () => void;

/** A session plus its timer and stream objects. */
export class Connection {
  /** The state machine. */
  readonly session: Session;
  /** Called for each stream the peer opens. */
  onStream: (s: OstpStream) => void = (s) => s.close();
  /** Called for each unreliable datagram. */
  onDatagram: (d: Uint8Array) => void = () => {};
  /**
   * Called when the peer stopped answering (the session's `unresponsive`
   * event), with the {@link monotonicNow} time of the first unanswered packet.
   */
  onUnresponsive: (since: number) => void = () => {};
  /** Called when the peer answers again after {@link onUnresponsive}. */
  onResponsive: () => void = () => {};
  /** Resolves once the session closed, with its code and reason. */
  readonly closed: Promise<{ code: number; reason: string; remote: boolean }>;

  private readonly send: DatagramSender;
  private readonly out: Uint8Array;
  private readonly streams = new Map<number, OstpStream>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Infinity;
  private flushQueued = false;
  private resolveClosed!: (v: { code: number; reason: string; remote: boolean }) => void;
  private closedInfo: { code: number; reason: string } | null = null;

  /** Wraps `session`; datagrams go out through `send`. */
  constructor(session: Session, send: DatagramSender) {
    this.session = session;
    this.send = send;
    this.out = new Uint8Array(session.config.maxDatagramSize + 64);
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }

  /** True until the session closed. */
  get isOpen(): boolean {
    return this.closedInfo === null;
  }

  /** Number of streams with live objects. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Feeds a datagram from the network; returns the session's {@link Receive} verdict. */
  receive(data: Uint8Array): number {
    const r = this.session.receive(data, monotonicNow());
    if (r !== Receive.DROPPED) this.flush();
    return r;
  }

  /** Opens a stream to the peer; throws if the session cannot open one now. */
  openStream(): OstpStream {
    const id = this.session.openStream();
    if (id < 0) {
      throw new StreamClosedError(this.closedInfo ? "session closed" : "stream limit reached");
    }
    const s = new OstpStream(this, id);
    this.streams.set(id, s);
    return s;
  }

  /**
   * Sends an unreliable datagram; false if it was refused (too big or closed).
   * `data` is queued as given, not copied, and read when the next packet is
   * built: the caller must not reuse the buffer.
   */
  sendDatagram(data: Uint8Array): boolean {
    const ok = this.session.sendDatagram(data);
    if (ok) this.kick();
    return ok;
  }

  /** Closes the session now with a reason the peer sees. */
  close(code = 0, reason = ""): void {
    this.session.close(code, reason);
    this.flush();
  }

  /** Schedules a flush at the end of the current task (coalesces many writes). */
  kick(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(this.flushTask);
  }

  private readonly flushTask = (): void => {
    this.flushQueued = false;
    this.flush();
  };

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    this.session.handleTimeout(monotonicNow());
    this.flush();
  };

  /** Sends everything the session allows now, dispatches events, re-arms the timer. */
  flush(): void {
    const s = this.session;
    const now = monotonicNow();
    for (;;) {
      const n = s.pollTransmit(now, this.out);
      if (n === 0) break;
      this.send(this.out.subarray(0, n));
    }
    this.dispatchEvents();
    if (this.closedInfo) {
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
      return;
    }
    const next = s.nextTimeout();
    if (next === Infinity) return;
    if (this.timer === undefined || next < this.timerAt - 0.25) {
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timerAt = next;
      this.timer = setTimeout(this.onTimer, Math.max(0, next - now));
    }
  }

  private dispatchEvents(): void {
    let ev: SessionEvent | undefined;
    while ((ev = this.session.pollEvent())) {
      switch (ev.type) {
        case "stream": {
          const st = new OstpStream(this, ev.id);
          this.streams.set(ev.id, st);
          try {
            this.onStream(st);
          } catch {
            st.close();
          }
          break;
        }
        case "readable":
          this.streams.get(ev.id)?.wakeReader();
          break;
        case "writable":
          this.streams.get(ev.id)?.wakeWriter();
          break;
        case "datagram":
          try {
            this.onDatagram(ev.data);
          } catch {
            // A faulty handler must not stop the session.
          }
          break;
        case "unresponsive":
          this.onUnresponsive(ev.since);
          break;
        case "responsive":
          this.onResponsive();
          break;
        case "closed":
          this.closedInfo = { code: ev.code, reason: ev.reason };
          for (const st of this.streams.values()) {
            st.wakeReader();
            st.wakeWriter();
          }
          this.resolveClosed({ code: ev.code, reason: ev.reason, remote: ev.remote });
          break;
      }
    }
  }

  /** @internal */
  forget(id: number): void {
    this.streams.delete(id);
  }

  /** @internal drops a closed stream object unless it still drains incoming bytes. */
  forgetLater(st: OstpStream): void {
    if (!st.isDraining) this.streams.delete(st.id);
  }

  /** @internal why stream operations fail once the session closed. */
  closedReason(): string | null {
    if (!this.closedInfo) return null;
    return this.closedInfo.reason || `session closed (code ${this.closedInfo.code})`;
  }
}

/** One OSTP stream as a {@link Duplex}. */
export class OstpStream implements Duplex {
  private readerWaiter: Waiter | null = null;
  private writerWaiter: Waiter | null = null;
  private writeFinished = false;
  private readEnded = false;
  private closed = false;
  private draining = false;

  /** @internal created by {@link Connection}. */
  constructor(private readonly conn: Connection, readonly id: number) {}

  /** @internal true while discarding incoming bytes after close. */
  get isDraining(): boolean {
    return this.draining;
  }

  /** @internal */
  wakeReader(): void {
    const w = this.readerWaiter;
    this.readerWaiter = null;
    if (w) w();
    else if (this.draining) this.drain();
  }

  /** @internal */
  wakeWriter(): void {
    const w = this.writerWaiter;
    this.writerWaiter = null;
    if (w) w();
  }

  /** Reads into `p`; null at the peer's FIN; throws after a reset. */
  async read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return 0;
    const s = this.conn.session;
    for (;;) {
      if (this.closed) throw new StreamClosedError("stream closed");
      const n = s.streamRead(this.id, p);
      if (n > 0) {
        this.conn.kick();
        return n;
      }
      if (n === ReadResult.END) {
        this.readEnded = true;
        this.maybeForget();
        return null;
      }
      if (n === ReadResult.RESET) {
        this.readEnded = true;
        this.maybeForget();
        throw new StreamClosedError(this.conn.closedReason() ?? "stream reset by peer");
      }
      const reason = this.conn.closedReason();
      if (reason) throw new StreamClosedError(reason);
      await new Promise<void>((r) => (this.readerWaiter = r));
    }
  }

  /** Writes from `p`; resolves with the count taken (waits for room when full). */
  async write(p: Uint8Array): Promise<number> {
    if (p.length === 0) return 0;
    const s = this.conn.session;
    for (;;) {
      if (this.closed || this.writeFinished) {
        throw new StreamClosedError("stream closed for writing");
      }
      const n = s.streamWrite(this.id, p);
      if (n > 0) {
        this.conn.kick();
        return n;
      }
      if (n < 0) {
        throw new StreamClosedError(this.conn.closedReason() ?? "stream reset by peer");
      }
      await new Promise<void>((r) => (this.writerWaiter = r));
    }
  }

  /** Sends FIN after what was written. */
  closeWrite(): Promise<void> {
    if (!this.writeFinished && !this.closed) {
      this.writeFinished = true;
      this.conn.session.streamFinish(this.id);
      this.conn.kick();
    }
    return Promise.resolve();
  }

  /**
   * Releases the stream. If the write side finished cleanly, what was written
   * is still delivered and further incoming bytes are discarded; otherwise the
   * stream is reset.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.wakeReader();
    this.wakeWriter();
    if (this.writeFinished && !this.readEnded) {
      this.draining = true;
      this.drain();
    } else if (!this.writeFinished) {
      this.conn.session.streamReset(this.id, ResetCode.CANCELLED);
    }
    this.conn.forgetLater(this);
    this.conn.kick();
  }

  /** Aborts the stream in both directions with a reset code. */
  reset(code: number = ResetCode.CANCELLED): void {
    this.closed = true;
    this.conn.session.streamReset(this.id, code);
    this.wakeReader();
    this.wakeWriter();
    this.conn.forget(this.id);
    this.conn.kick();
  }

  private drain(): void {
    const buf = DRAIN;
    for (;;) {
      const n = this.conn.session.streamRead(this.id, buf);
      if (n > 0) continue;
      if (n === ReadResult.WOULD_BLOCK) return;
      this.draining = false;
      this.conn.forget(this.id);
      return;
    }
  }

  private maybeForget(): void {
    if (this.closed) this.conn.forget(this.id);
  }
}

const DRAIN = new Uint8Array(16384);

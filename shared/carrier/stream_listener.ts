/**
 * The server side shared by the stream carriers (UDP-over-TCP, TLS): an
 * accept loop, one {@link StreamPath} and one {@link Endpoint} per
 * connection, a slowloris rule (no whole frame within `firstFrameMs` → the
 * connection is closed), and an optional admission step before a connection
 * becomes an endpoint (TLS: its handshake, its first frame asked about, a
 * stranger handed to the web fallback).
 * @module
 */

import type { CarrierListener, Endpoint, OnEndpointDatagram } from "./carrier.ts";
import { FrameReader } from "./stream_framing.ts";
import { StreamPath } from "./stream_path.ts";

/** One accepted connection as an endpoint. */
export class StreamEndpoint implements Endpoint {
  readonly key: string;
  constructor(readonly carrier: string, readonly address: Deno.NetAddr, serial: number) {
    this.key = `${carrier}|${address.hostname}|${address.port}|${serial}`;
  }
}

/**
 * What an admission step decides about a new connection: serve it (with the
 * bytes it already read, replayed into the frame reader), or it was taken
 * care of (handed to a fallback, or closed).
 */
export type Admission = { conn: Deno.Conn; replay: Uint8Array[] } | null;

/** Settings of a {@link StreamListener}. */
export interface StreamListenerOptions {
  /** The carrier's name. */
  kind: string;
  /** Its overhead (see `CarrierInfo.overhead`). */
  overhead: number;
  /** Largest datagram (frame) it carries. */
  maxDatagram: number;
  /** A connection without a whole frame this long after accept is closed, ms. */
  firstFrameMs: number;
  /** Most connections at once; more are closed at accept. */
  maxConnections: number;
  /** Runs before a connection is served (default: served as is). */
  admit?: (conn: Deno.Conn) => Promise<Admission>;
}

/** A listener whose endpoints are connections carrying framed datagrams. */
export class StreamListener implements CarrierListener {
  readonly kind: string;
  readonly overhead: number;
  readonly reliable = true;
  readonly maxDatagram: number;
  /** Connections closed for not sending a whole frame in time. */
  slow = 0;
  /** Connections refused because the table was full. */
  refused = 0;
  private readonly paths = new Map<string, StreamPath>();
  private serial = 0;
  private closed = false;
  private readonly pending = new Set<Deno.Conn>();

  constructor(
    private readonly listener: Deno.Listener,
    private readonly opts: StreamListenerOptions,
  ) {
    this.kind = opts.kind;
    this.overhead = opts.overhead;
    this.maxDatagram = opts.maxDatagram;
  }

  get local(): Deno.NetAddr {
    return this.listener.addr as Deno.NetAddr;
  }

  /** Connections served now. */
  get connections(): number {
    return this.paths.size;
  }

  async run(onDatagram: OnEndpointDatagram): Promise<void> {
    const served: Promise<void>[] = [];
    try {
      for await (const conn of this.listener) {
        if (this.closed) {
          closeConn(conn);
          break;
        }
        if (this.paths.size + this.pending.size >= this.opts.maxConnections) {
          this.refused++;
          closeConn(conn);
          continue;
        }
        const p = this.serve(conn, onDatagram);
        served.push(p);
        p.finally(() => served.splice(served.indexOf(p), 1));
      }
    } catch {
      // the listener was closed
    }
    await Promise.allSettled(served);
  }

  private async serve(raw: Deno.Conn, onDatagram: OnEndpointDatagram): Promise<void> {
    this.pending.add(raw);
    let admitted: Admission;
    try {
      admitted = this.opts.admit ? await this.opts.admit(raw) : { conn: raw, replay: [] };
    } catch {
      admitted = null;
      closeConn(raw);
    } finally {
      this.pending.delete(raw);
    }
    if (!admitted || this.closed) {
      if (admitted) closeConn(admitted.conn);
      return;
    }
    const { conn, replay } = admitted;
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
    const ep = new StreamEndpoint(this.kind, conn.remoteAddr as Deno.NetAddr, this.serial++);
    const reader = new FrameReader(this.maxDatagram);
    const path = new StreamPath(conn, reader);
    this.paths.set(ep.key, path);
    const deliver = (frame: Uint8Array) => onDatagram(frame, ep);
    const timer = setTimeout(() => {
      if (reader.frames === 0) {
        this.slow++;
        path.close();
      }
    }, this.opts.firstFrameMs);
    try {
      for (const chunk of replay) {
        if (!reader.push(chunk, deliver)) {
          path.close();
          break;
        }
      }
      await path.readLoop(deliver);
    } finally {
      clearTimeout(timer);
      this.paths.delete(ep.key);
    }
  }

  send(data: Uint8Array, to: Endpoint): void {
    if (to.carrier !== this.kind) return;
    this.paths.get(to.key)?.send(data);
  }

  /** Paths write at the end of the task on their own. */
  flush(): void {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.listener.close();
    } catch {
      // already closed
    }
    for (const c of this.pending) closeConn(c);
    for (const p of this.paths.values()) p.close();
  }
}

/** Closes a connection, ignoring errors. */
export function closeConn(c: Deno.Conn): void {
  try {
    c.close();
  } catch {
    // already closed
  }
}

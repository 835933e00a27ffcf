/**
 * UDP-over-TCP: the session's datagrams length-prefixed (2 bytes, big
 * endian) on one TCP connection per link, for networks that pass TCP only.
 * A reliable carrier under a reliable session costs latency under loss (the
 * kernel retransmits and holds later datagrams back while the session's own
 * recovery sees them late, not lost — docs/carriers.md); prefer fake-TCP
 * where raw sockets are allowed.
 * @module
 */

import type { CarrierDialer, CarrierLink } from "./carrier.ts";
import { FrameReader } from "./stream_framing.ts";
import { formatNetAddr } from "../net/ip.ts";
import { StreamPath } from "./stream_path.ts";
import { closeConn, StreamListener } from "./stream_listener.ts";

/** Largest datagram a stream carrier frames (far above any session datagram). */
export const STREAM_MAX_DATAGRAM = 16384;

/**
 * Bytes per datagram beyond plain UDP: the 2-byte length plus a TCP header
 * with timestamps (32) instead of UDP's 8. Segments carry many datagrams, so
 * this is the worst case of one datagram per segment.
 */
export const UOT_OVERHEAD = 2 + 32 - 8;

/** A connection without a whole frame this long after accept is closed (slowloris), ms. */
export const FIRST_FRAME_MS = 10_000;

/** Options of {@link UotListener.open}. */
export interface UotListenerOptions {
  /** See {@link FIRST_FRAME_MS}. */
  firstFrameMs?: number;
  /** Most connections at once (default 65536). */
  maxConnections?: number;
}

/** The server's UDP-over-TCP listener. */
export class UotListener extends StreamListener {
  /** Listens on `hostname:port` (TCP). */
  static open(hostname: string, port: number, opts: UotListenerOptions = {}): UotListener {
    return new UotListener(Deno.listen({ hostname, port, transport: "tcp" }), {
      kind: "uot",
      overhead: UOT_OVERHEAD,
      maxDatagram: STREAM_MAX_DATAGRAM,
      firstFrameMs: opts.firstFrameMs ?? FIRST_FRAME_MS,
      maxConnections: opts.maxConnections ?? 65536,
    });
  }
}

/** The client's side of a stream carrier: one connection to the server. */
export class StreamLink implements CarrierLink {
  readonly reliable = true;
  readonly maxDatagram = STREAM_MAX_DATAGRAM;
  private readonly path: StreamPath;

  constructor(readonly kind: string, readonly overhead: number, conn: Deno.Conn) {
    this.path = new StreamPath(conn, new FrameReader(STREAM_MAX_DATAGRAM));
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  }

  get local(): string {
    const a = this.path.conn.localAddr as Deno.NetAddr;
    return `${this.kind} ${formatNetAddr(a)}`;
  }

  get localPort(): number {
    return (this.path.conn.localAddr as Deno.NetAddr).port;
  }

  /** Datagrams dropped because writes backed up. */
  get drops(): number {
    return this.path.drops;
  }

  run(onDatagram: (data: Uint8Array) => void): Promise<void> {
    return this.path.readLoop(onDatagram);
  }

  send(data: Uint8Array): void {
    this.path.send(data);
  }

  flush(): void {
    this.path.flush();
  }

  close(): void {
    this.path.close();
  }
}

/**
 * Connects to `server` over TCP within `ms` (and `signal`); rejects with
 * "timed out" or the OS's reason. A connection that completes after giving
 * up is closed.
 */
export async function connectTcp(
  server: Deno.NetAddr,
  ms: number,
  signal?: AbortSignal,
): Promise<Deno.TcpConn> {
  const p = Deno.connect({ hostname: server.hostname, port: server.port, transport: "tcp" });
  let t: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`connect timed out after ${ms} ms`)), ms);
    onAbort = () => reject(new Error("aborted"));
    signal?.addEventListener("abort", onAbort);
  });
  try {
    return await Promise.race([p, stop]);
  } catch (e) {
    p.then(closeConn, () => {});
    throw e;
  } finally {
    clearTimeout(t);
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
}

/** Opens UDP-over-TCP links. */
export class UotDialer implements CarrierDialer {
  readonly kind = "uot";
  constructor(private readonly opts: { connectTimeoutMs?: number } = {}) {}

  async dial(server: Deno.NetAddr, signal?: AbortSignal): Promise<CarrierLink> {
    const conn = await connectTcp(server, this.opts.connectTimeoutMs ?? 10_000, signal);
    return new StreamLink("uot", UOT_OVERHEAD, conn);
  }
}

/**
 * TLS as a carrier: the stream carriers' framing inside a real TLS 1.3
 * connection with a real certificate (port 443 by default), for networks
 * that let only HTTPS through. A connection whose first frame is not a
 * client's — its first bytes are no frame, the server does not recognize it
 * (`AdmitFirst`), or nothing whole arrives within `firstBytesMs` — is handed
 * byte for byte to a real web server (`fallback`), every decrypted byte
 * already read replayed first: an active prober sees that web server and
 * nothing else. The listener offers ALPN "http/1.1" like an ordinary HTTPS
 * server.
 * @module
 */

import type { AdmitFirst, CarrierDialer, CarrierLink } from "./carrier.ts";
import { FrameReader } from "./stream_framing.ts";
import { type Admission, closeConn, StreamListener } from "./stream_listener.ts";
import {
  connectTcp,
  FIRST_FRAME_MS,
  STREAM_MAX_DATAGRAM,
  StreamLink,
  UOT_OVERHEAD,
} from "./uot.ts";

/**
 * Bytes per datagram beyond plain UDP: the UDP-over-TCP figure plus a TLS
 * 1.3 record's header and tag (5 + 16 + 1), the worst case of one datagram
 * per record.
 */
export const TLS_OVERHEAD = UOT_OVERHEAD + 22;

/** How long a connection has to send its first whole frame before it goes to the fallback, ms. */
export const FIRST_BYTES_MS = 3000;

/** How long a TLS handshake may take, ms. */
const HANDSHAKE_MS = 10_000;

/** Options of {@link TlsListener.open}. */
export interface TlsListenerOptions {
  hostname: string;
  port: number;
  /** Certificate chain, PEM. */
  cert: string;
  /** Private key, PEM. */
  key: string;
  /** Asked about each connection's first frame. */
  admit: AdmitFirst;
  /** The web server strangers are handed to; null: they are closed. */
  fallback: { hostname: string; port: number } | null;
  /** See {@link FIRST_BYTES_MS}. */
  firstBytesMs?: number;
  /** Most connections at once (default 65536). */
  maxConnections?: number;
}

/** Counters of a {@link TlsListener}. */
export interface TlsListenerCounters {
  /** Connections handed to the fallback web server. */
  fallbacks: number;
  /** TLS handshakes that failed or timed out. */
  handshakeFailures: number;
}

/** The server's TLS listener. */
export class TlsListener extends StreamListener {
  /** Counters (fallbacks, failed handshakes). */
  readonly counters: TlsListenerCounters = { fallbacks: 0, handshakeFailures: 0 };

  /** Listens on `hostname:port`. */
  static open(opts: TlsListenerOptions): TlsListener {
    const listener = Deno.listenTls({
      hostname: opts.hostname,
      port: opts.port,
      cert: opts.cert,
      key: opts.key,
      alpnProtocols: ["http/1.1"],
    });
    // Bound before the first connection can arrive.
    let l: TlsListener | null = null;
    l = new TlsListener(listener, {
      kind: "tls",
      overhead: TLS_OVERHEAD,
      maxDatagram: STREAM_MAX_DATAGRAM,
      firstFrameMs: FIRST_FRAME_MS,
      maxConnections: opts.maxConnections ?? 65536,
      admit: (conn) => admitTls(conn as Deno.TlsConn, opts, l!.counters),
    });
    return l;
  }
}

const TIMEOUT = Symbol("timeout");

/** Waits for `p` at most `ms`; {@link TIMEOUT} when the time ran out first. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let t: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<typeof TIMEOUT>((r) => (t = setTimeout(() => r(TIMEOUT), ms))),
    ]);
  } finally {
    clearTimeout(t);
  }
}

/** The TLS handshake, then the first frame asked about; strangers go to the fallback. */
async function admitTls(
  conn: Deno.TlsConn,
  opts: TlsListenerOptions,
  counters: TlsListenerCounters,
): Promise<Admission> {
  try {
    if ((await within(conn.handshake(), HANDSHAKE_MS)) === TIMEOUT) throw new Error("slow");
  } catch {
    counters.handshakeFailures++;
    closeConn(conn);
    return null;
  }
  const consumed: Uint8Array[] = [];
  const probe = new FrameReader(STREAM_MAX_DATAGRAM);
  const deadline = performance.now() + (opts.firstBytesMs ?? FIRST_BYTES_MS);
  const buf = new Uint8Array(16 * 1024);
  let verdict = null as boolean | null;
  let pendingRead: Promise<number | null> | null = null;
  while (verdict === null) {
    const left = deadline - performance.now();
    if (left <= 0) break;
    pendingRead ??= conn.read(buf).catch(() => null);
    const n = await within(pendingRead, left);
    if (n === TIMEOUT) break; // time is up; the read stays pending for the fallback
    pendingRead = null;
    if (n === null) {
      // EOF or an error before a whole frame: the bytes so far still go to the web server.
      break;
    }
    const chunk = buf.slice(0, n);
    consumed.push(chunk);
    const ok = probe.push(chunk, (frame) => {
      verdict ??= opts.admit(frame);
    });
    if (!ok) verdict ??= false;
  }
  if (verdict === true) return { conn, replay: consumed };
  counters.fallbacks++;
  void handOver(conn, consumed, pendingRead, buf, opts.fallback);
  return null;
}

/**
 * Pipes `conn` to the fallback web server: the bytes already read first
 * (and a read still pending), then both directions until either side ends;
 * both connections are closed in every case.
 */
async function handOver(
  conn: Deno.TlsConn,
  consumed: Uint8Array[],
  pendingRead: Promise<number | null> | null,
  buf: Uint8Array,
  fallback: { hostname: string; port: number } | null,
): Promise<void> {
  if (!fallback) {
    closeConn(conn);
    return;
  }
  let origin: Deno.TcpConn | null = null;
  try {
    origin = await connectTcp({ transport: "tcp", ...fallback }, 5000);
    for (const c of consumed) await writeAll(origin, c);
    if (pendingRead) {
      const n = await pendingRead;
      if (n === null) {
        await origin.closeWrite().catch(() => {});
      } else await writeAll(origin, buf.subarray(0, n));
    }
    const o = origin;
    await Promise.allSettled([
      pipe(conn, o).then(() => o.closeWrite()).catch(() => closeConn(o)),
      pipe(o, conn).then(() => conn.closeWrite()).catch(() => closeConn(conn)),
    ]);
  } catch {
    // the origin refused or a side reset: both close below
  } finally {
    closeConn(conn);
    if (origin) closeConn(origin);
  }
}

async function writeAll(c: Deno.Conn, b: Uint8Array): Promise<void> {
  let off = 0;
  while (off < b.length) {
    const n = await c.write(off === 0 ? b : b.subarray(off));
    if (n <= 0) throw new Deno.errors.WriteZero("write returned 0");
    off += n;
  }
}

async function pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const b = new Uint8Array(16 * 1024);
  for (;;) {
    const n = await from.read(b);
    if (n === null) return;
    await writeAll(to, b.subarray(0, n));
  }
}

/** Options of {@link TlsDialer}. */
export interface TlsDialerOptions {
  /** The name the server's certificate must carry (SNI); default: the address dialed. */
  serverName?: string;
  /** CA certificates (PEM) trusted besides the system's. */
  caCerts?: string[];
  /** Connect and handshake timeout, ms (default 10 000). */
  connectTimeoutMs?: number;
}

/**
 * TCP to `server` (a resolved address), then TLS with the name its
 * certificate must carry, the handshake bounded by `connectTimeoutMs`
 * (default 10 s). Rejects with "TLS: <reason>"; nothing is left open then.
 * Shared by the TLS carrier and TURN over TLS.
 */
export async function connectTls(
  server: Deno.NetAddr,
  opts: {
    serverName: string;
    caCerts?: string[];
    alpnProtocols?: string[];
    connectTimeoutMs?: number;
  },
  signal?: AbortSignal,
): Promise<Deno.TlsConn> {
  const ms = opts.connectTimeoutMs ?? 10_000;
  const tcp = await connectTcp(server, ms, signal);
  let tls: Deno.TlsConn | null = null;
  try {
    tls = await Deno.startTls(tcp, {
      hostname: opts.serverName,
      ...(opts.caCerts ? { caCerts: opts.caCerts } : {}),
      ...(opts.alpnProtocols ? { alpnProtocols: opts.alpnProtocols } : {}),
    });
    const done = await within(tls.handshake(), ms);
    if (done === TIMEOUT) throw new Error(`TLS handshake timed out after ${ms} ms`);
    return tls;
  } catch (e) {
    if (tls) closeConn(tls);
    else closeConn(tcp);
    throw new Error(`TLS: ${(e as Error).message}`);
  }
}

/** Opens TLS links: TCP to the resolved address, then TLS with the server's name. */
export class TlsDialer implements CarrierDialer {
  readonly kind = "tls";
  constructor(private readonly opts: TlsDialerOptions = {}) {}

  async dial(server: Deno.NetAddr, signal?: AbortSignal): Promise<CarrierLink> {
    const tls = await connectTls(server, {
      serverName: this.opts.serverName ?? server.hostname,
      ...(this.opts.caCerts ? { caCerts: this.opts.caCerts } : {}),
      alpnProtocols: ["http/1.1"],
      ...(this.opts.connectTimeoutMs !== undefined
        ? { connectTimeoutMs: this.opts.connectTimeoutMs }
        : {}),
    }, signal);
    return new StreamLink("tls", TLS_OVERHEAD, tls);
  }
}

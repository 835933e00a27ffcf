/**
 * A SOCKS5 load generator for new-connection rates: `workers` concurrent
 * loops, each one connection per request — connect to the SOCKS5 port,
 * greet (no authentication), CONNECT to an IPv4 target, send one HTTP/1.0
 * GET, read the response to the end, close — for a fixed duration. Without
 * `socks` it connects to the target itself (the direct baseline of the same
 * client code). Used by `connrate.ts` for ostp and ss-local alike.
 *
 *   deno run -A tests/bench/socks_load.ts <socks-port|0> <target-host> <target-port> [workers] [seconds]
 * @module
 */

/** What {@link socksLoad} runs. */
export interface SocksLoadOptions {
  /** SOCKS5 server on 127.0.0.1; `undefined` connects to the target directly. */
  socksPort?: number;
  /** Dotted IPv4 address of the origin. */
  targetHost: string;
  targetPort: number;
  /** Request path; default "/". */
  path?: string;
  /** Concurrent connections; default 50. */
  workers?: number;
  /** Measuring time, ms; default 5000. */
  durationMs?: number;
  /** Unmeasured time before it, ms; default 500. */
  warmupMs?: number;
}

/** What one run measured. */
export interface SocksLoadResult {
  /** Requests completed (status 200, whole body) during the measuring time. */
  completed: number;
  /** Requests that failed during it (any error, wrong status, short body). */
  failed: number;
  seconds: number;
  /** Completed connections per second. */
  perSecond: number;
  /** Median and 99th percentile of a whole request (connect to close), ms. */
  p50Ms: number;
  p99Ms: number;
  /** First failure seen, for the report. */
  firstError?: string;
}

const GREETING = Uint8Array.of(5, 1, 0);

function connectRequest(host: string, port: number): Uint8Array {
  const parts = host.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) {
    throw new Error(`target must be dotted IPv4: ${host}`);
  }
  return Uint8Array.of(5, 1, 0, 1, ...parts, port >> 8, port & 0xff);
}

/** Reads exactly `n` bytes into `buf[0..n)`. */
async function readN(conn: Deno.TcpConn, buf: Uint8Array, n: number): Promise<void> {
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(got, n));
    if (r === null) throw new Error("closed during SOCKS5 negotiation");
    got += r;
  }
}

/** Skips a SOCKS5 reply's bound address (ATYP and what follows it) once `head` (4 bytes) is read. */
async function skipBound(conn: Deno.TcpConn, head: Uint8Array, buf: Uint8Array): Promise<void> {
  if (head[1] !== 0) throw new Error(`SOCKS5 reply ${head[1]}`);
  const atyp = head[3];
  if (atyp === 1) return await readN(conn, buf, 6);
  if (atyp === 4) return await readN(conn, buf, 18);
  if (atyp === 3) {
    await readN(conn, buf, 1);
    return await readN(conn, buf, buf[0] + 2);
  }
  throw new Error(`SOCKS5 reply address type ${atyp}`);
}

/** Runs the load; resolves when every worker stopped. */
export async function socksLoad(opts: SocksLoadOptions): Promise<SocksLoadResult> {
  const workers = opts.workers ?? 50;
  const durationMs = opts.durationMs ?? 5000;
  const warmupMs = opts.warmupMs ?? 500;
  const request = new TextEncoder().encode(
    `GET ${opts.path ?? "/"} HTTP/1.0\r\nHost: ${opts.targetHost}:${opts.targetPort}\r\n` +
      "User-Agent: ostp-socks-load\r\nAccept: */*\r\n\r\n",
  );
  const connect = connectRequest(opts.targetHost, opts.targetPort);
  const viaSocks = opts.socksPort !== undefined;
  const dialPort = viaSocks ? opts.socksPort! : opts.targetPort;
  const dialHost = viaSocks ? "127.0.0.1" : opts.targetHost;

  const t0 = performance.now();
  const measureFrom = t0 + warmupMs;
  const stopAt = measureFrom + durationMs;
  let completed = 0;
  let failed = 0;
  let firstError: string | undefined;
  const latencies: number[] = [];

  const one = async (buf: Uint8Array): Promise<void> => {
    const conn = await Deno.connect({ hostname: dialHost, port: dialPort });
    try {
      if (viaSocks) {
        await conn.write(GREETING);
        await readN(conn, buf, 2);
        if (buf[0] !== 5 || buf[1] !== 0) throw new Error("SOCKS5 method refused");
        await conn.write(connect);
        await readN(conn, buf, 4);
        await skipBound(conn, buf.subarray(0, 4).slice(), buf);
      }
      await conn.write(request);
      // Read to the end; check the status line and the body length.
      let total = 0;
      let headEnd = -1;
      let status = 0;
      let length = -1;
      let head = "";
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        if (headEnd < 0) {
          head += String.fromCharCode(...buf.subarray(0, n));
          const i = head.indexOf("\r\n\r\n");
          if (i >= 0) {
            headEnd = i + 4;
            status = Number(head.slice(9, 12));
            const m = /\r\ncontent-length:\s*(\d+)/i.exec(head.slice(0, i));
            if (m) length = Number(m[1]);
          }
        }
        total += n;
      }
      if (status !== 200) throw new Error(`status ${status || "missing"}`);
      if (length >= 0 && total - headEnd !== length) {
        throw new Error(`short body: ${total - headEnd} of ${length}`);
      }
    } finally {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  };

  const worker = async () => {
    const buf = new Uint8Array(16 * 1024);
    for (;;) {
      const start = performance.now();
      if (start >= stopAt) return;
      let err: unknown = null;
      try {
        await one(buf);
      } catch (e) {
        err = e;
      }
      const end = performance.now();
      if (start < measureFrom || end > stopAt) continue;
      if (err === null) {
        completed++;
        latencies.push(end - start);
      } else {
        failed++;
        firstError ??= String(err);
        // A refused or reset connection: do not spin.
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  latencies.sort((a, b) => a - b);
  const q = (f: number) => latencies.length ? latencies[Math.floor(f * (latencies.length - 1))] : 0;
  const seconds = durationMs / 1000;
  return {
    completed,
    failed,
    seconds,
    perSecond: completed / seconds,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
    firstError,
  };
}

if (import.meta.main) {
  const [socks, host, port, workers, seconds] = Deno.args;
  if (!host || !port) {
    console.error(
      "usage: socks_load.ts <socks-port|0> <target-host> <target-port> [workers] [seconds]",
    );
    Deno.exit(2);
  }
  const r = await socksLoad({
    socksPort: Number(socks) > 0 ? Number(socks) : undefined,
    targetHost: host,
    targetPort: Number(port),
    workers: workers ? Number(workers) : undefined,
    durationMs: seconds ? Number(seconds) * 1000 : undefined,
  });
  console.log(JSON.stringify(r));
}

/**
 * New connections per second on loopback, one request per connection (no
 * keep-alive), every path against the same origin in the same run:
 *
 * - direct: ApacheBench (`ab -n N -c C`) and the SOCKS5 load generator's
 *   plain-TCP mode (`socks_load.ts` without a proxy), the ceilings of the two
 *   load generators;
 * - ostp, HTTP proxy: `ab -X` through the client daemon's proxy port;
 * - ostp, SOCKS5: the load generator through the same port;
 * - shadowsocks-libev: the load generator through ss-local (SOCKS5) → ss-server,
 *   chacha20-ietf-poly1305, both on 127.0.0.1.
 *
 * The origin is nginx (one worker, `return 200`) when installed, else a
 * Deno.serve origin; the table says which. Beside each rate, the CPU seconds
 * each daemon spent per 1,000 connections (from /proc).
 *
 *   deno run -A tests/bench/connrate.ts     # alone
 *   deno task bench                         # as one section (OSTP_BENCH_CONNRATE=0 skips)
 *
 * Knobs (env): OSTP_CONNRATE_N (ab requests, 5000), OSTP_CONNRATE_C (ab
 * concurrency, 100), OSTP_CONNRATE_WORKERS (load-generator connections, 100),
 * OSTP_CONNRATE_SECONDS (load-generator time, 5), OSTP_CONNRATE_ONLY (row ids,
 * comma-separated: direct-ab, direct-load, ostp-http, ostp-socks, ss-socks).
 * @module
 */

import { freePort, startClient, startServer } from "../support/daemons.ts";
import { which } from "../support/sh.ts";
import { socksLoad, type SocksLoadResult } from "./socks_load.ts";

const dec = new TextDecoder();

function envNum(name: string, dflt: number): number {
  const v = Deno.env.get(name);
  return v === undefined || v === "" ? dflt : Number(v);
}

/** CPU seconds (user + system) of a process so far, from /proc. */
function cpuOf(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Waits until something accepts TCP on 127.0.0.1:`port`. */
async function waitPort(port: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch (e) {
      if (Date.now() > until) throw new Error(`nothing listens on 127.0.0.1:${port}: ${e}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** A process this bench started, stopped by its pid. */
interface Proc {
  pid: number;
  stop(): Promise<void>;
}

function spawn(cmd: string, args: string[]): Proc {
  const child = new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" })
    .spawn();
  const status = child.status;
  const stderr = child.stderr.pipeTo(new WritableStream()).catch(() => {});
  return {
    pid: child.pid,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await status;
      await stderr;
    },
  };
}

interface Origin {
  kind: string;
  port: number;
  /** Processes that serve it (for CPU figures), empty for the in-process origin. */
  pids: number[];
  stop(): Promise<void>;
}

const BODY = "hello from the connection-rate origin\n";

async function startNginx(): Promise<Origin> {
  const dir = await Deno.makeTempDir({ prefix: "ostp-connrate-nginx-" });
  const port = freePort();
  const conf = `daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / { default_type text/plain; return 200 "${BODY.trimEnd()}\\n"; }
  }
}
`;
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const p = spawn("nginx", ["-p", dir, "-c", `${dir}/nginx.conf`]);
  try {
    await waitPort(port);
  } catch (e) {
    await p.stop();
    await Deno.remove(dir, { recursive: true });
    throw e;
  }
  return {
    kind: "nginx (1 worker, return 200)",
    port,
    pids: [p.pid],
    stop: async () => {
      await p.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

function startDenoOrigin(): Origin {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response(BODY),
  );
  return {
    kind: "Deno.serve (in the bench process)",
    port: server.addr.port,
    pids: [],
    stop: () => server.shutdown(),
  };
}

/** Parses `ab`'s report. */
function parseAb(text: string): { complete: number; failed: number; rps: number } {
  const num = (re: RegExp) => Number(text.match(re)?.[1] ?? NaN);
  return {
    complete: num(/^Complete requests:\s+(\d+)/m),
    failed: num(/^Failed requests:\s+(\d+)/m),
    rps: num(/^Requests per second:\s+([\d.]+)/m),
  };
}

async function ab(args: string[]): Promise<{ complete: number; failed: number; rps: number }> {
  const out = await new Deno.Command("ab", {
    args: ["-q", "-r", "-s", "10", ...args],
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const r = parseAb(dec.decode(out.stdout));
  if (!out.success || !(r.rps >= 0)) {
    throw new Error(`ab ${args.join(" ")} failed (${out.code}): ${dec.decode(out.stderr).trim()}`);
  }
  return r;
}

/** One row of the table. */
export interface ConnRateRow {
  id: string;
  label: string;
  tool: string;
  perSecond: number;
  completed: number;
  failed: number;
  /** CPU ms per 1,000 connections of the client-side and server-side daemon. */
  clientCpuMsPerK: number | null;
  serverCpuMsPerK: number | null;
  p50Ms?: number;
  p99Ms?: number;
  note?: string;
}

interface Pids {
  client: number | null;
  server: number | null;
}

async function measure(
  pids: Pids,
  run: () => Promise<{ completed: number; failed: number; perSecond: number; extra?: object }>,
): Promise<Omit<ConnRateRow, "id" | "label" | "tool">> {
  const c0 = pids.client ? cpuOf(pids.client) : NaN;
  const s0 = pids.server ? cpuOf(pids.server) : NaN;
  const r = await run();
  const c1 = pids.client ? cpuOf(pids.client) : NaN;
  const s1 = pids.server ? cpuOf(pids.server) : NaN;
  const perK = (d: number) => Number.isFinite(d) && r.completed > 0 ? d * 1e6 / r.completed : null;
  return {
    perSecond: r.perSecond,
    completed: r.completed,
    failed: r.failed,
    clientCpuMsPerK: perK(c1 - c0),
    serverCpuMsPerK: perK(s1 - s0),
    ...r.extra,
  };
}

function fromLoad(r: SocksLoadResult) {
  return {
    completed: r.completed,
    failed: r.failed,
    perSecond: r.perSecond,
    extra: { p50Ms: r.p50Ms, p99Ms: r.p99Ms, note: r.firstError },
  };
}

/** A path to measure: how to run one measurement, and whose CPU to count. */
interface Case {
  id: string;
  label: string;
  tool: string;
  pids: Pids;
  run(): Promise<{ completed: number; failed: number; perSecond: number; extra?: object }>;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** The median row of several measurements of one case (by rate; CPU figures are medians too). */
function medianRow(c: Case, ms: Omit<ConnRateRow, "id" | "label" | "tool">[]): ConnRateRow {
  const byRate = [...ms].sort((a, b) => a.perSecond - b.perSecond);
  const mid = byRate[Math.floor((byRate.length - 1) / 2)];
  const med = (f: (m: typeof mid) => number | null) => {
    const xs = ms.map(f).filter((v): v is number => v !== null);
    return xs.length ? median(xs) : null;
  };
  return {
    id: c.id,
    label: c.label,
    tool: c.tool,
    ...mid,
    perSecond: median(ms.map((m) => m.perSecond)),
    failed: ms.reduce((n, m) => n + m.failed, 0),
    clientCpuMsPerK: med((m) => m.clientCpuMsPerK),
    serverCpuMsPerK: med((m) => m.serverCpuMsPerK),
  };
}

/**
 * Runs the section: starts the origin and every daemon, then measures each
 * path `OSTP_CONNRATE_RUNS` times (3) in alternating rounds — this machine's
 * cores are shared, so paths measured side by side see the same conditions —
 * and returns the median of each, and the origin used.
 */
export async function runConnRate(): Promise<
  { origin: string; runs: number; rows: ConnRateRow[] }
> {
  const n = envNum("OSTP_CONNRATE_N", 5000);
  const c = envNum("OSTP_CONNRATE_C", 100);
  const workers = envNum("OSTP_CONNRATE_WORKERS", 100);
  const durationMs = envNum("OSTP_CONNRATE_SECONDS", 5) * 1000;
  const runs = Math.max(1, envNum("OSTP_CONNRATE_RUNS", 3));
  const only = Deno.env.get("OSTP_CONNRATE_ONLY")?.split(",").map((s) => s.trim());
  const want = (id: string) => !only || only.includes(id);
  const haveAb = await which("ab");
  const haveSs = (await which("ss-server")) && (await which("ss-local"));
  const skipped: string[] = [];
  if (!haveAb) skipped.push("ab rows (apache2-utils not installed)");
  if (!haveSs) skipped.push("shadowsocks-libev row (ss-server/ss-local not installed)");

  const origin = (await which("nginx")) ? await startNginx() : startDenoOrigin();
  const stops: (() => Promise<void>)[] = [origin.stop];
  const url = `http://127.0.0.1:${origin.port}/`;
  const load = (socksPort: number | undefined, w = workers, ms = durationMs) =>
    socksLoad({
      socksPort,
      targetHost: "127.0.0.1",
      targetPort: origin.port,
      workers: w,
      durationMs: ms,
    });
  const abRun = async (extra: string[]) => {
    const r = await ab(["-n", String(n), "-c", String(c), ...extra, url]);
    return { completed: r.complete - r.failed, failed: r.failed, perSecond: r.rps };
  };
  const none: Pids = { client: null, server: null };
  const cases: Case[] = [];
  const rows: ConnRateRow[] = [];
  try {
    if (haveAb && want("direct-ab")) {
      await ab(["-n", "500", "-c", "10", url]); // warm-up
      cases.push({
        id: "direct-ab",
        label: "direct",
        tool: `ab -n ${n} -c ${c}`,
        pids: none,
        run: () => abRun([]),
      });
    }
    if (want("direct-load")) {
      cases.push({
        id: "direct-load",
        label: "direct",
        tool: `socks_load (plain TCP) ×${workers}`,
        pids: none,
        run: async () => fromLoad(await load(undefined)),
      });
    }
    if ((haveAb && want("ostp-http")) || want("ostp-socks")) {
      const server = await startServer(["--log-level", "warning"]);
      stops.unshift(() => server.daemon.stop().then(() => {}));
      const client = await startClient(server.link);
      stops.unshift(() => client.daemon.stop().then(() => {}));
      const pids: Pids = { client: client.daemon.pid, server: server.daemon.pid };
      const proxy = `127.0.0.1:${client.proxyPort}`;
      await load(client.proxyPort, 10, 1000); // warm-up (JIT)
      if (haveAb && want("ostp-http")) {
        cases.push({
          id: "ostp-http",
          label: "ostp, HTTP proxy",
          tool: `ab -X -n ${n} -c ${c}`,
          pids,
          run: () => abRun(["-X", proxy]),
        });
      }
      if (want("ostp-socks")) {
        cases.push({
          id: "ostp-socks",
          label: "ostp, SOCKS5",
          tool: `socks_load ×${workers}`,
          pids,
          run: async () => fromLoad(await load(client.proxyPort)),
        });
      }
    }
    if (haveSs && want("ss-socks")) {
      const ssPort = freePort();
      const localPort = freePort();
      const pw = "ostp-bench-" + crypto.randomUUID();
      const method = ["-k", pw, "-m", "chacha20-ietf-poly1305"];
      const ssServer = spawn("ss-server", ["-s", "127.0.0.1", "-p", String(ssPort), ...method]);
      stops.unshift(ssServer.stop);
      const ssLocal = spawn("ss-local", [
        "-s",
        "127.0.0.1",
        "-p",
        String(ssPort),
        "-b",
        "127.0.0.1",
        "-l",
        String(localPort),
        ...method,
      ]);
      stops.unshift(ssLocal.stop);
      await waitPort(ssPort);
      await waitPort(localPort);
      await load(localPort, 10, 500); // warm-up
      cases.push({
        id: "ss-socks",
        label: "ss-libev, SOCKS5 (ss-local)",
        tool: `socks_load ×${workers}`,
        pids: { client: ssLocal.pid, server: ssServer.pid },
        run: async () => fromLoad(await load(localPort)),
      });
    }
    const results = cases.map(() => [] as Omit<ConnRateRow, "id" | "label" | "tool">[]);
    for (let r = 0; r < runs; r++) {
      for (let i = 0; i < cases.length; i++) {
        results[i].push(await measure(cases[i].pids, () => cases[i].run()));
      }
    }
    for (let i = 0; i < cases.length; i++) rows.push(medianRow(cases[i], results[i]));
  } finally {
    for (const stop of stops) await stop().catch(() => {});
  }
  for (const s of skipped) console.log(`  SKIPPED ${s}`);
  return { origin: origin.kind, runs, rows };
}

/** Prints the table. */
export function printConnRate(r: { origin: string; runs: number; rows: ConnRateRow[] }): void {
  console.log(
    `\nnew connections per second on loopback (one request per connection, origin: ${r.origin}; ` +
      `median of ${r.runs})`,
  );
  const ms = (v: number | null) => v === null ? "-" : v.toFixed(0);
  console.log(
    `  ${"path".padEnd(28)}${"load generator".padEnd(28)}${"conn/s".padStart(8)}${
      "failed".padStart(8)
    }${"p50 ms".padStart(8)}${"p99 ms".padStart(8)}  CPU ms per 1k conns (client / server)`,
  );
  for (const row of r.rows) {
    console.log(
      `  ${row.label.padEnd(28)}${row.tool.padEnd(28)}${row.perSecond.toFixed(0).padStart(8)}${
        String(row.failed).padStart(8)
      }${(row.p50Ms?.toFixed(1) ?? "-").padStart(8)}${
        (row.p99Ms?.toFixed(1) ?? "-").padStart(8)
      }  ${ms(row.clientCpuMsPerK)} / ${ms(row.serverCpuMsPerK)}${
        row.note ? `  (first failure: ${row.note})` : ""
      }`,
    );
  }
  const get = (id: string) => r.rows.find((x) => x.id === id)?.perSecond;
  const ostp = get("ostp-socks");
  const ss = get("ss-socks");
  if (ostp !== undefined && ss !== undefined && ss > 0) {
    console.log(`  ostp SOCKS5 / ss-libev SOCKS5: ${(ostp / ss * 100).toFixed(0)} %`);
  }
}

if (import.meta.main) {
  const r = await runConnRate();
  printConnRate(r);
  const dir = new URL("../../bench/results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(new URL("connrate.json", dir), JSON.stringify(r, null, 2) + "\n");
}

/**
 * Aggregate throughput of one server with 1 and with 2 worker threads
 * (docs/workers.md): several client processes (own source ports, so their
 * sessions spread over the workers) download at once through their SOCKS5
 * proxies; prints Mbit/s over all of them and the CPU seconds of the server
 * and the clients. Run alone with `deno run -A tests/bench/workers.ts`, or
 * from `deno task bench` (`OSTP_BENCH_WORKERS=0` skips it there).
 * `OSTP_BENCH_WORKER_CLIENTS` (default 4) and `OSTP_BENCH_WORKER_MIB` (per
 * client, default 64) size it.
 * @module
 */

import { curl, startClient, startOrigin, startServer } from "../support/daemons.ts";

const MiB = 1024 * 1024;

/** One row of {@link benchWorkers}. */
export interface WorkerFigures {
  workers: number;
  clients: number;
  /** Sessions per worker index, as the server's status showed them. */
  spread: number[];
  mbps: number;
  serverCpuSeconds: number;
  clientCpuSeconds: number;
  seconds: number;
}

async function fetchAll(proxies: number[], url: string, size: number): Promise<void> {
  await Promise.all(proxies.map(async (p) => {
    const r = await curl([
      "--socks5-hostname",
      `127.0.0.1:${p}`,
      "-o",
      "/dev/null",
      "-w",
      "%{size_download}",
      url,
    ]);
    if (r.code !== 0) throw new Error(`curl failed: ${r.stderr}`);
    const got = Number(new TextDecoder().decode(r.stdout));
    if (got !== size) throw new Error(`short transfer: ${got}`);
  }));
}

/** Measures `clients` parallel downloads of `mib` MiB each against 1 and 2 workers. */
export async function benchWorkers(
  clients = Number(Deno.env.get("OSTP_BENCH_WORKER_CLIENTS") ?? 4),
  mib = Number(Deno.env.get("OSTP_BENCH_WORKER_MIB") ?? 64),
): Promise<WorkerFigures[]> {
  const size = mib * MiB;
  const origin = startOrigin();
  const url = `http://127.0.0.1:${origin.port}/bytes/${size}?seed=4`;
  const out: WorkerFigures[] = [];
  try {
    await curl(["-o", "/dev/null", url]); // warm the origin's cache
    for (const workers of [1, 2]) {
      const server = await startServer(["--workers", String(workers), "--log-level", "warning"]);
      const cs = [];
      try {
        for (let i = 0; i < clients; i++) {
          cs.push(await startClient(server.link));
        }
        const status = await server.daemon.statsDump();
        const spread = (status.workers as { sessions: number }[]).map((w) => w.sessions);
        await fetchAll(cs.map((c) => c.proxyPort), url, size); // warm-up round
        const s0 = server.daemon.cpuSeconds();
        const c0 = cs.reduce((n, c) => n + c.daemon.cpuSeconds(), 0);
        const t0 = performance.now();
        await fetchAll(cs.map((c) => c.proxyPort), url, size);
        const seconds = (performance.now() - t0) / 1000;
        out.push({
          workers,
          clients,
          spread,
          mbps: (clients * size * 8) / seconds / 1e6,
          serverCpuSeconds: server.daemon.cpuSeconds() - s0,
          clientCpuSeconds: cs.reduce((n, c) => n + c.daemon.cpuSeconds(), 0) - c0,
          seconds,
        });
      } finally {
        for (const c of cs) await c.daemon.stop();
        await server.daemon.stop();
      }
    }
  } finally {
    await origin.close();
  }
  return out;
}

/** Prints the figures as a table. */
export function printWorkers(rows: WorkerFigures[]): void {
  console.log(
    `\nworkers (${navigator.hardwareConcurrency} cores): ${
      rows[0]?.clients
    } clients downloading at once`,
  );
  console.log("  workers  sessions/worker  aggregate      server CPU   clients CPU   wall");
  for (const r of rows) {
    console.log(
      `  ${String(r.workers).padStart(7)}  ${r.spread.join("+").padStart(15)}  ${
        r.mbps.toFixed(0).padStart(6)
      } Mbit/s  ${r.serverCpuSeconds.toFixed(2).padStart(8)} s  ${
        r.clientCpuSeconds.toFixed(2).padStart(9)
      } s  ${r.seconds.toFixed(1).padStart(5)} s`,
    );
  }
}

if (import.meta.main) printWorkers(await benchWorkers());

/**
 * Port mappings in `deno task bench` (docs/mappings.md), loopback, one run:
 * the same download from a local origin directly, through the client's
 * SOCKS5 proxy, through an OUT TCP mapping (the client listens, the server
 * connects to the origin), and through an IN TCP mapping (the server
 * listens, the client connects to the origin); Mbit/s and MiB per CPU-second
 * of both daemons, median of 3 after a warm-up.
 *
 *   deno run -A tests/bench/mapping_path.ts     # or: deno task bench (OSTP_BENCH_MAPPINGS=0 skips)
 * @module
 */

import {
  curl,
  type Daemon,
  freePort,
  spawnDeno,
  startOrigin,
  startServer,
} from "../support/daemons.ts";

const MiB = 1024 * 1024;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function fetchOnce(args: string[]): Promise<{ mbps: number; bytes: number }> {
  const r = await curl([...args, "-o", "/dev/null", "-w", "%{speed_download} %{size_download}"]);
  if (r.code !== 0) throw new Error(`curl failed: ${r.stderr}`);
  const [speed, size] = new TextDecoder().decode(r.stdout).split(" ").map(Number);
  return { mbps: (speed * 8) / 1e6, bytes: size };
}

interface Row {
  label: string;
  mbps: number;
  mibPerCpuS: number | null;
}

async function measure(
  label: string,
  args: string[],
  daemons: Daemon[],
  runs: number,
): Promise<Row> {
  await fetchOnce(args); // warm-up
  const speeds: number[] = [];
  const perCpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = daemons.reduce((a, d) => a + d.cpuSeconds(), 0);
    const r = await fetchOnce(args);
    const used = daemons.reduce((a, d) => a + d.cpuSeconds(), 0) - c0;
    speeds.push(r.mbps);
    if (used > 0) perCpu.push(r.bytes / MiB / used);
  }
  return { label, mbps: median(speeds), mibPerCpuS: perCpu.length ? median(perCpu) : null };
}

/** Runs the mapping bench and prints its table. */
export async function runMappingBench(): Promise<void> {
  const size = Number(Deno.env.get("OSTP_BENCH_MAPPING_MIB") ?? 256) * MiB;
  const runs = 3;
  const origin = startOrigin();
  const inPort = freePort();
  const server = await startServer(["--log-level", "warning", "--allow-in-ports", String(inPort)]);
  const outPort = freePort();
  const proxyPort = freePort();
  const client = spawnDeno("client", "client/main.ts", [
    server.link,
    "--listen",
    `127.0.0.1:${proxyPort}`,
    "--log-level",
    "info",
    "--tcp-mappings",
    `OUT^${outPort}^127.0.0.1:${origin.port},IN^127.0.0.1:${origin.port}^${inPort}`,
  ]);
  try {
    await client.waitFor(/connected to/);
    await client.waitFor(/IN\^.*: up/);
    const path = `/bytes/${size}?seed=3`;
    const both = [server.daemon, client];
    const rows = [
      await measure("direct (curl → origin)", [`http://127.0.0.1:${origin.port}${path}`], [], runs),
      await measure(
        "ostp SOCKS5 proxy",
        ["--socks5-hostname", `127.0.0.1:${proxyPort}`, `http://127.0.0.1:${origin.port}${path}`],
        both,
        runs,
      ),
      await measure("ostp OUT TCP mapping", [`http://127.0.0.1:${outPort}${path}`], both, runs),
      await measure("ostp IN TCP mapping", [`http://127.0.0.1:${inPort}${path}`], both, runs),
    ];
    console.log(`\nport mappings (loopback, ${size / MiB} MiB, median of ${runs} after a warm-up)`);
    console.log(`  ${"path".padEnd(28)} ${"Mbit/s".padStart(8)} ${"MiB/CPU-s".padStart(10)}`);
    for (const r of rows) {
      console.log(
        `  ${r.label.padEnd(28)} ${r.mbps.toFixed(0).padStart(8)} ${
          (r.mibPerCpuS?.toFixed(1) ?? "-").padStart(10)
        }`,
      );
    }
    const socks = rows[1].mbps;
    console.log(
      `  OUT mapping ${(rows[2].mbps / socks * 100).toFixed(0)}%, IN mapping ${
        (rows[3].mbps / socks * 100).toFixed(0)
      }% of the SOCKS5 path (MiB/CPU-s: both daemons)`,
    );
  } finally {
    await client.stop();
    await server.daemon.stop();
    await origin.close();
  }
}

if (import.meta.main) await runMappingBench();

/**
 * `deno task bench`: end-to-end figures on loopback, ostp against a direct
 * transfer measured in the same run.
 *
 * - 256 MiB through the client's SOCKS5 proxy (curl) vs the same download direct
 * - CPU seconds of each daemon during the tunnelled transfer
 * - handshake time (client hello → session ready)
 *
 * Prints a table and writes `bench/results/latest.json` (ignored by git).
 * Then the aggregate throughput of several clients against 1 and 2 server
 * worker threads (`workers.ts`; `OSTP_BENCH_WORKERS=0` skips it).
 * Then new connections per second through the HTTP proxy and SOCKS5 against
 * shadowsocks-libev and direct (`connrate.ts`; `OSTP_BENCH_CONNRATE=0` skips it).
 * Then the client router with 100,000 domain suffixes + 100,000 CIDRs: load
 * time, memory and ns per decision (`router.ts`; `OSTP_BENCH_ROUTER=0` skips it).
 * Then the plain-veth table against direct, shadowsocks-libev, wireguard-go and
 * kcptun, with latency under load per peer (`veth.ts`, root only;
 * `OSTP_BENCH_VETH=0` skips it), and the network-namespace suite against
 * shadowsocks-libev, kcptun and plain TCP through the link emulator
 * (`peers.ts`, root only; `OSTP_BENCH_PEERS=0` skips it). Before those, the FEC
 * codec in MB/s (`fec_bench.ts`; `OSTP_BENCH_FEC=0` skips it) and the carriers:
 * throughput and CPU per carrier, FEC against kcptun at 10% loss
 * (`carrier_paths.ts`, root only; `OSTP_BENCH_CARRIERS=0` skips it), and the
 * OUT and IN port mappings against the SOCKS5 path (`mapping_path.ts`;
 * `OSTP_BENCH_MAPPINGS=0` skips it),
 * throughput through a coturn TURN relay against direct UDP (`turn_relay.ts`,
 * root only; `OSTP_BENCH_TURN=0` skips it), the
 * layer-3 VPN against wireguard-go and OpenVPN (`l3_vpn.ts`, root only;
 * `OSTP_BENCH_L3=0` skips it).
 */
import { curl, startClient, startOrigin, startServer } from "../support/daemons.ts";
import { printConnRate, runConnRate } from "./connrate.ts";
import { runPeers } from "./peers.ts";
import { runVeth } from "./veth.ts";
import { benchSessions } from "./sessions.ts";
import { benchUsers } from "./users.ts";
import { benchRouter } from "./router.ts";
import { benchWorkers, printWorkers } from "./workers.ts";
import { runFecCodecBench } from "./fec_bench.ts";
import { runCarrierPaths } from "./carrier_paths.ts";
import { runL3Bench } from "./l3_vpn.ts";
import { runTurnBench } from "./turn_relay.ts";
import { runMappingBench } from "./mapping_path.ts";

const MiB = 1024 * 1024;
const SIZE = Number(Deno.env.get("OSTP_BENCH_MIB") ?? 256) * MiB;
const RUNS = Number(Deno.env.get("OSTP_BENCH_RUNS") ?? 3);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function download(proxy: string[], url: string): Promise<number> {
  const r = await curl([
    ...proxy,
    "-o",
    "/dev/null",
    "-w",
    "%{speed_download} %{size_download}",
    url,
  ]);
  if (r.code !== 0) throw new Error(`curl failed: ${r.stderr}`);
  const [speed, size] = new TextDecoder().decode(r.stdout).split(" ").map(Number);
  if (size !== SIZE) throw new Error(`short transfer: ${size}`);
  return (speed * 8) / 1e6;
}

/** One loopback measurement with the daemons on UDP implementation `impl`. */
async function loopback(impl: "ffi" | "deno", url: string) {
  Deno.env.set("OSTP_UDP", impl); // inherited by the daemons
  const server = await startServer(["--log-level", "warning"]);
  const client = await startClient(server.link);
  const handshake = Number((await client.daemon.waitFor(/connected to \S+ in ([\d.]+) ms/))[1]);
  try {
    const tunnel: number[] = [];
    const cpuServer: number[] = [];
    const cpuClient: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const s0 = server.daemon.cpuSeconds();
      const c0 = client.daemon.cpuSeconds();
      tunnel.push(await download(["--socks5-hostname", `127.0.0.1:${client.proxyPort}`], url));
      cpuServer.push(server.daemon.cpuSeconds() - s0);
      cpuClient.push(client.daemon.cpuSeconds() - c0);
    }
    return {
      tunnelMbps: median(tunnel),
      serverCpuSeconds: median(cpuServer),
      clientCpuSeconds: median(cpuClient),
      handshakeMs: handshake,
    };
  } finally {
    await client.daemon.stop();
    await server.daemon.stop();
    Deno.env.delete("OSTP_UDP");
  }
}

const origin = startOrigin();
const url = `http://127.0.0.1:${origin.port}/bytes/${SIZE}?seed=3`;
try {
  await download([], url); // warm the origin's cache
  const direct: number[] = [];
  for (let i = 0; i < RUNS; i++) direct.push(await download([], url));
  const ffi = await loopback("ffi", url);
  const deno = await loopback("deno", url);
  const result = {
    machine:
      `${Deno.build.os}/${Deno.build.arch}, ${navigator.hardwareConcurrency} cores, deno ${Deno.version.deno}`,
    sizeMiB: SIZE / MiB,
    runs: RUNS,
    directMbps: median(direct),
    ...ffi,
    ratio: ffi.tunnelMbps / median(direct),
    denoUdp: deno,
  };
  const row = (label: string, v: string) => console.log(`  ${label.padEnd(34)}${v.padStart(9)}`);
  console.log(
    `\nostp bench (${result.machine}), ${result.sizeMiB} MiB over loopback, median of ${RUNS}`,
  );
  row("direct TCP", `${result.directMbps.toFixed(0)} Mbit/s`);
  row("ostp (SOCKS5, curl), FFI UDP", `${ffi.tunnelMbps.toFixed(0)} Mbit/s`);
  row("ratio ostp/direct", `${(result.ratio * 100).toFixed(1)} %`);
  row("server CPU, FFI UDP", `${ffi.serverCpuSeconds.toFixed(2)} s`);
  row("client CPU, FFI UDP", `${ffi.clientCpuSeconds.toFixed(2)} s`);
  row("handshake", `${ffi.handshakeMs.toFixed(1)} ms`);
  row("ostp with Deno's UDP API", `${deno.tunnelMbps.toFixed(0)} Mbit/s`);
  row("server CPU, Deno UDP", `${deno.serverCpuSeconds.toFixed(2)} s`);
  row("client CPU, Deno UDP", `${deno.clientCpuSeconds.toFixed(2)} s`);
  const dir = new URL("../../bench/results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(new URL("latest.json", dir), JSON.stringify(result, null, 2) + "\n");
} finally {
  await origin.close();
}

if (Deno.env.get("OSTP_BENCH_SESSIONS") !== "0") {
  const f = await benchSessions(1000);
  console.log(`\nsessions (${f.sessions} idle sessions on one server)`);
  console.log(
    `  server RSS             ${f.rssBeforeMiB.toFixed(1)} → ${f.rssAfterMiB.toFixed(1)} MiB`,
  );
  console.log(`  memory per session     ${f.kibPerSession.toFixed(1).padStart(7)} KiB`);
  console.log(`  handshakes per CPU s   ${f.handshakesPerSecond.toFixed(0).padStart(7)}`);
}

if (Deno.env.get("OSTP_BENCH_WORKERS") !== "0") {
  const rows = await benchWorkers();
  printWorkers(rows);
  const dir = new URL("../../bench/results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(new URL("workers.json", dir), JSON.stringify(rows, null, 2) + "\n");
}

if (Deno.env.get("OSTP_BENCH_USERS") !== "0") {
  benchUsers([1, 10], 50); // warm the JIT
  console.log("\nhandshake cost against access keys (in-process, worst case: the last key)");
  for (const r of benchUsers()) {
    console.log(
      `  ${String(r.keys).padStart(5)} keys   ${
        r.usPerHandshake.toFixed(0).padStart(6)
      } µs per handshake   ` +
        `${r.usPerWrongKeyHello.toFixed(0).padStart(6)} µs per wrong-key hello`,
    );
  }
}

if (Deno.env.get("OSTP_BENCH_CONNRATE") !== "0") {
  const r = await runConnRate();
  printConnRate(r);
  const dir = new URL("../../bench/results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(new URL("connrate.json", dir), JSON.stringify(r, null, 2) + "\n");
}

if (Deno.env.get("OSTP_BENCH_ROUTER") !== "0") {
  console.log();
  await benchRouter();
}

if (Deno.env.get("OSTP_BENCH_FEC") !== "0") await runFecCodecBench();

if (Deno.env.get("OSTP_BENCH_CARRIERS") === "0") {
  console.log("\ncarriers bench skipped (OSTP_BENCH_CARRIERS=0)");
} else {
  await runCarrierPaths();
}

if (Deno.env.get("OSTP_BENCH_MAPPINGS") === "0") {
  console.log("\nport mapping bench skipped (OSTP_BENCH_MAPPINGS=0)");
} else {
  await runMappingBench();
}

if (Deno.env.get("OSTP_BENCH_TURN") === "0") {
  console.log("\nTURN bench skipped (OSTP_BENCH_TURN=0)");
} else {
  await runTurnBench();
}

if (Deno.env.get("OSTP_BENCH_L3") === "0") {
  console.log("\nlayer-3 bench skipped (OSTP_BENCH_L3=0)");
} else {
  await runL3Bench();
}

if (Deno.env.get("OSTP_BENCH_VETH") === "0") {
  console.log("\nplain-veth bench skipped (OSTP_BENCH_VETH=0)");
} else {
  await runVeth();
}

if (Deno.env.get("OSTP_BENCH_PEERS") === "0") {
  console.log("\npeers bench skipped (OSTP_BENCH_PEERS=0)");
} else {
  await runPeers();
}

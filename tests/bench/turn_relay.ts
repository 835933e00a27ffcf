/**
 * TURN in `deno task bench` (docs/nat.md), root only, one run on the NAT
 * testbed (tests/support/nat_bed.ts: client behind an nftables masquerade,
 * coturn and the ostp server on the other side, plain veth links):
 * throughput of a download through the proxy with the session on direct
 * UDP through the NAT, and through a coturn allocation (ChannelData)
 * reached over UDP, TCP and TLS, with the CPU of each daemon (coturn's too).
 * Median of 3 after a warm-up.
 *
 *   deno run -A tests/bench/turn_relay.ts     # or: deno task bench (OSTP_BENCH_TURN=0 skips)
 * @module
 */

import { canUseNetns } from "../support/netns.ts";
import type { Daemon } from "../support/daemons.ts";
import { NAT_ADDR, NatBed, startNatTunnel, TURN_USER } from "../support/nat_bed.ts";
import { cpu, envNum, lpad, median, MiB, pad } from "./peers.ts";
import { makeTestCerts } from "../support/certs.ts";

const dec = new TextDecoder();

interface Row {
  label: string;
  mbps: number | null;
  mibPerCpuS: number | null;
  coturnCpuShare?: number;
  error?: string;
}

async function download(bed: NatBed, size: number): Promise<{ bytes: number; seconds: number }> {
  const r = await bed.exec(bed.client, "curl", [
    "-sS",
    "-m",
    "120",
    "-o",
    "/dev/null",
    "-w",
    "%{size_download} %{time_total} %{http_code}",
    "--socks5-hostname",
    "127.0.0.1:1088",
    `http://127.0.0.1:8080/bytes/${size}`,
  ]);
  const [bytes, seconds, status] = dec.decode(r.stdout).trim().split(" ").map(Number);
  if (r.code !== 0 || status !== 200) {
    throw new Error(`curl ${r.code} (HTTP ${status}): ${dec.decode(r.stderr).trim()}`);
  }
  return { bytes, seconds };
}

/**
 * One configuration (direct UDP, or TURN over `turn`): warm-up, then the
 * median of three downloads of `sizeMiB`.
 */
async function measure(
  label: string,
  turn: "udp" | "tcp" | "tls" | null,
  sizeMiB: number,
): Promise<Row> {
  const bed = await NatBed.create();
  const dir = await Deno.makeTempDir();
  const daemons: Daemon[] = [];
  try {
    const certs = turn === "tls" ? await makeTestCerts(dir, ["turn.test"]) : undefined;
    const coturn = await bed.startCoturn([], certs);
    await Deno.writeTextFile(`${dir}/turn.pw`, TURN_USER.password, { mode: 0o600 });
    const config = turn
      ? {
        turn: {
          server: `${NAT_ADDR.turn}:${turn === "tls" ? 5349 : 3478}`,
          username: TURN_USER.username,
          passwordFile: "turn.pw",
          transport: turn,
          ...(certs ? { serverName: "turn.test", ca: certs.ca } : {}),
        },
      }
      : {};
    const { client, server } = await startNatTunnel(bed, dir, daemons, config);
    await download(bed, 4 * MiB);
    const speeds: number[] = [];
    const perCpu: number[] = [];
    const shares: number[] = [];
    for (let i = 0; i < 3; i++) {
      const c0 = (cpu(client) ?? 0) + (cpu(server) ?? 0);
      const t0 = cpu(coturn) ?? 0;
      const r = await download(bed, sizeMiB * MiB);
      const ours = (cpu(client) ?? 0) + (cpu(server) ?? 0) - c0;
      const relay = (cpu(coturn) ?? 0) - t0;
      speeds.push((r.bytes * 8) / r.seconds / 1e6);
      perCpu.push(r.bytes / MiB / (ours + (turn ? relay : 0)));
      shares.push(relay / (ours + relay));
    }
    const row: Row = { label, mbps: median(speeds), mibPerCpuS: median(perCpu) };
    if (turn) row.coturnCpuShare = median(shares);
    return row;
  } catch (e) {
    return { label, mbps: null, mibPerCpuS: null, error: (e as Error).message.split("\n")[0] };
  } finally {
    for (const d of daemons.reverse()) await d.stop().catch(() => {});
    await bed.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs the TURN bench and prints its table. */
export async function runTurnBench(): Promise<void> {
  console.log("\nTURN relay (NAT testbed, plain veth; coturn in its own namespace)");
  if (!(await canUseNetns())) {
    console.log("  skipped: needs root and ip netns");
    return;
  }
  try {
    await new Deno.Command("turnserver", { args: ["-h"], stdout: "null", stderr: "null" })
      .output();
  } catch {
    console.log("  skipped: needs coturn (apt-get install coturn)");
    return;
  }
  const size = envNum("OSTP_BENCH_TURN_MIB", 128);
  const rows = [
    await measure("ostp udp, direct through the NAT", null, size),
    await measure("ostp turn, via coturn (ChannelData)", "udp", size),
    await measure("ostp turn over TCP to coturn", "tcp", size),
    await measure("ostp turn over TLS to coturn", "tls", size),
  ];
  console.log(
    `  ${pad("path", 40)} ${lpad("Mbit/s", 8)} ${lpad("MiB/CPU-s", 10)} ${lpad("coturn CPU", 11)}`,
  );
  for (const r of rows) {
    if (r.error) {
      console.log(`  ${pad(r.label, 40)} failed: ${r.error}`);
      continue;
    }
    const share = r.coturnCpuShare === undefined ? "" : `${(r.coturnCpuShare * 100).toFixed(0)}%`;
    console.log(
      `  ${pad(r.label, 40)} ${lpad(r.mbps?.toFixed(0) ?? "-", 8)} ${
        lpad(r.mibPerCpuS?.toFixed(1) ?? "-", 10)
      } ${lpad(share, 11)}`,
    );
  }
  const [direct, ...relayed] = rows;
  for (const r of relayed) {
    if (!direct.mbps || !r.mbps) continue;
    console.log(`  ${r.label}: ${(r.mbps / direct.mbps * 100).toFixed(0)}% of direct UDP`);
  }
  console.log(
    `  (${size} MiB each, median of 3; MiB/CPU-s counts client + server, + coturn for the relay)`,
  );
}

if (import.meta.main) await runTurnBench();

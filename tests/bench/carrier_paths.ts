/**
 * Carriers in `deno task bench` (docs/carriers.md), root only, one run:
 * 1. throughput and CPU of each carrier (udp, faketcp, uot, tls, udp+fec
 *    auto) on plain veth and through the emulator at 40 ms RTT + 2% loss;
 * 2. FEC at 40 ms RTT + 10% loss: ostp with FEC off, 10:3 and auto against
 *    kcptun (its FEC at 10:3, the default): bulk throughput, small-request
 *    latency, and the share of lost datagrams rebuilt without a retransmission;
 * 3. adaptive FEC on the clean path: parity datagrams sent (should be none).
 *
 *   deno run -A tests/bench/carrier_paths.ts     # or: deno task bench (OSTP_BENCH_CARRIERS=0 skips)
 * @module
 */

import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import { ADDR, canUseNetns, type Testbed } from "../support/netns.ts";
import { makeTestCerts } from "../support/certs.ts";
import type { Daemon } from "../support/daemons.ts";
import {
  cleanupAll,
  cpu,
  curlIn,
  envNum,
  kcptun,
  lpad,
  median,
  MiB,
  ORIGIN,
  pad,
  type Peer,
  type Profile,
  smallRequests,
  startOrigin,
  withPeer,
} from "./peers.ts";

const LOSS2: Profile = {
  id: "rtt40-loss2",
  label: "40 ms RTT + 2% loss",
  imp: { delayMs: 20, loss: 0.02 },
  sizeMiB: 32,
};
const LOSS10: Profile = {
  id: "rtt40-loss10",
  label: "40 ms RTT + 10% loss",
  imp: { delayMs: 20, loss: 0.1 },
  sizeMiB: 16,
};

type Kind = "udp" | "faketcp" | "uot" | "tls";

/** ostp over carrier `kind` (FEC `fec` on UDP), with the server offering it. */
function ostpOver(kind: Kind, fec: string, dir: string): Peer {
  const label = fec === "off" ? `ostp ${kind}` : `ostp ${kind}+fec ${fec}`;
  return {
    id: label,
    label,
    cc: "bbr",
    daemons: ["ostp client", "ostp server"],
    async start(tb: Testbed) {
      const key = formatAccessKey(generateAccessKey(), "hex");
      const origin = await startOrigin(tb);
      const certs = kind === "tls" ? await makeTestCerts(dir, ["ostp.test"]) : null;
      const serverCfg: Record<string, unknown> = {
        faketcp: { listen: `${ADDR.server}:8443`, stateDir: dir },
        uot: { listen: `${ADDR.server}:8445` },
        fec: { listen: `${ADDR.server}:8444`, mode: "auto" },
        ...(certs
          ? { tls: { listen: `${ADDR.server}:443`, cert: certs.cert, key: certs.key } }
          : {}),
      };
      await Deno.writeTextFile(`${dir}/server.json`, JSON.stringify(serverCfg));
      const clientCfg: Record<string, unknown> = {
        carrier: kind,
        faketcp: { stateDir: dir },
        uot: { port: 8445 },
        tls: { port: 443, serverName: "ostp.test", ...(certs ? { ca: certs.ca } : {}) },
        ...(fec !== "off" ? { fec, fecPort: 8444 } : {}),
      };
      await Deno.writeTextFile(`${dir}/client.json`, JSON.stringify(clientCfg));
      const server = tb.spawnDeno("server", tb.server, "server/main.ts", [
        "-k",
        key,
        "-l",
        `${ADDR.server}:8443`,
        "-c",
        `${dir}/server.json`,
      ]);
      let client: Daemon | null = null;
      const stop = async () => {
        await client?.stop();
        await server.stop();
        await origin.stop();
      };
      try {
        const link = (await server.waitFor(/share link: (\S+)/))[1];
        client = tb.spawnDeno("client", tb.client, "client/main.ts", [
          link,
          "-l",
          "127.0.0.1:1088",
          "-c",
          `${dir}/client.json`,
        ]);
        await client.waitFor(/connected to/);
      } catch (e) {
        await stop();
        throw e;
      }
      return {
        client,
        server,
        curl: (path: string) => ["--socks5-hostname", "127.0.0.1:1088", `http://${ORIGIN}${path}`],
        stop,
      };
    },
  };
}

interface Row {
  label: string;
  mbps: number | null;
  mibPerCpuS: number | null;
  error?: string;
}

/** One download through `peer` on `profile`: Mbit/s and MiB per CPU-second of both daemons. */
async function throughput(profile: Profile | "veth", peer: Peer, sizeMiB: number): Promise<Row> {
  try {
    return await withPeer(profile, peer, "bbr", sizeMiB * MiB, async (tb, running) => {
      const c0 = cpu(running.client) ?? 0;
      const s0 = cpu(running.server) ?? 0;
      const r = await curlIn(tb, ["-m", "60", ...running.curl(`/bytes/${sizeMiB * MiB}`)]);
      const used = (cpu(running.client) ?? 0) - c0 + (cpu(running.server) ?? 0) - s0;
      if (r.code !== 0 && r.code !== 28) throw new Error(`curl ${r.code}: ${r.err}`);
      return {
        label: peer.label,
        mbps: r.seconds > 0 ? (r.bytes * 8) / r.seconds / 1e6 : null,
        mibPerCpuS: used > 0 ? r.bytes / MiB / used : null,
      };
    });
  } catch (e) {
    return { label: peer.label, mbps: null, mibPerCpuS: null, error: (e as Error).message };
  }
}

interface FecRow {
  label: string;
  mbps: number | null;
  smallMs: number | null;
  /** Share of the client's lost datagrams it rebuilt (ostp only). */
  rebuilt: string;
  paritySent: string;
  error?: string;
}

/** The server's FEC listener counters from its status. */
async function serverFec(d: Daemon | null): Promise<Record<string, number | string> | null> {
  if (!d) return null;
  try {
    const st = (await d.statsDump()).stats;
    const c = st.carriers?.find((x: { kind: string }) => x.kind === "udp+fec");
    return c?.counters ?? null;
  } catch {
    return null;
  }
}

/** The client's FEC counters from its status (its first session). */
async function clientFec(d: Daemon | null): Promise<Record<string, number | string> | null> {
  if (!d) return null;
  try {
    const st = await d.statsDump();
    return (st.sessions?.[0]?.carrierCounters as Record<string, number | string>) ?? null;
  } catch {
    return null;
  }
}

async function fecRow(profile: Profile, peer: Peer, sizeMiB: number): Promise<FecRow> {
  try {
    return await withPeer(profile, peer, "bbr", sizeMiB * MiB, async (tb, running) => {
      const small = median(await smallRequests(tb, running, 10));
      const r = await curlIn(tb, ["-m", "60", ...running.curl(`/bytes/${sizeMiB * MiB}`)]);
      if (r.code !== 0 && r.code !== 28) throw new Error(`curl ${r.code}: ${r.err}`);
      const c = await clientFec(running.client);
      let rebuilt = "–";
      let parity = "–";
      if (c) {
        const received = Number(c.received);
        const loss = Number(c.localLoss);
        const lost = loss < 1 ? (received * loss) / (1 - loss) : 0;
        rebuilt = lost > 0
          ? `${Math.min(100, (Number(c.recovered) / lost) * 100).toFixed(0)}%`
          : "0%";
      }
      const sv = await serverFec(running.server);
      if (sv) {
        parity = `${sv.paritySent} of ${
          Number(sv.dataSent) + Number(sv.paritySent)
        } (now ${sv.ratio})`;
      }
      return {
        label: peer.label,
        mbps: r.seconds > 0 ? (r.bytes * 8) / r.seconds / 1e6 : null,
        smallMs: small,
        rebuilt,
        paritySent: parity,
      };
    });
  } catch (e) {
    return {
      label: peer.label,
      mbps: null,
      smallMs: null,
      rebuilt: "–",
      paritySent: "–",
      error: (e as Error).message,
    };
  }
}

const num = (x: number | null, d = 0) => (x === null ? "–" : x.toFixed(d));

/** Prints the carrier tables. */
export async function runCarrierPaths(): Promise<void> {
  console.log("\ncarriers (network namespaces; docs/carriers.md)");
  if (!(await canUseNetns())) {
    console.log("  SKIPPED: needs root and ip netns");
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "ostp-bench-carriers-" });
  try {
    const vethMiB = envNum("OSTP_BENCH_CARRIER_MIB", 128);
    const kinds: Kind[] = ["udp", "faketcp", "uot", "tls"];
    const peers = [...kinds.map((k) => ostpOver(k, "off", dir)), ostpOver("udp", "auto", dir)];
    console.log(
      `  throughput: one download each, ${vethMiB} MiB on veth, ${LOSS2.sizeMiB} MiB at ${LOSS2.label}`,
    );
    console.log(
      `  ${pad("carrier", 22)} ${lpad("veth Mbit/s", 12)} ${lpad("MiB/CPU-s", 10)} ${
        lpad("lossy Mbit/s", 13)
      } ${lpad("MiB/CPU-s", 10)}`,
    );
    for (const p of peers) {
      const a = await throughput("veth", p, vethMiB);
      const b = await throughput(LOSS2, p, LOSS2.sizeMiB);
      console.log(
        `  ${pad(p.label, 22)} ${lpad(num(a.mbps), 12)} ${lpad(num(a.mibPerCpuS), 10)} ${
          lpad(num(b.mbps), 13)
        } ${lpad(num(b.mibPerCpuS), 10)}${
          a.error || b.error ? `  ${a.error ?? ""} ${b.error ?? ""}` : ""
        }`,
      );
    }
    console.log(
      `  FEC at ${LOSS10.label}: ${LOSS10.sizeMiB} MiB download, median of 10 small requests (1 KiB, ` +
        "new connection each); kcptun fast3 with its default FEC 10:3",
    );
    console.log(
      `  ${pad("", 22)} ${lpad("bulk Mbit/s", 12)} ${lpad("small ms", 9)} ${
        lpad("rebuilt", 8)
      }  parity sent by the server`,
    );
    for (
      const p of [
        ostpOver("udp", "off", dir),
        ostpOver("udp", "10:3", dir),
        ostpOver("udp", "auto", dir),
        kcptun,
      ]
    ) {
      const r = await fecRow(LOSS10, p, LOSS10.sizeMiB);
      console.log(
        `  ${pad(p.label, 22)} ${lpad(num(r.mbps), 12)} ${lpad(num(r.smallMs), 9)} ${
          lpad(r.rebuilt, 8)
        }  ${r.paritySent}${r.error ? "  " + r.error : ""}`,
      );
    }
    const clean = await fecRow(
      { id: "clean", label: "clean", imp: {}, sizeMiB: 32 },
      ostpOver("udp", "auto", dir),
      32,
    );
    console.log(
      `  adaptive FEC on the clean path: parity datagrams sent by the server ${clean.paritySent}${
        clean.error ? "  " + clean.error : ""
      }`,
    );
  } finally {
    await cleanupAll();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await runCarrierPaths();

/**
 * Layer-3 VPNs in `deno task bench` (docs/l3.md), root only, one run: ostp's
 * layer 3, wireguard-go and OpenVPN (UDP, server mode with
 * `--client-to-client`) on the same namespaces — client 1 in the client
 * namespace, the hub in the server namespace, client 2 in the target
 * namespace (plain veth to the server) — over plain veth and with the
 * emulator at 40 ms RTT + 2% loss between client 1 and the hub. Per tunnel:
 * iperf3 TCP (bbr) client 1 → hub and client 1 → client 2 (through the
 * hub), ping RTT both ways, and MiB per CPU-second of the tunnel's processes
 * during the iperf3 runs.
 *
 *   deno run -A tests/bench/l3_vpn.ts     # or: deno task bench (OSTP_BENCH_L3=0 skips)
 * @module
 */

import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import { ADDR, canUseNetns, run, type Testbed } from "../support/netns.ts";
import { makeTestCerts } from "../support/certs.ts";
import type { Daemon } from "../support/daemons.ts";
import {
  cleanupAll,
  cpu,
  ensurePackage,
  lpad,
  MiB,
  pad,
  type Profile,
  setCc,
  withTestbed,
} from "./peers.ts";

const dec = new TextDecoder();
const LOSS2: Profile = {
  id: "rtt40-loss2",
  label: "40 ms RTT + 2% loss",
  imp: { delayMs: 20, loss: 0.02 },
  sizeMiB: 0,
};

/** A tunnel up on a testbed: its processes, and the inner addresses to measure. */
interface Vpn {
  procs: Daemon[];
  hub: string;
  client2: string;
  stop(): Promise<void>;
}

interface Tunnel {
  label: string;
  start(tb: Testbed, dir: string): Promise<Vpn>;
}

async function must(ns: string, cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command("ip", {
    args: ["netns", "exec", ns, cmd, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(out.stderr).trim()}`);
  return dec.decode(out.stdout);
}

const ostpL3: Tunnel = {
  label: "ostp layer 3",
  async start(tb, dir) {
    const key = formatAccessKey(generateAccessKey(), "hex");
    await Deno.writeTextFile(`${dir}/key`, key + "\n", { mode: 0o600 });
    await Deno.writeTextFile(
      `${dir}/server.json`,
      JSON.stringify({
        listen: ["0.0.0.0:8443"],
        keys: [key],
        l3: { subnet: "10.77.0.0/24", stateDir: `${dir}/srv` },
      }),
    );
    const server = tb.spawnDeno("server", tb.server, "server/main.ts", [
      "-c",
      `${dir}/server.json`,
      "--workers",
      "1",
    ]);
    const clients: Daemon[] = [];
    const stop = async () => {
      for (const c of clients) await c.stop();
      await server.stop();
    };
    try {
      await server.waitFor(/layer-3 hub ostp-hub up/, 30_000);
      const addrs: string[] = [];
      for (const [i, ns, host] of [[1, tb.client, ADDR.server], [2, tb.target, ADDR.serverLan]]) {
        const c = tb.spawnDeno(`client${i}`, ns as string, "client/main.ts", [
          "-s",
          `${host}:8443`,
          "--key-file",
          `${dir}/key`,
          "--l3",
          "--state-dir",
          `${dir}/cli${i}`,
          "-l",
          "127.0.0.1:0",
        ]);
        clients.push(c);
        const m = await c.waitFor(/layer 3 up: ([\d.]+)/, 30_000);
        addrs.push(m[1]);
      }
      return { procs: [server, ...clients], hub: "10.77.0.1", client2: addrs[1], stop };
    } catch (e) {
      await stop();
      throw e;
    }
  },
};

async function wgKey(): Promise<{ priv: string; pub: string }> {
  const priv = (await run("wg", "genkey")).trim();
  const p = new Deno.Command("wg", { args: ["pubkey"], stdin: "piped", stdout: "piped" }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(priv + "\n"));
  await w.close();
  return { priv, pub: dec.decode((await p.output()).stdout).trim() };
}

const wireguard: Tunnel = {
  label: "wireguard-go",
  async start(tb, dir) {
    const nodes = [
      { ns: tb.server, ifc: `wgh${tb.id}`, ip: "10.78.0.1", port: 51820 },
      { ns: tb.client, ifc: `wga${tb.id}`, ip: "10.78.0.2", port: 51821 },
      { ns: tb.target, ifc: `wgb${tb.id}`, ip: "10.78.0.3", port: 51822 },
    ];
    const procs: Daemon[] = [];
    const stop = async () => {
      for (const p of procs) await p.stop();
      for (const n of nodes) await Deno.remove(`/var/run/wireguard/${n.ifc}.sock`).catch(() => {});
    };
    try {
      const keys = await Promise.all(nodes.map(() => wgKey()));
      for (const [i, n] of nodes.entries()) {
        await Deno.writeTextFile(`${dir}/wg${i}.key`, keys[i].priv + "\n", { mode: 0o600 });
        const d = tb.spawn(`wireguard-go ${n.ifc}`, n.ns, "wireguard-go", ["-f", n.ifc]);
        procs.push(d);
        const until = Date.now() + 10_000;
        while (!(await Deno.stat(`/var/run/wireguard/${n.ifc}.sock`).catch(() => null))) {
          if (Date.now() > until) throw new Error(`wireguard-go ${n.ifc} did not come up`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      // The hub knows both clients; each client routes the whole subnet to the hub.
      await must(nodes[0].ns, "wg", [
        "set",
        nodes[0].ifc,
        "private-key",
        `${dir}/wg0.key`,
        "listen-port",
        "51820",
        "peer",
        keys[1].pub,
        "allowed-ips",
        "10.78.0.2/32",
        "peer",
        keys[2].pub,
        "allowed-ips",
        "10.78.0.3/32",
      ]);
      const hubAddr = [ADDR.server, ADDR.serverLan];
      for (const i of [1, 2]) {
        await must(nodes[i].ns, "wg", [
          "set",
          nodes[i].ifc,
          "private-key",
          `${dir}/wg${i}.key`,
          "listen-port",
          String(nodes[i].port),
          "peer",
          keys[0].pub,
          "endpoint",
          `${hubAddr[i - 1]}:51820`,
          "allowed-ips",
          "10.78.0.0/24",
          "persistent-keepalive",
          "5",
        ]);
      }
      for (const n of nodes) {
        await run("ip", "-n", n.ns, "addr", "add", `${n.ip}/24`, "dev", n.ifc);
        await run("ip", "-n", n.ns, "link", "set", n.ifc, "up");
      }
      await must(tb.server, "sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"]);
      return { procs, hub: "10.78.0.1", client2: "10.78.0.3", stop };
    } catch (e) {
      await stop();
      throw e;
    }
  },
};

const openvpn: Tunnel = {
  label: "OpenVPN (UDP)",
  async start(tb, dir) {
    const certs = await makeTestCerts(dir, ["ovpn-server"]);
    // Client certificates: the same CA, one per client.
    for (const c of ["c1", "c2"]) {
      const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
      await run(
        "openssl",
        "req",
        ...ec,
        "-subj",
        `/CN=${c}`,
        "-keyout",
        `${dir}/${c}.key`,
        "-out",
        `${dir}/${c}.csr`,
      );
      await run(
        "openssl",
        "x509",
        "-req",
        "-in",
        `${dir}/${c}.csr`,
        "-CA",
        certs.ca,
        "-CAkey",
        `${dir}/ca.key`,
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        `${dir}/${c}.pem`,
      );
    }
    const common = [
      "--dev-type",
      "tun",
      "--proto",
      "udp",
      "--data-ciphers",
      "AES-256-GCM",
      "--cipher",
      "AES-256-GCM",
      "--verb",
      "3",
    ];
    const server = tb.spawn("openvpn server", tb.server, "openvpn", [
      ...common,
      "--mode",
      "server",
      "--tls-server",
      "--topology",
      "subnet",
      "--server",
      "10.79.0.0",
      "255.255.255.0",
      "--client-to-client",
      "--port",
      "1194",
      "--dh",
      "none",
      "--ca",
      certs.ca,
      "--cert",
      certs.cert,
      "--key",
      certs.key,
      "--dev",
      `ovs${tb.id}`,
      "--ifconfig-pool-persist",
      `${dir}/ipp.txt`,
      "0",
      "--keepalive",
      "5",
      "20",
    ]);
    const procs: Daemon[] = [server];
    const stop = async () => {
      for (const p of procs) await p.stop();
    };
    try {
      await server.waitFor(/Initialization Sequence Completed/, 20_000);
      const addrs: string[] = [];
      for (const [i, ns, host] of [[1, tb.client, ADDR.server], [2, tb.target, ADDR.serverLan]]) {
        const c = tb.spawn(`openvpn client${i}`, ns as string, "openvpn", [
          ...common,
          "--client",
          "--remote",
          host as string,
          "1194",
          "--nobind",
          "--ca",
          certs.ca,
          "--cert",
          `${dir}/c${i}.pem`,
          "--key",
          `${dir}/c${i}.key`,
          "--dev",
          `ovc${i}${tb.id}`,
          "--verify-x509-name",
          "ovpn-server",
          "name",
        ]);
        procs.push(c);
        await c.waitFor(/Initialization Sequence Completed/, 20_000);
        const ip = await must(ns as string, "ip", [
          "-4",
          "-o",
          "addr",
          "show",
          "dev",
          `ovc${i}${tb.id}`,
        ]);
        addrs.push(/inet ([\d.]+)/.exec(ip)![1]);
      }
      return { procs, hub: "10.79.0.1", client2: addrs[1], stop };
    } catch (e) {
      await stop();
      throw e;
    }
  },
};

/** iperf3 TCP from the client namespace to `to` for `seconds`: Mbit/s received. */
async function iperf(tb: Testbed, serverNs: string, to: string, seconds: number): Promise<number> {
  const srv = new Deno.Command("ip", {
    args: ["netns", "exec", serverNs, "iperf3", "-s", "-1", "-B", to],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await new Promise((r) => setTimeout(r, 400));
    const out = await must(tb.client, "iperf3", [
      "-c",
      to,
      "-t",
      String(seconds),
      "-J",
      "-C",
      "bbr",
    ]);
    return JSON.parse(out).end.sum_received.bits_per_second / 1e6;
  } finally {
    try {
      srv.kill();
    } catch {
      // ended
    }
    await srv.status;
  }
}

/** Average ping RTT from the client namespace to `to`, ms. */
async function ping(tb: Testbed, to: string): Promise<number> {
  const out = await must(tb.client, "ping", ["-c", "10", "-i", "0.2", "-q", to]);
  return Number(/= [\d.]+\/([\d.]+)\//.exec(out)?.[1] ?? NaN);
}

interface Result {
  label: string;
  hubMbps: number;
  c2cMbps: number;
  hubMs: number;
  c2cMs: number;
  mibPerCpuS: number;
}

async function measure(
  profile: Profile | "veth",
  t: Tunnel,
  seconds: number,
): Promise<Result | string> {
  const dir = await Deno.makeTempDir({ prefix: "ostp-bench-l3-" });
  try {
    return await withTestbed(profile, async (tb) => {
      await setCc(tb, "bbr");
      for (const ns of [tb.target]) {
        await run(
          "ip",
          "netns",
          "exec",
          ns,
          "sysctl",
          "-q",
          "-w",
          "net.ipv4.tcp_congestion_control=bbr",
        ).catch(() => {});
      }
      const vpn = await t.start(tb, dir);
      try {
        const hubMs = await ping(tb, vpn.hub);
        const c2cMs = await ping(tb, vpn.client2);
        const c0 = vpn.procs.map((p) => cpu(p) ?? 0).reduce((a, b) => a + b, 0);
        const hubMbps = await iperf(tb, tb.server, vpn.hub, seconds);
        const c2cMbps = await iperf(tb, tb.target, vpn.client2, seconds);
        const used = vpn.procs.map((p) => cpu(p) ?? 0).reduce((a, b) => a + b, 0) - c0;
        const mib = ((hubMbps + c2cMbps) * 1e6 * seconds) / 8 / MiB;
        return {
          label: t.label,
          hubMbps,
          c2cMbps,
          hubMs,
          c2cMs,
          mibPerCpuS: used > 0 ? mib / used : 0,
        };
      } finally {
        await vpn.stop();
      }
    });
  } catch (e) {
    // A daemon's error carries its whole output: the last lines say why.
    return (e as Error).message.split("\n").slice(0, 1).concat(
      (e as Error).message.split("\n").slice(-3),
    ).join(" | ");
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Prints the layer-3 table. */
export async function runL3Bench(): Promise<void> {
  console.log("\nlayer-3 VPN: ostp against wireguard-go and OpenVPN (UDP), same namespaces");
  if (!(await canUseNetns())) {
    console.log("  SKIPPED: needs root and ip netns");
    return;
  }
  const tunnels: Tunnel[] = [ostpL3];
  for (
    const [t, pkg, bins] of [
      [wireguard, "wireguard-go", ["wireguard-go"]],
      [openvpn, "openvpn", ["openvpn"]],
    ] as const
  ) {
    const why = (await ensurePackage(pkg, [...bins])) ??
      (pkg === "wireguard-go" ? await ensurePackage("wireguard-tools", ["wg"]) : null);
    if (why) console.log(`  SKIP ${t.label}: ${why}`);
    else tunnels.push(t);
  }
  if (await ensurePackage("iperf3", ["iperf3"])) {
    console.log("  SKIPPED: iperf3 missing");
    return;
  }
  try {
    for (
      const [profile, seconds, label] of [["veth", 5, "plain veth"], [
        LOSS2,
        8,
        LOSS2.label,
      ]] as const
    ) {
      console.log(
        `  ${label}: iperf3 -t ${seconds} TCP bbr; ping -c 10 (client 1 → hub, client 1 → client 2)`,
      );
      console.log(
        `  ${pad("", 16)} ${lpad("→hub Mbit/s", 12)} ${lpad("→client Mbit/s", 15)} ${
          lpad("ping hub", 9)
        } ${lpad("ping client", 12)} ${lpad("MiB/CPU-s", 10)}`,
      );
      for (const t of tunnels) {
        const r = await measure(profile, t, seconds);
        if (typeof r === "string") {
          console.log(`  ${pad(t.label, 16)} failed: ${r}`);
          continue;
        }
        console.log(
          `  ${pad(r.label, 16)} ${lpad(r.hubMbps.toFixed(0), 12)} ${
            lpad(r.c2cMbps.toFixed(0), 15)
          } ${lpad(r.hubMs.toFixed(2), 9)} ${lpad(r.c2cMs.toFixed(2), 12)} ${
            lpad(r.mibPerCpuS.toFixed(0), 10)
          }`,
        );
      }
    }
  } finally {
    await cleanupAll();
  }
}

if (import.meta.main) await runL3Bench();

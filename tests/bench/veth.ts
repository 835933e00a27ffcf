/**
 * The plain-veth part of `deno task bench` (root only): the same peers as
 * `peers.ts` with no emulator in the path, plus latency under load per peer.
 *
 *   deno run -A tests/bench/veth.ts           # alone
 *   deno task bench                           # before peers.ts (OSTP_BENCH_VETH=0 skips)
 *
 * 1. Plain veth: client, server and target namespaces joined by veth pairs
 *    ({@link Testbed.createVeth}; client 10.201.0.1 ⇄ server 10.201.0.2,
 *    server 10.202.0.1 ⇄ target 10.202.0.2, the origin `bench_origin.ts` at
 *    10.202.0.2:8080). Per peer, on a fresh testbed: one unmeasured warm-up
 *    download, then 3 downloads (`/bytes/<n>`) and 3 uploads (`curl -T` to
 *    `/sink`) of OSTP_VETH_MIB (512) MiB, median Mbit/s each way, and the CPU
 *    seconds of both daemons (/proc/PID/stat utime+stime before/after each
 *    transfer) → MiB per CPU-second of the two together.
 *    - direct: no tunnel, curl in the client namespace to the origin, routed
 *      through the server namespace (ip_forward=1);
 *    - shadowsocks-libev: ss-local (SOCKS5 127.0.0.1:1080) → ss-server
 *      10.201.0.2:8388, chacha20-ietf-poly1305;
 *    - wireguard-go: one TUN interface per side (`wgc<id>` in the client
 *      namespace, `wgs<id>` in the server namespace: the userspace daemon's
 *      control socket /var/run/wireguard/<name>.sock is not per namespace, so
 *      the two names differ), keys from `wg genkey`, tunnel addresses
 *      10.203.0.1/24 and .2, the client routes 10.202.0.0/24 into the tunnel,
 *      the server forwards and the target routes 10.203.0.0/24 back; curl
 *      straight at the origin (no SOCKS);
 *    - kcptun: `--mode fast3 --sndwnd 1024 --rcvwnd 1024 --nocomp` on both
 *      ends (`KCP_TUNING` in peers.ts);
 *    - ostp: SOCKS5 127.0.0.1:1088 → server 10.201.0.2:8443 (UDP).
 *    TCP uses bbr in every namespace, as in peers.ts.
 * 2. Latency under load, through the link emulator at 40 ms RTT and at 40 ms
 *    + 2% loss each way: per peer, after a warm-up download, 20 small
 *    requests (`/bytes/1024`, a new connection each) alone, then 20 beside a
 *    bulk download of the same peer; the ratio of the medians (beside / alone).
 *
 * Prints one table (peers as columns) and writes `bench/results/veth.json`.
 *
 * Knobs (env): OSTP_VETH_MIB (512), OSTP_VETH_RUNS (3), OSTP_VETH_CAP_S (120:
 * curl -m per transfer), OSTP_VETH_ONLY (peer ids, comma-separated: direct,
 * ss-libev, wireguard-go, kcptun, ostp), OSTP_VETH_LUL=0 (skip latency under
 * load), OSTP_VETH_LUL_N (20 small requests), OSTP_VETH_LUL_BULK_MIB (1024).
 * @module
 */

import type { Daemon } from "../support/daemons.ts";
import { payload } from "../support/daemons.ts";
import { ADDR, canUseNetns, run, type Testbed } from "../support/netns.ts";
import { which } from "../support/sh.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import {
  besideBulk,
  cleanupAll,
  cpu,
  curlIn,
  ensurePackage,
  envNum,
  interrupted,
  KCP_TUNING,
  kcptun,
  lpad,
  machine,
  markInterrupted,
  median,
  MiB,
  ORIGIN,
  ostp,
  pad,
  type Peer,
  pkgVersion,
  plainTcp,
  prepareCc,
  PROFILES,
  revision,
  type Running,
  smallRequests,
  ssLibev,
  startOrigin,
  track,
  withPeer,
} from "./peers.ts";

const dec = new TextDecoder();
const WG_TUNNEL = { client: "10.203.0.1", server: "10.203.0.2", subnet: "10.203.0.0/24" };

// ---------------------------------------------------------------------------
// The two peers peers.ts does not have.

/** No tunnel: TCP bbr routed through the server namespace (peers.ts's "TCP bbr"). */
const direct: Peer = { ...plainTcp("bbr"), id: "direct", label: "direct" };

async function wgPubkey(priv: string): Promise<string> {
  const p = new Deno.Command("wg", { args: ["pubkey"], stdin: "piped", stdout: "piped" }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(priv + "\n"));
  await w.close();
  const out = await p.output();
  if (!out.success) throw new Error("wg pubkey failed");
  return dec.decode(out.stdout).trim();
}

async function inNs(tb: Testbed, ns: string, cmd: string, args: string[]): Promise<void> {
  const r = await tb.exec(ns, cmd, args);
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")} in ${ns}: ${dec.decode(r.stderr).trim()}`);
  }
}

/** Starts `wireguard-go -f <ifname>` in `ns` and waits for its control socket. */
async function startWgDaemon(tb: Testbed, ns: string, ifname: string): Promise<Daemon> {
  const sock = `/var/run/wireguard/${ifname}.sock`;
  const d = tb.spawn(`wireguard-go ${ifname}`, ns, "wireguard-go", ["-f", ifname]);
  const until = Date.now() + 10_000;
  for (;;) {
    try {
      await Deno.stat(sock);
      return d;
    } catch {
      if (!(await d.alive())) {
        throw new Error(`wireguard-go ${ifname} exited: ${d.output.slice(-3).join(" | ")}`);
      }
      if (Date.now() > until) {
        await d.stop();
        throw new Error(`wireguard-go ${ifname}: no ${sock} after 10 s`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

const wireguard: Peer = {
  id: "wireguard-go",
  label: "wireguard-go",
  cc: "bbr",
  daemons: ["wireguard-go", "wireguard-go"],
  pkg: { name: "wireguard-go", bins: ["wireguard-go"] },
  async start(tb) {
    const ifc = `wgc${tb.id}`;
    const ifs = `wgs${tb.id}`;
    const keyDir = await Deno.makeTempDir({ prefix: "ostp-bench-wg-" });
    let origin: Daemon | null = null;
    let client: Daemon | null = null;
    let server: Daemon | null = null;
    const stop = async () => {
      await client?.stop();
      await server?.stop();
      await origin?.stop();
      for (const i of [ifc, ifs]) await Deno.remove(`/var/run/wireguard/${i}.sock`).catch(() => {});
      await Deno.remove(keyDir, { recursive: true }).catch(() => {});
    };
    try {
      const cPriv = (await run("wg", "genkey")).trim();
      const sPriv = (await run("wg", "genkey")).trim();
      const cPub = await wgPubkey(cPriv);
      const sPub = await wgPubkey(sPriv);
      await Deno.writeTextFile(`${keyDir}/client.key`, cPriv + "\n", { mode: 0o600 });
      await Deno.writeTextFile(`${keyDir}/server.key`, sPriv + "\n", { mode: 0o600 });
      origin = await startOrigin(tb);
      server = await startWgDaemon(tb, tb.server, ifs);
      client = await startWgDaemon(tb, tb.client, ifc);
      await inNs(tb, tb.server, "wg", [
        "set",
        ifs,
        "private-key",
        `${keyDir}/server.key`,
        "listen-port",
        "51820",
        "peer",
        cPub,
        "allowed-ips",
        `${WG_TUNNEL.client}/32`,
      ]);
      await inNs(tb, tb.client, "wg", [
        "set",
        ifc,
        "private-key",
        `${keyDir}/client.key`,
        "listen-port",
        "51821",
        "peer",
        sPub,
        "endpoint",
        `${ADDR.server}:51820`,
        "allowed-ips",
        `${WG_TUNNEL.server}/32,10.202.0.0/24`,
      ]);
      await run("ip", "-n", tb.server, "addr", "add", `${WG_TUNNEL.server}/24`, "dev", ifs);
      await run("ip", "-n", tb.server, "link", "set", ifs, "up");
      await run("ip", "-n", tb.client, "addr", "add", `${WG_TUNNEL.client}/24`, "dev", ifc);
      await run("ip", "-n", tb.client, "link", "set", ifc, "up");
      await run("ip", "-n", tb.client, "route", "add", "10.202.0.0/24", "dev", ifc);
      await inNs(tb, tb.server, "sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"]);
      await run("ip", "-n", tb.target, "route", "add", WG_TUNNEL.subnet, "via", ADDR.serverLan);
    } catch (e) {
      await stop();
      throw e;
    }
    return {
      client,
      server,
      curl: (path) => [`http://${ORIGIN}${path}`],
      stop,
    };
  },
};

// ---------------------------------------------------------------------------
// ostp's own paths beside its SOCKS5 one: the TUN inbound, and redsocks (the
// kernel's TCP doing the stack's job: nft redirect into the SOCKS5 port).

/** Daemons besides `client`/`server` whose CPU counts on the client side (redsocks). */
const extraDaemons = new WeakMap<Running, Daemon[]>();

/** `ostp-client <link> --tun` in the client namespace; curl straight at the origin. */
const ostpTun: Peer = {
  id: "ostp-tun",
  label: "ostp TUN",
  cc: "bbr",
  daemons: ["ostp client --tun", "ostp server"],
  async start(tb) {
    const key = formatAccessKey(generateAccessKey(), "hex");
    const dir = await Deno.makeTempDir({ prefix: "ostp-bench-tun-" });
    const origin = await startOrigin(tb);
    const server = tb.spawnDeno("server", tb.server, "server/main.ts", [
      "-k",
      key,
      "-l",
      `${ADDR.server}:8443`,
    ]);
    let client: Daemon | null = null;
    const stop = async () => {
      await client?.stop();
      await server.stop();
      await origin.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    };
    try {
      const link = (await server.waitFor(/share link: (\S+)/))[1];
      const cfg = `${dir}/client.json`;
      await Deno.writeTextFile(cfg, JSON.stringify({ tun: { stateDir: `${dir}/state` } }));
      client = tb.spawnDeno("client", tb.client, "client/main.ts", [
        link,
        "-l",
        "127.0.0.1:1088",
        "-c",
        cfg,
        "--tun",
      ]);
      await client.waitFor(/tun ostp0 up/, 30_000);
    } catch (e) {
      await stop();
      throw e;
    }
    return { client, server, curl: (path) => [`http://${ORIGIN}${path}`], stop };
  },
};

/** redsocks in the client namespace: TCP to the target subnet redirected into ostp's SOCKS5. */
const ostpRedsocks: Peer = {
  id: "ostp-redsocks",
  label: "ostp via redsocks",
  cc: "bbr",
  daemons: ["redsocks + ostp client", "ostp server"],
  pkg: { name: "redsocks", bins: ["redsocks"] },
  async start(tb) {
    const inner = await ostp.start(tb);
    const dir = await Deno.makeTempDir({ prefix: "ostp-bench-redsocks-" });
    let redsocks: Daemon | null = null;
    const stop = async () => {
      await redsocks?.stop();
      await inner.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    };
    try {
      await Deno.writeTextFile(
        `${dir}/redsocks.conf`,
        [
          "base { log_debug = off; log_info = off; log = stderr; daemon = off; " +
          "redirector = iptables; }",
          "redsocks { local_ip = 127.0.0.1; local_port = 12345; ip = 127.0.0.1; port = 1088; " +
          "type = socks5; }",
          "",
        ].join("\n"),
      );
      // A route so connect() gets as far as netfilter; nothing forwards beyond the server.
      await run("ip", "-n", tb.client, "route", "add", "10.202.0.0/24", "via", ADDR.server);
      const nft = [
        "add table ip ostpbench",
        "add chain ip ostpbench out { type nat hook output priority -100; }",
        "add rule ip ostpbench out ip daddr 10.202.0.0/24 tcp dport 8080 redirect to :12345",
      ];
      for (const cmd of nft) await inNs(tb, tb.client, "nft", cmd.split(" "));
      redsocks = tb.spawn("redsocks", tb.client, "redsocks", ["-c", `${dir}/redsocks.conf`]);
      await new Promise((r) => setTimeout(r, 300));
      if (!(await redsocks.alive())) {
        throw new Error(`redsocks exited: ${redsocks.output.slice(-3).join(" | ")}`);
      }
    } catch (e) {
      await stop();
      throw e;
    }
    const running: Running = {
      client: inner.client,
      server: inner.server,
      curl: (path) => [`http://${ORIGIN}${path}`],
      stop,
    };
    extraDaemons.set(running, [redsocks]);
    return running;
  },
};

// ---------------------------------------------------------------------------
// The upstream-proxy VPN mode against curl given the proxy itself: squid (Basic
// auth) in the server namespace, CONNECT to the origin either way.

const SQUID_USER = "bench";
const SQUID_PASSWORD = "bench-" + crypto.randomUUID().slice(0, 8);

/** CPU seconds of a process by pid (squid, which runs under a wrapper). */
function pidCpu(pid: number): Daemon {
  return {
    cpuSeconds() {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return (Number(f[11]) + Number(f[12])) / 100;
    },
  } as unknown as Daemon;
}

async function startSquidIn(tb: Testbed): Promise<{ daemon: Daemon; port: number; pid: number }> {
  const log = await Deno.makeTempFile({ prefix: "ostp-bench-squid-" });
  const daemon = tb.spawn("squid", tb.server, Deno.execPath(), [
    "run",
    "-A",
    new URL("../support/squid_main.ts", import.meta.url).pathname,
    ADDR.server,
    SQUID_USER,
    SQUID_PASSWORD,
    log,
    "8080",
  ]);
  try {
    const m = await daemon.waitFor(/ports \d+ (\d+) pid (\d+)/, 40_000);
    await daemon.waitFor(/ready/, 40_000);
    return { daemon, port: Number(m[1]), pid: Number(m[2]) };
  } catch (e) {
    await daemon.stop();
    throw e;
  }
}

/** curl with the proxy (`-p -x`: CONNECT, as the VPN mode sends). */
const squidDirect: Peer = {
  id: "squid",
  label: "squid (curl -x)",
  cc: "bbr",
  daemons: ["curl", "squid"],
  pkg: { name: "squid", bins: ["squid"] },
  async start(tb) {
    const origin = await startOrigin(tb);
    let squid: Awaited<ReturnType<typeof startSquidIn>> | null = null;
    try {
      squid = await startSquidIn(tb);
    } catch (e) {
      await origin.stop();
      throw e;
    }
    const s = squid;
    const running: Running = {
      client: null,
      server: null,
      curl: (path) => [
        "-p",
        "-x",
        `http://${SQUID_USER}:${SQUID_PASSWORD}@${ADDR.server}:${s.port}`,
        `http://${ORIGIN}${path}`,
      ],
      stop: async () => {
        await s.daemon.stop();
        await origin.stop();
      },
    };
    squidCpu.set(running, pidCpu(s.pid));
    return running;
  },
};

/** `ostp-client vpn up` in the client namespace, squid upstream; curl straight at the origin. */
const ostpVpn: Peer = {
  id: "ostp-vpn",
  label: "ostp vpn → squid",
  cc: "bbr",
  daemons: ["ostp client vpn", "squid"],
  pkg: { name: "squid", bins: ["squid"] },
  async start(tb) {
    const origin = await startOrigin(tb);
    const dir = await Deno.makeTempDir({ prefix: "ostp-bench-vpn-" });
    let squid: Awaited<ReturnType<typeof startSquidIn>> | null = null;
    let vpn: Daemon | null = null;
    const stop = async () => {
      await vpn?.stop();
      await squid?.daemon.stop();
      await origin.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    };
    try {
      squid = await startSquidIn(tb);
      await Deno.writeTextFile(`${dir}/pass`, SQUID_PASSWORD + "\n", { mode: 0o600 });
      vpn = tb.spawn("vpn", tb.client, Deno.execPath(), [
        "run",
        "-A",
        "--unstable-net",
        new URL("../../client/main.ts", import.meta.url).pathname,
        "vpn",
        "up",
        "--proxy-host",
        ADDR.server,
        "--proxy-port",
        String(squid.port),
        "--username",
        SQUID_USER,
        "--password-file",
        `${dir}/pass`,
        "--dns",
        ADDR.server,
        "--state-dir",
        `${dir}/state`,
      ]);
      await vpn.waitFor(/vpn up/, 30_000);
    } catch (e) {
      await stop();
      throw e;
    }
    const running: Running = {
      client: vpn,
      server: null,
      curl: (path) => [`http://${ORIGIN}${path}`],
      stop,
    };
    squidCpu.set(running, pidCpu(squid.pid));
    return running;
  },
};

/** squid's CPU, standing in for the server side of the two squid rows. */
const squidCpu = new WeakMap<Running, Daemon>();

/** Table order: the reference table's columns, then ostp's other capture paths. */
const PEERS: Peer[] = [
  direct,
  ssLibev,
  wireguard,
  kcptun,
  ostp,
  ostpTun,
  ostpRedsocks,
  squidDirect,
  ostpVpn,
];

/** Peers measured only on plain veth (the latency table compares tunnels, not ostp's inbounds). */
const VETH_ONLY = new Set(["ostp-tun", "ostp-redsocks", "squid", "ostp-vpn"]);

/**
 * ApacheBench arguments (before the URL) for new connections per second per
 * peer: paths an HTTP client can take (SOCKS5-only peers have none).
 */
const AB_ARGS: Record<string, string[]> = {
  direct: [],
  "wireguard-go": [],
  ostp: ["-X", "127.0.0.1:1088"],
  "ostp-tun": [],
  "ostp-redsocks": [],
};

// ---------------------------------------------------------------------------
// Transfers.

interface Transfer {
  bytes: number;
  seconds: number;
  mbps: number;
  /** CPU seconds of the client-side + server-side daemon (null: no daemons). */
  cpuS: number | null;
  error?: string;
}

function cpuBoth(r: Running): number | null {
  const sq = squidCpu.get(r);
  // The squid rows: squid is the server side; curl (no daemon) or the VPN client the client side.
  const c = sq && !r.client ? 0 : cpu(r.client);
  const s = sq ? cpu(sq) : cpu(r.server);
  if (c === null || s === null) return null;
  let extra = 0;
  for (const d of extraDaemons.get(r) ?? []) extra += cpu(d) ?? 0;
  return c + s + extra;
}

/** New connections per second: `ab -n <n> -c <c>`, one 1 KiB GET each, in the client namespace. */
interface ConnRate {
  perSecond: number | null;
  failed: number;
  /** CPU seconds of the daemons per 1,000 connections. */
  cpuPer1000: number | null;
  error?: string;
}

/**
 * Peers whose connections per second are measured with curl processes (ab cannot CONNECT
 * through a proxy): the VPN mode and curl given the proxy, the same way.
 */
const CURL_RATE = new Set(["squid", "ostp-vpn"]);

/** `n` curl processes, `par` at a time, one 1 KiB GET each: connections per second. */
async function curlRate(tb: Testbed, r: Running, n: number, par: number): Promise<ConnRate> {
  const args = r.curl("/bytes/1024").map((a) => `'${a}'`).join(" ");
  const c0 = cpuBoth(r);
  const t0 = performance.now();
  const out = await tb.exec(tb.client, "sh", [
    "-c",
    `seq ${n} | xargs -P ${par} -I{} curl -s -m 30 -o /dev/null -w '%{http_code}\\n' ${args} | ` +
    "grep -c '^200$'",
  ]);
  const seconds = (performance.now() - t0) / 1000;
  const c1 = cpuBoth(r);
  const ok = Number(dec.decode(out.stdout).trim()) || 0;
  const res: ConnRate = {
    perSecond: +(ok / seconds).toFixed(0),
    failed: n - ok,
    cpuPer1000: c0 !== null && c1 !== null ? +(((c1 - c0) * 1000) / n).toFixed(2) : null,
  };
  if (ok < n) res.error = `${n - ok} of ${n} requests failed`;
  return res;
}

async function connRate(
  tb: Testbed,
  r: Running,
  args: string[],
  n: number,
  c: number,
): Promise<ConnRate> {
  const c0 = cpuBoth(r);
  const out = await tb.exec(tb.client, "ab", [
    "-q",
    "-n",
    String(n),
    "-c",
    String(c),
    "-s",
    "30",
    ...args,
    `http://${ORIGIN}/bytes/1024`,
  ]);
  const c1 = cpuBoth(r);
  const text = dec.decode(out.stdout);
  const rate = text.match(/Requests per second:\s+([\d.]+)/);
  const failed = Number(text.match(/Failed requests:\s+(\d+)/)?.[1] ?? 0);
  const res: ConnRate = {
    perSecond: rate ? +Number(rate[1]).toFixed(0) : null,
    failed,
    cpuPer1000: c0 !== null && c1 !== null ? +(((c1 - c0) * 1000) / n).toFixed(2) : null,
  };
  if (out.code !== 0 || !rate) {
    res.error = `ab exit ${out.code}: ${dec.decode(out.stderr).trim().split("\n").pop()}`;
  } else if (failed > 0) res.error = `${failed} of ${n} requests failed`;
  return res;
}

/** One download of `size` bytes, or one upload of `file` (`size` bytes) to /sink. */
async function transfer(
  tb: Testbed,
  r: Running,
  dir: "down" | "up",
  size: number,
  capS: number,
  file: string,
): Promise<Transfer> {
  const args = dir === "down"
    ? [
      "-o",
      "/dev/null",
      "-w",
      "%{size_download} %{time_total} %{http_code}",
      ...r.curl(`/bytes/${size}`),
    ]
    : [
      "-T",
      file,
      "-H",
      "Expect:", // no 100-continue round (the origin never sends one)
      "-w",
      "\n%{size_upload} %{time_total} %{http_code}",
      ...r.curl("/sink"),
    ];
  const c0 = cpuBoth(r);
  const out = await tb.exec(tb.client, "curl", ["-sS", "-m", String(capS), ...args]);
  const c1 = cpuBoth(r);
  const lines = dec.decode(out.stdout).trim().split("\n");
  const [bytes, seconds, status] = lines[lines.length - 1].split(" ").map(Number);
  const res: Transfer = {
    bytes: bytes || 0,
    seconds: seconds || 0,
    mbps: seconds > 0 ? (bytes * 8) / seconds / 1e6 : 0,
    cpuS: c0 !== null && c1 !== null ? +(c1 - c0).toFixed(2) : null,
  };
  if (out.code !== 0) res.error = `curl exit ${out.code}: ${dec.decode(out.stderr).trim()}`;
  else if (status !== 200) res.error = `HTTP ${status}`;
  else if (bytes !== size) res.error = `short transfer: ${bytes} of ${size}`;
  else if (dir === "up" && Number(lines[0]) !== size) {
    res.error = `sink counted ${lines[0]} of ${size} bytes`;
  }
  return res;
}

interface VethRow {
  peer: string;
  label: string;
  sizeMiB: number;
  warmup: Transfer | null;
  down: Transfer[];
  up: Transfer[];
  downMbps: number | null;
  upMbps: number | null;
  /** MiB per CPU-second of both daemons: downloads, uploads, all measured transfers. */
  mibPerCpuS: { down: number | null; up: number | null; all: number | null };
  /** New connections per second (ApacheBench), where an HTTP client can use the path. */
  connRate: ConnRate | null;
  error?: string;
}

function perCpu(ts: Transfer[]): number | null {
  const ok = ts.filter((t) => !t.error && t.cpuS !== null);
  if (ok.length === 0) return null;
  const cpu = ok.reduce((a, t) => a + (t.cpuS as number), 0);
  const mib = ok.reduce((a, t) => a + t.bytes / MiB, 0);
  return cpu > 0 ? +(mib / cpu).toFixed(1) : null;
}

async function vethRow(
  peer: Peer,
  size: number,
  runs: number,
  capS: number,
  file: string,
): Promise<VethRow> {
  const row: VethRow = {
    peer: peer.id,
    label: peer.label,
    sizeMiB: size / MiB,
    warmup: null,
    down: [],
    up: [],
    downMbps: null,
    upMbps: null,
    mibPerCpuS: { down: null, up: null, all: null },
    connRate: null,
  };
  try {
    await withPeer("veth", peer, peer.cc, size, async (tb, running) => {
      row.warmup = await transfer(tb, running, "down", size, capS, file);
      for (let i = 0; i < runs && !interrupted(); i++) {
        row.down.push(await transfer(tb, running, "down", size, capS, file));
      }
      for (let i = 0; i < runs && !interrupted(); i++) {
        row.up.push(await transfer(tb, running, "up", size, capS, file));
      }
      if (CURL_RATE.has(peer.id) && !interrupted()) {
        row.connRate = await curlRate(tb, running, envNum("OSTP_VETH_CURL_N", 1000), 50);
      }
      const ab = AB_ARGS[peer.id];
      if (ab && !interrupted() && await which("ab")) {
        row.connRate = await connRate(tb, running, ab, envNum("OSTP_VETH_AB_N", 5000), 50);
      }
    });
  } catch (e) {
    row.error = e instanceof Error ? e.message.split("\n")[0] : String(e);
  }
  const mbps = (ts: Transfer[]) => {
    const ok = ts.filter((t) => !t.error);
    return ok.length ? +median(ok.map((t) => t.mbps)).toFixed(1) : null;
  };
  row.downMbps = mbps(row.down);
  row.upMbps = mbps(row.up);
  if (peer.daemons) {
    row.mibPerCpuS = {
      down: perCpu(row.down),
      up: perCpu(row.up),
      all: perCpu([...row.down, ...row.up]),
    };
  }
  const failed = [...row.down, ...row.up].find((t) => t.error);
  if (!row.error && failed) row.error = failed.error;
  return row;
}

// ---------------------------------------------------------------------------
// Latency under load.

interface LoadedLatency {
  peer: string;
  profile: string;
  requests: number;
  idleMedianMs: number | null;
  loadedMedianMs: number | null;
  ratio: number | null;
  idleMs: number[];
  loadedMs: number[];
  /** Bulk throughput while the small requests ran. */
  bulkMbps: number | null;
  bulkStillRunning: boolean;
  error?: string;
}

async function loadedLatency(
  peer: Peer,
  profileId: string,
  n: number,
  bulkSize: number,
): Promise<LoadedLatency> {
  const profile = PROFILES.find((p) => p.id === profileId)!;
  const res: LoadedLatency = {
    peer: peer.id,
    profile: profile.label,
    requests: n,
    idleMedianMs: null,
    loadedMedianMs: null,
    ratio: null,
    idleMs: [],
    loadedMs: [],
    bulkMbps: null,
    bulkStillRunning: false,
  };
  try {
    await withPeer(profile, peer, peer.cc, bulkSize, async (tb, running) => {
      // Warm-up: one unmeasured download through the path.
      await curlIn(tb, ["-m", "30", ...running.curl(`/bytes/${16 * MiB}`)]);
      const small = async () => (await smallRequests(tb, running, n)).map((ms) => +ms.toFixed(1));
      res.idleMs = await small();
      const bulk = await besideBulk(tb, running, bulkSize, 180, [], small);
      res.loadedMs = bulk.result;
      res.bulkMbps = +bulk.bulkMbps.toFixed(1);
      res.bulkStillRunning = bulk.bulkStillRunning;
    });
    res.idleMedianMs = +median(res.idleMs).toFixed(1);
    res.loadedMedianMs = +median(res.loadedMs).toFixed(1);
    res.ratio = +(res.loadedMedianMs / res.idleMedianMs).toFixed(2);
  } catch (e) {
    res.error = e instanceof Error ? e.message.split("\n")[0] : String(e);
  }
  return res;
}

// ---------------------------------------------------------------------------
// Report.

function num(v: number | null | undefined, digits = 0): string {
  return v === null || v === undefined ? "–" : v.toFixed(digits);
}

/** The figures of one run, as written to bench/results/veth.json. */
export interface VethResult {
  machine: string;
  revision: string;
  date: string;
  sizeMiB: number;
  runs: number;
  capSeconds: number;
  kcptun: string;
  versions: Record<string, string | null>;
  veth: VethRow[];
  latency: LoadedLatency[];
  skipped: { what: string; reason: string }[];
}

function printTable(r: VethResult, peers: Peer[]): void {
  const W = 20;
  const L = 54;
  const head = pad("", L) + peers.map((p) => lpad(p.label, W)).join("");
  console.log(head);
  console.log("-".repeat(head.length));
  const line = (label: string, cell: (p: Peer) => string) =>
    console.log(pad(label, L) + peers.map((p) => lpad(cell(p), W)).join(""));
  const v = (p: Peer) => r.veth.find((x) => x.peer === p.id);
  line(`plain veth, ${r.sizeMiB} MiB, Mbit/s down / up`, (p) => {
    const x = v(p);
    return x ? `${num(x.downMbps)} / ${num(x.upMbps)}` : "–";
  });
  line("MiB per CPU-second (both daemons), down / up", (p) => {
    const x = v(p);
    if (!x || !p.daemons) return "–";
    return `${num(x.mibPerCpuS.down)} / ${num(x.mibPerCpuS.up)}`;
  });
  line("MiB per CPU-second, all transfers", (p) => {
    const x = v(p);
    return x && p.daemons ? num(x.mibPerCpuS.all) : "–";
  });
  line("new connections/s (ab -c 50; squid rows: curl ×50)", (p) => {
    const c = v(p)?.connRate;
    return c?.perSecond != null ? num(c.perSecond) + (c.error ? "!" : "") : "–";
  });
  line("  CPU-s of the daemons per 1,000 connections", (p) => {
    const c = v(p)?.connRate;
    return c && p.daemons ? num(c.cpuPer1000, 2) : "–";
  });
  for (const prof of ["40 ms RTT", "40 ms RTT + 2% loss"]) {
    const l = (p: Peer) => r.latency.find((x) => x.peer === p.id && x.profile === prof);
    if (!r.latency.some((x) => x.profile === prof)) continue;
    line(`small request beside bulk, ${prof}: ratio`, (p) => {
      const x = l(p);
      return x?.ratio != null ? `${x.ratio.toFixed(2)}×` : "–";
    });
    line("  median ms alone / beside", (p) => {
      const x = l(p);
      return x ? `${num(x.idleMedianMs)} / ${num(x.loadedMedianMs)}` : "–";
    });
    line("  bulk Mbit/s meanwhile", (p) => {
      const x = l(p);
      return x ? num(x.bulkMbps) + (x.bulkMbps !== null && !x.bulkStillRunning ? "*" : "") : "–";
    });
  }
}

/** Runs both parts, prints the table, writes bench/results/veth.json; never throws for a figure. */
export async function runVeth(): Promise<VethResult | null> {
  const rev = await revision();
  console.log(`\nostp plain-veth bench (network namespaces, no emulator), tree ${rev}`);
  if (!(await canUseNetns())) {
    console.log("  SKIPPED: needs Linux, root, `ip netns` and /dev/net/tun");
    return null;
  }
  if (!(await which("curl"))) {
    console.log("  SKIPPED: curl missing");
    return null;
  }
  const size = Math.round(envNum("OSTP_VETH_MIB", 512) * MiB);
  const runs = envNum("OSTP_VETH_RUNS", 3);
  const capS = envNum("OSTP_VETH_CAP_S", 120);
  const lulN = envNum("OSTP_VETH_LUL_N", 20);
  const bulkSize = Math.round(envNum("OSTP_VETH_LUL_BULK_MIB", 1024) * MiB);
  const only = Deno.env.get("OSTP_VETH_ONLY")?.split(",").map((s) => s.trim()).filter(Boolean);
  const peers = PEERS.filter((p) => !only || only.includes(p.id));

  const onSignal = () => {
    markInterrupted();
    console.log("\n  interrupted: cleaning up namespaces and processes");
    cleanupAll().finally(() => Deno.exit(130));
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);

  const result: VethResult = {
    machine: machine(),
    revision: rev,
    date: new Date().toISOString(),
    sizeMiB: size / MiB,
    runs,
    capSeconds: capS,
    kcptun: KCP_TUNING.join(" "),
    versions: {},
    veth: [],
    latency: [],
    skipped: [],
  };
  const usable: Peer[] = [];
  const tmp = await Deno.makeTempDir({ prefix: "ostp-bench-veth-" });
  const removeTmp = track(() => Deno.remove(tmp, { recursive: true }).catch(() => {}));
  try {
    const ccs = await prepareCc(["bbr"]);
    for (const p of peers) {
      const pkgs = p.pkg ? [p.pkg] : [];
      if (p.id === "wireguard-go") pkgs.push({ name: "wireguard-tools", bins: ["wg"] });
      let why: string | null = null;
      for (const k of pkgs) {
        why = why ?? await ensurePackage(k.name, k.bins);
        if (!why) result.versions[k.name] = await pkgVersion(k.name);
      }
      if (!why && !ccs.has(p.cc)) why = `congestion control ${p.cc} not available`;
      if (why) {
        result.skipped.push({ what: p.label, reason: why });
        console.log(`  SKIP ${p.label}: ${why}`);
        continue;
      }
      usable.push(p);
    }
    // The upload body: the origin's payload with another seed, from a file curl streams.
    const file = `${tmp}/upload.bin`;
    {
      const f = await Deno.open(file, { write: true, create: true, truncate: true });
      try {
        const chunk = 64 * MiB;
        for (let off = 0; off < size; off += chunk) {
          const n = Math.min(chunk, size - off);
          const buf = payload(n, 11 + off / chunk);
          for (let w = 0; w < n;) w += await f.write(buf.subarray(w));
        }
      } finally {
        f.close();
      }
    }
    console.log(
      `  ${usable.length} peers on plain veth: warm-up + ${runs} downloads + ${runs} uploads of ` +
        `${size / MiB} MiB each, curl -m ${capS}; kcptun ${KCP_TUNING.join(" ")}`,
    );
    for (const p of usable) {
      if (interrupted()) break;
      const t0 = performance.now();
      const row = await vethRow(p, size, runs, capS, file);
      result.veth.push(row);
      if (row.error) result.skipped.push({ what: `${p.label}, veth`, reason: row.error });
      console.log(
        `  veth ${pad(p.label, 18)} down ${lpad(num(row.downMbps), 6)} up ${
          lpad(num(row.upMbps), 6)
        } Mbit/s, ${num(row.mibPerCpuS.all)} MiB/CPU-s  (${
          ((performance.now() - t0) / 1000).toFixed(0)
        } s)${row.error ? "  " + row.error : ""}`,
      );
    }
    if (Deno.env.get("OSTP_VETH_LUL") !== "0") {
      console.log(
        `  latency under load: ${lulN} × /bytes/1024 alone, then beside a ${bulkSize / MiB} MiB ` +
          `download, through the emulator`,
      );
      for (const prof of ["rtt40", "rtt40-loss2"]) {
        for (const p of usable.filter((x) => !VETH_ONLY.has(x.id))) {
          if (interrupted()) break;
          const t0 = performance.now();
          const l = await loadedLatency(p, prof, lulN, bulkSize);
          result.latency.push(l);
          if (l.error) result.skipped.push({ what: `${p.label}, ${l.profile}`, reason: l.error });
          console.log(
            `  ${pad(l.profile, 20)} ${pad(p.label, 18)} ${num(l.idleMedianMs, 1)} → ${
              num(l.loadedMedianMs, 1)
            } ms (${l.ratio === null ? "–" : l.ratio.toFixed(2) + "×"}), bulk ${
              num(l.bulkMbps)
            } Mbit/s  (${((performance.now() - t0) / 1000).toFixed(0)} s)${
              l.error ? "  " + l.error : ""
            }`,
          );
        }
      }
    }
  } finally {
    await removeTmp();
    await cleanupAll();
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
  if (interrupted()) return null;

  console.log(
    `\nostp vs peers (${result.machine}), tree ${rev}\n` +
      `plain veth: median of ${runs} per direction after one unmeasured warm-up, ` +
      `${result.sizeMiB} MiB each; ` +
      (result.latency.length
        ? `latency: through the link emulator, ${lulN} small requests ` +
          `(median beside a ${bulkSize / MiB} MiB download / median alone); `
        : "") +
      `kcptun ${result.kcptun}; TCP bbr in every namespace\n`,
  );
  printTable(result, usable);
  if (result.latency.some((x) => x.bulkMbps !== null && !x.bulkStillRunning)) {
    console.log("  * the bulk download finished before the last small request");
  }
  if (result.skipped.length > 0) {
    console.log("\nskipped or failed:");
    for (const s of result.skipped) console.log(`  ${s.what}: ${s.reason}`);
  }
  const dir = new URL("../../bench/results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(new URL("veth.json", dir), JSON.stringify(result, null, 2) + "\n");
  console.log("\nwrote bench/results/veth.json");
  return result;
}

if (import.meta.main) await runVeth();

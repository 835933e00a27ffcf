/**
 * The network-namespace part of `deno task bench`: ostp against the peers
 * from Debian's packages, every one through the same emulated link (root only).
 *
 *   deno run -A tests/bench/peers.ts          # alone
 *   deno task bench                           # after the loopback part (OSTP_BENCH_PEERS=0 skips)
 *
 * Hosts: client, server and target namespaces of a {@link Testbed}; client ⇄
 * server through the project's link emulator (the impairment of a profile
 * applies to each direction), server ⇄ target a veth. The origin
 * (`tests/support/origin_main.ts`) always runs in the target namespace at
 * 10.202.0.2:8080, and every download is `curl` in the client namespace.
 *
 * - TCP cubic / TCP bbr: no tunnel. The client namespace routes 10.202.0.0/24
 *   via the server end of the emulated link, the server namespace forwards
 *   (ip_forward=1) and the target routes 10.201.0.0/24 back, so curl talks to
 *   the origin directly; the congestion control is set in all three namespaces
 *   (the sender is the origin, in the target namespace).
 * - shadowsocks-libev: ss-server (server ns, 10.201.0.2:8388) and ss-local
 *   (client ns, SOCKS5 on 127.0.0.1:1080), chacha20-ietf-poly1305, TCP with bbr
 *   in every namespace; curl --socks5-hostname.
 * - kcptun fast3 tuned: kcptun-client (client ns, TCP 127.0.0.1:12948) → UDP →
 *   kcptun-server (server ns, 10.201.0.2:29900) → TCP to the origin; curl
 *   fetches http://127.0.0.1:12948/… with the origin's Host header. Both ends
 *   `--mode fast3 --sndwnd 1024 --rcvwnd 1024 --nocomp` ({@link KCP_TUNING});
 *   defaults otherwise (crypt aes, FEC 10/3).
 * - ostp: server (server ns 10.201.0.2:8443) and client (client ns, SOCKS5 on
 *   127.0.0.1:1088) as `tests/support/tunnel_bed.ts` starts them, with the
 *   bench origin; curl --socks5-hostname.
 *
 * The origin is `tests/bench/bench_origin.ts` (the tests' payload, plus an
 * upload sink for `veth.ts`, which reuses these peers on a plain veth).
 *
 * Per (peer, profile): one unmeasured warm-up download through each tunnel,
 * then the median of three curl downloads (capped with `curl -m`;
 * a capped run counts with what it achieved), Mbit/s, and the CPU seconds of
 * the client-side and server-side daemon from /proc. Then the issue's target
 * ratios as PASS/MISS lines and a head-of-line figure for ostp. Writes
 * `bench/results/peers.json` and `bench/results/peers.svg`.
 *
 * Knobs (env): OSTP_PEERS_RUNS (3), OSTP_PEERS_CAP_S (60), OSTP_PEERS_SCALE
 * (1: multiplies payload sizes), OSTP_PEERS_ONLY (peer ids, comma-separated),
 * OSTP_PEERS_PROFILES (profile ids), OSTP_PEERS_HOL=0 (skip head-of-line),
 * OSTP_PEERS_HOL_BULK_RATE (rate-limit the bulk download beside the small requests).
 * @module
 */

import type { Daemon } from "../support/daemons.ts";
import type { Impairment } from "../support/linkemu.ts";
import { ADDR, canUseNetns, run, Testbed } from "../support/netns.ts";
import { which } from "../support/sh.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import { type ChartGroup, groupedBarSvg } from "./peers_svg.ts";

export const MiB = 1024 * 1024;
export const ORIGIN = `${ADDR.target}:8080`;
const dec = new TextDecoder();

export function envNum(name: string, dflt: number): number {
  const v = Deno.env.get(name);
  return v === undefined || v === "" ? dflt : Number(v);
}
function envList(name: string): string[] | null {
  const v = Deno.env.get(name);
  return v ? v.split(",").map((s) => s.trim()).filter(Boolean) : null;
}

/** A link profile: the impairment applies to each direction. */
export interface Profile {
  id: string;
  label: string;
  imp: Partial<Impairment>;
  sizeMiB: number;
}

/** The issue's four profiles. */
export const PROFILES: Profile[] = [
  { id: "clean", label: "clean", imp: {}, sizeMiB: 256 },
  { id: "rtt40", label: "40 ms RTT", imp: { delayMs: 20 }, sizeMiB: 64 },
  {
    id: "rtt40-loss2",
    label: "40 ms RTT + 2% loss",
    imp: { delayMs: 20, loss: 0.02 },
    sizeMiB: 64,
  },
  {
    id: "rtt40-loss10",
    label: "40 ms RTT + 10% loss",
    imp: { delayMs: 20, loss: 0.1 },
    sizeMiB: 64,
  },
];

export type Cc = "cubic" | "bbr";

/** A peer started on a testbed. */
export interface Running {
  client: Daemon | null;
  server: Daemon | null;
  /** curl arguments and URL for `/bytes/<n>` through this peer. */
  curl(path: string): string[];
  stop(): Promise<void>;
}

export interface Peer {
  id: string;
  label: string;
  /** TCP congestion control set in every namespace. */
  cc: Cc;
  /** What runs on the client side / server side (for the table). */
  daemons: [string, string] | null;
  /** Debian package and binaries it needs. */
  pkg?: { name: string; bins: string[] };
  start(tb: Testbed): Promise<Running>;
}

// ---------------------------------------------------------------------------
// Cleanup of everything started, also on SIGINT/SIGTERM.

const cleanups = new Set<() => Promise<void>>();
/** Registers a cleanup (run once, also on an interrupt); returns the function that runs it. */
export function track(fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | null = null;
  // Every caller waits for the one run (an interrupt and the normal path may
  // both get here).
  const once = () => {
    if (!running) {
      running = fn().finally(() => cleanups.delete(once));
    }
    return running;
  };
  cleanups.add(once);
  return once;
}
/** Set once an interrupt arrived: nothing new is started after it. */
let stopping = false;
/** True once an interrupt arrived. */
export function interrupted(): boolean {
  return stopping;
}
/** Marks the run interrupted: nothing new starts. */
export function markInterrupted(): void {
  stopping = true;
}
/** Runs every registered cleanup, newest first. */
export async function cleanupAll(): Promise<void> {
  while (cleanups.size > 0) {
    for (const fn of [...cleanups].reverse()) await fn().catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// Prerequisites.

/** Installs `pkg` with apt-get when a binary is missing; returns a skip reason or null. */
export async function ensurePackage(pkg: string, bins: string[]): Promise<string | null> {
  const missing = async () => {
    const out: string[] = [];
    for (const b of bins) if (!(await which(b))) out.push(b);
    return out;
  };
  if ((await missing()).length === 0) return null;
  if (!(await which("apt-get"))) return `${(await missing()).join(", ")} missing and no apt-get`;
  const apt = async (...args: string[]) => {
    const r = await new Deno.Command("apt-get", {
      args,
      stdout: "piped",
      stderr: "piped",
      env: { DEBIAN_FRONTEND: "noninteractive" },
    }).output();
    return r.success ? "" : dec.decode(r.stderr).trim().split("\n").slice(-1)[0];
  };
  console.log(`  installing ${pkg} (apt-get install -y ${pkg}) …`);
  let err = await apt("install", "-y", "--no-install-recommends", pkg);
  if (err) {
    await apt("update");
    err = await apt("install", "-y", "--no-install-recommends", pkg);
  }
  const still = await missing();
  if (still.length > 0) return `${still.join(", ")} missing; apt-get install ${pkg}: ${err}`;
  return null;
}

const SYSCTL_ALLOWED = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";
const SYSCTL_AVAILABLE = "/proc/sys/net/ipv4/tcp_available_congestion_control";

/**
 * Makes `ccs` usable as a namespace's default: a namespace other than the
 * initial one may only pick an algorithm listed in the (global)
 * tcp_allowed_congestion_control, so the missing ones are added there for the
 * bench and the list is restored afterwards. Returns the algorithms usable.
 */
export async function prepareCc(ccs: Cc[]): Promise<Set<Cc>> {
  const ok = new Set<Cc>();
  let available = (await Deno.readTextFile(SYSCTL_AVAILABLE)).trim().split(/\s+/);
  for (const cc of ccs) {
    if (!available.includes(cc)) await run("modprobe", `tcp_${cc}`).catch(() => {});
  }
  available = (await Deno.readTextFile(SYSCTL_AVAILABLE)).trim().split(/\s+/);
  const allowed = (await Deno.readTextFile(SYSCTL_ALLOWED)).trim();
  const want = [...new Set([...allowed.split(/\s+/), ...ccs.filter((c) => available.includes(c))])]
    .filter(Boolean);
  if (want.join(" ") !== allowed) {
    await run("sysctl", "-w", `net.ipv4.tcp_allowed_congestion_control=${want.join(" ")}`);
    track(async () => {
      await run("sysctl", "-w", `net.ipv4.tcp_allowed_congestion_control=${allowed}`);
    });
  }
  for (const cc of ccs) if (available.includes(cc)) ok.add(cc);
  return ok;
}

/** Sets the default TCP congestion control in the testbed's three namespaces. */
export async function setCc(tb: Testbed, cc: Cc): Promise<void> {
  for (const ns of [tb.client, tb.server, tb.target]) {
    await run(
      "ip",
      "netns",
      "exec",
      ns,
      "sysctl",
      "-q",
      "-w",
      `net.ipv4.tcp_congestion_control=${cc}`,
    );
  }
}

/** Lets the client namespace reach the target through the emulated link (plain TCP rows). */
export async function routeThrough(tb: Testbed): Promise<void> {
  await run("ip", "netns", "exec", tb.server, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
  await run("ip", "-n", tb.client, "route", "add", "10.202.0.0/24", "via", ADDR.server);
  await run("ip", "-n", tb.target, "route", "add", "10.201.0.0/24", "via", ADDR.serverLan);
}

/** The bench origin (`bench_origin.ts`: /bytes, /sink) in the target namespace. */
export async function startOrigin(tb: Testbed): Promise<Daemon> {
  const origin = tb.spawnDeno("origin", tb.target, "tests/bench/bench_origin.ts", [
    ADDR.target,
    "8080",
  ]);
  try {
    await origin.waitFor(/ready/);
  } catch (e) {
    await origin.stop();
    throw e;
  }
  return origin;
}

// ---------------------------------------------------------------------------
// Peers.

/** No tunnel: curl straight at the origin, routed through the server namespace. */
export function plainTcp(cc: Cc): Peer {
  return {
    id: `tcp-${cc}`,
    label: `TCP ${cc}`,
    cc,
    daemons: null,
    async start(tb) {
      await routeThrough(tb);
      const origin = await startOrigin(tb);
      return {
        client: null,
        server: null,
        curl: (path) => [`http://${ORIGIN}${path}`],
        stop: async () => {
          await origin.stop();
        },
      };
    },
  };
}

const SS_PASSWORD = "ostp-bench-" + crypto.randomUUID();
export const ssLibev: Peer = {
  id: "ss-libev",
  label: "ss-libev (bbr)",
  cc: "bbr",
  daemons: ["ss-local", "ss-server"],
  pkg: { name: "shadowsocks-libev", bins: ["ss-server", "ss-local"] },
  async start(tb) {
    const origin = await startOrigin(tb);
    const method = ["-k", SS_PASSWORD, "-m", "chacha20-ietf-poly1305"];
    const server = tb.spawn("ss-server", tb.server, "ss-server", [
      "-s",
      ADDR.server,
      "-p",
      "8388",
      ...method,
    ]);
    const client = tb.spawn("ss-local", tb.client, "ss-local", [
      "-s",
      ADDR.server,
      "-p",
      "8388",
      "-b",
      "127.0.0.1",
      "-l",
      "1080",
      ...method,
    ]);
    return {
      client,
      server,
      curl: (path) => ["--socks5-hostname", "127.0.0.1:1080", `http://${ORIGIN}${path}`],
      stop: async () => {
        await client.stop();
        await server.stop();
        await origin.stop();
      },
    };
  },
};

const KCP_KEY = "ostp-bench-" + crypto.randomUUID();
/**
 * kcptun tuned as its README advises for bulk transfers: fast3, windows of
 * 1024 packets each way (the defaults, 128/512 on the client, cap a 40 ms
 * path), compression off (the payload does not compress; snappy only costs CPU).
 */
export const KCP_TUNING = ["--mode", "fast3", "--sndwnd", "1024", "--rcvwnd", "1024", "--nocomp"];
export const kcptun: Peer = {
  id: "kcptun",
  label: "kcptun fast3 tuned",
  cc: "bbr",
  daemons: ["kcptun-client", "kcptun-server"],
  pkg: { name: "kcptun", bins: ["kcptun-server", "kcptun-client"] },
  async start(tb) {
    const origin = await startOrigin(tb);
    const common = ["--key", KCP_KEY, ...KCP_TUNING, "--quiet"];
    const server = tb.spawn("kcptun-server", tb.server, "kcptun-server", [
      "--listen",
      `${ADDR.server}:29900`,
      "--target",
      ORIGIN,
      ...common,
    ]);
    const client = tb.spawn("kcptun-client", tb.client, "kcptun-client", [
      "--localaddr",
      "127.0.0.1:12948",
      "--remoteaddr",
      `${ADDR.server}:29900`,
      ...common,
    ]);
    return {
      client,
      server,
      curl: (path) => ["-H", `Host: ${ORIGIN}`, `http://127.0.0.1:12948${path}`],
      stop: async () => {
        await client.stop();
        await server.stop();
        await origin.stop();
      },
    };
  },
};

export const ostp: Peer = {
  id: "ostp",
  label: "ostp",
  cc: "bbr",
  daemons: ["ostp client", "ostp server"],
  async start(tb) {
    // As tests/support/tunnel_bed.ts, with the bench origin (its /sink takes uploads).
    const key = formatAccessKey(generateAccessKey(), "hex");
    const origin = await startOrigin(tb);
    const server = tb.spawnDeno("server", tb.server, "server/main.ts", [
      "-k",
      key,
      "-l",
      `${ADDR.server}:8443`,
    ]);
    const proxyPort = 1088;
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
        `127.0.0.1:${proxyPort}`,
      ]);
      await client.waitFor(/connected to/);
    } catch (e) {
      await stop();
      throw e;
    }
    return {
      client,
      server,
      curl: (path) => ["--socks5-hostname", `127.0.0.1:${proxyPort}`, `http://${ORIGIN}${path}`],
      stop,
    };
  },
};

/** Every peer, in table order. */
const PEERS: Peer[] = [plainTcp("cubic"), plainTcp("bbr"), ssLibev, kcptun, ostp];

// ---------------------------------------------------------------------------
// Measuring.

interface RunResult {
  bytes: number;
  seconds: number;
  mbps: number;
  capped: boolean;
  clientCpuS: number | null;
  serverCpuS: number | null;
  error?: string;
}

interface Row {
  peer: string;
  peerLabel: string;
  profile: string;
  profileLabel: string;
  sizeMiB: number;
  capSeconds: number;
  runs: RunResult[];
  /** The unmeasured warm-up transfer (tunnels only). */
  warmup?: RunResult;
  mbps: number | null;
  clientCpuS: number | null;
  serverCpuS: number | null;
  daemons: [string, string] | null;
  note: string;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** A daemon's CPU seconds so far (null: no daemon, or not readable). */
export function cpu(d: Daemon | null): number | null {
  if (!d) return null;
  try {
    return d.cpuSeconds();
  } catch {
    return null;
  }
}

/** curl in the client namespace: bytes, seconds, exit code (-1: not HTTP 200). */
export async function curlIn(
  tb: Testbed,
  args: string[],
): Promise<{ code: number; bytes: number; seconds: number; err: string }> {
  const r = await tb.exec(tb.client, "curl", [
    "-sS",
    "-o",
    "/dev/null",
    "-w",
    "%{size_download} %{time_total} %{http_code}",
    ...args,
  ]);
  const [bytes, seconds, status] = dec.decode(r.stdout).trim().split(" ").map(Number);
  let err = dec.decode(r.stderr).trim();
  if (r.code === 0 && status !== 200) err = `HTTP ${status}`;
  return { code: r.code === 0 && status !== 200 ? -1 : r.code, bytes, seconds, err };
}

/** Retries a small request through the peer until it answers (the daemons are up). */
export async function waitReady(tb: Testbed, peer: Running, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < until) {
    const r = await curlIn(tb, ["-m", "5", ...peer.curl("/bytes/1024")]);
    if (r.code === 0 && r.bytes === 1024) return;
    last = r.err;
    await new Promise((res) => setTimeout(res, 250));
  }
  throw new Error(`not ready after ${timeoutMs} ms: ${last}`);
}

async function download(
  tb: Testbed,
  peer: Running,
  size: number,
  capS: number,
): Promise<RunResult> {
  const c0 = cpu(peer.client);
  const s0 = cpu(peer.server);
  const r = await curlIn(tb, ["-m", String(capS), ...peer.curl(`/bytes/${size}`)]);
  const c1 = cpu(peer.client);
  const s1 = cpu(peer.server);
  const capped = r.code === 28;
  const res: RunResult = {
    bytes: r.bytes || 0,
    seconds: r.seconds || 0,
    mbps: r.seconds > 0 ? (r.bytes * 8) / r.seconds / 1e6 : 0,
    capped,
    clientCpuS: c0 !== null && c1 !== null ? +(c1 - c0).toFixed(2) : null,
    serverCpuS: s0 !== null && s1 !== null ? +(s1 - s0).toFixed(2) : null,
  };
  if (r.code !== 0 && !capped) res.error = `curl exit ${r.code}: ${r.err}`;
  else if (!capped && r.bytes !== size) res.error = `short transfer: ${r.bytes} of ${size}`;
  return res;
}

/**
 * Runs `fn` on a fresh testbed (`profile`'s emulated link, or a plain veth
 * pair for "veth"), which is removed afterwards with every process left in it.
 */
export async function withTestbed<T>(
  profile: Profile | "veth",
  fn: (tb: Testbed) => Promise<T>,
): Promise<T> {
  if (stopping) throw new Error("interrupted");
  // The cleanup is registered before the testbed exists, so an interrupt
  // during its creation still removes it.
  const creating = profile === "veth"
    ? Testbed.createVeth()
    : Testbed.create(profile.imp, profile.imp, 7);
  const close = track(async () => {
    const tb = await creating.catch(() => null);
    if (!tb) return;
    // Any process still inside the namespaces (a curl, a daemon) was started
    // by this bench: end it by pid before the namespaces go.
    for (const ns of [tb.client, tb.server, tb.target]) {
      const pids = await run("ip", "netns", "pids", ns).catch(() => "");
      for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // gone already
        }
      }
    }
    await tb.close();
  });
  const tb = await creating;
  try {
    return await fn(tb);
  } finally {
    await close();
  }
}

/**
 * Runs `fn` with `peer` started on a fresh testbed ({@link withTestbed}) and
 * TCP set to `cc`: first the origin builds its payload of `warmBytes` inside
 * the target namespace (not over the link), then {@link waitReady}; the peer
 * is stopped afterwards.
 */
export async function withPeer<T>(
  profile: Profile | "veth",
  peer: Peer,
  cc: Cc,
  warmBytes: number,
  fn: (tb: Testbed, running: Running) => Promise<T>,
): Promise<T> {
  return await withTestbed(profile, async (tb) => {
    await setCc(tb, cc);
    const starting = peer.start(tb);
    const stop = track(async () => await (await starting.catch(() => null))?.stop());
    const running = await starting;
    try {
      await tb.exec(tb.target, "curl", [
        "-sS",
        "-o",
        "/dev/null",
        `http://${ORIGIN}/bytes/${warmBytes}`,
      ]);
      await waitReady(tb, running);
      return await fn(tb, running);
    } finally {
      await stop();
    }
  });
}

/** `n` small requests (`/bytes/1024`, a new connection each) one after another: ms each. */
export async function smallRequests(tb: Testbed, running: Running, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await curlIn(tb, ["-m", "20", ...running.curl("/bytes/1024")]);
    if (r.code !== 0) throw new Error(`small request: ${r.err}`);
    out.push(r.seconds * 1000);
  }
  return out;
}

/**
 * Runs `during` beside a bulk download of `bulkSize` bytes through `running`
 * (curl -m `capS`, plus `curlArgs`), started 2 s before it so the transfer
 * ramps up. The download streams into this process, which counts the bytes,
 * so its rate while `during` ran is known (Mbit/s, unrounded); the download
 * is ended afterwards.
 */
export async function besideBulk<T>(
  tb: Testbed,
  running: Running,
  bulkSize: number,
  capS: number,
  curlArgs: string[],
  during: () => Promise<T>,
): Promise<{ result: T; bulkMbps: number; bulkStillRunning: boolean }> {
  const bulk = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      tb.client,
      "curl",
      "-sS",
      "-o",
      "-",
      "-m",
      String(capS),
      ...curlArgs,
      ...running.curl(`/bytes/${bulkSize}`),
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let bulkBytes = 0;
  let finished = false;
  const reader = (async () => {
    for await (const chunk of bulk.stdout) bulkBytes += chunk.length;
  })().catch(() => {}).finally(() => {
    finished = true;
  });
  const killBulk = track(async () => {
    try {
      bulk.kill("SIGTERM");
    } catch {
      // already exited
    }
    await bulk.status;
    await reader;
  });
  try {
    await new Promise((r) => setTimeout(r, 2000)); // let the bulk transfer ramp up
    const b0 = bulkBytes;
    const t0 = performance.now();
    const result = await during();
    const bulkMbps = ((bulkBytes - b0) * 8) / ((performance.now() - t0) / 1000) / 1e6;
    return { result, bulkMbps, bulkStillRunning: !finished };
  } finally {
    await killBulk();
  }
}

async function measureRow(
  peer: Peer,
  profile: Profile,
  runs: number,
  capS: number,
  scale: number,
): Promise<Row> {
  const size = Math.round(profile.sizeMiB * scale * MiB);
  const row: Row = {
    peer: peer.id,
    peerLabel: peer.label,
    profile: profile.id,
    profileLabel: profile.label,
    sizeMiB: size / MiB,
    capSeconds: capS,
    runs: [],
    mbps: null,
    clientCpuS: null,
    serverCpuS: null,
    daemons: peer.daemons,
    note: "",
  };
  await withPeer(profile, peer, peer.cc, size, async (tb, running) => {
    // One unmeasured transfer through every tunnel (JIT, windows, caches).
    if (peer.daemons) row.warmup = await download(tb, running, size, capS);
    for (let i = 0; i < runs; i++) row.runs.push(await download(tb, running, size, capS));
  });
  const good = row.runs.filter((r) => !r.error);
  const errors = row.runs.filter((r) => r.error);
  if (good.length > 0) {
    row.mbps = median(good.map((r) => r.mbps));
    const cc = good.map((r) => r.clientCpuS).filter((v): v is number => v !== null);
    const sc = good.map((r) => r.serverCpuS).filter((v): v is number => v !== null);
    row.clientCpuS = cc.length ? median(cc) : null;
    row.serverCpuS = sc.length ? median(sc) : null;
  }
  const capped = good.filter((r) => r.capped);
  const notes: string[] = [];
  if (capped.length > 0) {
    notes.push(
      `${capped.length}/${row.runs.length} capped at ${capS} s (got ${
        capped.map((r) => (r.bytes / MiB).toFixed(1)).join("/")
      } MiB)`,
    );
  }
  if (errors.length > 0) notes.push(`${errors.length} failed: ${errors[0].error}`);
  row.note = notes.join("; ");
  return row;
}

// ---------------------------------------------------------------------------
// Head-of-line: small requests beside a bulk ostp download.

interface HolResult {
  profile: string;
  requests: number;
  idleMedianMs: number;
  loadedMedianMs: number;
  ratio: number;
  idleMs: number[];
  loadedMs: number[];
  /** Bulk throughput while the small requests ran. */
  bulkMbps: number;
  bulkStillRunning: boolean;
}

async function headOfLine(n = 20): Promise<HolResult> {
  const profile = PROFILES.find((p) => p.id === "rtt40-loss2")!;
  const bulkSize = 256 * MiB;
  return await withPeer(profile, ostp, "bbr", bulkSize, async (tb, running) => {
    const idleMs = await smallRequests(tb, running, n);
    // OSTP_PEERS_HOL_BULK_RATE (curl --limit-rate, e.g. 20M) shows how the
    // figure depends on the bulk transfer's load.
    const rate = Deno.env.get("OSTP_PEERS_HOL_BULK_RATE");
    const bulk = await besideBulk(
      tb,
      running,
      bulkSize,
      120,
      rate ? ["--limit-rate", rate] : [],
      () => smallRequests(tb, running, n),
    );
    const loadedMs = bulk.result;
    const idle = median(idleMs);
    const loaded = median(loadedMs);
    return {
      profile: profile.label,
      requests: n,
      idleMedianMs: +idle.toFixed(1),
      loadedMedianMs: +loaded.toFixed(1),
      ratio: +(loaded / idle).toFixed(3),
      idleMs: idleMs.map((v) => +v.toFixed(1)),
      loadedMs: loadedMs.map((v) => +v.toFixed(1)),
      bulkMbps: +bulk.bulkMbps.toFixed(1),
      bulkStillRunning: bulk.bulkStillRunning,
    };
  });
}

// ---------------------------------------------------------------------------
// Report.

interface Target {
  name: string;
  profile: string;
  num: string;
  den: string;
  /** Required ratio num/den (≥). */
  atLeast: number;
  ratio: number | null;
  verdict: "PASS" | "MISS" | "SKIP";
  reason?: string;
}

const TARGETS: { name: string; profile: string; num: string; den: string; atLeast: number }[] = [
  {
    name: "clean: ostp ≥ 20% of shadowsocks-libev",
    profile: "clean",
    num: "ostp",
    den: "ss-libev",
    atLeast: 0.2,
  },
  {
    name: "40ms+2%: ostp ≥ kcptun fast3 tuned",
    profile: "rtt40-loss2",
    num: "ostp",
    den: "kcptun",
    atLeast: 1,
  },
  {
    name: "40ms+2%: ostp ≥ 80% of ss-libev over bbr",
    profile: "rtt40-loss2",
    num: "ostp",
    den: "ss-libev",
    atLeast: 0.8,
  },
  {
    name: "40ms+10%: ostp ≥ kcptun fast3 tuned",
    profile: "rtt40-loss10",
    num: "ostp",
    den: "kcptun",
    atLeast: 1,
  },
  {
    name: "40ms+10%: ostp ≥ 10× TCP cubic",
    profile: "rtt40-loss10",
    num: "ostp",
    den: "tcp-cubic",
    atLeast: 10,
  },
];

export function pad(s: string, n: number): string {
  return s.length >= n ? s : s + " ".repeat(n - s.length);
}
export function lpad(s: string, n: number): string {
  return s.length >= n ? s : " ".repeat(n - s.length) + s;
}
function f(v: number | null, digits: number): string {
  return v === null ? "–" : v.toFixed(digits);
}

function printTable(rows: Row[]): void {
  const head = [
    pad("profile", 22),
    pad("peer", 19),
    lpad("MiB", 5),
    lpad("Mbit/s", 8),
    lpad("runs (Mbit/s)", 22),
    lpad("cli CPU s", 10),
    lpad("srv CPU s", 10),
    "  note",
  ].join(" ");
  console.log(head);
  console.log("-".repeat(head.length));
  let last = "";
  for (const r of rows) {
    const runs = r.runs.map((x) => x.error ? "err" : x.mbps.toFixed(x.mbps < 10 ? 2 : 0))
      .join(" / ");
    console.log(
      [
        pad(r.profile === last ? "" : r.profileLabel, 22),
        pad(r.peerLabel, 19),
        lpad(String(r.sizeMiB), 5),
        lpad(f(r.mbps, r.mbps !== null && r.mbps < 10 ? 2 : 1), 8),
        lpad(runs, 22),
        lpad(r.daemons ? f(r.clientCpuS, 2) : "–", 10),
        lpad(r.daemons ? f(r.serverCpuS, 2) : "–", 10),
        r.note ? "  " + r.note : "",
      ].join(" "),
    );
    last = r.profile;
  }
}

export function machine(): string {
  let cpuName = "";
  try {
    cpuName = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "";
  } catch {
    // not Linux
  }
  return `${Deno.build.os}/${Deno.build.arch}, ${navigator.hardwareConcurrency} cores${
    cpuName ? ` (${cpuName.trim()})` : ""
  }, deno ${Deno.version.deno}, kernel ${Deno.osRelease()}`;
}

/** The working tree the figures come from: commit, "+dirty" when files differ. */
export async function revision(): Promise<string> {
  const root = new URL("../../", import.meta.url).pathname;
  try {
    const head = (await run("git", "-C", root, "rev-parse", "--short", "HEAD")).trim();
    const dirty = (await run("git", "-C", root, "status", "--porcelain", "--untracked-files=no"))
      .trim();
    return head + (dirty ? "+dirty" : "");
  } catch {
    return "unknown";
  }
}

export async function pkgVersion(pkg: string): Promise<string | null> {
  try {
    const out = await run("dpkg-query", "-W", "-f", "${Version}", pkg);
    return out.trim() || null;
  } catch {
    return null;
  }
}

/** Runs the whole suite; never throws for a miss, only prints. */
export async function runPeers(): Promise<void> {
  const rev = await revision();
  console.log(`\nostp peers bench (network namespaces, emulated link), tree ${rev}`);
  if (!(await canUseNetns())) {
    console.log("  SKIPPED: needs Linux, root, `ip netns` and /dev/net/tun");
    return;
  }
  if (!(await which("curl"))) {
    console.log("  SKIPPED: curl missing");
    return;
  }
  const runs = envNum("OSTP_PEERS_RUNS", 3);
  const capS = envNum("OSTP_PEERS_CAP_S", 60);
  const scale = envNum("OSTP_PEERS_SCALE", 1);
  const onlyPeers = envList("OSTP_PEERS_ONLY");
  const onlyProfiles = envList("OSTP_PEERS_PROFILES");
  const peers = PEERS.filter((p) => !onlyPeers || onlyPeers.includes(p.id));
  const profiles = PROFILES.filter((p) => !onlyProfiles || onlyProfiles.includes(p.id));

  const onSignal = () => {
    stopping = true;
    console.log("\n  interrupted: cleaning up namespaces and processes");
    cleanupAll().finally(() => Deno.exit(130));
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);

  const skipped: { what: string; reason: string }[] = [];
  const rows: Row[] = [];
  const versions: Record<string, string | null> = {};
  let hol: HolResult | null = null;
  try {
    // Prerequisites: packages, congestion controls.
    const usable: Peer[] = [];
    const ccs = await prepareCc(["cubic", "bbr"]);
    for (const p of peers) {
      if (p.pkg) {
        const why = await ensurePackage(p.pkg.name, p.pkg.bins);
        if (why) {
          skipped.push({ what: p.label, reason: why });
          console.log(`  SKIP ${p.label}: ${why}`);
          continue;
        }
        versions[p.pkg.name] = await pkgVersion(p.pkg.name);
      }
      if (!ccs.has(p.cc)) {
        const why = `congestion control ${p.cc} not available (modprobe tcp_${p.cc} failed)`;
        skipped.push({ what: p.label, reason: why });
        console.log(`  SKIP ${p.label}: ${why}`);
        continue;
      }
      usable.push(p);
    }
    console.log(
      `  ${usable.length} peers × ${profiles.length} profiles, median of ${runs}, curl -m ${capS}` +
        `; sizes ${profiles.map((p) => `${p.label} ${p.sizeMiB * scale} MiB`).join(", ")}`,
    );
    for (const profile of profiles) {
      for (const peer of usable) {
        if (stopping) break;
        const t0 = performance.now();
        let row: Row;
        try {
          row = await measureRow(peer, profile, runs, capS, scale);
        } catch (e) {
          const why = e instanceof Error ? e.message.split("\n")[0] : String(e);
          skipped.push({ what: `${peer.label}, ${profile.label}`, reason: why });
          row = {
            peer: peer.id,
            peerLabel: peer.label,
            profile: profile.id,
            profileLabel: profile.label,
            sizeMiB: profile.sizeMiB * scale,
            capSeconds: capS,
            runs: [],
            mbps: null,
            clientCpuS: null,
            serverCpuS: null,
            daemons: peer.daemons,
            note: `failed: ${why}`,
          };
        }
        rows.push(row);
        console.log(
          `  ${pad(profile.label, 22)} ${pad(peer.label, 19)} ${lpad(f(row.mbps, 1), 8)} Mbit/s  (${
            ((performance.now() - t0) / 1000).toFixed(0)
          } s)${row.note ? "  " + row.note : ""}`,
        );
      }
    }
    if (
      !stopping && Deno.env.get("OSTP_PEERS_HOL") !== "0" &&
      profiles.some((p) => p.id === "rtt40-loss2")
    ) {
      try {
        hol = await headOfLine();
      } catch (e) {
        const why = e instanceof Error ? e.message.split("\n")[0] : String(e);
        skipped.push({ what: "head-of-line", reason: why });
      }
    }
  } finally {
    await cleanupAll();
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }

  if (stopping) return; // interrupted: keep the last complete results

  // Ceiling: plain TCP on the clean profile (the better of cubic and bbr).
  const cleanTcp = rows.filter((r) => r.profile === "clean" && r.peer.startsWith("tcp-"))
    .map((r) => r.mbps).filter((v): v is number => v !== null);
  const ceiling = cleanTcp.length ? Math.max(...cleanTcp) : null;

  const get = (profile: string, peer: string) =>
    rows.find((r) => r.profile === profile && r.peer === peer)?.mbps ?? null;
  const targets: Target[] = TARGETS.map((t) => {
    const num = get(t.profile, t.num);
    const den = get(t.profile, t.den);
    if (num === null || den === null || den === 0) {
      return { ...t, ratio: null, verdict: "SKIP", reason: "a figure is missing" };
    }
    const ratio = num / den;
    return { ...t, ratio, verdict: ratio >= t.atLeast ? "PASS" : "MISS" };
  });

  console.log(
    `\nostp peers bench (${machine()}), tree ${rev}\n` +
      `median of ${runs} curl downloads per row after one unmeasured warm-up (tunnels), ` +
      `client ⇄ server through the link emulator (impairment each way), origin in the target ` +
      `namespace; kcptun ${KCP_TUNING.join(" ")}\n`,
  );
  printTable(rows);
  console.log(
    `\nemulator ceiling (plain TCP, clean): ${
      ceiling === null ? "not measured" : `${ceiling.toFixed(1)} Mbit/s`
    }`,
  );
  console.log("\ntargets (same run):");
  for (const t of targets) {
    const pct = t.atLeast < 1;
    const want = pct ? `≥ ${(t.atLeast * 100).toFixed(0)}%` : `≥ ${t.atLeast}×`;
    const got = t.ratio === null
      ? "–"
      : pct
      ? `${(t.ratio * 100).toFixed(1)}%`
      : `${t.ratio.toFixed(2)}×`;
    console.log(
      `  ${t.verdict}  ${pad(t.name, 48)} ${lpad(got, 7)} (want ${want}: ${t.num} ${
        f(get(t.profile, t.num), 1)
      } vs ${t.den} ${f(get(t.profile, t.den), 1)} Mbit/s)${t.reason ? ` — ${t.reason}` : ""}`,
    );
  }
  if (hol) {
    console.log(
      `\nhead-of-line (ostp, ${hol.profile}, ${hol.requests} × /bytes/1024 on their own streams):`,
    );
    console.log(`  median alone          ${hol.idleMedianMs.toFixed(1).padStart(8)} ms`);
    console.log(
      `  median beside bulk    ${hol.loadedMedianMs.toFixed(1).padStart(8)} ms` +
        ` (bulk ${hol.bulkMbps.toFixed(1)} Mbit/s meanwhile${
          hol.bulkStillRunning ? "" : ", finished before the last request"
        })`,
    );
    console.log(
      `  ${hol.ratio <= 1.5 ? "PASS" : "MISS"}  ratio ${hol.ratio.toFixed(2)}× (want ≤ 1.5×)`,
    );
  } else {
    console.log("\nhead-of-line: not measured");
  }
  if (skipped.length > 0) {
    console.log("\nskipped:");
    for (const s of skipped) console.log(`  ${s.what}: ${s.reason}`);
  }

  const dir = new URL("../../bench/results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  const result = {
    machine: machine(),
    revision: rev,
    date: new Date().toISOString(),
    runs,
    capSeconds: capS,
    versions,
    wiring: {
      "tcp-cubic / tcp-bbr":
        "curl (client ns) → origin 10.202.0.2:8080 routed via the emulated link, server ns forwards",
      "ss-libev":
        "curl --socks5-hostname → ss-local 127.0.0.1:1080 (client ns) → ss-server 10.201.0.2:8388 (server ns) → origin; chacha20-ietf-poly1305, bbr",
      kcptun:
        `curl -H Host → kcptun-client 127.0.0.1:12948 (client ns) → UDP → kcptun-server 10.201.0.2:29900 (server ns) → origin; ${
          KCP_TUNING.join(" ")
        }`,
      ostp:
        "curl --socks5-hostname → ostp client 127.0.0.1:1088 (client ns) → UDP → ostp server 10.201.0.2:8443 (server ns) → origin",
    },
    profiles: profiles.map((p) => ({ ...p, sizeMiB: p.sizeMiB * scale })),
    ceilingMbps: ceiling,
    rows,
    targets,
    headOfLine: hol,
    skipped,
  };
  await Deno.writeTextFile(new URL("peers.json", dir), JSON.stringify(result, null, 2) + "\n");
  const groups: ChartGroup[] = profiles.map((p) => ({
    label: p.label,
    bars: peers.map((peer) => {
      const row = rows.find((r) => r.profile === p.id && r.peer === peer.id);
      return {
        peer: peer.label,
        mbps: row?.mbps ?? null,
        capped: !!row && row.runs.length > 0 && row.runs.every((x) => x.capped),
      };
    }),
  }));
  await Deno.writeTextFile(
    new URL("peers.svg", dir),
    groupedBarSvg(
      `ostp vs peers through the emulated link (median of ${runs}, curl download)`,
      groups,
      peers.map((p) => p.label),
      ceiling,
    ),
  );
  console.log(`\nwrote bench/results/peers.json and bench/results/peers.svg`);
}

if (import.meta.main) await runPeers();

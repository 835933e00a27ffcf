/**
 * Runs the VPN mode's subcommands: `vpn up` (until SIGINT/SIGTERM or
 * `vpn down`), `vpn down` and `vpn self-test`. The decisions are in
 * `vpn_mode.ts`; this module resolves, opens and changes things.
 * @module
 */

import { getLog, setupLogging } from "../../shared/log.ts";
import { setBypass } from "../../shared/net/bypass.ts";
import { dialMarked } from "../../ffi/tcp_linux.ts";

import { processAlive } from "../../shared/host/journal.ts";
import { downAndReport, tunDryRun, TunMode, undoLeftovers } from "../tun/tun_mode.ts";
import { HttpConnectOutbound } from "../outbound/http_connect.ts";
import {
  addressesOf,
  buildQuery,
  isDnsError,
  parseResponse,
  RecordType,
} from "../../shared/dns/message.ts";
import { KILL_SWITCH_NAME } from "../tun/kill_switch.ts";
import type { VpnOptions } from "./vpn_cli.ts";
import {
  firewallBackend,
  nameserversOf,
  vpnDryRunLines,
  type VpnPlan,
  vpnPlan,
  vpnRouter,
} from "./vpn_mode.ts";

const log = getLog("client.vpn");
const dec = new TextDecoder();

/** True when `cmd` is on PATH. */
async function which(cmd: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    try {
      const st = await Deno.stat(`${dir}/${cmd}`);
      if (st.isFile) return true;
    } catch { /* not here */ }
  }
  return false;
}

function pidPath(stateDir: string): string {
  return `${stateDir.replace(/\/+$/, "")}/vpn.pid`;
}

/** The proxy's addresses: `--proxy-ip`, or its name resolved (A and AAAA) before anything changes. */
async function proxyAddresses(o: VpnOptions): Promise<string[]> {
  if (o.proxyIps.length > 0) return [];
  const out: string[] = [];
  for (const type of ["A", "AAAA"] as const) {
    try {
      out.push(...await Deno.resolveDns(o.proxy.host, type));
    } catch { /* none of this type */ }
  }
  if (out.length === 0) {
    throw new Error(`cannot resolve the proxy ${o.proxy.host}: give its address with --proxy-ip`);
  }
  return out;
}

async function systemResolvers(): Promise<string[]> {
  try {
    return nameserversOf(await Deno.readTextFile("/etc/resolv.conf"));
  } catch {
    return [];
  }
}

/** Everything decided, from the options and what this machine has. */
async function plan(o: VpnOptions): Promise<VpnPlan> {
  return vpnPlan(o, {
    proxyIps: await proxyAddresses(o),
    systemDns: await systemResolvers(),
    backend: o.killSwitch ? await firewallBackend(which, Deno.env.get("OSTP_FIREWALL")) : null,
  });
}

function hostChangesDeps(p: VpnPlan) {
  return {
    servers: p.proxyIps,
    excludeCidrs: p.allowedDns.map((ip) => (ip.includes(":") ? `${ip}/128` : `${ip}/32`)),
    firstChanges: p.killSwitch,
  };
}

/** `vpn up`: resolves with the exit code once stopped (SIGINT, SIGTERM, `vpn down`). */
export async function vpnUp(o: VpnOptions, warnings: string[]): Promise<number> {
  let logFile: Deno.FsFile | null = null;
  const logPath = `${o.stateDir.replace(/\/+$/, "")}/vpn.log`;
  const enc = new TextEncoder();
  if (!o.dryRun) {
    try {
      await Deno.mkdir(o.stateDir, { recursive: true, mode: 0o700 });
      logFile = await Deno.open(logPath, { append: true, create: true, mode: 0o600 });
    } catch (e) {
      console.error(`ostp-client vpn: state directory ${o.stateDir}: ${(e as Error).message}`);
      return 1;
    }
  }
  await setupLogging({ level: o.verbose ? "debug" : "info", format: "text" }, {
    output: (line) => {
      Deno.stderr.writeSync(enc.encode(line + "\n"));
      try {
        logFile?.writeSync(enc.encode(line + "\n"));
      } catch { /* the log file is best effort */ }
    },
  });
  for (const w of warnings) log.warn(w);
  const closeLog = async (remove: boolean) => {
    logFile?.close();
    logFile = null;
    if (remove) await Deno.remove(logPath).catch(() => {});
  };
  let p: VpnPlan;
  try {
    p = await plan(o);
  } catch (e) {
    console.error(`ostp-client vpn: ${(e as Error).message}`);
    await closeLog(!o.keepLogs);
    return 1;
  }
  if (o.dryRun) {
    const lines = vpnDryRunLines(p, tunDryRun(p.tun, hostChangesDeps(p)));
    console.log(["dry run: nothing is changed", ...lines.map((l) => `  ${l}`)].join("\n"));
    return 0;
  }
  // A crashed run's leftovers (any TUN name under this state directory) go first.
  for (const { path, report } of await undoLeftovers(o.stateDir).catch(() => [])) {
    log.warn("undid {n} change(s) a previous run left ({path})", { n: report.undone.length, path });
    for (const f of report.failed) log.warn("could not undo {what}: {error}", f);
  }
  setBypass({ mark: p.tun.mark, dial: dialMarked });
  const router = vpnRouter(p, o.killSwitch);
  let tun: TunMode;
  try {
    tun = await TunMode.start(p.tun, { router, ...hostChangesDeps(p) });
  } catch (e) {
    setBypass(null);
    await router.close?.();
    const msg = (e as Error).message;
    console.error(
      `ostp-client vpn: cannot start: ${msg}` +
        (/CAP_NET_ADMIN|permission|not permitted/i.test(msg)
          ? "\n  run as root, or give the binary the capability: " +
            "sudo setcap cap_net_admin=eip ./ostp-client (docs/vpn.md)"
          : ""),
    );
    await closeLog(!o.keepLogs);
    return 1;
  }
  await Deno.writeTextFile(pidPath(o.stateDir), `${Deno.pid}\n`, { mode: 0o600 });
  log.info("vpn up: every TCP connection goes through {proxy} ({ips}); kill switch {ks}", {
    proxy: `${o.proxy.host}:${o.proxy.port}`,
    ips: p.proxyIps.join(", "),
    ks: o.killSwitch ? "on" : "off",
  });
  const { promise: done, resolve } = Promise.withResolvers<void>();
  const stop = () => resolve();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await done;
  log.info("vpn down: undoing the host changes");
  await tun.stop();
  setBypass(null);
  await router.close?.();
  await Deno.remove(pidPath(o.stateDir)).catch(() => {});
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  await closeLog(!o.keepLogs);
  return 0;
}

/**
 * `vpn down`: stops a running `vpn up` (SIGTERM to the pid in the state
 * directory, which undoes its changes), then undoes whatever a crashed run
 * left. Exit 1 when something could not be undone.
 */
export async function vpnDown(stateDir: string): Promise<number> {
  let pid = 0;
  try {
    pid = Number((await Deno.readTextFile(pidPath(stateDir))).trim());
  } catch { /* no running VPN */ }
  if (pid > 0 && pid !== Deno.pid && processAlive(pid)) {
    try {
      Deno.kill(pid, "SIGTERM");
      const until = Date.now() + 15_000;
      while (processAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      console.log(
        processAlive(pid) ? `process ${pid} did not stop` : `stopped the VPN (process ${pid})`,
      );
    } catch (e) {
      console.error(`cannot stop process ${pid}: ${(e as Error).message}`);
    }
  }
  const code = await downAndReport(stateDir, "ostp-client vpn down", pid > 0);
  await Deno.remove(pidPath(stateDir)).catch(() => {});
  return code;
}

async function readExactly(r: { read(b: Uint8Array): Promise<number | null> }, n: number) {
  const out = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const k = await r.read(out.subarray(got));
    if (k === null) throw new Error("connection closed early");
    got += k;
  }
  return out;
}

function answerText(buf: Uint8Array): string {
  const r = parseResponse(buf);
  if (isDnsError(r)) return `malformed answer (${r})`;
  const a = addressesOf(r);
  if (!a) return `rcode ${r.rcode}, no address`;
  return a.addresses.map((b) =>
    b.length === 4 ? [...b].join(".") : [...b].map((x) => x.toString(16).padStart(2, "0")).join("")
      .replace(/(.{4})(?!$)/g, "$1:")
  ).join(", ");
}

async function run(argv: string[]): Promise<string> {
  try {
    const r = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    return (dec.decode(r.stdout) + dec.decode(r.stderr)).trim() || "(empty)";
  } catch (e) {
    return `(${argv[0]}: ${(e as Error).message})`;
  }
}

/**
 * `vpn self-test`: resolves a name through the allowed resolver (UDP) and
 * over the proxy (DNS over TCP through CONNECT), then prints the routing
 * rules and the firewall table it finds. Exit 1 when a lookup failed.
 */
export async function vpnSelfTest(o: VpnOptions): Promise<number> {
  let p: VpnPlan;
  try {
    p = await plan({ ...o, killSwitch: false });
  } catch (e) {
    console.error(`ostp-client vpn self-test: ${(e as Error).message}`);
    return 1;
  }
  const out: string[] = [];
  let failed = 0;
  const resolver = p.dns[0];
  const query = buildQuery((Math.random() * 65535) | 0, o.testName, RecordType.A);
  // 1. The allowed resolver, directly (UDP).
  const udp = Deno.listenDatagram({
    transport: "udp",
    hostname: resolver.includes(":") ? "::" : "0.0.0.0",
    port: 0,
  });
  try {
    await udp.send(query, { transport: "udp", hostname: resolver, port: 53 });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const got = await Promise.race([
      udp.receive().then(([d]) => d),
      new Promise<null>((r) => timer = setTimeout(() => r(null), 3000)),
    ]);
    clearTimeout(timer);
    if (got) out.push(`DNS ${o.testName} via ${resolver} (UDP): ${answerText(got)}`);
    else {
      failed++;
      out.push(`DNS ${o.testName} via ${resolver} (UDP): no answer in 3 s`);
    }
  } catch (e) {
    failed++;
    out.push(`DNS ${o.testName} via ${resolver} (UDP): ${(e as Error).message}`);
  } finally {
    udp.close();
  }
  // 2. Over the proxy: DNS over TCP through CONNECT resolver:53.
  const proxy = new HttpConnectOutbound({ name: "proxy", proxy: p.proxy, connectTimeoutMs: 5000 });
  try {
    const conn = await proxy.dial({
      inbound: "self-test",
      network: "tcp",
      target: { host: resolver, port: 53 },
    });
    try {
      const framed = new Uint8Array(2 + query.length);
      framed[0] = query.length >> 8;
      framed[1] = query.length & 255;
      framed.set(query, 2);
      await conn.write(framed);
      const len = await readExactly(conn, 2);
      const answer = await readExactly(conn, (len[0] << 8) | len[1]);
      out.push(
        `DNS ${o.testName} via ${resolver} over the proxy (TCP, CONNECT): ${answerText(answer)}`,
      );
    } finally {
      conn.close();
    }
  } catch (e) {
    failed++;
    out.push(`DNS over the proxy (CONNECT ${resolver}:53): ${(e as Error).message}`);
  }
  // 3. What is in force on this machine now.
  out.push("ip rule:", await run(["ip", "rule"]));
  out.push(
    `ip route show table ${p.tun.table}:`,
    await run(["ip", "route", "show", "table", String(p.tun.table)]),
  );
  const backend = await firewallBackend(which, Deno.env.get("OSTP_FIREWALL"));
  if (backend === "nft") {
    out.push(
      `nft list table inet ${KILL_SWITCH_NAME}:`,
      await run(["nft", "list", "table", "inet", KILL_SWITCH_NAME]),
    );
  } else if (backend === "iptables") {
    out.push(
      `iptables -S ${KILL_SWITCH_NAME.toUpperCase()}:`,
      await run(["iptables", "-S", KILL_SWITCH_NAME.toUpperCase()]),
    );
  } else out.push("firewall: neither nft nor iptables found");
  console.log(out.join("\n"));
  return failed > 0 ? 1 : 0;
}

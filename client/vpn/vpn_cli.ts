/**
 * `ostp-client vpn …`: the upstream-proxy VPN mode's command line (docs/vpn.md).
 *
 *     ostp-client vpn [up] --proxy-url http://alice:secret@192.0.2.10:8080
 *     ostp-client vpn up --proxy-host proxy.example.com --proxy-port 8080 --username alice \
 *         --password-file /path/to/secret --tun-name tun0 --tun-cidr 10.255.255.1/30
 *     ostp-client vpn down [--state-dir DIR]
 *     ostp-client vpn self-test (same proxy and DNS options) [--name example.com]
 *
 * Parsing only: nothing is resolved, opened or changed here.
 * @module
 */

import { baseCommand, type EarlyResult, runCommander } from "../../shared/cli.ts";
import { parseIpInto } from "../../shared/net/cidr.ts";
import { type HttpProxyUrl, parseProxyUrl, ProxyUrlError } from "../outbound/http_connect.ts";
import type { TunAddress } from "../../shared/config/tun_config.ts";

/** Environment variable that may hold the proxy password (kept out of `ps`). */
export const ENV_PROXY_PASSWORD = "OSTP_PROXY_PASSWORD";

/** Default state directory of the VPN mode (journal, pid file, log). */
export const VPN_STATE_DIR = "/run/ostp";

/** Everything `vpn up` and `vpn self-test` run with. */
export interface VpnOptions {
  /** The upstream proxy (credentials included: never log it whole). */
  proxy: HttpProxyUrl;
  /** Addresses of the proxy given with `--proxy-ip` (then its name is not resolved). */
  proxyIps: string[];
  /** Resolvers the machine's DNS goes to (through the TUN's DNS relay); empty: from resolv.conf. */
  dns: string[];
  /** More resolvers allowed past the kill switch. */
  allowDns: string[];
  /** Kill switch on (the default). */
  killSwitch: boolean;
  /** Journal, pid file and log. */
  stateDir: string;
  /** The TUN interface's name. */
  tunName: string;
  /** The TUN's IPv4 address, when `--tun-cidr` gave one (else the TUN defaults). */
  tunAddress?: TunAddress;
  /** Debug logging. */
  verbose: boolean;
  /** Print every change, make none. */
  dryRun: boolean;
  /** Keep the log file in the state directory after a clean stop. */
  keepLogs: boolean;
  /** The name `self-test` resolves (default example.com). */
  testName: string;
}

/** What {@link parseVpnArgs} decided. */
export type VpnCliResult =
  | { kind: "vpn-up"; text: ""; options: VpnOptions; warnings: string[] }
  | { kind: "vpn-self-test"; text: ""; options: VpnOptions; warnings: string[] }
  | { kind: "vpn-down"; text: ""; stateDir: string }
  | EarlyResult;

interface RawOptions {
  proxyUrl?: string;
  proxyHost?: string;
  proxyPort?: string;
  proxyIp?: string[];
  username?: string;
  passwordFile?: string;
  dns?: string[];
  allowDns?: string[];
  killswitch: boolean;
  stateDir?: string;
  tunName?: string;
  tunCidr?: string;
  verbose?: boolean;
  dryRun?: boolean;
  keepLogs?: boolean;
  name?: string;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

function isIp(s: string): boolean {
  return parseIpInto(s, new Uint8Array(16)) !== 0;
}

/**
 * Parses `argv` (after `vpn`). `env` supplies {@link ENV_PROXY_PASSWORD};
 * `readFile` reads `--password-file` (injectable for tests).
 */
export async function parseVpnArgs(
  argv: string[],
  program: string,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  readFile: (path: string) => Promise<string> = (p) => Deno.readTextFile(p),
): Promise<VpnCliResult> {
  const sub = argv[0] === "up" || argv[0] === "down" || argv[0] === "self-test" ? argv[0] : "up";
  const rest = sub === argv[0] ? argv.slice(1) : argv;
  const output = { out: "", err: "" };
  if (sub === "down") {
    const cmd = baseCommand(`${program} vpn down`, output)
      .description("Stop a running VPN (or undo what a crashed one left: routes, rules, firewall).")
      .option("--state-dir <dir>", `where the journal lives (default ${VPN_STATE_DIR})`);
    const early = await runCommander(cmd, rest, output);
    if (early) return early;
    return {
      kind: "vpn-down",
      text: "",
      stateDir: cmd.opts<{ stateDir?: string }>().stateDir ?? VPN_STATE_DIR,
    };
  }
  const cmd = baseCommand(`${program} vpn ${sub}`, output)
    .description(
      sub === "up"
        ? "Send every TCP connection of this machine through an upstream HTTP CONNECT proxy (TUN), " +
          "with a kill switch."
        : "Check the proxy and DNS paths of the VPN mode without changing anything.",
    )
    .option("--proxy-url <url>", "http://[user[:password]@]host[:port] of the proxy")
    .option("--proxy-host <host>", "the proxy's name or address (instead of --proxy-url)")
    .option("--proxy-port <port>", "the proxy's port (with --proxy-host; default 8080)")
    .option(
      "--proxy-ip <ip>",
      "an address of the proxy: its name is not resolved (repeatable)",
      collect,
    )
    .option("--username <name>", "proxy user (Basic authentication)")
    .option("--password-file <path>", `the proxy password, from a file (or ${ENV_PROXY_PASSWORD})`)
    .option(
      "--dns <ip>",
      "resolver the machine's DNS goes to (repeatable; default: resolv.conf's)",
      collect,
    )
    .option(
      "--allow-dns <ip>",
      "another resolver allowed past the kill switch (repeatable)",
      collect,
    )
    .option("--no-killswitch", "no firewall: UDP (and anything else) may go out directly")
    .option("--state-dir <dir>", `journal, pid file and log (default ${VPN_STATE_DIR})`)
    .option("--tun-name <name>", "the TUN interface (default ostp0)")
    .option("--tun-cidr <cidr>", "the TUN's IPv4 address/prefix (default 172.19.0.1/30)")
    .option("--verbose", "debug logging")
    .option("--dry-run", "print every change it would make, make none")
    .option("--keep-logs", "keep the log file after a clean stop");
  if (sub === "self-test") cmd.option("--name <name>", "the name to resolve (default example.com)");
  const early = await runCommander(cmd, rest, output);
  if (early) return early;
  const o = cmd.opts<RawOptions>();
  o.proxyIp ??= [];
  o.dns ??= [];
  o.allowDns ??= [];
  const fail = (text: string): EarlyResult => ({ kind: "error", text: `error: ${text}` });
  const warnings: string[] = [];

  let proxy: HttpProxyUrl;
  if (o.proxyUrl !== undefined) {
    if (o.proxyHost !== undefined || o.proxyPort !== undefined) {
      return fail("give --proxy-url or --proxy-host/--proxy-port, not both");
    }
    try {
      proxy = parseProxyUrl(o.proxyUrl);
    } catch (e) {
      if (e instanceof ProxyUrlError) return fail(`--proxy-url: ${e.reason}`);
      throw e;
    }
    if (proxy.credentials?.password) {
      warnings.push(
        "the proxy password is on the command line, where other local users can read it (ps); " +
          `use --password-file or ${ENV_PROXY_PASSWORD}`,
      );
    }
  } else if (o.proxyHost !== undefined) {
    const port = o.proxyPort === undefined ? 8080 : Number(o.proxyPort);
    if (!Number.isInteger(port) || port < 1 || port > 65535) return fail("--proxy-port: 1..65535");
    if (!/^[A-Za-z0-9.:_-]{1,253}$/.test(o.proxyHost)) return fail("--proxy-host: not a host name");
    proxy = { secure: false, host: o.proxyHost.replace(/^\[(.*)\]$/, "$1"), port };
  } else {
    return fail("give the proxy: --proxy-url URL, or --proxy-host HOST [--proxy-port PORT]");
  }
  if (proxy.secure) return fail("--proxy-url: https:// proxies are not supported in VPN mode yet");
  if (o.username !== undefined) {
    if (o.username.length === 0 || o.username.includes(":")) {
      return fail('--username: not empty, no ":"');
    }
    proxy.credentials = { username: o.username, password: proxy.credentials?.password ?? "" };
  }
  let password: string | undefined;
  if (o.passwordFile !== undefined) {
    try {
      password = (await readFile(o.passwordFile)).replace(/\r?\n$/, "");
    } catch (e) {
      return fail(`--password-file: ${(e as Error).message}`);
    }
    if (password.includes("\n")) return fail("--password-file: one line expected");
  } else password = env(ENV_PROXY_PASSWORD);
  if (password !== undefined) {
    if (!proxy.credentials) return fail("a proxy password needs a user: --username or the URL's");
    proxy.credentials.password = password;
  }
  for (
    const [flag, list] of [["--proxy-ip", o.proxyIp], ["--dns", o.dns], [
      "--allow-dns",
      o.allowDns,
    ]] as const
  ) {
    for (const ip of list) if (!isIp(ip)) return fail(`${flag}: ${ip} is not an IP address`);
  }
  if (isIp(proxy.host) && !o.proxyIp.includes(proxy.host)) o.proxyIp.push(proxy.host);
  let tunAddress: TunAddress | undefined;
  if (o.tunCidr !== undefined) {
    const m = o.tunCidr.match(/^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/);
    const prefix = m ? Number(m[2]) : -1;
    if (!m || !isIp(m[1]) || prefix < 1 || prefix > 30) {
      return fail(
        "--tun-cidr: an IPv4 address/prefix with room for the DNS address, e.g. 10.255.255.1/30",
      );
    }
    tunAddress = { address: m[1], prefix };
  }
  if (o.tunName !== undefined && !/^[A-Za-z0-9_.-]{1,15}$/.test(o.tunName)) {
    return fail("--tun-name: 1..15 letters, digits, '_', '-' or '.'");
  }
  const options: VpnOptions = {
    proxy,
    proxyIps: o.proxyIp,
    dns: o.dns,
    allowDns: o.allowDns,
    killSwitch: o.killswitch,
    stateDir: o.stateDir ?? VPN_STATE_DIR,
    tunName: o.tunName ?? "ostp0",
    verbose: !!o.verbose,
    dryRun: !!o.dryRun,
    keepLogs: !!o.keepLogs,
    testName: o.name ?? "example.com",
  };
  if (tunAddress) options.tunAddress = tunAddress;
  return { kind: sub === "up" ? "vpn-up" : "vpn-self-test", text: "", options, warnings };
}

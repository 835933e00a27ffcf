/**
 * The upstream-proxy VPN mode (docs/vpn.md): the TUN inbound and its
 * userspace stack, a router whose default is one `http` outbound (every TCP
 * connection of the machine becomes one `CONNECT host:port` to the upstream
 * proxy), DNS relayed from the TUN to the allowed resolvers over the client's
 * own marked socket, and — on by default — the firewall kill switch. Every
 * host change (kill switch first, then policy routing, then the resolver) goes
 * through one journal under the state directory, so a clean stop, the next
 * start and `vpn down` after a crash all undo exactly what is left.
 * @module
 */

import type { HostChange } from "../../shared/host/journal.ts";
import { TUN_DEFAULTS, type TunConfig } from "../../shared/config/tun_config.ts";
import { parseRoutingConfig } from "../router/config.ts";
import { Router } from "../router/rules.ts";
import { type OutboundEntry, RouterOutbound } from "../router/router_outbound.ts";
import { HttpConnectOutbound, type HttpProxyUrl } from "../outbound/http_connect.ts";
import { DirectOutbound } from "../outbound/direct.ts";
import { BlockOutbound } from "../outbound/block.ts";
import { parseIpInto } from "../../shared/net/cidr.ts";
import { bypass } from "../../shared/net/bypass.ts";
import { killSwitchChanges } from "../tun/kill_switch.ts";
import type { VpnOptions } from "./vpn_cli.ts";

/** Everything the mode decided before touching the host. */
export interface VpnPlan {
  /** The TUN block (name, addresses, DNS relay, auto-route, state directory). */
  tun: TunConfig;
  /** The proxy, with the address flows connect to (credentials included). */
  proxy: HttpProxyUrl;
  /** Every address of the proxy: routed outside the TUN and let past the kill switch. */
  proxyIps: string[];
  /** Resolvers the TUN's DNS relay asks (the first), all allowed past the kill switch. */
  dns: string[];
  /** Every resolver let past the kill switch and kept out of the TUN (dns + allow-dns). */
  allowedDns: string[];
  /** The kill switch's changes (empty with --no-killswitch). */
  killSwitch: HostChange[];
}

/** The router's outbound names in VPN mode. */
export const VPN_OUTBOUNDS = { proxy: "proxy", direct: "direct", block: "block" } as const;

function isIp(s: string): 0 | 4 | 6 {
  return parseIpInto(s, new Uint8Array(16));
}

/** Non-loopback, unscoped nameservers of a resolv.conf text. */
export function nameserversOf(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const m = line.match(/^\s*nameserver\s+([0-9a-fA-F.:]+)(%\S+)?\s*$/);
    // A scoped (link-local) resolver cannot be named in a rule without its interface: skipped.
    if (!m || !isIp(m[1]) || m[2]) continue;
    if (m[1].startsWith("127.") || m[1] === "::1") continue;
    if (!out.includes(m[1])) out.push(m[1]);
  }
  return out;
}

/** The address after `ip` (IPv4), or null when it leaves the `/prefix` subnet's hosts. */
export function nextHost(ip: string, prefix: number): string | null {
  const p = ip.split(".").map(Number);
  const n = ((p[0] << 24) >>> 0) + (p[1] << 16) + (p[2] << 8) + p[3];
  const size = 2 ** (32 - prefix);
  const base = n - (n % size);
  const next = n + 1;
  if (next >= base + size - 1) return null; // the broadcast address, or beyond
  return [next >>> 24, (next >>> 16) & 255, (next >>> 8) & 255, next & 255].join(".");
}

/**
 * What the kill switch can use here: nft, else iptables, else nothing.
 * `prefer` (the `OSTP_FIREWALL` environment variable: `nft` or `iptables`)
 * picks one when both are there.
 */
export async function firewallBackend(
  which: (cmd: string) => Promise<boolean>,
  prefer?: string,
): Promise<"nft" | "iptables" | null> {
  const ipt = async () => (await which("iptables")) && (await which("ip6tables"));
  if (prefer === "iptables" && await ipt()) return "iptables";
  if (await which("nft")) return "nft";
  if (await ipt()) return "iptables";
  return null;
}

/**
 * Decides everything from the options, the proxy's addresses and the
 * system's resolvers, without changing anything.
 * @throws with a message for a person when something needed is missing.
 */
export function vpnPlan(
  o: VpnOptions,
  found: {
    proxyIps: string[];
    systemDns: string[];
    backend: "nft" | "iptables" | null;
  },
): VpnPlan {
  const proxyIps = [...new Set([...o.proxyIps, ...found.proxyIps])];
  if (proxyIps.length === 0) throw new Error(`the proxy ${o.proxy.host} has no address`);
  const dns = o.dns.length > 0 ? o.dns : found.systemDns;
  if (dns.length === 0) {
    throw new Error("no resolver to use: give --dns IP (resolv.conf lists none but loopback)");
  }
  const allowedDns = [...new Set([...dns, ...o.allowDns])];
  const v4 = o.tunAddress ?? TUN_DEFAULTS.addresses[0];
  const dnsAddr = nextHost(v4.address, v4.prefix);
  if (dnsAddr === null) {
    throw new Error(`--tun-cidr: no room after ${v4.address} for the DNS address`);
  }
  const tun: TunConfig = {
    ...structuredClone(TUN_DEFAULTS) as TunConfig,
    name: o.tunName,
    addresses: [{ ...v4 }, { ...TUN_DEFAULTS.addresses[1] }],
    dns: {
      addresses: [dnsAddr],
      upstream: { host: dns[0], port: 53 },
      // Queries to other resolvers are not answered for them: they enter the TUN and are
      // dropped with the rest of UDP (the allowed resolvers are routed outside the TUN).
      hijack: false,
      configure: true,
    },
    stateDir: o.stateDir,
  };
  let killSwitch: HostChange[] = [];
  if (o.killSwitch) {
    if (!found.backend) {
      throw new Error(
        "the kill switch needs nft (package nftables) or iptables and ip6tables; " +
          "install one, or run with --no-killswitch",
      );
    }
    killSwitch = killSwitchChanges({
      tun: tun.name,
      proxies: proxyIps.map((ip) => ({ ip, port: o.proxy.port })),
      dns: allowedDns,
      mark: tun.mark,
      backend: found.backend,
    });
  }
  // Flows connect to the address checked here, never to a name resolved again later.
  const proxy: HttpProxyUrl = { ...o.proxy, host: proxyIps[0] };
  return { tun, proxy, proxyIps, dns, allowedDns, killSwitch };
}

/**
 * The router of the mode: DNS to the allowed resolvers direct (the client's
 * marked socket), other UDP blocked (the kill switch's promise; with
 * `--no-killswitch`, direct), every TCP flow to the proxy.
 */
export function vpnRouter(
  plan: VpnPlan,
  killSwitch: boolean,
  connectTimeoutMs = 10_000,
): RouterOutbound {
  const hosts = plan.allowedDns.map((ip) => (ip.includes(":") ? `${ip}/128` : `${ip}/32`));
  const routing = parseRoutingConfig({
    outbounds: [{
      name: VPN_OUTBOUNDS.proxy,
      type: "http",
      url: `http://${
        plan.proxy.host.includes(":") ? `[${plan.proxy.host}]` : plan.proxy.host
      }:${plan.proxy.port}`,
    }],
    rules: [
      { network: "udp", ip: hosts, port: 53, outbound: VPN_OUTBOUNDS.direct },
      { network: "udp", outbound: killSwitch ? VPN_OUTBOUNDS.block : VPN_OUTBOUNDS.direct },
    ],
    defaultOutbound: VPN_OUTBOUNDS.proxy,
  });
  const outbounds = new Map<string, OutboundEntry>([
    [VPN_OUTBOUNDS.proxy, {
      type: "http",
      outbound: new HttpConnectOutbound({
        name: VPN_OUTBOUNDS.proxy,
        proxy: plan.proxy,
        connectTimeoutMs,
        // The client's own socket: marked, so it keeps the main routing table.
        connect: async (p, signal) => {
          const b = bypass();
          if (b) {
            return await b.dial(p.host, p.port, {
              mark: b.mark,
              timeoutMs: connectTimeoutMs,
              signal,
            });
          }
          return await Deno.connect({ hostname: p.host, port: p.port, signal });
        },
      }),
    }],
    [VPN_OUTBOUNDS.direct, {
      type: "direct",
      outbound: new DirectOutbound({ name: VPN_OUTBOUNDS.direct, connectTimeoutMs }),
    }],
    [VPN_OUTBOUNDS.block, { type: "block", outbound: new BlockOutbound(VPN_OUTBOUNDS.block) }],
  ]);
  return new RouterOutbound({ router: new Router(routing), outbounds });
}

/** The lines `--dry-run` prints: what was decided, then every change in order. */
export function vpnDryRunLines(plan: VpnPlan, changes: string[]): string[] {
  return [
    `proxy ${plan.proxyIps.join(", ")} port ${plan.proxy.port}${
      plan.proxy.credentials ? ` as ${plan.proxy.credentials.username}` : ""
    }; DNS via ${plan.dns.join(", ")}${
      plan.allowedDns.length > plan.dns.length
        ? ` (also allowed: ${plan.allowedDns.filter((d) => !plan.dns.includes(d)).join(", ")})`
        : ""
    }`,
    plan.killSwitch.length > 0 ? "kill switch: on" : "kill switch: off (UDP goes out directly)",
    ...changes,
  ];
}

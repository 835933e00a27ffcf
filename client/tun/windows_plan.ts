/**
 * The host changes of TUN mode on Windows (docs/windows.md), as journaled
 * {@link CommandChange}s of documented `netsh` commands — nothing here runs
 * anything, and every plan is tested on any OS:
 *
 * - the Wintun adapter's address, MTU and a metric of 1 (so Windows prefers
 *   it for names too);
 * - everything into the adapter as two half routes (`0.0.0.0/1`,
 *   `128.0.0.0/1`, and `::/1`, `8000::/1`), which win over the default route
 *   without replacing it — as OpenVPN and WireGuard for Windows do;
 * - the server's addresses and the excluded CIDRs through the physical
 *   gateway (found from `route print`, {@link parseDefaultRoute});
 * - the tunnel's resolver on the adapter, and the DNS-leak rule Windows users
 *   hit: Windows asks every interface's resolver at once ("smart multi-homed
 *   name resolution"), so queries would leave around the tunnel. A firewall
 *   rule blocks DNS (53, UDP and TCP) to every address but the tunnel's
 *   resolvers — a block rule wins over allow rules in Windows Firewall, so the
 *   allowed resolvers are left out of its address ranges instead.
 * @module
 */

import type { CommandChange } from "../../shared/host/journal.ts";
import { parseIPv4 } from "../../shared/net/ip.ts";

/** What TUN mode on Windows needs to know. */
export interface WindowsTunPlanOptions {
  /** The adapter's name ("ostp0"). */
  adapter: string;
  /** Its IPv4 address and prefix ("10.0.85.2/24"). */
  address: string;
  /** Its IPv6 address and prefix, when IPv6 is carried. */
  address6?: string;
  /** The adapter's MTU. */
  mtu: number;
  /** Resolvers inside the tunnel (the TUN's DNS address). */
  dns: readonly string[];
  /** The server's addresses: through the physical gateway. */
  servers: readonly string[];
  /** CIDRs that stay off the tunnel. */
  exclude: readonly string[];
  /** The physical default route (from {@link parseDefaultRoute}). */
  gateway: { address: string; interfaceAddress: string } | null;
  /** The physical IPv6 default route (from {@link parseDefaultRoute6}), if any. */
  gateway6?: { address: string; ifIndex: number } | null;
}

/** The netsh firewall rule name of the DNS-leak block. */
export const DNS_LEAK_RULE = "ostp-block-dns-leak";

function netmask(bits: number): string {
  const m = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return [m >>> 24, (m >>> 16) & 255, (m >>> 8) & 255, m & 255].join(".");
}

function v4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

function toInt(ip: string): number {
  const b = parseIPv4(ip);
  if (!b) throw new Error(`not an IPv4 address: ${ip}`);
  return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
}

/**
 * The IPv4 space without `keep` (addresses), as netsh `remoteip` ranges
 * ("0.0.0.0-10.0.85.0,10.0.85.2-255.255.255.255").
 */
export function ipv4Complement(keep: readonly string[]): string {
  const points = [...new Set(keep.map(toInt))].sort((a, b) => a - b);
  const out: string[] = [];
  let from = 0;
  for (const p of points) {
    if (p > from) out.push(`${v4(from)}-${v4(p - 1)}`);
    from = p + 1;
  }
  if (from <= 0xffffffff) out.push(`${v4(from)}-${v4(0xffffffff)}`);
  return out.join(",");
}

function cmd(what: string, apply: string[], undo: string[], undoMayFail = false): CommandChange {
  return { kind: "command", what, apply, undo, ...(undoMayFail ? { undoMayFail } : {}) };
}

/** A route added and deleted by the same command line but for its verb (gone with the adapter). */
function routeChange(what: string, argv: (verb: "add" | "delete") => string[]): CommandChange {
  return cmd(what, argv("add"), argv("delete"), true);
}

/** The changes, in the order they are made (undone in reverse). */
export function windowsTunChanges(o: WindowsTunPlanOptions): CommandChange[] {
  const out: CommandChange[] = [];
  const name = `name=${o.adapter}`;
  const [addr, bitsText] = o.address.split("/");
  const bits = Number(bitsText ?? 32);
  // The adapter's own settings go with it when it is removed: their undo may find nothing.
  out.push(cmd(
    "TUN address",
    ["netsh", "interface", "ipv4", "set", "address", name, "static", addr, netmask(bits)],
    ["netsh", "interface", "ipv4", "set", "address", name, "dhcp"],
    true,
  ));
  out.push(cmd(
    "TUN MTU",
    [
      "netsh",
      "interface",
      "ipv4",
      "set",
      "subinterface",
      o.adapter,
      `mtu=${o.mtu}`,
      "store=active",
    ],
    ["netsh", "interface", "ipv4", "set", "subinterface", o.adapter, "mtu=1500", "store=active"],
    true,
  ));
  out.push(cmd(
    "TUN metric 1",
    ["netsh", "interface", "ipv4", "set", "interface", o.adapter, "metric=1"],
    ["netsh", "interface", "ipv4", "set", "interface", o.adapter, "metric=automatic"],
    true,
  ));
  if (o.address6) {
    out.push(cmd(
      "TUN IPv6 address",
      ["netsh", "interface", "ipv6", "add", "address", o.adapter, o.address6, "store=active"],
      ["netsh", "interface", "ipv6", "delete", "address", o.adapter, o.address6.split("/")[0]],
      true,
    ));
  }
  // Server and exclusions around the tunnel, before the tunnel takes everything.
  if (o.gateway) {
    const around = [
      ...o.servers.filter((s) => !s.includes(":")).map((s) => `${s}/32`),
      ...o.exclude.filter((c) => !c.includes(":")),
    ];
    for (const dest of around) {
      const [net, bits] = dest.split("/");
      const mask = netmask(Number(bits ?? 32));
      out.push(routeChange(
        `route ${dest} around the tunnel`,
        (v) => ["route", v, net, "mask", mask, o.gateway!.address],
      ));
    }
  }
  if (o.gateway6) {
    const g6 = o.gateway6;
    const around6 = [
      ...o.servers.filter((s) => s.includes(":")).map((s) => `${s}/128`),
      ...o.exclude.filter((c) => c.includes(":")),
    ];
    for (const dest of around6) {
      out.push(routeChange(
        `route ${dest} around the tunnel`,
        (v) => [
          "netsh",
          "interface",
          "ipv6",
          v,
          "route",
          dest,
          String(g6.ifIndex),
          g6.address,
          "store=active",
        ],
      ));
    }
  }
  // Without IPv6 in the tunnel the IPv6 halves still capture IPv6 (into an adapter with no IPv6
  // address: dropped), so nothing leaves around it and applications fall back to IPv4.
  for (
    const [family, half] of [
      ["ipv4", "0.0.0.0/1"],
      ["ipv4", "128.0.0.0/1"],
      ["ipv6", "::/1"],
      ["ipv6", "8000::/1"],
    ]
  ) {
    out.push(routeChange(`route ${half} into the TUN`, (v) => [
      "netsh",
      "interface",
      family,
      v,
      "route",
      half,
      o.adapter,
      ...(v === "add" ? ["metric=1"] : []),
      "store=active",
    ]));
  }
  if (o.dns.length > 0) {
    const v4dns = o.dns.filter((d) => !d.includes(":"));
    v4dns.forEach((d, i) => {
      out.push(cmd(
        `TUN resolver ${d}`,
        i === 0
          ? [
            "netsh",
            "interface",
            "ipv4",
            "set",
            "dnsservers",
            name,
            "static",
            d,
            "primary",
            "validate=no",
          ]
          : [
            "netsh",
            "interface",
            "ipv4",
            "add",
            "dnsservers",
            name,
            d,
            `index=${i + 1}`,
            "validate=no",
          ],
        i === 0
          ? ["netsh", "interface", "ipv4", "set", "dnsservers", name, "source=dhcp"]
          : ["netsh", "interface", "ipv4", "delete", "dnsservers", name, d],
        true,
      ));
    });
    // The DNS-leak block: every other resolver, IPv4 and IPv6, over UDP and TCP.
    const remote4 = ipv4Complement(v4dns);
    // IPv6 resolvers are all blocked unless the tunnel has one of its own.
    const remote = o.dns.some((d) => d.includes(":")) ? remote4 : `${remote4},::/0`;
    for (const proto of ["UDP", "TCP"]) {
      out.push(cmd(
        `block DNS (${proto}) to resolvers outside the tunnel`,
        [
          "netsh",
          "advfirewall",
          "firewall",
          "add",
          "rule",
          `name=${DNS_LEAK_RULE}`,
          "dir=out",
          "action=block",
          `protocol=${proto}`,
          "remoteport=53",
          `remoteip=${remote}`,
        ],
        [
          "netsh",
          "advfirewall",
          "firewall",
          "delete",
          "rule",
          `name=${DNS_LEAK_RULE}`,
          `protocol=${proto}`,
        ],
        true,
      ));
    }
  }
  return out;
}

/**
 * The physical default route from `route print -4 0.0.0.0` output: the
 * gateway and interface address of the lowest-metric `0.0.0.0 0.0.0.0` row
 * (the table's "Active Routes" section), or null when there is none.
 */
export function parseDefaultRoute(
  text: string,
): { address: string; interfaceAddress: string } | null {
  let best: { address: string; interfaceAddress: string; metric: number } | null = null;
  for (const line of text.split(/\r?\n/)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || f[0] !== "0.0.0.0" || f[1] !== "0.0.0.0") continue;
    if (!parseIPv4(f[2]) || !parseIPv4(f[3])) continue; // "On-link" rows have no gateway
    const metric = Number(f[4]);
    if (!Number.isFinite(metric)) continue;
    if (!best || metric < best.metric) best = { address: f[2], interfaceAddress: f[3], metric };
  }
  return best ? { address: best.address, interfaceAddress: best.interfaceAddress } : null;
}

/**
 * The physical IPv6 default route from `route print -6 ::/0` output
 * (` If Metric Network Destination Gateway` rows): the lowest-metric `::/0`
 * row with a gateway, or null.
 */
export function parseDefaultRoute6(text: string): { address: string; ifIndex: number } | null {
  let best: { address: string; ifIndex: number; metric: number } | null = null;
  for (const line of text.split(/\r?\n/)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || f[2] !== "::/0" || !f[3].includes(":")) continue;
    const ifIndex = Number(f[0]);
    const metric = Number(f[1]);
    if (!Number.isInteger(ifIndex) || !Number.isFinite(metric)) continue;
    if (!best || metric < best.metric) best = { address: f[3], ifIndex, metric };
  }
  return best ? { address: best.address, ifIndex: best.ifIndex } : null;
}

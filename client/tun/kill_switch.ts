/**
 * The kill switch of the upstream-proxy VPN mode, as journaled
 * {@link HostChange}s: nothing here runs anything.
 *
 * While it is up, nothing the machine originates leaves outside the TUN
 * except what the tunnel itself needs: the upstream proxy's address and port,
 * DNS (UDP and TCP port 53) to the allowed resolvers, the client's own marked
 * sockets, loopback, and the link's own housekeeping (DHCP, IPv6 neighbour
 * and router discovery, MLD). Replies on connections that others opened to
 * this machine pass (an SSH session into it survives). Everything else is
 * rejected at once — TCP with a reset, the rest with "administratively
 * prohibited" — so applications fail immediately instead of hanging, and no
 * packet leaves. IPv4 and IPv6 alike.
 *
 * Two backends with the same rules: nftables, one table of our own
 * (`inet ostp_killswitch`) made and removed in one transaction each; and, when
 * `nft` is missing, iptables/ip6tables with a chain of our own jumped to from
 * the top of OUTPUT. Nothing of another program's firewall is touched: the
 * undo removes exactly our table, or our jump, rules and chain.
 * @module
 */

import type { HostChange } from "../../shared/host/journal.ts";

/** An endpoint that may be reached outside the tunnel. */
export interface AllowedEndpoint {
  /** IP literal (IPv4 or IPv6). */
  ip: string;
  port: number;
}

/** What the kill switch lets out besides the TUN. */
export interface KillSwitchOptions {
  /** The TUN interface: everything may leave through it. */
  tun: string;
  /** The upstream proxies (resolved addresses and ports), TCP only. */
  proxies: readonly AllowedEndpoint[];
  /** Resolvers DNS may reach directly (port 53, UDP and TCP). */
  dns: readonly string[];
  /** Firewall mark of the client's own sockets (their flows pass), if any. */
  mark?: number;
  /** Which firewall: nftables, or iptables + ip6tables. */
  backend: "nft" | "iptables";
  /** Table (nft) or chain (iptables) name; default {@link KILL_SWITCH_NAME}. */
  name?: string;
  /** An argv prefix for every command (tests run them in a namespace: `ip netns exec <ns>`). */
  exec?: readonly string[];
}

/** Default name of the nftables table and of the iptables chain. */
export const KILL_SWITCH_NAME = "ostp_killswitch";

/**
 * ICMPv6 types the link needs to work at all (no user data): router and
 * neighbour discovery, MLD reports — as nft and ip6tables spell them.
 */
const ICMP6_LINK: readonly (readonly [nft: string, ip6tables: string])[] = [
  ["nd-router-solicit", "router-solicitation"],
  ["nd-neighbor-solicit", "neighbour-solicitation"],
  ["nd-neighbor-advert", "neighbour-advertisement"],
  ["mld-listener-report", "131"],
  ["mld2-listener-report", "143"],
];

const isV6 = (ip: string) => ip.includes(":");

/** Characters an interface name may hold (the kernel allows more; we refuse the rest). */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

function check(o: KillSwitchOptions, name: string): void {
  if (!IFNAME.test(o.tun)) {
    throw new Error(`kill switch: bad interface name ${JSON.stringify(o.tun)}`);
  }
  if (!/^[A-Za-z0-9_]{1,28}$/.test(name)) throw new Error(`kill switch: bad name ${name}`);
  for (const p of o.proxies) {
    if (!/^[0-9a-fA-F.:]+$/.test(p.ip)) {
      throw new Error(`kill switch: ${p.ip} is not an IP literal`);
    }
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) {
      throw new Error(`kill switch: bad port ${p.port}`);
    }
  }
  for (const d of o.dns) {
    if (!/^[0-9a-fA-F.:]+$/.test(d)) throw new Error(`kill switch: ${d} is not an IP literal`);
  }
  if (o.mark !== undefined && (!Number.isInteger(o.mark) || o.mark < 1 || o.mark > 0xffffffff)) {
    throw new Error(`kill switch: bad mark ${o.mark}`);
  }
}

/** The nftables script of the table (one transaction: table, chain and rules appear at once). */
export function nftKillSwitchScript(o: KillSwitchOptions): string {
  const name = o.name ?? KILL_SWITCH_NAME;
  check(o, name);
  const r: string[] = [];
  const rule = (s: string) => r.push(`add rule inet ${name} out ${s}`);
  r.push(`add table inet ${name}`);
  r.push(`add chain inet ${name} out { type filter hook output priority 0; policy accept; }`);
  rule(`oifname "lo" accept`);
  rule(`oifname "${o.tun}" accept`);
  rule("ct direction reply accept");
  if (o.mark !== undefined) rule(`meta mark 0x${o.mark.toString(16)} accept`);
  for (const p of o.proxies) {
    rule(`${isV6(p.ip) ? "ip6" : "ip"} daddr ${p.ip} tcp dport ${p.port} accept`);
  }
  for (const d of o.dns) {
    const f = isV6(d) ? "ip6" : "ip";
    rule(`${f} daddr ${d} udp dport 53 accept`);
    rule(`${f} daddr ${d} tcp dport 53 accept`);
  }
  rule("udp sport 68 udp dport 67 accept");
  rule("udp sport 546 udp dport 547 accept");
  rule(`icmpv6 type { ${ICMP6_LINK.map(([t]) => t).join(", ")} } accept`);
  rule("meta l4proto tcp reject with tcp reset");
  rule("reject with icmpx type admin-prohibited");
  return r.join("; ");
}

/** The changes, in the order they are made (the journal undoes them in reverse). */
export function killSwitchChanges(o: KillSwitchOptions): HostChange[] {
  const name = o.name ?? KILL_SWITCH_NAME;
  check(o, name);
  const ex = o.exec ?? [];
  if (o.backend === "nft") {
    return [{
      kind: "command",
      what: `kill switch: nftables table inet ${name} (only ${o.tun}, the proxy and DNS leave)`,
      apply: [...ex, "nft", nftKillSwitchScript(o)],
      undo: [...ex, "nft", `delete table inet ${name}`],
    }];
  }
  const out: HostChange[] = [];
  const chain = name.toUpperCase();
  for (const fam of ["iptables", "ip6tables"] as const) {
    const v6 = fam === "ip6tables";
    const cmd = (what: string, args: string[], undo: string[]) =>
      out.push({
        kind: "command",
        what,
        apply: [...ex, fam, "-w", ...args],
        undo: [...ex, fam, "-w", ...undo],
      });
    const rule = (what: string, spec: string[]) =>
      cmd(`kill switch (${fam}): ${what}`, ["-A", chain, ...spec], ["-D", chain, ...spec]);
    cmd(`kill switch (${fam}): chain ${chain}`, ["-N", chain], ["-X", chain]);
    rule("loopback", ["-o", "lo", "-j", "ACCEPT"]);
    rule(o.tun, ["-o", o.tun, "-j", "ACCEPT"]);
    rule("replies", ["-m", "conntrack", "--ctdir", "REPLY", "-j", "ACCEPT"]);
    if (o.mark !== undefined) {
      rule("own sockets", ["-m", "mark", "--mark", `0x${o.mark.toString(16)}`, "-j", "ACCEPT"]);
    }
    for (const p of o.proxies.filter((x) => isV6(x.ip) === v6)) {
      rule(`proxy ${p.ip}:${p.port}`, [
        "-d",
        p.ip,
        "-p",
        "tcp",
        "--dport",
        String(p.port),
        "-j",
        "ACCEPT",
      ]);
    }
    for (const d of o.dns.filter((x) => isV6(x) === v6)) {
      for (const proto of ["udp", "tcp"]) {
        rule(`DNS ${d}`, ["-d", d, "-p", proto, "--dport", "53", "-j", "ACCEPT"]);
      }
    }
    if (v6) {
      rule("DHCPv6", ["-p", "udp", "--sport", "546", "--dport", "547", "-j", "ACCEPT"]);
      for (const [t, type] of ICMP6_LINK) {
        rule(`ICMPv6 ${t}`, ["-p", "ipv6-icmp", "--icmpv6-type", type, "-j", "ACCEPT"]);
      }
    } else {
      rule("DHCP", ["-p", "udp", "--sport", "68", "--dport", "67", "-j", "ACCEPT"]);
    }
    rule("TCP reset", ["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]);
    rule("the rest", [
      "-j",
      "REJECT",
      "--reject-with",
      v6 ? "icmp6-adm-prohibited" : "icmp-admin-prohibited",
    ]);
    cmd(`kill switch (${fam}): OUTPUT → ${chain}`, ["-I", "OUTPUT", "1", "-j", chain], [
      "-D",
      "OUTPUT",
      "-j",
      chain,
    ]);
  }
  return out;
}

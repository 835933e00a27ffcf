/**
 * `l3.nat: true` (docs/l3.md): the host changes that let layer-3 clients
 * reach the internet through the server — forwarding on, and masquerading of
 * the hub's subnets on their way out of any interface but the hub's TUN — as
 * journaled changes; nothing here runs anything. Forwarding's previous value
 * is put back exactly by the undo (the journal keeps it).
 *
 * One nftables table of our own (`inet ostp_l3_nat`, made and removed in one
 * transaction). It does not open another firewall: a `forward` chain of
 * another table with policy drop still drops (nftables evaluates every base
 * chain); the docs say so.
 * @module
 */

import type { HostChange } from "../../shared/host/journal.ts";

/** Default name of the NAT table. */
export const L3_NAT_TABLE = "ostp_l3_nat";

/** What the NAT plan needs. */
export interface L3NatOptions {
  /** The hub's TUN. */
  tun: string;
  /** The IPv4 subnet, and the IPv6 one if any. */
  subnet: string;
  subnet6?: string;
  /** Current values of net.ipv4.ip_forward and net.ipv6.conf.all.forwarding ("0"/"1"). */
  forwarding: { v4: string; v6: string };
  /** An argv prefix for every command (tests: `ip netns exec <ns>`). */
  exec?: readonly string[];
}

/** The changes, in the order they are made (undone in reverse). */
export function l3NatChanges(o: L3NatOptions): HostChange[] {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(o.tun)) throw new Error(`bad interface name ${o.tun}`);
  const ex = o.exec ?? [];
  const out: HostChange[] = [];
  const sysctl = (key: string, was: string) => {
    if (was.trim() === "1") return;
    out.push({
      kind: "command",
      what: `${key} = 1 (was ${was.trim()})`,
      apply: [...ex, "sysctl", "-q", "-w", `${key}=1`],
      undo: [...ex, "sysctl", "-q", "-w", `${key}=${was.trim()}`],
    });
  };
  sysctl("net.ipv4.ip_forward", o.forwarding.v4);
  if (o.subnet6) sysctl("net.ipv6.conf.all.forwarding", o.forwarding.v6);
  const rules = [
    `add table inet ${L3_NAT_TABLE}`,
    `add chain inet ${L3_NAT_TABLE} post { type nat hook postrouting priority 100; policy accept; }`,
    `add rule inet ${L3_NAT_TABLE} post ip saddr ${o.subnet} oifname != "${o.tun}" masquerade`,
  ];
  if (o.subnet6) {
    rules.push(
      `add rule inet ${L3_NAT_TABLE} post ip6 saddr ${o.subnet6} oifname != "${o.tun}" masquerade`,
    );
  }
  out.push({
    kind: "command",
    what: `masquerade ${
      [o.subnet, o.subnet6].filter(Boolean).join(" and ")
    } (nft table inet ${L3_NAT_TABLE})`,
    apply: [...ex, "nft", rules.join("; ")],
    undo: [...ex, "nft", `delete table inet ${L3_NAT_TABLE}`],
  });
  return out;
}

/**
 * The host changes of `tun.autoRoute` (Linux policy routing), as a list of
 * journaled {@link HostChange}s: nothing here runs anything.
 *
 * All traffic enters the TUN except the client's own sockets and what the
 * user excluded — with no routing loop whatever the default route is:
 *
 * - a routing table of our own (`tun.table`, default 7331) whose default
 *   routes (IPv4 and IPv6) point into the TUN;
 * - `not fwmark <mark> lookup <table>`: every packet without the client's
 *   mark goes to that table; the client's own sockets (the UDP socket to the
 *   server, direct and excluded flows through `ffi/tcp_linux.ts`) carry the
 *   mark and keep using the main table — the way wg-quick avoids loops;
 * - before it, `to <cidr> lookup main` for each excluded CIDR and for each
 *   server address (a second guard should a socket go out unmarked): the
 *   kernel routes those itself, at wire speed.
 *
 * Rules are deleted by their full selector (never by priority alone), so
 * another program's rules at the same priority are never touched.
 * @module
 */

import type { HostChange } from "../../shared/host/journal.ts";

/** What auto-route needs to know. */
export interface AutoRouteOptions {
  /** The TUN interface. */
  tun: string;
  /** Routing table of our own. */
  table: number;
  /** The client's firewall mark. */
  mark: number;
  /** Priority of the first rule; the rules take `priority` and `priority + 1`. */
  priority: number;
  /**
   * IPv6 is carried through the TUN (it has an IPv6 address). When false,
   * IPv6 is still captured — into an `unreachable` default route of our
   * table, so applications fail over to IPv4 at once and no IPv6 packet
   * leaves around the tunnel.
   */
  ipv6: boolean;
  /** CIDRs that keep the kernel's own routes (`10.0.0.0/8`, `fd00::/8`). */
  exclude: readonly string[];
  /** The server's addresses (IP literals): never routed into the TUN. */
  servers: readonly string[];
  /** The `ip` command as an argv prefix (default `["ip"]`; tests add `-n <netns>`). */
  ip?: readonly string[];
}

/** Defaults of the numbers in {@link AutoRouteOptions}. */
export const AUTO_ROUTE_DEFAULTS = { table: 7331, mark: 0x7331, priority: 9000 } as const;

function family(cidrOrIp: string): "-4" | "-6" {
  return cidrOrIp.includes(":") ? "-6" : "-4";
}

function withPrefix(ip: string): string {
  if (ip.includes("/")) return ip;
  return ip.includes(":") ? `${ip}/128` : `${ip}/32`;
}

/** The changes, in the order they are made (the journal undoes them in reverse). */
export function autoRouteChanges(o: AutoRouteOptions): HostChange[] {
  const ip = o.ip ?? ["ip"];
  const out: HostChange[] = [];
  const families: ("-4" | "-6")[] = ["-4", "-6"];
  const cmd = (what: string, args: string[], undoArgs: string[], undoMayFail = false) =>
    out.push({
      kind: "command",
      what,
      apply: [...ip, ...args],
      undo: [...ip, ...undoArgs],
      undoMayFail,
    });
  // The table first, then the rules that point at it: a rule to an empty table would
  // fall through to the main table's default route, around the tunnel.
  const t = String(o.table);
  cmd(
    `IPv4 default route into ${o.tun} (table ${t})`,
    ["-4", "route", "add", "default", "dev", o.tun, "table", t],
    ["-4", "route", "del", "default", "dev", o.tun, "table", t],
    true,
  );
  if (o.ipv6) {
    cmd(
      `IPv6 default route into ${o.tun} (table ${t})`,
      ["-6", "route", "add", "default", "dev", o.tun, "table", t],
      ["-6", "route", "del", "default", "dev", o.tun, "table", t],
      true,
    );
  } else {
    cmd(
      `IPv6 unreachable in table ${t} (no IPv6 through the tunnel, none around it)`,
      ["-6", "route", "add", "unreachable", "default", "table", t],
      ["-6", "route", "del", "unreachable", "default", "table", t],
    );
  }
  // One rule per destination: the kernel refuses a second identical rule ("File exists"),
  // and a server address may be excluded too.
  const keep = [...new Set([...o.servers, ...o.exclude].map(withPrefix))];
  for (const cidr of keep) {
    const f = family(cidr);
    const sel = ["to", cidr, "lookup", "main", "pref", String(o.priority)];
    cmd(`${cidr} keeps the main table`, [f, "rule", "add", ...sel], [f, "rule", "del", ...sel]);
  }
  for (const f of families) {
    const sel = [
      "not",
      "fwmark",
      `0x${o.mark.toString(16)}`,
      "lookup",
      String(o.table),
      "pref",
      String(o.priority + 1),
    ];
    cmd(
      `${f === "-4" ? "IPv4" : "IPv6"} traffic without the client's mark into table ${o.table}`,
      [f, "rule", "add", ...sel],
      [f, "rule", "del", ...sel],
    );
  }
  return out;
}

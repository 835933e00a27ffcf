/**
 * Points the machine's resolver at the TUN's DNS address, as journaled
 * {@link HostChange}s: nothing here runs anything.
 *
 * - Where systemd-resolved runs (`/etc/resolv.conf` is its stub or a link to
 *   `/run/systemd/resolve/…`, and `resolvectl` exists): the TUN link gets the
 *   DNS server, the `~.` routing domain (every name) and the default route
 *   for DNS, so queries leave on no other link; undo is `resolvectl revert`.
 * - Otherwise `/etc/resolv.conf` is rewritten to name only the TUN's DNS
 *   address; the journal keeps the previous file (or symlink) and puts it
 *   back exactly.
 * @module
 */

import type { HostChange } from "../../shared/host/journal.ts";

/** How the resolver is configured on this machine. */
export type ResolverKind = "resolved" | "resolv.conf";

/** What decides the {@link ResolverKind}; the defaults look at the real machine. */
export interface ResolverProbe {
  /** `readlink /etc/resolv.conf` (null: not a symlink or missing). */
  resolvConfLink(): string | null;
  /** First line of `/etc/resolv.conf`'s content (stub files say who generated them). */
  resolvConfText(): string;
  /** Whether `resolvectl` is on the PATH. */
  hasResolvectl(): boolean;
}

/** The real machine's resolver setup. */
export const hostProbe: ResolverProbe = {
  resolvConfLink() {
    try {
      return Deno.readLinkSync("/etc/resolv.conf");
    } catch {
      return null;
    }
  },
  resolvConfText() {
    try {
      return Deno.readTextFileSync("/etc/resolv.conf");
    } catch {
      return "";
    }
  },
  hasResolvectl() {
    for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
      try {
        Deno.statSync(`${dir}/resolvectl`);
        return true;
      } catch {
        // not here
      }
    }
    return false;
  },
};

/** Which resolver setup the machine has. */
export function resolverKind(p: ResolverProbe = hostProbe): ResolverKind {
  const link = p.resolvConfLink();
  const managed = (link !== null && link.includes("/systemd/resolve/")) ||
    /systemd-resolved/.test(p.resolvConfText());
  return managed && p.hasResolvectl() ? "resolved" : "resolv.conf";
}

/** The changes that send every DNS query to `dns` (an IP literal) on `tun`. */
export function dnsChanges(
  tun: string,
  dns: string,
  kind: ResolverKind,
  resolvConf = "/etc/resolv.conf",
): HostChange[] {
  if (kind === "resolved") {
    const revert = ["resolvectl", "revert", tun];
    return [
      {
        kind: "command",
        what: `DNS server of ${tun}`,
        apply: ["resolvectl", "dns", tun, dns],
        undo: revert,
        undoMayFail: true,
      },
      {
        kind: "command",
        what: `every name resolved on ${tun}`,
        apply: ["resolvectl", "domain", tun, "~."],
        undo: revert,
        undoMayFail: true,
      },
      {
        kind: "command",
        what: `${tun} is the default DNS route`,
        apply: ["resolvectl", "default-route", tun, "true"],
        undo: revert,
        undoMayFail: true,
      },
    ];
  }
  return [{
    kind: "file",
    what: `resolver ${resolvConf} names ${dns} only`,
    path: resolvConf,
    content: `# written by ostp-client (TUN mode); the previous file comes back on exit\n` +
      `nameserver ${dns}\noptions edns0 trust-ad\n`,
  }];
}

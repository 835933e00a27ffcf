/**
 * A process that makes real host changes inside network namespace `ns`
 * through the journal, prints "applied" and then waits to be killed: the
 * crash half of tests/netns/host_journal_test.ts.
 *
 *   deno run -A tests/support/journal_child.ts <journal path> <ns> <resolv file>
 * @module
 */

import { type HostChange, HostJournal } from "../../shared/host/journal.ts";

const [path, ns, resolv] = Deno.args;

/** The changes a TUN auto-route makes, in one namespace. */
export function changesIn(ns: string, resolv: string): HostChange[] {
  const ip = (...a: string[]) => ["ip", "-n", ns, ...a];
  const cmd = (what: string, apply: string[], undo: string[]): HostChange => ({
    kind: "command",
    what,
    apply,
    undo,
  });
  return [
    cmd(
      "tun device",
      ip("tuntap", "add", "dev", "ostpj0", "mode", "tun"),
      ip("tuntap", "del", "dev", "ostpj0", "mode", "tun"),
    ),
    cmd("tun up", ip("link", "set", "ostpj0", "up"), ip("link", "set", "ostpj0", "down")),
    cmd(
      "tun address v4",
      ip("addr", "add", "10.250.0.1/24", "dev", "ostpj0"),
      ip("addr", "del", "10.250.0.1/24", "dev", "ostpj0"),
    ),
    cmd(
      "tun address v6",
      ip("-6", "addr", "add", "fd00:250::1/64", "dev", "ostpj0", "nodad"),
      ip("-6", "addr", "del", "fd00:250::1/64", "dev", "ostpj0"),
    ),
    cmd(
      "default route v4 in table 7331",
      ip("route", "add", "default", "dev", "ostpj0", "table", "7331"),
      ip("route", "del", "default", "dev", "ostpj0", "table", "7331"),
    ),
    cmd(
      "default route v6 in table 7331",
      ip("-6", "route", "add", "default", "dev", "ostpj0", "table", "7331"),
      ip("-6", "route", "del", "default", "dev", "ostpj0", "table", "7331"),
    ),
    cmd(
      "rule v4",
      ip("rule", "add", "not", "fwmark", "0x7331", "table", "7331", "pref", "7331"),
      ip("rule", "del", "pref", "7331"),
    ),
    cmd(
      "rule v6",
      ip("-6", "rule", "add", "not", "fwmark", "0x7331", "table", "7331", "pref", "7331"),
      ip("-6", "rule", "del", "pref", "7331"),
    ),
    { kind: "file", what: "resolver", path: resolv, content: "nameserver 10.250.0.2\n" },
  ];
}

if (import.meta.main) {
  const { journal } = await HostJournal.open(path, { owner: "journal_child" });
  for (const c of changesIn(ns, resolv)) await journal.apply(c);
  console.log("applied");
  setInterval(() => {}, 60_000); // until killed
}

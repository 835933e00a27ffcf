/**
 * tun.autoRoute's policy routing against the real kernel, in a namespace of
 * this test's own: after the journaled changes, the kernel routes unmarked
 * traffic into the TUN, marked traffic (the client's own sockets), the
 * server and excluded CIDRs by the main table, and IPv6 into the TUN or into
 * an unreachable route (never around the tunnel); undo restores every rule
 * and route exactly.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { HostJournal } from "../../shared/host/journal.ts";
import { autoRouteChanges } from "../../client/tun/auto_route.ts";
import { canUseNetns, run } from "../support/netns.ts";

const enabled = await canUseNetns();
if (!enabled) console.log("SKIPPED netns auto-route tests: need root and ip netns");

async function state(ns: string): Promise<string> {
  const out: string[] = [];
  for (
    const a of [["rule"], ["-6", "rule"], ["route", "show", "table", "all"], [
      "-6",
      "route",
      "show",
      "table",
      "all",
    ]]
  ) {
    out.push(await run("ip", "-n", ns, ...a));
  }
  return out.join("\n");
}

const get = (ns: string, ...a: string[]) => run("ip", "-n", ns, "route", "get", ...a);

for (const ipv6 of [true, false]) {
  Deno.test({
    name: `netns: auto-route sends unmarked traffic into the TUN, keeps the rest on main (IPv6 ${
      ipv6 ? "carried" : "blocked"
    })`,
    ignore: !enabled,
    async fn() {
      const id = crypto.randomUUID().slice(0, 6);
      const ns = `ostpar-${id}`;
      const dir = await Deno.makeTempDir({ prefix: "ostp-ar-" });
      try {
        await run("ip", "netns", "add", ns);
        const ip = (...a: string[]) => run("ip", "-n", ns, ...a);
        await ip("link", "set", "lo", "up");
        // The "physical" side: a veth whose peer stays unconfigured; a default route over it.
        await ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p");
        await ip("link", "set", "eth0", "up");
        await ip("link", "set", "eth0p", "up");
        await ip("addr", "add", "192.0.2.2/24", "dev", "eth0");
        await ip("-6", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad");
        await ip("route", "add", "default", "via", "192.0.2.1");
        await ip("-6", "route", "add", "default", "via", "2001:db8:1::1");
        await ip("tuntap", "add", "dev", "ostpt0", "mode", "tun");
        await ip("link", "set", "ostpt0", "up");
        await ip("addr", "add", "10.255.0.1/30", "dev", "ostpt0");
        if (ipv6) await ip("-6", "addr", "add", "fd00:255::1/126", "dev", "ostpt0", "nodad");
        const before = await state(ns);
        const { journal } = await HostJournal.open(`${dir}/j.jsonl`);
        const changes = autoRouteChanges({
          tun: "ostpt0",
          table: 7331,
          mark: 0x7331,
          priority: 9000,
          ipv6,
          exclude: ["198.51.100.0/24", "2001:db8:77::/48"],
          servers: ["203.0.113.9"],
          ip: ["ip", "-n", ns],
        });
        for (const c of changes) await journal.apply(c);
        assert((await get(ns, "8.8.8.8")).includes("dev ostpt0"), "unmarked IPv4 into the TUN");
        assert((await get(ns, "8.8.8.8", "mark", "0x7331")).includes("dev eth0"), "marked: main");
        assert((await get(ns, "203.0.113.9")).includes("dev eth0"), "the server: main");
        assert((await get(ns, "198.51.100.7")).includes("dev eth0"), "an excluded CIDR: main");
        assert((await get(ns, "2001:db8:77::5")).includes("dev eth0"), "an excluded v6 CIDR: main");
        const v6 = await get(ns, "2606:4700::1").catch((e: Error) => e.message);
        if (ipv6) assert(v6.includes("dev ostpt0"), `v6 into the TUN: ${v6}`);
        else assert(/unreachable|No route to host/.test(v6), `v6 blocked, not around: ${v6}`);
        const marked6 = await get(ns, "2606:4700::1", "mark", "0x7331");
        assert(marked6.includes("dev eth0"), "marked v6: main");
        const report = await journal.undoAll();
        assertEquals(report.failed, []);
        assertEquals(await state(ns), before);
      } finally {
        await run("ip", "netns", "del", ns).catch(() => {});
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

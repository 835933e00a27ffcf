/**
 * The journal against the real host, inside a namespace this test makes: a
 * process adds a device, addresses, routes and rules (v4 and v6) and edits a
 * resolver file, then is killed with SIGKILL; the next open of its journal
 * puts everything back exactly (`ip rule`, `ip route show table all`, v6,
 * addresses, links, the file compared before and after).
 */
import { assert, assertEquals } from "../support/assert.ts";
import { HostJournal } from "../../shared/host/journal.ts";
import { canUseNetns, run } from "../support/netns.ts";
import { changesIn } from "../support/journal_child.ts";

const enabled = await canUseNetns();
if (!enabled) console.log("SKIPPED netns journal tests: need root and ip netns");

async function snapshot(ns: string): Promise<string> {
  const parts: string[] = [];
  for (
    const args of [
      ["rule"],
      ["-6", "rule"],
      ["route", "show", "table", "all"],
      ["-6", "route", "show", "table", "all"],
      ["addr"],
      ["-d", "link"],
    ]
  ) {
    parts.push(`# ip ${args.join(" ")}\n` + await run("ip", "-n", ns, ...args));
  }
  return parts.join("\n");
}

Deno.test({
  name: "netns: host changes of a process killed with SIGKILL are undone exactly at the next start",
  ignore: !enabled,
  async fn() {
    const ns = `ostpj-${crypto.randomUUID().slice(0, 8)}`;
    const dir = await Deno.makeTempDir({ prefix: "ostp-journal-" });
    let child: Deno.ChildProcess | null = null;
    try {
      await run("ip", "netns", "add", ns);
      await run("ip", "-n", ns, "link", "set", "lo", "up");
      const resolv = `${dir}/resolv.conf`;
      await Deno.writeTextFile(resolv, "nameserver 192.0.2.1\noptions edns0\n");
      const before = await snapshot(ns);
      const journal = `${dir}/state/tun.jsonl`;
      child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../support/journal_child.ts", import.meta.url).pathname,
          journal,
          ns,
          resolv,
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = child.stdout.getReader();
      let out = "";
      while (!out.includes("applied")) {
        const { value, done } = await reader.read();
        if (done) break;
        out += new TextDecoder().decode(value);
      }
      reader.releaseLock();
      assert(out.includes("applied"), "the child made its changes");
      const during = await snapshot(ns);
      assert(during.includes("ostpj0") && during.includes("7331"), "changes are visible");
      assertEquals(await Deno.readTextFile(resolv), "nameserver 10.250.0.2\n");
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
      child = null;
      // The next start of the same capability finds the journal and undoes it.
      const { journal: next, recovered } = await HostJournal.open(journal, { owner: "test" });
      assertEquals(recovered?.failed, []);
      assertEquals(recovered?.undone.length, changesIn(ns, resolv).length);
      await next.undoAll();
      assertEquals(await snapshot(ns), before);
      assertEquals(await Deno.readTextFile(resolv), "nameserver 192.0.2.1\noptions edns0\n");
    } finally {
      if (child) {
        try {
          child.kill("SIGKILL");
        } catch {
          // gone
        }
        await child.status;
        await child.stdout.cancel().catch(() => {});
      }
      await run("ip", "netns", "del", ns).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

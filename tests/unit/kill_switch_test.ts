import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { killSwitchChanges, nftKillSwitchScript } from "../../client/tun/kill_switch.ts";
import type { CommandChange } from "../../shared/host/journal.ts";

const base = {
  tun: "tun0",
  proxies: [{ ip: "192.0.2.10", port: 8080 }, { ip: "2001:db8::10", port: 3128 }],
  dns: ["192.0.2.53"],
};

Deno.test("kill switch: one nft transaction, undone by deleting only our table", () => {
  const [c, ...rest] = killSwitchChanges({ ...base, backend: "nft" }) as CommandChange[];
  assertEquals(rest.length, 0);
  assertEquals(c.apply[0], "nft");
  assertEquals(c.undo, ["nft", "delete table inet ostp_killswitch"]);
  const s = nftKillSwitchScript({ ...base, backend: "nft", mark: 0x7331 });
  for (
    const want of [
      'oifname "tun0" accept',
      "ip daddr 192.0.2.10 tcp dport 8080 accept",
      "ip6 daddr 2001:db8::10 tcp dport 3128 accept",
      "ip daddr 192.0.2.53 udp dport 53 accept",
      "ip daddr 192.0.2.53 tcp dport 53 accept",
      "meta mark 0x7331 accept",
      "reject with tcp reset",
    ]
  ) assert(s.includes(want), want);
  // The rejects come last: every accept is before them.
  assert(s.lastIndexOf("accept") < s.indexOf("reject"), s);
});

Deno.test("kill switch: iptables puts the jump in last (so undo removes it first), per family", () => {
  const cs = killSwitchChanges({
    ...base,
    backend: "iptables",
    exec: ["ip", "netns", "exec", "x"],
  }) as CommandChange[];
  for (const fam of ["iptables", "ip6tables"]) {
    const mine = cs.filter((c) => c.apply[4] === fam);
    assertEquals(mine[0].apply.slice(4), [fam, "-w", "-N", "OSTP_KILLSWITCH"]);
    assertEquals(mine.at(-1)!.apply.slice(6), ["-I", "OUTPUT", "1", "-j", "OSTP_KILLSWITCH"]);
    assertEquals(mine.at(-1)!.undo.slice(6), ["-D", "OUTPUT", "-j", "OSTP_KILLSWITCH"]);
    // Each rule is undone by deleting exactly that rule.
    for (const c of mine.slice(1, -1)) {
      assertEquals(c.apply[6], "-A");
      assertEquals(c.undo.slice(7), c.apply.slice(7));
    }
  }
  const v6 = cs.filter((c) => c.apply[4] === "ip6tables").map((c) => c.apply.join(" ")).join("\n");
  assert(v6.includes("2001:db8::10") && !v6.includes("192.0.2.10"), "addresses by family");
});

Deno.test("kill switch: names, addresses and ports that could smuggle rules are refused", () => {
  for (
    const bad of [
      { ...base, tun: 'tun0" accept; add rule' },
      { ...base, proxies: [{ ip: "192.0.2.1 accept", port: 80 }] },
      { ...base, proxies: [{ ip: "192.0.2.1", port: 0 }] },
      { ...base, dns: ["8.8.8.8; flush ruleset"] },
      { ...base, mark: -1 },
    ]
  ) assertThrows(() => killSwitchChanges({ ...bad, backend: "nft" }));
});

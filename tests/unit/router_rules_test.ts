import { explainRoute } from "../../client/router/explain.ts";
import { normalizeProcessName, Router, type Rule } from "../../client/router/rules.ts";
import type { FlowContext } from "../../client/router/flow.ts";
import { parseCidr, parseIp } from "../../shared/net/cidr.ts";
import { assert, assertEquals } from "../support/assert.ts";

function cidrs(...texts: string[]) {
  return texts.map((t) => {
    const p = parseCidr(t);
    assert(p, t);
    return p;
  });
}

function flow(host: string, port = 443, extra: Partial<FlowContext> = {}): FlowContext {
  return { inbound: "proxy", network: "tcp", target: { host, port }, ...extra };
}

function rule(label: string, match: Rule["match"], outbound: string): Rule {
  return { label, match, outbound };
}

/** The rule label and outbound `router` picks for `ctx`. */
function pick(router: Router, ctx: FlowContext): [string, string] {
  const d = router.decide(ctx);
  return [router.label(d.rule), d.outbound];
}

Deno.test("router: no rules → the default outbound, rule -1", () => {
  const r = new Router({ rules: [], defaultOutbound: "ostp" });
  const d = r.decide(flow("example.com"));
  assertEquals(d, { rule: -1, outbound: "ostp", needsIp: false });
  assertEquals(r.defaultHits, 1);
});

Deno.test("router: first match wins across mixed rules, whatever structure finds them", () => {
  const rules = [
    rule("ports", { port: [{ from: 25, to: 25 }] }, "block"),
    rule("corp-ip", { ip: cidrs("10.0.0.0/8") }, "corp"),
    rule("corp-dom", { domainSuffix: ["corp.lan"] }, "corp"),
    rule("exact", { domain: ["www.example.com"] }, "direct"),
    rule("wide-ip", { ip: cidrs("10.1.0.0/16", "0.0.0.0/0") }, "ostp"),
    rule("com", { domainSuffix: ["com"] }, "block"),
    rule("udp", { network: "udp" }, "direct"),
  ];
  const r = new Router({ rules, defaultOutbound: "ostp" });
  assertEquals(pick(r, flow("mail.corp.lan", 25)), ["ports", "block"]);
  assertEquals(pick(r, flow("mail.corp.lan", 587)), ["corp-dom", "corp"]);
  assertEquals(pick(r, flow("10.1.2.3")), ["corp-ip", "corp"], "the /8 rule comes before the /16");
  assertEquals(pick(r, flow("192.0.2.1")), ["wide-ip", "ostp"]);
  assertEquals(pick(r, flow("www.example.com")), ["exact", "direct"], "before the com suffix");
  assertEquals(pick(r, flow("api.example.com")), ["com", "block"]);
  assertEquals(pick(r, flow("example.org", 53, { network: "udp" })), ["udp", "direct"]);
  assertEquals(pick(r, flow("example.org")), ["default", "ostp"]);
});

Deno.test("router: one structure entry serving several rules keeps rule order", () => {
  const r = new Router({
    rules: [
      rule("a", { domainSuffix: ["example.com"], port: [{ from: 80, to: 80 }] }, "direct"),
      rule("b", { domainSuffix: ["example.com"] }, "block"),
      rule("c", { domain: ["example.com"] }, "corp"),
    ],
    defaultOutbound: "ostp",
  });
  assertEquals(pick(r, flow("example.com", 80)), ["a", "direct"]);
  assertEquals(pick(r, flow("example.com", 443)), ["b", "block"]);
  assertEquals(pick(r, flow("x.example.com", 80)), ["a", "direct"]);
  assertEquals(r.sizes, { domains: 2, prefixes: 0 });
});

Deno.test("router: matcher kinds are ANDed, values of one kind ORed", () => {
  const r = new Router({
    rules: [
      rule("both", {
        domain: ["a.test"],
        domainSuffix: ["b.test"],
        port: [{ from: 80, to: 80 }, { from: 8000, to: 8100 }],
        network: "tcp",
        inbound: ["proxy", "tun"],
      }, "direct"),
    ],
    defaultOutbound: "ostp",
  });
  assertEquals(pick(r, flow("a.test", 80)), ["both", "direct"]);
  assertEquals(pick(r, flow("x.b.test", 8050)), ["both", "direct"]);
  assertEquals(pick(r, flow("x.b.test", 8100, { inbound: "tun" })), ["both", "direct"]);
  assertEquals(pick(r, flow("x.a.test", 80)), ["default", "ostp"], "a.test is exact");
  assertEquals(pick(r, flow("a.test", 443)), ["default", "ostp"], "port fails");
  assertEquals(pick(r, flow("a.test", 8101)), ["default", "ostp"], "range end is inclusive only");
  assertEquals(pick(r, flow("a.test", 80, { network: "udp" })), ["default", "ostp"]);
  assertEquals(pick(r, flow("a.test", 80, { inbound: "map1" })), ["default", "ostp"]);
});

Deno.test("router: ports and ranges, merged and overlapping", () => {
  const r = new Router({
    rules: [
      rule("p", {
        port: [
          { from: 8000, to: 8100 },
          { from: 22, to: 22 },
          { from: 8050, to: 9000 },
          { from: 9001, to: 9001 },
          { from: 65535, to: 65535 },
        ],
      }, "direct"),
    ],
    defaultOutbound: "ostp",
  });
  for (const p of [22, 8000, 8100, 8500, 9000, 9001, 65535]) {
    assertEquals(r.decide(flow("h.test", p)).rule, 0, `port ${p}`);
  }
  for (const p of [1, 21, 23, 7999, 9002, 65534]) {
    assertEquals(r.decide(flow("h.test", p)).rule, -1, `port ${p}`);
  }
});

Deno.test("router: network and inbound matchers alone", () => {
  const r = new Router({
    rules: [
      rule("tun-udp", { network: "udp", inbound: ["tun"] }, "block"),
      rule("map", { inbound: ["map-ssh"] }, "direct"),
    ],
    defaultOutbound: "ostp",
  });
  assertEquals(pick(r, flow("h.test", 53, { network: "udp", inbound: "tun" })), [
    "tun-udp",
    "block",
  ]);
  assertEquals(pick(r, flow("h.test", 53, { network: "tcp", inbound: "tun" })), [
    "default",
    "ostp",
  ]);
  assertEquals(pick(r, flow("h.test", 22, { inbound: "map-ssh" })), ["map", "direct"]);
  assertEquals(pick(r, flow("h.test", 22, { inbound: "Map-SSH" })), ["default", "ostp"]);
});

Deno.test("router: process names ignore case, a directory and .exe", () => {
  assertEquals(normalizeProcessName("Discord.exe"), "discord");
  assertEquals(normalizeProcessName("C:\\Games\\Steam.EXE"), "steam");
  assertEquals(normalizeProcessName("/usr/bin/curl"), "curl");
  assertEquals(normalizeProcessName(".exe"), ".exe");
  const r = new Router({
    rules: [rule("p", { process: ["discord.exe", "curl"] }, "direct")],
    defaultOutbound: "ostp",
  });
  for (const p of ["discord.exe", "Discord.exe", "discord", "curl", "CURL.exe", "/usr/bin/curl"]) {
    assertEquals(r.decide(flow("h.test", 443, { process: p })).rule, 0, p);
  }
  for (const p of ["discord2.exe", "curl.exe.bak", "wget", ""]) {
    assertEquals(r.decide(flow("h.test", 443, { process: p })).rule, -1, p);
  }
  assertEquals(r.decide(flow("h.test")).rule, -1, "no process known");
});

Deno.test("router: IPv4, IPv4-mapped IPv6 and IPv6 literals; ctx.ip for resolved names", () => {
  const r = new Router({
    rules: [
      rule("v4", { ip: cidrs("192.168.1.0/24") }, "direct"),
      rule("v6", { ip: cidrs("2001:db8::/32") }, "block"),
      rule("host", { ip: cidrs("203.0.113.7") }, "corp"),
    ],
    defaultOutbound: "ostp",
  });
  assertEquals(pick(r, flow("192.168.1.20")), ["v4", "direct"]);
  assertEquals(pick(r, flow("::ffff:192.168.1.20")), ["v4", "direct"]);
  assertEquals(pick(r, flow("::FFFF:c0a8:0114")), ["v4", "direct"]);
  assertEquals(pick(r, flow("192.168.2.1")), ["default", "ostp"]);
  assertEquals(pick(r, flow("2001:db8::1")), ["v6", "block"]);
  assertEquals(pick(r, flow("2001:db9::1")), ["default", "ostp"]);
  assertEquals(pick(r, flow("203.0.113.7")), ["host", "corp"]);
  assertEquals(pick(r, flow("203.0.113.8")), ["default", "ostp"]);
  assertEquals(pick(r, flow("nas.home", 443, { ip: parseIp("192.168.1.5")! })), ["v4", "direct"]);
  assertEquals(pick(r, flow("nas.home", 443, { ip: parseIp("::ffff:192.168.1.5")! })), [
    "v4",
    "direct",
  ]);
  assertEquals(pick(r, flow("host1", 443, { ip: parseIp("203.0.113.7")! })), ["host", "corp"]);
  assertEquals(pick(r, flow("nas.home", 443, { ip: Uint8Array.of(192, 168, 1, 9) })), [
    "v4",
    "direct",
  ]);
  assertEquals(pick(r, flow("nas.home", 443, { ip: Uint8Array.of(192, 168, 2, 9) })), [
    "default",
    "ostp",
  ]);
  assertEquals(r.decide(flow("nas.home", 443, { ip: new Uint8Array(5) })).needsIp, true, "ignored");
});

Deno.test("router: a domain rule never matches an IP literal; an IP rule never an unresolved name", () => {
  const r = new Router({
    rules: [
      rule("dom", { domainSuffix: ["example"] }, "direct"),
      rule("ip", { ip: cidrs("10.0.0.0/8") }, "block"),
    ],
    defaultOutbound: "ostp",
  });
  assertEquals(pick(r, flow("10.0.0.1")), ["ip", "block"]);
  const d = r.decide(flow("intranet.corp"));
  assertEquals(d, { rule: -1, outbound: "ostp", needsIp: true });
  assertEquals(pick(r, flow("a.example")), ["dom", "direct"]);
  assertEquals(r.decide(flow("a.example")).needsIp, false, "dom is before the IP rule");
});

Deno.test("router: needsIp only when an earlier IP rule could change the outbound", () => {
  const r = new Router({
    rules: [
      rule("lan", { ip: cidrs("192.168.0.0/16"), port: [{ from: 80, to: 80 }] }, "direct"),
      rule("same", { ip: cidrs("10.0.0.0/8") }, "ostp"),
      rule("dom", { domainSuffix: ["direct.test"] }, "direct"),
      rule("dom-ip", { domainSuffix: ["mixed.test"], ip: cidrs("172.16.0.0/12") }, "block"),
    ],
    defaultOutbound: "ostp",
  });
  assertEquals(r.decide(flow("x.test", 80)).needsIp, true, "lan could match on port 80");
  assertEquals(r.decide(flow("x.test", 443)).needsIp, false, "lan fails on port; same is ostp");
  assertEquals(
    r.decide(flow("a.direct.test", 80)),
    { rule: 2, outbound: "direct", needsIp: true },
    "lan is direct as well, but same (10/8, ostp) could take the flow",
  );
  const sameOnly = new Router({
    rules: r.rules.slice(0, 1).concat(r.rules[2]),
    defaultOutbound: "ostp",
  });
  assertEquals(
    sameOnly.decide(flow("a.direct.test", 80)),
    { rule: 1, outbound: "direct", needsIp: false },
    "only lan is skipped and it would also say direct",
  );
  assertEquals(r.decide(flow("a.mixed.test", 443)), { rule: -1, outbound: "ostp", needsIp: true });
  const resolved = flow("a.mixed.test", 443, { ip: parseIp("172.16.5.5")! });
  assertEquals(r.decide(resolved), { rule: 3, outbound: "block", needsIp: false });
  const elsewhere = flow("b.other.test", 443, { ip: parseIp("172.16.5.5")! });
  assertEquals(r.decide(elsewhere).rule, -1, "dom-ip needs the domain too");
});

Deno.test("router: hit counters, provisional decisions and record=false", () => {
  const never = new Router({
    rules: [
      rule("ip", { ip: cidrs("10.0.0.0/8") }, "direct"),
      rule("d", { domain: ["a.b"] }, "block"),
    ],
    defaultOutbound: "ostp",
  });
  never.decide(flow("10.1.1.1"));
  never.decide(flow("10.1.1.2"));
  never.decide(flow("a.b"));
  never.decide(flow("c.d")); // needsIp, but final under resolve: never
  never.decide(flow("c.d"), false);
  assertEquals(Array.from(never.hits), [2, 1]);
  assertEquals(never.defaultHits, 1);
  assertEquals(never.stats(), [
    { rule: 0, label: "ip", outbound: "direct", hits: 2 },
    { rule: 1, label: "d", outbound: "block", hits: 1 },
    { rule: -1, label: "default", outbound: "ostp", hits: 1 },
  ]);
  const onDemand = new Router({ rules: never.rules, defaultOutbound: "ostp", resolve: "onDemand" });
  const first = onDemand.decide(flow("c.d"));
  assertEquals(first.needsIp, true);
  assertEquals(onDemand.defaultHits, 0, "a provisional decision is not counted");
  onDemand.decide(flow("c.d", 443, { ip: parseIp("10.9.9.9")! }));
  assertEquals(Array.from(onDemand.hits), [1, 0]);
  assertEquals(Array.from(never.hits), [2, 1], "a new router has its own counters");
});

Deno.test("router: decisions are frozen shared objects; many decisions stay consistent", () => {
  const r = new Router({
    rules: [rule("d", { domainSuffix: ["a.test"] }, "direct")],
    defaultOutbound: "ostp",
  });
  const a = r.decide(flow("x.a.test"));
  const b = r.decide(flow("y.a.test"));
  assert(a === b);
  assert(Object.isFrozen(a));
  for (let i = 0; i < 1000; i++) {
    assertEquals(r.decide(flow(i % 2 ? "x.a.test" : "x.b.test")).rule, i % 2 ? 0 : -1);
  }
});

Deno.test("router: domain matching in rules ignores case and a trailing dot", () => {
  const r = new Router({
    rules: [rule("lan", { domainSuffix: ["local.lan"] }, "direct")],
    defaultOutbound: "ostp",
  });
  assertEquals(r.decide(flow("A.Local.LAN.")).rule, 0);
  assertEquals(r.decide(flow("evillocal.lan")).rule, -1);
  assertEquals(r.decide(flow("1.2.3.4.local.lan")).rule, 0, "a name that starts with digits");
});

Deno.test("router: nested and repeated prefixes across rules keep first-match-wins", () => {
  const r = new Router({
    rules: [
      rule("narrow-late-v4", { ip: cidrs("10.1.2.0/24"), port: [{ from: 80, to: 80 }] }, "a"),
      rule("wide", { ip: cidrs("10.0.0.0/8", "2001:db8::/32") }, "b"),
      rule("mid", { ip: cidrs("10.1.0.0/16", "10.3.0.0/16", "2001:db8:1::/48") }, "c"),
      rule("again", { ip: cidrs("10.1.0.0/16", "0.0.0.0/0") }, "d"),
    ],
    defaultOutbound: "ostp",
  });
  assertEquals(pick(r, flow("10.1.2.3", 80)), ["narrow-late-v4", "a"]);
  assertEquals(pick(r, flow("10.1.2.3", 443)), ["wide", "b"]);
  assertEquals(pick(r, flow("10.200.0.1")), ["wide", "b"]);
  assertEquals(pick(r, flow("11.0.0.1")), ["again", "d"]);
  assertEquals(pick(r, flow("2001:db8:1::5")), ["wide", "b"]);
  assertEquals(pick(r, flow("2001:db9::5")), ["default", "ostp"], "0.0.0.0/0 is IPv4 only");
  assertEquals(r.sizes.prefixes, 7);
});

/** A reference router: every rule, every value, in order, by linear scan. */
function naiveDecide(rules: Rule[], ctx: FlowContext): number {
  const host = ctx.target.host.toLowerCase().replace(/\.$/, "");
  const lit = parseIp(ctx.target.host);
  const ip = ctx.ip ?? lit ?? undefined;
  const name = lit === null;
  for (let i = 0; i < rules.length; i++) {
    const m = rules[i].match;
    if (m.domain || m.domainSuffix) {
      if (!name) continue;
      const ok = (m.domain ?? []).includes(host) ||
        (m.domainSuffix ?? []).some((s) => host === s || host.endsWith(`.${s}`));
      if (!ok) continue;
    }
    if (m.ip) {
      if (!ip) continue;
      const ok = m.ip.some((p) => {
        for (let b = 0; b < p.bits; b++) {
          const bit = (x: Uint8Array) => (x[b >> 3] >> (7 - (b & 7))) & 1;
          if (bit(p.addr) !== bit(ip)) return false;
        }
        return true;
      });
      if (!ok) continue;
    }
    if (m.port && !m.port.some((p) => ctx.target.port >= p.from && ctx.target.port <= p.to)) {
      continue;
    }
    if (m.network && m.network !== ctx.network) continue;
    if (m.inbound && !m.inbound.includes(ctx.inbound)) continue;
    if (m.process) {
      if (!ctx.process) continue;
      const p = normalizeProcessName(ctx.process);
      if (!m.process.some((q) => normalizeProcessName(q) === p)) continue;
    }
    return i;
  }
  return -1;
}

Deno.test("router: agrees with a linear reference on random rules and flows", () => {
  let seed = 12345;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const labels = ["a", "b", "c", "d"];
  const names = ["x.a", "y.x.a", "b", "c.b", "a"];
  const v4 = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.1.0/24",
    "10.1.1.1",
    "192.168.0.0/16",
    "0.0.0.0/1",
  ];
  const v6 = ["2001:db8::/32", "2001:db8:1::/48", "::/0"];
  for (let round = 0; round < 40; round++) {
    const rules: Rule[] = [];
    for (let i = 0, n = 1 + rand(8); i < n; i++) {
      const m: Rule["match"] = {};
      do {
        if (rand(3) === 0) m.domain = [names[rand(5)], names[rand(5)]];
        if (rand(3) === 0) m.domainSuffix = [names[rand(5)]];
        if (rand(3) === 0) m.ip = cidrs(v4[rand(6)], rand(2) ? v4[rand(6)] : v6[rand(3)]);
        if (rand(4) === 0) m.port = [{ from: 80, to: 80 + rand(400) }];
        if (rand(5) === 0) m.network = rand(2) ? "tcp" : "udp";
        if (rand(5) === 0) m.inbound = [rand(2) ? "proxy" : "tun"];
        if (rand(6) === 0) m.process = ["curl.exe"];
      } while (Object.keys(m).length === 0);
      rules.push(rule(`r${i}`, m, labels[rand(4)]));
    }
    const router = new Router({ rules, defaultOutbound: "ostp" });
    for (let k = 0; k < 200; k++) {
      const hosts = [
        `${["", "q.", "y."][rand(3)]}${names[rand(5)]}`,
        `10.${rand(3)}.${rand(3)}.${rand(3)}`,
        `192.168.${rand(256)}.1`,
        `2001:db8:${rand(3)}::${rand(100)}`,
        "::ffff:10.1.1.1",
        "203.0.113.1",
      ];
      const ctx = flow(hosts[rand(hosts.length)], 60 + rand(500), {
        network: rand(2) ? "tcp" : "udp",
        inbound: rand(2) ? "proxy" : "tun",
        process: ["curl", "CURL.EXE", "wget", undefined][rand(4)],
      });
      if (rand(4) === 0 && parseIp(ctx.target.host) === null) {
        ctx.ip = parseIp(["10.1.1.1", "192.168.3.3", "2001:db8:1::1"][rand(3)])!;
      }
      const want = naiveDecide(rules, ctx);
      const got = router.decide(ctx);
      assertEquals(got.rule, want, `round ${round}, ${JSON.stringify(ctx)}`);
      assertEquals(got.outbound, want < 0 ? "ostp" : rules[want].outbound);
    }
  }
});

Deno.test("router: explainRoute describes the decision and counts no hit", () => {
  const rules = [
    rule("exclude.ips", { ip: cidrs("10.0.0.0/8") }, "direct"),
    rule("rules[0]", { domainSuffix: ["corp.lan"] }, "corp"),
  ];
  const never = new Router({ rules, defaultOutbound: "ostp" });
  const a = explainRoute(never, flow("x.corp.lan", 443, { process: "curl" }));
  assertEquals(a.decision.outbound, "corp");
  assertEquals(a.lines, [
    "x.corp.lan:443 (tcp, inbound proxy, process curl)",
    "  matches rules[0] (rule 2 of 2)",
    "  outbound: corp",
    '  an earlier IP rule could match if the name were resolved; with "resolve": "never" this answer stands',
  ]);
  const b = explainRoute(never, flow("2001:db8::1", 53, { network: "udp" }));
  assertEquals(b.lines, [
    "[2001:db8::1]:53 (udp, inbound proxy)",
    "  matches no rule: the default outbound",
    "  outbound: ostp",
  ]);
  const onDemand = new Router({ rules, defaultOutbound: "ostp", resolve: "onDemand" });
  const c = explainRoute(onDemand, flow("example.org"));
  assert(c.lines[3].includes("the client resolves it and decides again"));
  assertEquals(Array.from(never.hits), [0, 0]);
  assertEquals(never.defaultHits + onDemand.defaultHits, 0);
});

Deno.test("router: a flow to an address known by a name (TUN) matches domain rules by that name", () => {
  const r = new Router({
    rules: [
      rule("exclude.domains", { domainSuffix: ["example.org"] }, "direct"),
      rule("lan", { ip: cidrs("10.0.0.0/8") }, "block"),
    ],
    defaultOutbound: "ostp",
  });
  const ip = parseIp("198.51.100.7")!;
  assertEquals(pick(r, flow("198.51.100.7", 443, { inbound: "tun", ip })), ["default", "ostp"]);
  assertEquals(
    pick(r, flow("198.51.100.7", 443, { inbound: "tun", ip, domain: "cdn.example.org" })),
    ["exclude.domains", "direct"],
  );
  // The address still counts for IP rules when the name matches nothing.
  const lan = parseIp("10.1.2.3")!;
  assertEquals(
    pick(r, flow("10.1.2.3", 80, { inbound: "tun", ip: lan, domain: "printer.local" })),
    ["lan", "block"],
  );
});

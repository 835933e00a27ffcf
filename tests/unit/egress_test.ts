import { assert, assertEquals } from "../support/assert.ts";
import type { ConfigIssue } from "../../shared/config/types.ts";
import { parseIp } from "../../shared/net/cidr.ts";
import {
  DEFAULT_DENY,
  type EgressDecision,
  type EgressEntry,
  EgressPolicy,
  type EgressPolicyOptions,
  formatEgressEntry,
  localAddresses,
  parseEgressEntry,
  readEgressConfig,
  resolveAllowed,
  type Resolver,
} from "../../server/egress.ts";

function entry(text: string): EgressEntry {
  const r = parseEgressEntry(text);
  if (!r.ok) throw new Error(`test entry ${text}: ${r.error}`);
  return r.entry;
}

function policy(
  allow: string[] = [],
  deny: string[] = [],
  self: EgressPolicyOptions["self"] = [],
): EgressPolicy {
  return new EgressPolicy({ allow: allow.map(entry), deny: deny.map(entry), self });
}

function check(p: EgressPolicy, ip: string, port: number): EgressDecision {
  const a = parseIp(ip);
  if (!a) throw new Error(`test address ${ip}`);
  return p.check(a, port);
}

function allowed(p: EgressPolicy, ip: string, port = 443): boolean {
  return check(p, ip, port).allowed;
}

function reason(p: EgressPolicy, ip: string, port = 443): string {
  const d = check(p, ip, port);
  if (d.allowed) throw new Error(`${ip}:${port} was allowed`);
  return d.reason;
}

/** The first, last and a middle address of a range, in IPv4, IPv4-mapped IPv6 and IPv6 as applicable. */
const REFUSED_BY_DEFAULT: [string, string][] = [
  ["0.0.0.0", "unspecified"],
  ["0.255.255.255", "this network"],
  ["10.0.0.1", "private (RFC 1918)"],
  ["10.255.255.255", "private (RFC 1918)"],
  ["100.64.0.1", "carrier-grade NAT"],
  ["100.127.255.255", "carrier-grade NAT"],
  ["127.0.0.1", "loopback"],
  ["127.255.255.254", "loopback"],
  ["169.254.169.254", "link-local"],
  ["172.16.0.1", "private (RFC 1918)"],
  ["172.31.255.255", "private (RFC 1918)"],
  ["192.0.0.8", "IETF protocol assignments"],
  ["192.0.2.1", "documentation"],
  ["192.168.1.1", "private (RFC 1918)"],
  ["198.18.0.1", "benchmarking"],
  ["198.19.255.255", "benchmarking"],
  ["198.51.100.7", "documentation"],
  ["203.0.113.9", "documentation"],
  ["224.0.0.1", "multicast"],
  ["239.255.255.250", "multicast"],
  ["240.0.0.1", "reserved"],
  ["255.255.255.254", "reserved"],
  ["255.255.255.255", "broadcast"],
  ["::", "unspecified"],
  ["::1", "loopback"],
  ["::7f00:1", "IPv4-compatible"],
  ["64:ff9b:1::1", "local-use NAT64"],
  ["100::1", "discard-only"],
  ["2001:db8::1", "documentation"],
  ["3fff::1", "documentation"],
  ["fc00::1", "unique local"],
  ["fdff:ffff::1", "unique local"],
  ["fe80::1", "link-local"],
  ["febf:ffff::1", "link-local"],
  ["fec0::1", "site-local"],
  ["ff02::1", "multicast"],
  ["ff0e::1", "multicast"],
  // NAT64 and 6to4 forms of private IPv4.
  ["64:ff9b::127.0.0.1", "NAT64 form of an address that is loopback"],
  ["64:ff9b::10.1.2.3", "NAT64 form of an address that is private"],
  ["64:ff9b::169.254.169.254", "NAT64 form of an address that is link-local"],
  ["2002:7f00:1::1", "6to4 form of an address that is loopback"],
  ["2002:c0a8:101::", "6to4 form of an address that is private"],
  ["2002:a9fe:a9fe::1", "6to4 form of an address that is link-local"],
];

Deno.test("egress: every default range is refused, IPv4 also in its IPv4-mapped form", () => {
  const p = policy();
  for (const [ip, why] of REFUSED_BY_DEFAULT) {
    const r = reason(p, ip);
    assert(r.startsWith("not allowed: "), r);
    assert(r.includes(why), `${ip}: ${r}`);
    if (!ip.includes(":")) {
      const m = reason(p, `::ffff:${ip}`);
      assertEquals(m, r, `mapped ${ip}`);
    }
  }
  assertEquals(reason(p, "127.0.0.1", 80), "not allowed: 127.0.0.1 is loopback");
  assertEquals(reason(p, "::ffff:127.0.0.1", 80), "not allowed: 127.0.0.1 is loopback");
  assertEquals(reason(p, "::1", 80), "not allowed: ::1 is loopback");
  assertEquals(reason(p, "[::ffff:7f00:1]", 80), "not allowed: 127.0.0.1 is loopback");
});

Deno.test("egress: every entry of DEFAULT_DENY is refused at its first and last address", () => {
  const p = policy();
  for (const r of DEFAULT_DENY) {
    const [addr, len] = r.cidr.split("/");
    const first = parseIp(addr)!;
    const bits = addr.includes(":") ? Number(len) : Number(len) + 96;
    const last = first.slice();
    for (let b = bits; b < 128; b++) last[b >> 3] |= 0x80 >> (b & 7);
    for (const a of [first, last]) {
      const d = p.check(a, 443);
      assert(!d.allowed, `${r.cidr} let an address through`);
    }
  }
});

Deno.test("egress: public addresses are allowed, in both families and the mapped form", () => {
  const p = policy();
  for (
    const ip of [
      "1.1.1.1",
      "8.8.8.8",
      "::ffff:8.8.8.8",
      "9.255.255.255",
      "11.0.0.0",
      "100.63.255.255",
      "100.128.0.0",
      "172.15.255.255",
      "172.32.0.0",
      "192.167.255.255",
      "192.169.0.0",
      "223.255.255.255",
      "2001:4860:4860::8888",
      "2606:4700::1111",
      "64:ff9b::8.8.8.8",
      "2002:808:808::1",
      "fbff:ffff::1",
      "fe00::1",
    ]
  ) {
    assert(allowed(p, ip), ip);
  }
  const d = check(p, "8.8.8.8", 53);
  assertEquals(d, { allowed: true });
});

Deno.test("egress: the server's own addresses are refused (the API port among them)", () => {
  const p = policy([], [], ["203.0.113.50", "2a01:4f8::5", "0.0.0.0"]);
  // 203.0.113.0/24 is documentation anyway; the most specific entry gives the reason.
  assertEquals(
    reason(p, "203.0.113.50", 9090),
    "not allowed: 203.0.113.50 is one of this server's own addresses",
  );
  assertEquals(
    reason(p, "::ffff:203.0.113.50", 9090),
    "not allowed: 203.0.113.50 is one of this server's own addresses",
  );
  assertEquals(
    reason(p, "2a01:4f8::5", 9090),
    "not allowed: 2a01:4f8::5 is one of this server's own addresses",
  );
  assert(allowed(p, "2a01:4f8::6", 9090));
  // The API's default listen address, 127.0.0.1:9090, and its IPv6 loopback twin.
  assert(!allowed(p, "127.0.0.1", 9090));
  assert(!allowed(p, "::ffff:127.0.0.1", 9090));
  assert(!allowed(p, "::1", 9090));
  const bytes = parseIp("198.51.99.1")!;
  const q = policy([], [], [bytes]);
  assert(!allowed(q, "198.51.99.1", 1));
  const d = check(q, "198.51.99.1", 1);
  assert(!d.allowed && d.rule === "self 198.51.99.1");
});

Deno.test("egress: an own IPv4 address is refused in its NAT64 and 6to4 forms too", () => {
  const p = policy([], [], ["198.51.99.1", "2a01:4f8::5"]);
  for (
    const form of [
      "64:ff9b::198.51.99.1",
      "64:ff9b::c633:6301",
      "2002:c633:6301::",
      "2002:c633:6301:1::7",
    ]
  ) {
    const d = check(p, form, 443);
    assert(!d.allowed, `${form} let through`);
    assert(d.reason.includes("one of this server's own addresses"), d.reason);
    assert(d.rule.startsWith("self "), d.rule);
  }
  // Only that address: its neighbours in both forms stay public.
  for (const near of ["64:ff9b::198.51.99.2", "2002:c633:6302::", "198.51.99.2"]) {
    assert(allowed(p, near), near);
  }
  // An IPv6 own address has no embedded forms to add (and adds nothing around it).
  assert(allowed(p, "2a01:4f8::6"));
  // An allow entry for the address itself opens the literal, not the translated forms.
  const q = policy(["198.51.99.1:443"], [], ["198.51.99.1"]);
  assert(allowed(q, "198.51.99.1"));
  assert(!allowed(q, "64:ff9b::198.51.99.1"));
});

Deno.test("egress: SIIT's IPv4-translated form (::ffff:0:a.b.c.d) is refused, IPv4 stays open", () => {
  const p = policy();
  const d = check(p, "::ffff:0:808:808", 53);
  assert(!d.allowed);
  assertEquals(d.reason, "not allowed: ::ffff:0:808:808 is IPv4-translated (SIIT, RFC 2765)");
  assertEquals(d.rule, "default ::ffff:0:0:0/96");
  assert(!allowed(p, "::ffff:0:0:0"));
  assert(!allowed(p, "::ffff:0:ffff:ffff"));
  // The IPv4-mapped space next to it is IPv4 itself: public addresses pass.
  assert(allowed(p, "8.8.8.8", 53));
  assert(allowed(p, "::ffff:8.8.8.8", 53));
  assert(DEFAULT_DENY.some((r) => r.cidr === "::ffff:0:0:0/96" && r.why.includes("SIIT")));
});

Deno.test("egress: localAddresses collects interface addresses without zones", () => {
  const got = localAddresses([
    { address: "127.0.0.1" },
    { address: "fe80::1%eth0" },
    { address: "::ffff:198.51.99.1" },
    { address: "198.51.99.1" },
    { address: "not an address" },
  ]);
  assertEquals(got, ["127.0.0.1", "fe80::1", "198.51.99.1"]);
});

Deno.test("egress: an allow entry opens exactly one address, in both of its forms", () => {
  const p = policy(["127.0.0.1/32"]);
  assert(allowed(p, "127.0.0.1", 1));
  assert(allowed(p, "127.0.0.1", 65535));
  assert(allowed(p, "::ffff:127.0.0.1", 22));
  assert(!allowed(p, "127.0.0.2"));
  assert(!allowed(p, "::1"));
  const q = policy(["::1"]);
  assert(allowed(q, "::1", 22));
  assert(!allowed(q, "127.0.0.1", 22));
});

Deno.test("egress: an allow entry with a port opens exactly that port", () => {
  const p = policy(["127.0.0.1:8080"]);
  assert(allowed(p, "127.0.0.1", 8080));
  assert(allowed(p, "::ffff:127.0.0.1", 8080));
  assert(!allowed(p, "127.0.0.1", 8079));
  assert(!allowed(p, "127.0.0.1", 8081));
  assert(!allowed(p, "127.0.0.2", 8080));
  assertEquals(reason(p, "127.0.0.1", 22), "not allowed: 127.0.0.1 is loopback");
});

Deno.test("egress: an allow entry with a port range opens exactly that range", () => {
  const p = policy(["[::1]:8000-8100"]);
  assert(allowed(p, "::1", 8000));
  assert(allowed(p, "::1", 8050));
  assert(allowed(p, "::1", 8100));
  assert(!allowed(p, "::1", 7999));
  assert(!allowed(p, "::1", 8101));
  assert(!allowed(p, "127.0.0.1", 8050));
});

Deno.test("egress: an allow CIDR opens its range and nothing around it", () => {
  const p = policy(["10.91.2.0/24"]);
  assert(allowed(p, "10.91.2.0"));
  assert(allowed(p, "10.91.2.255"));
  assert(allowed(p, "::ffff:10.91.2.7"));
  assert(!allowed(p, "10.91.3.0"));
  assert(!allowed(p, "10.91.1.255"));
  // A wider default inside the allowed range stays allowed; narrower defaults still win.
  const q = policy(["0.0.0.0/0"]);
  assert(!allowed(q, "10.0.0.1"), "a /0 allow is less specific than every default range");
  const r = policy(["127.0.0.0/8"]);
  assert(allowed(r, "127.1.2.3"), "allow beats the default list at equal specificity");
});

Deno.test("egress: deny adds to the defaults, with or without ports", () => {
  const p = policy([], ["8.8.8.0/24", "1.1.1.1:25", "[2606:4700::]/32:25-26", "0.0.0.0/0:6666"]);
  assertEquals(
    reason(p, "8.8.8.8", 53),
    "not allowed: 8.8.8.8 is refused by this server's egress policy",
  );
  assert(allowed(p, "8.8.9.8", 53));
  assertEquals(
    reason(p, "1.1.1.1", 25),
    "not allowed: 1.1.1.1 port 25 is refused by this server's egress policy",
  );
  assert(allowed(p, "1.1.1.1", 443));
  assert(!allowed(p, "2606:4700::1111", 25));
  assert(!allowed(p, "2606:4700::1111", 26));
  assert(allowed(p, "2606:4700::1111", 27));
  assert(!allowed(p, "9.9.9.9", 6666));
  assert(allowed(p, "9.9.9.9", 6667));
  assert(allowed(p, "2001:4860::1", 6666), "an IPv4 /0 does not cover IPv6");
  const d = check(p, "8.8.8.8", 53);
  assert(!d.allowed && d.rule === "egress.deny[0]");
  const dflt = check(p, "10.0.0.1", 53);
  assert(!dflt.allowed && dflt.rule === "default 10.0.0.0/8");
});

Deno.test("egress: deny wins where it is more specific, allow where it is", () => {
  const p = policy(["10.0.0.0/8"], ["10.1.0.0/16"]);
  assert(allowed(p, "10.2.0.1"));
  assert(!allowed(p, "10.1.0.1"));
  const q = policy(["10.1.0.0/16"], ["10.0.0.0/8"]);
  assert(allowed(q, "10.1.0.1"));
  assert(!allowed(q, "10.2.0.1"));
  // Equal prefix, equal ports: deny wins.
  const r = policy(["10.1.0.0/16"], ["10.1.0.0/16"]);
  assert(!allowed(r, "10.1.0.1"));
  const r2 = policy(["10.1.0.0/16:80"], ["10.1.0.0/16:80"]);
  assert(!allowed(r2, "10.1.0.1", 80));
  // Same prefix: an entry with ports beats one without, a narrower range a wider one.
  const s = policy(["10.1.0.0/16:443"], ["10.1.0.0/16"]);
  assert(allowed(s, "10.1.0.1", 443));
  assert(!allowed(s, "10.1.0.1", 80));
  const t = policy(["192.168.1.10:8000-8100"], ["192.168.1.10:8080"]);
  assert(allowed(t, "192.168.1.10", 8079));
  assert(!allowed(t, "192.168.1.10", 8080));
  const t2 = policy(["192.168.1.10:8080"], ["192.168.1.10:8000-8100"]);
  assert(allowed(t2, "192.168.1.10", 8080));
  assert(!allowed(t2, "192.168.1.10", 8081));
  // A longer prefix beats ports on a shorter one.
  const u = policy(["10.0.0.0/8"], ["0.0.0.0/0:25"]);
  assert(allowed(u, "10.0.0.1", 25));
  assert(!allowed(u, "8.8.8.8", 25));
});

Deno.test("egress: parseEgressEntry accepts the documented forms", () => {
  const cases: [string, string][] = [
    ["10.91.2.0/24", "10.91.2.0/24"],
    ["127.0.0.1/32", "127.0.0.1/32"],
    ["127.0.0.1", "127.0.0.1/32"],
    ["127.0.0.1:8080", "127.0.0.1/32:8080"],
    ["10.0.0.0/8:443", "10.0.0.0/8:443"],
    ["10.0.0.0/8:1-65535", "10.0.0.0/8:1-65535"],
    ["[::1]:8000-8100", "[::1/128]:8000-8100"],
    ["::1", "::1/128"],
    ["2001:db8::/32", "2001:db8::/32"],
    ["[2001:db8::]/32", "2001:db8::/32"],
    ["[2001:db8::]/32:443", "[2001:db8::/32]:443"],
    ["[2001:db8::/32]:443", "[2001:db8::/32]:443"],
    ["[::ffff:127.0.0.1]:80", "127.0.0.1/32:80"],
  ];
  for (const [text, formatted] of cases) assertEquals(formatEgressEntry(entry(text)), formatted);
  assertEquals(entry("127.0.0.1:8080").ports, { lo: 8080, hi: 8080 });
  assertEquals(entry("[::1]:8000-8100").ports, { lo: 8000, hi: 8100 });
  assertEquals(entry("10.0.0.0/8").ports, null);
});

Deno.test("egress: parseEgressEntry rejects malformed entries with a reason", () => {
  const cases: [string, string][] = [
    ["", "empty entry"],
    ["x".repeat(101), "entry too long"],
    ["example.com", "not an IPv4 or IPv6 address or CIDR"],
    ["10.0.0.0/33", "prefix length must be 0..32"],
    ["::/129", "prefix length must be 0..128"],
    ["10.1.2.3/8", "host bits are set past /8 (the network is 10.0.0.0/8)"],
    ["127.0.0.1:0", "ports must be 1..65535"],
    ["127.0.0.1:65536", "ports must be 1..65535"],
    ["127.0.0.1:9000-8000", "a port range must be lo-hi with lo ≤ hi"],
    ["127.0.0.1:", "expected a port or a port range (lo-hi) after ':'"],
    ["127.0.0.1:http", "expected a port or a port range (lo-hi) after ':'"],
    ["127.0.0.1:80-", "expected a port or a port range (lo-hi) after ':'"],
    ["[::1", "'[' without ']'"],
    ["[::1]80", "unexpected text after ']'"],
    ["[127.0.0.1]:80", "brackets are for IPv6 addresses only"],
    ["[::1/128]/128", "two prefix lengths"],
    [
      "::1:8000-8100",
      "not an IPv4 or IPv6 address or CIDR (an IPv6 address with a port needs brackets: [addr]:port)",
    ],
    [" 10.0.0.0/8", "not an IPv4 or IPv6 address or CIDR"],
  ];
  for (const [text, error] of cases) {
    const r = parseEgressEntry(text);
    assert(!r.ok, `accepted ${JSON.stringify(text)}`);
    assertEquals(r.error, error, text);
  }
});

Deno.test("egress: readEgressConfig reports problems by path, without the values", () => {
  const issues: ConfigIssue[] = [];
  const cfg = readEgressConfig(
    {
      allow: ["10.91.2.0/24", "hunter2-secret", 7, "127.0.0.1:8080"],
      deny: ["10.1.2.3/8"],
      alow: [],
    },
    "egress",
    issues,
  );
  assertEquals(cfg.allow.length, 2);
  assertEquals(cfg.deny.length, 0);
  assertEquals(issues, [
    { path: "egress.alow", message: 'unknown field (expected "allow" or "deny")' },
    { path: "egress.allow[1]", message: "not an IPv4 or IPv6 address or CIDR" },
    { path: "egress.allow[2]", message: "expected a string, got a number" },
    { path: "egress.deny[0]", message: "host bits are set past /8 (the network is 10.0.0.0/8)" },
  ]);
  assert(!JSON.stringify(issues).includes("hunter2"));
  const none: ConfigIssue[] = [];
  assertEquals(readEgressConfig(undefined, "egress", none), { allow: [], deny: [] });
  assertEquals(none, []);
  const bad: ConfigIssue[] = [];
  readEgressConfig(["10.0.0.0/8"], "egress", bad);
  readEgressConfig({ allow: "10.0.0.0/8" }, "egress", bad);
  assertEquals(bad, [
    { path: "egress", message: "expected an object, got an array" },
    { path: "egress.allow", message: "expected an array of strings, got a string" },
  ]);
});

Deno.test("egress: checkText reads literals and refuses anything else", () => {
  const p = policy();
  assert(p.checkText("8.8.8.8", 53).allowed);
  assert(p.checkText("[2001:4860:4860::8888]", 53).allowed);
  assert(!p.checkText("[::1]", 53).allowed);
  assert(!p.checkText("127.1", 53).allowed);
  assert(!p.checkText("localhost", 53).allowed);
});

/** A resolver answering from a fixed table, recording the names asked. */
function fakeResolver(table: Record<string, string[]>, asked: string[] = []): Resolver {
  return (host) => {
    asked.push(host);
    const a = table[host];
    if (!a) return Promise.reject(new Error("ENOTFOUND"));
    return Promise.resolve(
      a.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })),
    );
  };
}

Deno.test("egress: a name resolving to loopback is refused (DNS rebinding)", async () => {
  const p = policy();
  const asked: string[] = [];
  const dns = fakeResolver({
    "rebind.example": ["127.0.0.1"],
    "mixed.example": ["93.184.215.14", "10.0.0.5"],
    "mapped.example": ["::ffff:169.254.169.254"],
    "v6.example": ["2606:4700::1111", "::1"],
    "public.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14"],
    "empty.example": [],
    "junk.example": ["not-an-ip"],
    "octal.example": ["0177.0.0.1"],
  }, asked);
  // The client is told the name is refused, not what it resolves to (no DNS oracle);
  // the server's log gets the address and why.
  assertEquals(await resolveAllowed("rebind.example", 80, p, dns), {
    allowed: false,
    failure: "denied",
    reason: "not allowed: rebind.example resolves to a non-public address",
    detail: "not allowed: rebind.example resolves to 127.0.0.1, which is loopback",
    rule: "default 127.0.0.0/8",
  });
  const mixed = await resolveAllowed("mixed.example", 80, p, dns);
  assert(!mixed.allowed && mixed.failure === "denied");
  assertEquals(mixed.reason, "not allowed: mixed.example resolves to a non-public address");
  assert(mixed.detail?.includes("10.0.0.5, which is private"), mixed.detail);
  const mapped = await resolveAllowed("mapped.example", 80, p, dns);
  assert(!mapped.allowed && mapped.detail?.includes("link-local"), JSON.stringify(mapped));
  assert(!mapped.reason.includes("169.254") && !mapped.reason.includes("link-local"));
  const v6 = await resolveAllowed("v6.example", 80, p, dns);
  assert(!v6.allowed && v6.detail?.includes("::1, which is loopback"));
  assertEquals(v6.reason, "not allowed: v6.example resolves to a non-public address");
  assertEquals(await resolveAllowed("public.example", 80, p, dns), {
    allowed: true,
    address: "93.184.215.14",
    addresses: ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
  });
  const gone = await resolveAllowed("missing.example", 80, p, dns);
  assert(!gone.allowed && gone.failure === "dns");
  const empty = await resolveAllowed("empty.example", 80, p, dns);
  assert(!empty.allowed && empty.failure === "dns");
  const junk = await resolveAllowed("junk.example", 80, p, dns);
  assert(!junk.allowed && junk.failure === "dns");
  const octal = await resolveAllowed("octal.example", 80, p, dns);
  assert(!octal.allowed, "an address the parser cannot read is never connected to");
  // Allowing the address opens the name too.
  const opened = policy(["127.0.0.1:80"]);
  const ok = await resolveAllowed("rebind.example", 80, opened, dns);
  assertEquals(ok, { allowed: true, address: "127.0.0.1", addresses: ["127.0.0.1"] });
  const other = await resolveAllowed("rebind.example", 81, opened, dns);
  assert(!other.allowed);
  assert(!asked.includes("127.0.0.1"));
});

Deno.test("egress: literal targets skip DNS", async () => {
  const asked: string[] = [];
  const dns = fakeResolver({}, asked);
  const p = policy();
  assertEquals(await resolveAllowed("8.8.8.8", 53, p, dns), {
    allowed: true,
    address: "8.8.8.8",
    addresses: ["8.8.8.8"],
  });
  assertEquals(await resolveAllowed("2001:4860:4860::8888", 53, p, dns), {
    allowed: true,
    address: "2001:4860:4860::8888",
    addresses: ["2001:4860:4860::8888"],
  });
  const lo = await resolveAllowed("::ffff:127.0.0.1", 53, p, dns);
  assertEquals(lo, {
    allowed: false,
    failure: "denied",
    reason: "not allowed: 127.0.0.1 is loopback",
    detail: "not allowed: 127.0.0.1 is loopback",
    rule: "default 127.0.0.0/8",
  });
  const v6lo = await resolveAllowed("::1", 53, p, dns);
  assert(!v6lo.allowed && v6lo.failure === "denied");
  assertEquals(asked, []);
});

Deno.test("egress: the system resolver refuses localhost", async () => {
  const r = await resolveAllowed("localhost", 80, policy());
  assert(!r.allowed, JSON.stringify(r));
  if (r.failure === "denied") {
    assertEquals(r.reason, "not allowed: localhost resolves to a non-public address");
    assert(r.detail?.startsWith("not allowed: localhost resolves to "), r.detail);
  }
});

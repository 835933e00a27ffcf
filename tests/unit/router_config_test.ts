import {
  MAX_ISSUES_PER_LIST,
  parseRoutingConfig,
  readRoutingConfig,
  ROUTING_FIELDS,
  type RoutingConfig,
  type RoutingOptions,
} from "../../client/router/config.ts";
import { Router } from "../../client/router/rules.ts";
import { ConfigError, type ConfigIssue, ObjectReader } from "../../shared/config/types.ts";
import { formatPrefix } from "../../shared/net/cidr.ts";
import { assert, assertEquals, assertThrows } from "../support/assert.ts";

/** The issues `raw` produces, as `path: message` lines. */
function issues(raw: unknown, options?: RoutingOptions): string[] {
  try {
    parseRoutingConfig(raw, options);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error("expected a ConfigError");
}

/** Asserts that `raw` yields exactly one issue at `path`, whose message includes `text`. */
function oneIssue(raw: unknown, path: string, text: string, options?: RoutingOptions): void {
  const got = issues(raw, options);
  assertEquals(got.length, 1, `issues: ${JSON.stringify(got)}`);
  assert(got[0].startsWith(`${path}: `), `path of ${JSON.stringify(got[0])}, expected ${path}`);
  assert(got[0].includes(text), `${JSON.stringify(got[0])} lacks ${JSON.stringify(text)}`);
}

const EXCLUDE = {
  "exclude": {
    "domains": ["trusted-site.com", "local.lan"],
    "ips": ["192.168.1.0/24", "10.0.0.0/8"],
    "processes": ["discord.exe", "steam.exe"],
  },
};

Deno.test("routing config: defaults", () => {
  const cfg = parseRoutingConfig({});
  assertEquals(cfg.rules, []);
  assertEquals(cfg.defaultOutbound, "ostp");
  assertEquals(cfg.resolve, "never");
  assertEquals(cfg.outbounds, [
    { name: "ostp", type: "ostp" },
    { name: "direct", type: "direct" },
    { name: "block", type: "block" },
  ]);
});

Deno.test("routing config: the exclude block as users write it compiles to direct rules first", () => {
  const cfg = parseRoutingConfig({
    ...EXCLUDE,
    "rules": [{ "domainSuffix": ["com"], "outbound": "block" }],
  });
  assertEquals(cfg.rules.map((r) => [r.label, r.outbound]), [
    ["exclude.domains", "direct"],
    ["exclude.ips", "direct"],
    ["exclude.processes", "direct"],
    ["rules[0]", "block"],
  ]);
  assertEquals(cfg.rules[0].match, { domainSuffix: ["trusted-site.com", "local.lan"] });
  assertEquals(cfg.rules[1].match.ip!.map(formatPrefix), ["192.168.1.0/24", "10.0.0.0/8"]);
  assertEquals(cfg.rules[2].match, { process: ["discord.exe", "steam.exe"] });
  const r = new Router(cfg);
  const tcp = (host: string, process?: string) => ({
    inbound: "proxy",
    network: "tcp" as const,
    target: { host, port: 443 },
    process,
  });
  assertEquals(r.decide(tcp("www.trusted-site.com")).outbound, "direct", "ahead of the com rule");
  assertEquals(r.decide(tcp("a.local.lan")).outbound, "direct");
  assertEquals(r.decide(tcp("evillocal.lan")).outbound, "ostp");
  assertEquals(r.decide(tcp("10.2.3.4")).outbound, "direct");
  assertEquals(r.decide(tcp("example.com", "Discord.exe")).outbound, "direct");
  assertEquals(r.decide(tcp("example.com")).outbound, "block");
  assertEquals(r.decide(tcp("example.org")), { rule: -1, outbound: "ostp", needsIp: true });
});

Deno.test("routing config: a full rule, single values and ranges", () => {
  const cfg = parseRoutingConfig({
    "rules": [{
      "domain": ["Example.COM."],
      "domainSuffix": "corp.lan",
      "ip": ["10.0.0.0/8", "2001:db8::/32", "203.0.113.9"],
      "port": [80, "8000-8100", "443"],
      "network": "udp",
      "inbound": "proxy",
      "process": ["curl"],
      "outbound": "corp",
    }],
    "outbounds": [{ "name": "corp", "type": "http", "url": "http://user:p%40ss@proxy.corp:3128" }],
    "defaultOutbound": "direct",
    "resolve": "onDemand",
  });
  assertEquals(cfg.rules.length, 1);
  const m = cfg.rules[0].match;
  assertEquals(m.domain, ["example.com"]);
  assertEquals(m.domainSuffix, ["corp.lan"]);
  assertEquals(m.ip!.map(formatPrefix), ["10.0.0.0/8", "2001:db8::/32", "203.0.113.9/32"]);
  assertEquals(m.port, [{ from: 80, to: 80 }, { from: 8000, to: 8100 }, { from: 443, to: 443 }]);
  assertEquals(m.network, "udp");
  assertEquals(m.inbound, ["proxy"]);
  assertEquals(m.process, ["curl"]);
  assertEquals(cfg.outbounds[3], {
    name: "corp",
    type: "http",
    proxy: { host: "proxy.corp", port: 3128 },
    auth: { username: "user", password: "p@ss" },
  });
  assertEquals(cfg.defaultOutbound, "direct");
  assertEquals(cfg.resolve, "onDemand");
});

Deno.test("routing config: outbounds of every type; http without credentials, IPv6, default port", () => {
  const cfg = parseRoutingConfig({
    "outbounds": [
      { "name": "lan", "type": "direct" },
      { "name": "tunnel2", "type": "ostp" },
      { "name": "drop", "type": "block" },
      { "name": "p6", "type": "http", "url": "http://[2001:db8::1]:8080" },
      { "name": "p80", "type": "http", "url": "http://proxy.example" },
    ],
    "rules": [{ "port": 22, "outbound": "lan" }],
  });
  assertEquals(cfg.outbounds.slice(3), [
    { name: "lan", type: "direct" },
    { name: "tunnel2", type: "ostp" },
    { name: "drop", type: "block" },
    { name: "p6", type: "http", proxy: { host: "2001:db8::1", port: 8080 } },
    { name: "p80", type: "http", proxy: { host: "proxy.example", port: 80 } },
  ]);
});

Deno.test("routing config: exclude errors name the field and the entry", () => {
  oneIssue({ exclude: [] }, "exclude", "expected an object");
  oneIssue({ exclude: { domains: "x", extra: 1 } }, "exclude.extra", "unknown field");
  oneIssue({ exclude: { domain: ["a.b"] } }, "exclude.domain", 'did you mean "domains"');
  oneIssue({ exclude: { domains: ["ok.com", "*.bad.com"] } }, "exclude.domains[1]", "wildcard");
  oneIssue(
    { exclude: { domains: [".bad.com"] } },
    "exclude.domains[0]",
    "must not start with a dot",
  );
  oneIssue({ exclude: { domains: ["exämple.com"] } }, "exclude.domains[0]", "punycode");
  oneIssue({ exclude: { domains: ["10.0.0.1"] } }, "exclude.domains[0]", "is an IP address");
  oneIssue({ exclude: { domains: ["a..b"] } }, "exclude.domains[0]", "not a valid domain name");
  oneIssue({ exclude: { domains: [42] } }, "exclude.domains[0]", "got number");
  oneIssue({ exclude: { domains: [] } }, "exclude.domains", "must not be empty");
  oneIssue({ exclude: { domains: {} } }, "exclude.domains", "got object");
  oneIssue({ exclude: { ips: ["10.0.0.0/8", "nope"] } }, "exclude.ips[1]", "not an IPv4 or IPv6");
  oneIssue({ exclude: { ips: ["10.1.2.3/8"] } }, "exclude.ips[0]", "host bits");
  oneIssue({ exclude: { ips: ["10.0.0.0/33"] } }, "exclude.ips[0]", "prefix length");
  oneIssue({ exclude: { ips: [null] } }, "exclude.ips[0]", "got null");
  oneIssue(
    { exclude: { processes: ["C:\\x\\steam.exe"] } },
    "exclude.processes[0]",
    "no directory",
  );
  oneIssue({ exclude: { processes: [""] } }, "exclude.processes[0]", "1 to 255");
  oneIssue({ exclude: { processes: ["a\u0007b"] } }, "exclude.processes[0]", "control");
});

Deno.test("routing config: rule errors name the rule, the field and the entry", () => {
  const r = (rule: unknown) => ({ rules: [{ port: 1, outbound: "direct" }, rule] });
  oneIssue({ rules: {} }, "rules", "expected an array");
  oneIssue(r("x"), "rules[1]", "expected an object");
  oneIssue(r({ outbound: "direct" }), "rules[1]", "at least one matcher");
  oneIssue(r({ port: 1 }), "rules[1].outbound", "required");
  oneIssue(r({ port: 1, outbound: "nowhere" }), "rules[1].outbound", "unknown outbound");
  oneIssue(r({ port: 1, outbound: 5 }), "rules[1].outbound", "expected a string");
  oneIssue(r({ port: 1, outbound: "direct", ports: 2 }), "rules[1].ports", 'did you mean "port"');
  oneIssue(r({ domain: ["*.a.com"], outbound: "direct" }), "rules[1].domain[0]", "domainSuffix");
  oneIssue(r({ domainSuffix: [true], outbound: "direct" }), "rules[1].domainSuffix[0]", "boolean");
  oneIssue(r({ ip: ["10.0.0.0/8", "1.2.3"], outbound: "direct" }), "rules[1].ip[1]", "not an IPv4");
  oneIssue(r({ ip: "300.1.1.1", outbound: "direct" }), "rules[1].ip", "not an IPv4");
  oneIssue(r({ port: [0], outbound: "direct" }), "rules[1].port[0]", "from 1 to 65535");
  oneIssue(r({ port: [65536], outbound: "direct" }), "rules[1].port[0]", "from 1 to 65535");
  oneIssue(r({ port: [1.5], outbound: "direct" }), "rules[1].port[0]", "from 1 to 65535");
  oneIssue(r({ port: ["90-80"], outbound: "direct" }), "rules[1].port[0]", "starts after it ends");
  oneIssue(r({ port: ["80-"], outbound: "direct" }), "rules[1].port[0]", "range");
  oneIssue(r({ port: ["1-70000"], outbound: "direct" }), "rules[1].port[0]", "from 1 to 65535");
  oneIssue(r({ port: [{}], outbound: "direct" }), "rules[1].port[0]", "got object");
  oneIssue(r({ port: [], outbound: "direct" }), "rules[1].port", "must not be empty");
  oneIssue(r({ network: "icmp", outbound: "direct" }), "rules[1].network", '"tcp" or "udp"');
  oneIssue(r({ network: ["tcp"], outbound: "direct" }), "rules[1].network", '"tcp" or "udp"');
  oneIssue(r({ inbound: ["bad name"], outbound: "direct" }), "rules[1].inbound[0]", "inbound name");
  oneIssue(
    r({ inbound: ["tun"], outbound: "direct" }),
    "rules[1].inbound[0]",
    "no inbound has this name",
    { inbounds: ["proxy"] },
  );
  oneIssue(
    r({ process: ["/usr/bin/curl"], outbound: "direct" }),
    "rules[1].process[0]",
    "no directory",
  );
});

Deno.test("routing config: outbound errors; secrets in proxy URLs never appear", () => {
  const o = (entry: unknown) => ({ outbounds: [entry] });
  oneIssue({ outbounds: {} }, "outbounds", "expected an array");
  oneIssue(o(7), "outbounds[0]", "expected an object");
  oneIssue(o({ type: "direct" }), "outbounds[0].name", "required");
  oneIssue(o({ name: "x" }), "outbounds[0].type", "required");
  oneIssue(o({ name: "x", type: "socks" }), "outbounds[0].type", "expected one of");
  oneIssue(o({ name: "-x", type: "direct" }), "outbounds[0].name", "letters, digits");
  oneIssue(o({ name: "direct", type: "direct" }), "outbounds[0].name", "built-in");
  oneIssue(o({ name: "x", type: "direct", url: "http://a" }), "outbounds[0].url", 'type "http"');
  oneIssue(o({ name: "x", type: "http" }), "outbounds[0].url", "required");
  oneIssue(
    { outbounds: [{ name: "x", type: "direct" }, { name: "x", type: "block" }] },
    "outbounds[1].name",
    "same name",
  );
  const secret = "hunter2-S3cret";
  const bad = [
    [`https://u:${secret}@proxy:3128`, "scheme"],
    [`http://u:${secret}@proxy:3128/path`, "path"],
    [`http://u:${secret}@proxy:3128?q=1`, "query"],
    [`http://:${secret}@proxy:3128`, "needs a user name"],
    [`http://u:${secret}%zz@proxy:3128`, "%-escape"],
    [`http://u:${secret}@pro_xy!:3128`, "not a valid name"],
    [`http://u:${secret}@`, "not a URL"],
    [`u:${secret}`, "scheme"],
    [`not a url ${secret}`, "not a URL"],
  ] as const;
  for (const [url, text] of bad) {
    const got = issues(o({ name: "p", type: "http", url }));
    assertEquals(got.length, 1, `${text}: ${JSON.stringify(got)}`);
    assert(got[0].startsWith("outbounds[0].url: "), got[0]);
    assert(got[0].includes(text), `${got[0]} lacks ${text}`);
    assert(!got[0].includes(secret), "the password leaked");
  }
  oneIssue(o({ name: "p", type: "http", url: 3128 }), "outbounds[0].url", "got number");
  oneIssue(o({ name: "p", type: "http", url: "http://h:0" }), "outbounds[0].url", "port");
  oneIssue(o({ name: "p", type: "http", url: "http://u@h:1#x" }), "outbounds[0].url", "fragment");
  assertEquals(
    parseRoutingConfig(o({ name: "p", type: "http", url: "http://u@h:1" })).outbounds[3],
    {
      name: "p",
      type: "http",
      proxy: { host: "h", port: 1 },
      auth: { username: "u", password: "" },
    },
  );
  // A rule naming a badly declared outbound says so, once.
  const got = issues({
    outbounds: [{ name: "corp", type: "http", url: `ftp://u:${secret}@h` }],
    rules: [{ port: 1, outbound: "corp" }],
  });
  assertEquals(got, [
    'outbounds[0].url: the scheme must be "http" (a proxy spoken to in plain HTTP CONNECT)',
    "rules[0].outbound: names an outbound whose declaration is invalid",
  ]);
  const e = assertThrows(() =>
    parseRoutingConfig(
      {
        outbounds: [{ name: "p", type: "http", url: `http://u:${secret}@h:99999` }],
      },
      {},
      "client.json",
    ), ConfigError);
  assert(!e.message.includes(secret));
  assert(e.message.includes("client.json"));
});

Deno.test("routing config: defaultOutbound and resolve", () => {
  oneIssue({ defaultOutbound: "nowhere" }, "defaultOutbound", "unknown outbound");
  oneIssue({ defaultOutbound: 1 }, "defaultOutbound", "expected a string");
  oneIssue({ resolve: "always" }, "resolve", "expected one of");
  const cfg = parseRoutingConfig({
    defaultOutbound: "p",
    outbounds: [{ name: "p", type: "http", url: "http://127.0.0.1:3128" }],
  });
  assertEquals(cfg.defaultOutbound, "p");
  assertEquals(parseRoutingConfig({ defaultOutbound: "block" }).defaultOutbound, "block");
});

Deno.test("routing config: junk never crashes, every problem reported at once", () => {
  const junk: unknown[] = [
    null,
    7,
    "x",
    [],
    { rules: [null, [], 1, { ip: [[]], port: [null], outbound: {} }] },
    { exclude: null, rules: null, outbounds: null },
    { exclude: { domains: [[], {}, null, 1e400] } },
    { outbounds: [null, [], { name: {}, type: [] }] },
    Object.assign(Object.create(null), { rules: [{ "__proto__": 1, port: 1, outbound: "x" }] }),
  ];
  for (const j of junk) {
    try {
      const cfg: RoutingConfig = parseRoutingConfig(j);
      assert(j === null || (typeof j === "object" && !Array.isArray(j)), "accepted junk");
      assert(cfg.rules.length === 0);
    } catch (e) {
      assert(e instanceof ConfigError, `not a ConfigError: ${e}`);
      assert(e.issues.length > 0);
    }
  }
  const many = issues({ rules: [{ ip: "x", port: 0, network: 1, outbound: "none" }, 3] });
  assertEquals(many, [
    "rules[0].ip: not an IPv4 or IPv6 address or CIDR",
    'rules[0].port: expected a port from 1 to 65535 or a range "from-to"',
    'rules[0].network: expected "tcp" or "udp"',
    'rules[0].outbound: unknown outbound (not one of "ostp", "direct", "block" nor declared in "outbounds")',
    "rules[1]: expected an object, got number",
  ]);
});

Deno.test("routing config: a long bad list is reported in full up to the cap, then counted", () => {
  const ips = Array.from({ length: 25 }, (_, i) => `bad${i}`);
  const got = issues({ exclude: { ips } });
  assertEquals(got.length, MAX_ISSUES_PER_LIST + 1);
  assertEquals(got[0], "exclude.ips[0]: not an IPv4 or IPv6 address or CIDR");
  assertEquals(got[MAX_ISSUES_PER_LIST], "exclude.ips: 15 more invalid entries not listed");
});

Deno.test("routing config: readRoutingConfig reads from the client config's own reader", () => {
  const list: ConfigIssue[] = [];
  const fields = ["server", "key", ...ROUTING_FIELDS];
  const root = new ObjectReader(
    { server: "a:1", key: "k", ...EXCLUDE, rules: [{ network: "udp", outbound: "block" }] },
    "",
    list,
    fields,
  );
  const cfg = readRoutingConfig(root);
  assertEquals(list, []);
  assertEquals(cfg.rules.map((r) => r.label), [
    "exclude.domains",
    "exclude.ips",
    "exclude.processes",
    "rules[0]",
  ]);
  const bad = new ObjectReader({ rules: [{ outbound: "block" }] }, "", list, fields);
  readRoutingConfig(bad);
  assertEquals(list.length, 1);
  assertEquals(list[0].path, "rules[0]");
});

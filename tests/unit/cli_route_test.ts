/**
 * `ostp-client route <host:port>`: the explanation it prints for a config's
 * rules, TCP and UDP, with a process, without a config, under onDemand
 * resolution (an injected resolver: no DNS traffic), and its usage errors.
 */

import { assert, assertEquals } from "../support/assert.ts";
import { parseClientArgs, routeCommand } from "../../client/cli.ts";

const CONFIG = `{
  // Only the routing fields matter to route: no server or key needed.
  "exclude": {
    "domains": ["trusted-site.com", "local.lan"],
    "ips": ["192.168.1.0/24", "10.0.0.0/8"],
    "processes": ["discord.exe", "steam.exe"]
  },
  "rules": [
    { "port": 25, "outbound": "block" },
    { "network": "udp", "port": "27000-27100", "outbound": "direct" },
    { "domainSuffix": "corp.example", "outbound": "corp" }
  ],
  "outbounds": [{ "name": "corp", "type": "http", "url": "http://u:secret@proxy.corp.example:3128" }]
}`;

async function withConfig<T>(text: string, fn: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile({ suffix: ".jsonc" });
  try {
    await Deno.writeTextFile(path, text);
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

function noDns(): Promise<string> {
  throw new Error("route must not resolve here");
}

Deno.test("route: which rule matches and which outbound, for TCP, UDP and a process", async () => {
  await withConfig(CONFIG, async (path) => {
    const r = await parseClientArgs(["route", "a.Local.LAN:443", "-c", path]);
    assert(r.kind === "route");
    assertEquals(r.text.split("\n"), [
      "a.Local.LAN:443 (tcp, inbound proxy)",
      "  matches exclude.domains (rule 1 of 6)",
      "  outbound: direct",
    ]);
    const smtp = await routeCommand(["example.com:25", "-c", path], noDns);
    assert(smtp.kind === "route" && smtp.outbound === "block" && smtp.rule === "rules[0]");
    const game = await routeCommand(["192.0.2.7:27015", "--udp", "-c", path], noDns);
    assert(game.kind === "route");
    assertEquals(game.text.split("\n"), [
      "192.0.2.7:27015 (udp, inbound proxy)",
      "  matches rules[1] (rule 5 of 6)",
      "  outbound: direct",
    ]);
    const tcpGame = await routeCommand(["192.0.2.7:27015", "-c", path], noDns);
    assert(tcpGame.kind === "route" && tcpGame.outbound === "ostp" && tcpGame.rule === "default");
    assert(tcpGame.text.includes("matches no rule: the default outbound"), tcpGame.text);
    const steam = await routeCommand(
      ["example.com:443", "--process", "Steam.exe", "-c", path],
      noDns,
    );
    assert(steam.kind === "route" && steam.rule === "exclude.processes", steam.text);
    assert(steam.text.startsWith("example.com:443 (tcp, inbound proxy, process Steam.exe)"));
    const lan = await routeCommand(["[::ffff:10.1.2.3]:22", "-c", path], noDns);
    assert(lan.kind === "route" && lan.rule === "exclude.ips", lan.text);
    const corp = await routeCommand(["git.corp.example:22", "-c", path], noDns);
    assert(corp.kind === "route" && corp.outbound === "corp");
    assert(!corp.text.includes("secret"));
    // A name with an IP rule before the match: said, and (resolve never) not resolved.
    const name = await routeCommand(["nas.home:445", "-c", path], noDns);
    assert(name.kind === "route" && name.outbound === "ostp");
    assert(name.text.includes('with "resolve": "never" this answer stands'), name.text);
  });
});

Deno.test("route: onDemand resolves the name when an IP rule could decide, and says so", async () => {
  const cfg = `{ "exclude": { "ips": ["10.0.0.0/8"] }, "resolve": "onDemand" }`;
  await withConfig(cfg, async (path) => {
    const asked: string[] = [];
    const r = await routeCommand(["nas.home:445", "-c", path], (n) => {
      asked.push(n);
      return Promise.resolve("10.0.0.5");
    });
    assert(r.kind === "route");
    assertEquals(asked, ["nas.home"]);
    assertEquals(r.outbound, "direct");
    assertEquals(r.text.split("\n"), [
      "nas.home:445 (tcp, inbound proxy)",
      "  matches no rule: the default outbound",
      "  outbound: ostp",
      "  an earlier IP rule could match once the name is resolved: the client resolves it and decides again",
      '  resolved here ("resolve": "onDemand") to 10.0.0.5; decided again:',
      "  matches exclude.ips (rule 1 of 1)",
      "  outbound: direct",
    ]);
    const nx = await routeCommand(
      ["nx.home:445", "-c", path],
      () => Promise.reject(new Error("NXDOMAIN")),
    );
    assert(nx.kind === "route" && nx.outbound === "ostp");
    assert(
      nx.text.endsWith(
        'the name does not resolve here ("resolve": "onDemand"): this answer stands',
      ),
    );
    // A literal, or a name no IP rule could change, is never resolved.
    const lit = await routeCommand(["10.9.9.9:1", "-c", path], noDns);
    assert(lit.kind === "route" && lit.outbound === "direct");
  });
});

Deno.test("route: without a config every flow takes ostp; usage errors exit 2", async () => {
  const r = await routeCommand(["example.com:443"], noDns);
  assert(r.kind === "route" && r.outbound === "ostp", r.text);
  assert(r.text.includes("no config file"), r.text);
  for (
    const [argv, needle] of [
      [["example.com"], "port missing"],
      [["example.com:0"], "port 0"],
      [["::1:53"], "brackets"],
      [["example.com:80", "--inbound", "tap"], "--inbound: no inbound has this name"],
      [["example.com:80", "--process", "/usr/bin/curl"], "--process"],
      [[], "missing required argument"],
    ] as const
  ) {
    const e = await routeCommand([...argv], noDns);
    assertEquals(e.kind, "error", `${argv.join(" ")}: ${e.text}`);
    assert(e.text.includes(needle), e.text);
  }
  await withConfig(`{ "rules": [{ "outbound": "direct" }] }`, async (path) => {
    const e = await routeCommand(["example.com:80", "-c", path], noDns);
    assertEquals(e.kind, "error");
    assert(e.text.includes("rules[0]: a rule needs at least one matcher"), e.text);
  });
});

/**
 * Unit tests of the router outbound (client/router/router_outbound.ts) over
 * fake outbounds: TCP flows go where the rules say, process lookup only when
 * rules need it, on-demand resolution (and `direct` dialing the address
 * found), UDP decided per datagram target with lazy sub-flows, block and http
 * drops counted, and a swap that leaves open flows on their old routes. Also
 * the outbounds built from a config (reused on a reload when unchanged) and
 * the fields a reload reports as needing a restart.
 */

import { parseRoutingConfig } from "../../client/router/config.ts";
import type { FlowContext } from "../../client/router/flow.ts";
import { FakeProcessResolver } from "../../client/router/process.ts";
import { Router } from "../../client/router/rules.ts";
import {
  type OutboundEntry,
  RouterOutbound,
  type RouteTable,
  UDP_LOOKUPS_MAX,
  UDP_PENDING_MAX,
} from "../../client/router/router_outbound.ts";
import type { Outbound, UdpFlow, UdpReplyHandler } from "../../client/outbound/outbound.ts";
import { BlockOutbound } from "../../client/outbound/block.ts";
import { buildOutbounds } from "../../client/outbound/from_config.ts";
import { HttpConnectOutbound } from "../../client/outbound/http_connect.ts";
import { restartFields } from "../../client/client.ts";
import { parseClientConfig } from "../../shared/config/client_config.ts";
import { Socks5Reply, socks5ReplyForError } from "../../client/inbound/socks5.ts";
import { httpStatusForDialError } from "../../client/inbound/http.ts";
import type { OutboundType } from "../../client/router/config.ts";
import { DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import { duplexPair } from "../../shared/pipe.ts";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";

/** A fake UDP flow: records what was sent. */
class FakeFlow implements UdpFlow {
  sent: { target: Target; text: string }[] = [];
  closed = false;
  constructor(readonly onReply: UdpReplyHandler) {}
  send(target: Target, data: Uint8Array): boolean {
    if (this.closed) return false;
    this.sent.push({ target: { ...target }, text: new TextDecoder().decode(data) });
    return true;
  }
  close(): void {
    this.closed = true;
  }
}

/** A fake outbound: records dials and UDP flows; `udpGate` holds openUdp until released. */
class FakeOutbound implements Outbound {
  dials: FlowContext[] = [];
  udpOpens: FlowContext[] = [];
  flows: FakeFlow[] = [];
  udpGate: Promise<void> | null = null;
  failUdp: DialError | null = null;
  constructor(readonly name: string) {}
  dial(ctx: FlowContext): Promise<Duplex> {
    this.dials.push(ctx);
    const [a, b] = duplexPair();
    b.close();
    return Promise.resolve(a);
  }
  async openUdp(ctx: FlowContext, onReply: UdpReplyHandler): Promise<UdpFlow> {
    this.udpOpens.push(ctx);
    if (this.udpGate) await this.udpGate;
    if (this.failUdp) throw this.failUdp;
    const f = new FakeFlow(onReply);
    this.flows.push(f);
    return f;
  }
}

function table(raw: unknown, outs: Record<string, [Outbound, OutboundType]>): RouteTable {
  const routing = parseRoutingConfig(raw);
  const outbounds = new Map<string, OutboundEntry>();
  for (const [name, [outbound, type]] of Object.entries(outs)) {
    outbounds.set(name, { outbound, type });
  }
  return { router: new Router(routing), outbounds };
}

function fakes() {
  const ostp = new FakeOutbound("ostp");
  const direct = new FakeOutbound("direct");
  const corp = new FakeOutbound("corp");
  const outs: Record<string, [Outbound, OutboundType]> = {
    ostp: [ostp, "ostp"],
    direct: [direct, "direct"],
    block: [new BlockOutbound(), "block"],
    corp: [corp, "http"],
  };
  return { ostp, direct, corp, outs };
}

const ROUTES = {
  exclude: { domains: ["local.lan"], ips: ["10.0.0.0/8"], processes: ["steam.exe"] },
  rules: [
    { port: 25, outbound: "block" },
    { domainSuffix: "corp.example", outbound: "corp" },
  ],
  outbounds: [{ name: "corp", type: "http", url: "http://proxy.test:3128" }],
};

function tcp(host: string, port: number, extra: Partial<FlowContext> = {}): FlowContext {
  return { inbound: "proxy", network: "tcp", target: { host, port }, ...extra };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("router outbound: TCP flows take the outbound their rule names; hits counted", async () => {
  const f = fakes();
  const r = new RouterOutbound(table(ROUTES, f.outs));
  (await r.dial(tcp("a.local.lan", 80))).close();
  (await r.dial(tcp("10.1.2.3", 443))).close();
  (await r.dial(tcp("x.corp.example", 443))).close();
  (await r.dial(tcp("example.com", 443))).close();
  (await r.dial(tcp("example.com", 443))).close();
  assertEquals(f.direct.dials.map((c) => c.target.host), ["a.local.lan", "10.1.2.3"]);
  assertEquals(f.corp.dials.map((c) => c.target.host), ["x.corp.example"]);
  assertEquals(f.ostp.dials.length, 2);
  const e = await assertRejects(() => r.dial(tcp("example.com", 25)), DialError) as DialError;
  assertEquals(e.reason, "denied");
  assertEquals(socks5ReplyForError(e), Socks5Reply.NotAllowed);
  assertEquals(httpStatusForDialError(e), 403);
  const hits = Object.fromEntries(r.stats().rules.map((h) => [h.label, h.hits]));
  assertEquals(hits, {
    "exclude.domains": 1,
    "exclude.ips": 1,
    "exclude.processes": 0,
    "rules[0]": 1,
    "rules[1]": 1,
    default: 2,
  });
});

Deno.test("router outbound: the process is looked up from the connection only when rules need it", async () => {
  const f = fakes();
  const procs = new FakeProcessResolver();
  const peer = { host: "127.0.0.1", port: 40001 };
  const local = { host: "127.0.0.1", port: 1088 };
  procs.set("tcp", peer, { pid: 7, name: "Steam.exe" });
  const r = new RouterOutbound(table(ROUTES, f.outs), { processResolver: procs });
  const conn = { network: "tcp" as const, peer, local };
  (await r.dial(tcp("example.com", 443, { conn }))).close();
  assertEquals(f.direct.dials.length, 1, "steam.exe is excluded");
  assertEquals(f.direct.dials[0].process, "Steam.exe");
  assertEquals(procs.queries, [{ network: "tcp", local: peer, remote: local }]);
  // Another program: the tunnel.
  (await r.dial(tcp("example.com", 443, { conn: { ...conn, peer: { ...peer, port: 2 } } })))
    .close();
  assertEquals(f.ostp.dials.length, 1);
  // Rules without process matchers: no lookup at all.
  r.swap(table({ rules: [{ port: 25, outbound: "block" }] }, f.outs));
  (await r.dial(tcp("example.com", 443, { conn }))).close();
  assertEquals(procs.queries.length, 2);
  assertEquals(f.ostp.dials.length, 2);
});

Deno.test("router outbound: a failing process lookup counts as unknown", async () => {
  const f = fakes();
  const r = new RouterOutbound(table(ROUTES, f.outs), {
    processResolver: { lookup: () => Promise.reject(new Error("no /proc")) },
  });
  const conn = {
    network: "tcp" as const,
    peer: { host: "127.0.0.1", port: 5 },
    local: { host: "127.0.0.1", port: 6 },
  };
  (await r.dial(tcp("example.com", 443, { conn }))).close();
  assertEquals(f.ostp.dials.length, 1);
  assertEquals(f.ostp.dials[0].process, undefined);
});

Deno.test("router outbound: onDemand resolves when an IP rule could decide; direct dials the address", async () => {
  const f = fakes();
  const asked: string[] = [];
  const resolveName = (name: string) => {
    asked.push(name);
    if (name === "nas.home") return Promise.resolve("10.0.0.5");
    if (name === "far.example") return Promise.resolve("203.0.113.9");
    return Promise.reject(new Error("NXDOMAIN"));
  };
  const r = new RouterOutbound(
    table({ exclude: { ips: ["10.0.0.0/8"] }, resolve: "onDemand" }, f.outs),
    { resolveName },
  );
  (await r.dial(tcp("nas.home", 445))).close();
  assertEquals(f.direct.dials[0].target, { host: "10.0.0.5", port: 445 });
  (await r.dial(tcp("far.example", 443))).close();
  assertEquals(f.ostp.dials[0].target, { host: "far.example", port: 443 }, "the server resolves");
  (await r.dial(tcp("nx.example", 443))).close();
  assertEquals(f.ostp.dials[1].target.host, "nx.example");
  (await r.dial(tcp("192.0.2.1", 443))).close();
  assertEquals(asked, ["nas.home", "far.example", "nx.example"], "a literal needs no lookup");
  const hits = Object.fromEntries(r.stats().rules.map((h) => [h.label, h.hits]));
  assertEquals(hits, { "exclude.ips": 1, default: 3 });
});

Deno.test("router outbound: resolve never does not resolve", async () => {
  const f = fakes();
  let asked = 0;
  const r = new RouterOutbound(table({ exclude: { ips: ["10.0.0.0/8"] } }, f.outs), {
    resolveName: () => {
      asked++;
      return Promise.resolve("10.0.0.5");
    },
  });
  (await r.dial(tcp("nas.home", 445))).close();
  assertEquals(asked, 0);
  assertEquals(f.ostp.dials.length, 1);
});

Deno.test("router outbound: UDP datagrams are routed per target, sub-flows opened lazily", async () => {
  const f = fakes();
  const r = new RouterOutbound(table({
    rules: [
      { network: "udp", port: 53, ip: "10.0.0.0/8", outbound: "direct" },
      { network: "udp", port: 9, outbound: "block" },
      { network: "udp", domainSuffix: "corp.example", outbound: "corp" },
    ],
    outbounds: ROUTES.outbounds,
  }, f.outs));
  const replies: string[] = [];
  const flow = await r.openUdp(
    { inbound: "proxy", network: "udp", target: { host: "0.0.0.0", port: 0 } },
    (from, data) => replies.push(`${from.host}:${from.port} ${new TextDecoder().decode(data)}`),
  );
  assertEquals(f.ostp.udpOpens.length + f.direct.udpOpens.length, 0, "nothing opened yet");
  const enc = new TextEncoder();
  assert(flow.send({ host: "10.1.1.1", port: 53 }, enc.encode("q1")));
  assert(flow.send({ host: "10.1.1.1", port: 53 }, enc.encode("q2")), "held while opening");
  assert(flow.send({ host: "192.0.2.1", port: 53 }, enc.encode("t1")));
  assertEquals(flow.send({ host: "192.0.2.1", port: 9 }, enc.encode("b")), false);
  assertEquals(flow.send({ host: "x.corp.example", port: 5000 }, enc.encode("h")), false);
  assertEquals(flow.send({ host: "y.corp.example", port: 5000 }, enc.encode("h")), false);
  await tick();
  assertEquals(f.direct.udpOpens.length, 1);
  assertEquals(f.ostp.udpOpens.length, 1);
  assertEquals(f.corp.udpOpens.length, 0, "an http outbound is never asked for UDP");
  assertEquals(f.direct.flows[0].sent.map((s) => s.text), ["q1", "q2"]);
  assertEquals(f.ostp.flows[0].sent.map((s) => s.text), ["t1"]);
  // Once open, datagrams go straight through; a target seen before keeps its decision.
  assert(flow.send({ host: "10.1.1.1", port: 53 }, enc.encode("q3")));
  assert(flow.send({ host: "10.9.9.9", port: 53 }, enc.encode("q4")));
  assertEquals(f.direct.flows[0].sent.map((s) => `${s.target.host} ${s.text}`), [
    "10.1.1.1 q1",
    "10.1.1.1 q2",
    "10.1.1.1 q3",
    "10.9.9.9 q4",
  ]);
  assertEquals(f.direct.udpOpens.length, 1, "one sub-flow per outbound");
  // Replies of every sub-flow reach the association.
  f.direct.flows[0].onReply({ host: "10.1.1.1", port: 53 }, enc.encode("a1"));
  f.ostp.flows[0].onReply({ host: "192.0.2.1", port: 53 }, enc.encode("a2"));
  assertEquals(replies, ["10.1.1.1:53 a1", "192.0.2.1:53 a2"]);
  const st = r.stats();
  assertEquals(st.udp, { flows: 1, blocked: 1, noUdp: 2, failed: 0 });
  const hits = Object.fromEntries(st.rules.map((h) => [h.label, h.hits]));
  assertEquals(hits, { "rules[0]": 2, "rules[1]": 1, "rules[2]": 2, default: 1 });
  flow.close();
  assert(f.direct.flows[0].closed && f.ostp.flows[0].closed);
  assertEquals(flow.send({ host: "10.1.1.1", port: 53 }, enc.encode("late")), false);
});

Deno.test("router outbound: a sub-flow that cannot open drops its datagrams and retries later", async () => {
  const f = fakes();
  f.ostp.failUdp = new DialError("unavailable", "no session");
  const r = new RouterOutbound(table({}, f.outs));
  const flow = await r.openUdp(
    { inbound: "proxy", network: "udp", target: { host: "0.0.0.0", port: 0 } },
    () => {},
  );
  const d = new Uint8Array(1);
  assert(flow.send({ host: "192.0.2.1", port: 7 }, d));
  await tick();
  assertEquals(r.udpStats.failed, 1);
  assertEquals(flow.send({ host: "192.0.2.1", port: 7 }, d), false, "within the retry delay");
  assertEquals(f.ostp.udpOpens.length, 1);
  assertEquals(r.udpStats.failed, 2);
  flow.close();
});

Deno.test("router outbound: datagrams held while a sub-flow opens are bounded", async () => {
  const f = fakes();
  let release!: () => void;
  f.ostp.udpGate = new Promise((r) => release = r);
  const r = new RouterOutbound(table({}, f.outs));
  const flow = await r.openUdp(
    { inbound: "proxy", network: "udp", target: { host: "0.0.0.0", port: 0 } },
    () => {},
  );
  let accepted = 0;
  for (let i = 0; i < UDP_PENDING_MAX + 5; i++) {
    if (flow.send({ host: "192.0.2.1", port: 7 }, Uint8Array.of(i))) accepted++;
  }
  assertEquals(accepted, UDP_PENDING_MAX);
  assertEquals(r.udpStats.failed, 5);
  release();
  await tick();
  await tick();
  assertEquals(f.ostp.flows[0].sent.length, UDP_PENDING_MAX);
  flow.close();
});

Deno.test("router outbound: onDemand UDP resolves a name once and holds its datagrams", async () => {
  const f = fakes();
  let lookups = 0;
  const r = new RouterOutbound(
    table({ exclude: { ips: ["10.0.0.0/8"] }, resolve: "onDemand" }, f.outs),
    {
      resolveName: () => {
        lookups++;
        return Promise.resolve("10.0.0.53");
      },
    },
  );
  const flow = await r.openUdp(
    { inbound: "proxy", network: "udp", target: { host: "0.0.0.0", port: 0 } },
    () => {},
  );
  const enc = new TextEncoder();
  assert(flow.send({ host: "dns.home", port: 53 }, enc.encode("a")));
  assert(flow.send({ host: "dns.home", port: 53 }, enc.encode("b")));
  await tick();
  await tick();
  assertEquals(lookups, 1);
  assertEquals(
    f.direct.flows[0].sent.map((s) => `${s.target.host}:${s.target.port} ${s.text}`),
    ["10.0.0.53:53 a", "10.0.0.53:53 b"],
  );
  flow.close();
});

Deno.test("router outbound: onDemand UDP caps the name lookups in flight per association", async () => {
  const f = fakes();
  const pending: ((ip: string) => void)[] = [];
  const r = new RouterOutbound(
    table({ exclude: { ips: ["10.0.0.0/8"] }, resolve: "onDemand" }, f.outs),
    { resolveName: () => new Promise<string>((res) => pending.push(res)) },
  );
  const flow = await r.openUdp(
    { inbound: "proxy", network: "udp", target: { host: "0.0.0.0", port: 0 } },
    () => {},
  );
  const d = new TextEncoder().encode("q");
  for (let i = 0; i < UDP_LOOKUPS_MAX; i++) {
    assert(flow.send({ host: `n${i}.example`, port: 53 }, d), `name ${i} held for its lookup`);
  }
  assertEquals(pending.length, UDP_LOOKUPS_MAX);
  const failedBefore = r.udpStats.failed;
  assertEquals(flow.send({ host: "one-too-many.example", port: 53 }, d), false);
  assertEquals(pending.length, UDP_LOOKUPS_MAX, "no lookup started past the cap");
  assertEquals(r.udpStats.failed, failedBefore + 1);
  // A finished lookup frees a slot: the same name is decided on its next datagram.
  pending[0]("10.0.0.1");
  await tick();
  await tick();
  assert(flow.send({ host: "one-too-many.example", port: 53 }, d));
  assertEquals(pending.length, UDP_LOOKUPS_MAX + 1);
  for (const p of pending.slice(1)) p("10.0.0.2");
  await tick();
  flow.close();
});

Deno.test("router outbound: swap routes new flows anew; open UDP flows keep their routes", async () => {
  const f = fakes();
  const r = new RouterOutbound(table({}, f.outs));
  const flow = await r.openUdp(
    { inbound: "proxy", network: "udp", target: { host: "0.0.0.0", port: 0 } },
    () => {},
  );
  const d = new Uint8Array(1);
  flow.send({ host: "192.0.2.1", port: 7 }, d);
  (await r.dial(tcp("192.0.2.1", 80))).close();
  const oldRouter = r.router;
  r.swap(table({ exclude: { ips: ["192.0.2.0/24"] } }, f.outs));
  assert(r.router !== oldRouter);
  (await r.dial(tcp("192.0.2.1", 80))).close();
  assertEquals(f.ostp.dials.length, 1);
  assertEquals(f.direct.dials.length, 1, "a new flow takes the new rules");
  await tick();
  flow.send({ host: "192.0.2.2", port: 7 }, d);
  assertEquals(f.direct.udpOpens.length, 0, "the open association keeps its routes");
  assertEquals(f.ostp.flows[0].sent.length, 2);
  const hits = Object.fromEntries(r.stats().rules.map((h) => [h.label, h.hits]));
  assertEquals(hits, { "exclude.ips": 1, default: 0 }, "a new router counts from zero");
  flow.close();
});

Deno.test("buildOutbounds: one per declaration; unchanged ones are reused on a reload", () => {
  const pool = {
    dial: () => Promise.reject(new DialError("unavailable")),
    openUdpFlow: () => Promise.reject(new DialError("unavailable")),
  };
  const deps = { pool, connectTimeoutMs: 1000 };
  const first = parseRoutingConfig({
    outbounds: [
      { name: "corp", type: "http", url: "http://u:p@proxy.test:3128" },
      { name: "lan", type: "direct" },
    ],
  });
  const a = buildOutbounds(first.outbounds, deps);
  assertEquals([...a.keys()], ["ostp", "direct", "block", "corp", "lan"]);
  assertEquals([...a.values()].map((e) => e.type), ["ostp", "direct", "block", "http", "direct"]);
  assert(a.get("corp")!.outbound instanceof HttpConnectOutbound);
  assertEquals((a.get("corp")!.outbound as HttpConnectOutbound).proxy, "http://u@proxy.test:3128");
  assertEquals(a.get("lan")!.outbound.name, "lan");
  const second = parseRoutingConfig({
    outbounds: [
      { name: "corp", type: "http", url: "http://u:other@proxy.test:3128" },
      { name: "lan", type: "direct" },
    ],
  });
  const b = buildOutbounds(second.outbounds, deps, { configs: first.outbounds, outbounds: a });
  for (const name of ["ostp", "direct", "block", "lan"]) {
    assert(b.get(name) === a.get(name), `${name} is kept`);
  }
  assert(b.get("corp") !== a.get("corp"), "a changed password makes a new http outbound");
});

Deno.test("restartFields: what a reload cannot apply", () => {
  const base = parseClientConfig({ server: "vpn.test:8443", key: "ab".repeat(32) });
  assertEquals(restartFields(base, base), []);
  const next = parseClientConfig({
    server: "vpn.test:8443",
    key: "ab".repeat(32),
    mux: 2,
    listen: "127.0.0.1:1089",
    log: { level: "debug" },
    exclude: { ips: ["10.0.0.0/8"] },
    reconnect: { maxDelay: 60 },
  });
  assertEquals(restartFields(base, next), ["listen", "mux", "reconnect"]);
});

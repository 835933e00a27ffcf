/**
 * The egress policy composed into the server's outbound paths: the TCP
 * dialer wrapper (server/egress_dialer.ts) and the UDP relay's per-flow
 * decisions (server/udp_relay.ts), with fake dialers, resolvers and a fake
 * session; UDP traffic goes to sockets on 127.0.0.1 only.
 */
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { type Dialer, DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import { parseIp } from "../../shared/net/cidr.ts";
import { EgressPolicy, parseEgressEntry, type Resolver } from "../../server/egress.ts";
import { createEgressDialer, ownAddresses } from "../../server/egress_dialer.ts";
import { UdpRelay } from "../../server/udp_relay.ts";
import { decodeUdpDatagram, encodeUdpDatagram } from "../../shared/wire/udp.ts";
import type { Connection } from "../../shared/session/connection.ts";
import { startUdpEcho } from "../support/socks_udp.ts";

function policy(allow: string[] = [], self: string[] = [], deny: string[] = []): EgressPolicy {
  const entries = (list: string[]) =>
    list.map((t) => {
      const r = parseEgressEntry(t);
      if (!r.ok) throw new Error(`test entry ${t}: ${r.error}`);
      return r.entry;
    });
  return new EgressPolicy({ allow: entries(allow), deny: entries(deny), self });
}

/** A resolver answering from a table, counting its calls; unknown names fail. */
function table(names: Record<string, string[]>): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const f = (host: string) => {
    calls.push(host);
    const a = names[host];
    if (!a) return Promise.reject(new Error("ENOTFOUND"));
    return Promise.resolve(
      a.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })),
    );
  };
  return Object.assign(f, { calls });
}

const FAKE_CONN: Duplex = {
  read: () => Promise.resolve(null),
  write: (p) => Promise.resolve(p.length),
  closeWrite: () => Promise.resolve(),
  close: () => {},
};

/** A dialer recording its targets; `fail` maps a host to the failure it answers with. */
function recorder(fail: Record<string, DialError> = {}): Dialer & { dialed: Target[] } {
  const dialed: Target[] = [];
  const d: Dialer = (t) => {
    dialed.push({ ...t });
    const e = fail[t.host];
    return e ? Promise.reject(e) : Promise.resolve(FAKE_CONN);
  };
  return Object.assign(d, { dialed });
}

async function denied(dial: Dialer, host: string, port: number): Promise<DialError> {
  const e = await assertRejects(() => dial({ host, port }), DialError);
  return e as DialError;
}

Deno.test("egress dialer: loopback, private, link-local, mapped and own addresses are refused", async () => {
  const inner = recorder();
  const refusals: string[] = [];
  const dial = createEgressDialer(inner, {
    policy: () => policy([], ["203.0.113.5"]),
    onDenied: (t, _reason, rule) => refusals.push(`${t.host} ${rule}`),
  });
  const cases: [string, string][] = [
    ["127.0.0.1", "not allowed: 127.0.0.1 is loopback"],
    ["::1", "not allowed: ::1 is loopback"],
    ["::ffff:127.0.0.1", "not allowed: 127.0.0.1 is loopback"],
    ["10.0.0.1", "not allowed: 10.0.0.1 is private (RFC 1918)"],
    ["192.168.1.1", "not allowed: 192.168.1.1 is private (RFC 1918)"],
    ["::ffff:192.168.1.1", "not allowed: 192.168.1.1 is private (RFC 1918)"],
    ["169.254.169.254", "not allowed: 169.254.169.254 is link-local"],
    ["100.64.0.1", "not allowed: 100.64.0.1 is shared address space"],
    ["fc00::1", "not allowed: fc00::1 is unique local"],
    ["fe80::1", "not allowed: fe80::1 is link-local"],
    ["0.0.0.0", "not allowed: 0.0.0.0 is unspecified"],
    ["203.0.113.5", "not allowed: 203.0.113.5 is "],
  ];
  for (const [host, reason] of cases) {
    const e = await denied(dial, host, 80);
    assertEquals(e.reason, "denied", host);
    assert(e.message.startsWith(reason), `${host}: ${e.message}`);
  }
  assertEquals(inner.dialed, [], "a refused target is never dialed");
  assertEquals(refusals.length, cases.length);
  assertEquals(refusals[0], "127.0.0.1 default 127.0.0.0/8");
});

Deno.test("egress dialer: an allowed target is dialed at the checked literal, never the name", async () => {
  const inner = recorder();
  const lookup = table({
    "public.test": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
  });
  const dial = createEgressDialer(inner, { policy: () => policy(), lookup });
  await dial({ host: "93.184.215.14", port: 443 });
  await dial({ host: "public.test", port: 80 });
  // An IPv4-mapped literal is dialed as the IPv4 address it is.
  await dial({ host: "::ffff:93.184.215.14", port: 443 });
  assertEquals(inner.dialed, [
    { host: "93.184.215.14", port: 443 },
    { host: "93.184.215.14", port: 80 },
    { host: "93.184.215.14", port: 443 },
  ]);
  assertEquals(lookup.calls, ["public.test"], "literals skip DNS; a name is resolved once");
});

Deno.test("egress dialer: a name with one forbidden address is refused (DNS rebinding)", async () => {
  const inner = recorder();
  const lookup = table({
    "rebind.test": ["93.184.215.14", "127.0.0.1"],
    "localhost.test": ["::1"],
    "metadata.test": ["169.254.169.254"],
  });
  const logged: string[] = [];
  const dial = createEgressDialer(inner, {
    policy: () => policy(),
    lookup,
    onDenied: (t, detail, rule) => logged.push(`${t.host} ${rule}: ${detail}`),
  });
  const e = await denied(dial, "rebind.test", 80);
  // The client learns that the name is refused, not what it resolves to.
  assertEquals(
    [e.reason, e.message],
    ["denied", "not allowed: rebind.test resolves to a non-public address"],
  );
  const lo = await denied(dial, "localhost.test", 80);
  assertEquals(lo.message, "not allowed: localhost.test resolves to a non-public address");
  const md = await denied(dial, "metadata.test", 80);
  assertEquals(md.message, "not allowed: metadata.test resolves to a non-public address");
  // The server's log has the address and the category.
  assertEquals(logged, [
    "rebind.test default 127.0.0.0/8: not allowed: rebind.test resolves to 127.0.0.1, which is loopback",
    "localhost.test default ::1/128: not allowed: localhost.test resolves to ::1, which is loopback",
    "metadata.test default 169.254.0.0/16: not allowed: metadata.test resolves to 169.254.169.254, which is link-local (where cloud metadata services live)",
  ]);
  const dns = await denied(dial, "nowhere.test", 80);
  assertEquals(dns.reason, "dns");
  assertEquals(inner.dialed, []);
});

Deno.test("egress dialer: an allow entry opens exactly what it names", async () => {
  const inner = recorder();
  const dial = createEgressDialer(inner, { policy: () => policy(["127.0.0.1:8080"]) });
  await dial({ host: "127.0.0.1", port: 8080 });
  await dial({ host: "::ffff:127.0.0.1", port: 8080 });
  assertEquals((await denied(dial, "127.0.0.1", 8081)).reason, "denied");
  assertEquals((await denied(dial, "127.0.0.2", 8080)).reason, "denied");
  assertEquals((await denied(dial, "::1", 8080)).reason, "denied");
  assertEquals(inner.dialed.length, 2);
});

Deno.test("egress dialer: the policy is asked at every dial (reload)", async () => {
  let current = policy();
  const dial = createEgressDialer(recorder(), { policy: () => current });
  assertEquals((await denied(dial, "10.91.2.7", 22)).reason, "denied");
  current = policy(["10.91.2.0/24"]);
  await dial({ host: "10.91.2.7", port: 22 });
  assertEquals((await denied(dial, "10.91.3.7", 22)).reason, "denied");
});

Deno.test("egress dialer: a name's next address is tried after refused/unreachable only", async () => {
  const lookup = table({
    "two.test": ["2001:4860::1", "93.184.215.14"],
    "slow.test": ["93.184.215.15", "93.184.215.16"],
  });
  const refusing = recorder({ "2001:4860::1": new DialError("refused", "connection refused") });
  await createEgressDialer(refusing, { policy: () => policy(), lookup })({
    host: "two.test",
    port: 80,
  });
  assertEquals(refusing.dialed.map((t) => t.host), ["2001:4860::1", "93.184.215.14"]);
  const timing = recorder({ "93.184.215.15": new DialError("timeout", "timed out") });
  const e = await denied(
    createEgressDialer(timing, { policy: () => policy(), lookup }),
    "slow.test",
    80,
  );
  assertEquals(e.reason, "timeout");
  assertEquals(timing.dialed.map((t) => t.host), ["93.184.215.15"], "no second timeout");
});

Deno.test("egress dialer: own addresses leave loopback and wildcards to the built-in list", () => {
  const own = ownAddresses(
    {
      listen: [{ host: "0.0.0.0", port: 8443 }, { host: "192.0.2.7", port: 1 }, {
        host: "::",
        port: 2,
      }],
      publicAddress: { host: "203.0.113.5", port: 443 },
    },
    ["127.0.0.1", "::1", "10.0.0.5", "fe80::1%eth0", "10.0.0.5", "::ffff:127.0.0.1"],
  );
  assertEquals(own, ["10.0.0.5", "fe80::1", "192.0.2.7", "203.0.113.5"]);
  // A publicAddress given as a name is not an address of ours to list.
  assertEquals(
    ownAddresses({
      listen: [{ host: "127.0.0.1", port: 1 }],
      publicAddress: { host: "vpn.test", port: 1 },
    }, []),
    [],
  );
  // So "allow 127.0.0.0/8" opens loopback, while an own address stays refused inside an allowed range.
  const p = policy(["127.0.0.0/8", "10.0.0.0/8"], own);
  assert(p.check(parseIp("127.0.0.1")!, 80).allowed);
  assert(!p.check(parseIp("10.0.0.5")!, 80).allowed);
  assert(p.check(parseIp("10.0.0.6")!, 80).allowed);
});

// --- UDP relay --------------------------------------------------------------

/** A session stand-in: what the relay uses of a Connection. */
function fakeConn(): { conn: Connection; down: Uint8Array[] } {
  const down: Uint8Array[] = [];
  const conn = {
    session: { maxDatagramPayload: 1400 },
    sendDatagram: (w: Uint8Array) => {
      down.push(w.slice());
      return true;
    },
  } as unknown as Connection;
  return { conn, down };
}

function datagram(flow: number, host: string, port: number, text: string): Uint8Array {
  const w = encodeUdpDatagram(flow, { host, port }, new TextEncoder().encode(text));
  if (!w) throw new Error("encode");
  return w;
}

/** The relay's policy source for a policy that no reload replaces (one object: compared by identity). */
function fixed(p: EgressPolicy): () => EgressPolicy {
  return () => p;
}

async function until(cond: () => boolean, ms = 3000): Promise<boolean> {
  const end = performance.now() + ms;
  while (!cond() && performance.now() < end) await new Promise((r) => setTimeout(r, 10));
  return cond();
}

Deno.test("udp relay egress: loopback is dropped by default and delivered with an allow", async () => {
  const target = startUdpEcho();
  const { conn, down } = fakeConn();
  const denied: string[] = [];
  const byDefault = new UdpRelay(conn, {
    onDenied: (h, p, reason) => denied.push(`${h}:${p} ${reason}`),
  });
  const { conn: conn2, down: down2 } = fakeConn();
  const allowing = new UdpRelay(conn2, { policy: fixed(policy([`127.0.0.1:${target.port}`])) });
  try {
    for (let i = 0; i < 5; i++) byDefault.handle(datagram(1, "127.0.0.1", target.port, `d${i}`));
    byDefault.handle(datagram(1, "::ffff:127.0.0.1", target.port, "mapped"));
    assertEquals(byDefault.stats.egressDenied, 6);
    assertEquals(byDefault.stats.datagramsUp, 0);
    // One report per target of the flow, not one per datagram.
    assertEquals(denied, [
      `127.0.0.1:${target.port} not allowed: 127.0.0.1 is loopback`,
      `::ffff:127.0.0.1:${target.port} not allowed: 127.0.0.1 is loopback`,
    ]);
    allowing.handle(datagram(7, "127.0.0.1", target.port, "hello"));
    assert(await until(() => down2.length === 1), "the reply comes back");
    const reply = decodeUdpDatagram(down2[0])!;
    assertEquals([reply.flowId, reply.host, reply.port], [7, "127.0.0.1", target.port]);
    assertEquals(new TextDecoder().decode(reply.payload), "hello");
    // Exactly what it names: another loopback port of the same flow stays refused.
    allowing.handle(datagram(7, "127.0.0.1", target.port + 1 > 65535 ? 1 : target.port + 1, "x"));
    assertEquals(allowing.stats.egressDenied, 1);
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(target.got, ["hello"], "nothing refused reached the target");
    assertEquals(down, []);
  } finally {
    byDefault.close();
    allowing.close();
    await target.close();
  }
});

Deno.test("udp relay egress: names are resolved once per flow target, refused on any bad address", async () => {
  const target = startUdpEcho();
  const lookup = table({
    "rebind.test": ["93.184.215.14", "127.0.0.1"],
    "echo.test": ["127.0.0.1"],
  });
  const { conn, down } = fakeConn();
  const relay = new UdpRelay(conn, { lookup, policy: fixed(policy(["127.0.0.1"])) });
  try {
    // 40 datagrams before the answer: 32 wait for it, 8 are dropped, then all later ones pass.
    for (let i = 0; i < 40; i++) relay.handle(datagram(1, "echo.test", target.port, `e${i}`));
    assert(await until(() => target.got.length === 32), `delivered ${target.got.length}`);
    assertEquals(relay.stats.queueDropped, 8);
    for (let i = 40; i < 50; i++) relay.handle(datagram(1, "echo.test", target.port, `e${i}`));
    assert(await until(() => target.got.length === 42), `delivered ${target.got.length}`);
    assert(await until(() => down.length === 42), `replies ${down.length}`);
    assertEquals(decodeUdpDatagram(down[0])!.host, "127.0.0.1");
    // Under the built-in policy a name with a loopback address among public ones is refused,
    // and one that does not resolve is dropped as a DNS failure; neither sends anything.
    const strict = new UdpRelay(fakeConn().conn, { lookup, policy: fixed(policy()) });
    try {
      for (let i = 0; i < 20; i++) strict.handle(datagram(2, "rebind.test", target.port, "r"));
      assert(await until(() => strict.stats.egressDenied === 20), `${strict.stats.egressDenied}`);
      for (let i = 0; i < 5; i++) strict.handle(datagram(2, "nowhere.test", target.port, "n"));
      assert(await until(() => strict.stats.dnsFailed === 5), `${strict.stats.dnsFailed}`);
      assertEquals(strict.stats.datagramsUp, 0);
    } finally {
      strict.close();
    }
    assertEquals(
      lookup.calls.filter((h) => h === "echo.test").length,
      1,
      "one lookup for 50 datagrams",
    );
    assertEquals(lookup.calls.filter((h) => h === "rebind.test").length, 1);
    assertEquals(lookup.calls.filter((h) => h === "nowhere.test").length, 1);
  } finally {
    relay.close();
    await target.close();
  }
});

Deno.test("udp relay egress: a reload applies to open flows, cached and new targets alike", async () => {
  const seen = startUdpEcho();
  const fresh = startUdpEcho();
  const allowing = policy(["127.0.0.0/8"]);
  let current = allowing;
  const denied: string[] = [];
  const relay = new UdpRelay(fakeConn().conn, {
    policy: () => current,
    onDenied: (h, p, reason) => denied.push(`${h}:${p} ${reason}`),
  });
  try {
    // Opened under an allow: the target is decided (and cached) as allowed.
    relay.handle(datagram(1, "127.0.0.1", seen.port, "before"));
    assert(await until(() => seen.got.length === 1));
    // The reload removes the allow: the same long-lived flow is refused, both at the
    // target it has already used and at one it had not.
    current = policy();
    relay.handle(datagram(1, "127.0.0.1", seen.port, "cached after"));
    relay.handle(datagram(1, "127.0.0.1", fresh.port, "new after"));
    assertEquals(relay.stats.egressDenied, 2);
    assertEquals(denied, [
      `127.0.0.1:${seen.port} not allowed: 127.0.0.1 is loopback`,
      `127.0.0.1:${fresh.port} not allowed: 127.0.0.1 is loopback`,
    ]);
    // A flow that opened after the reload is refused as well.
    relay.handle(datagram(2, "127.0.0.1", seen.port, "other flow"));
    assertEquals(relay.stats.egressDenied, 3);
    // An egress.deny added by a reload, more specific than the allow, applies too.
    current = policy(["127.0.0.0/8"], [], [`127.0.0.1:${fresh.port}`]);
    relay.handle(datagram(1, "127.0.0.1", seen.port, "allowed again"));
    relay.handle(datagram(1, "127.0.0.1", fresh.port, "denied by egress.deny"));
    assertEquals(relay.stats.egressDenied, 4);
    assert(await until(() => seen.got.length === 2));
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(seen.got, ["before", "allowed again"]);
    assertEquals(fresh.got, [], "nothing refused reached the new target");
    // Unchanged policy: decisions stay cached (no second report for the same target).
    relay.handle(datagram(1, "127.0.0.1", fresh.port, "still denied"));
    assertEquals(relay.stats.egressDenied, 5);
    assertEquals(denied.length, 4);
  } finally {
    relay.close();
    await seen.close();
    await fresh.close();
  }
});

Deno.test("udp relay egress: a name's lookup made before a reload does not decide after it", async () => {
  const target = startUdpEcho();
  const pending: (() => void)[] = [];
  const lookup: Resolver = () =>
    new Promise((resolve) => pending.push(() => resolve([{ address: "127.0.0.1", family: 4 }])));
  let current = policy(["127.0.0.0/8"]);
  const relay = new UdpRelay(fakeConn().conn, { lookup, policy: () => current });
  try {
    relay.handle(datagram(1, "echo.test", target.port, "q1"));
    relay.handle(datagram(1, "echo.test", target.port, "q2"));
    assertEquals(pending.length, 1, "one lookup, two datagrams waiting");
    current = policy();
    // The next datagram sees the new policy: the waiting ones are dropped, a new lookup starts.
    relay.handle(datagram(1, "echo.test", target.port, "q3"));
    assertEquals(relay.stats.queueDropped, 2);
    assertEquals(pending.length, 2);
    for (const p of pending) p();
    assert(await until(() => relay.stats.egressDenied === 1), `${relay.stats.egressDenied}`);
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(relay.stats.datagramsUp, 0);
    assertEquals(target.got, [], "the old policy's answer sent nothing");
  } finally {
    relay.close();
    await target.close();
  }
});

Deno.test("udp relay egress: lookups and queued datagrams are bounded per session", async () => {
  const pending: (() => void)[] = [];
  let calls = 0;
  // A resolver that answers only when told to: every lookup stays in flight.
  const slow: Resolver = () => {
    calls++;
    return new Promise((resolve) => {
      pending.push(() => resolve([{ address: "93.184.215.14", family: 4 }]));
    });
  };
  const relay = new UdpRelay(fakeConn().conn, { lookup: slow, policy: fixed(policy()) });
  try {
    // 40 names, 10 datagrams each, on 4 flows: at most 16 lookups, at most 128 datagrams queued.
    for (let n = 0; n < 40; n++) {
      for (let i = 0; i < 10; i++) relay.handle(datagram(n % 4, `n${n}.test`, 53, "q"));
    }
    assertEquals(calls, 16, "lookups in flight are bounded");
    assertEquals(relay.stats.queueDropped, 400 - 128);
    // Answered (to a public address the policy allows, which a test must not send to): the
    // lookup slots free up. Close first so nothing is sent, then release the lookups.
    relay.close();
    for (const p of pending) p();
    await new Promise((r) => setTimeout(r, 10));
    assertEquals(relay.stats.datagramsUp, 0);
  } finally {
    relay.close();
  }
});

/**
 * The TURN client machine against a fake TURN server built from the codec
 * (long-term credentials, 401 → 438 → success, refresh timers, channels,
 * forged answers), in virtual time.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { TurnClient, type TurnEvent } from "../../shared/stun/turn_client.ts";
import {
  Attr,
  attrAddress,
  attrString,
  attrU32,
  checkFingerprint,
  checkIntegrity,
  findAttr,
  Method,
  parseChannelData,
  parseStun,
  type StunMessage,
  StunWriter,
  writeChannelData,
} from "../../shared/stun/message.ts";
import { longTermKey } from "../../shared/stun/credentials.ts";

const PEER: Deno.NetAddr = { transport: "udp", hostname: "198.51.100.7", port: 8443 };
const RELAYED: Deno.NetAddr = { transport: "udp", hostname: "203.0.113.5", port: 50001 };
const MAPPED: Deno.NetAddr = { transport: "udp", hostname: "192.0.2.9", port: 40000 };
const REALM = "ostp.test";
const enc = new TextEncoder();

/** A scripted TURN server: answers as RFC 8656 says, with knobs for the test. */
class FakeTurn {
  nonce = "n-1";
  /** Requests seen (parsed). */
  seen: StunMessage[] = [];
  /** Lifetime granted. */
  lifetime = 20;
  /** Answer the next authenticated request with 438 once. */
  staleOnce = false;
  /** Refuse ChannelBind. */
  refuseChannel = false;
  readonly key = longTermKey("alice", REALM, "secret1");

  handle(bytes: Uint8Array): Uint8Array | null {
    const m = parseStun(bytes);
    assert(m, "the client sends valid STUN");
    assert(checkFingerprint(m), "with a FINGERPRINT");
    this.seen.push(m);
    if (m.cls === "indication") return null;
    const authed = findAttr(m, Attr.messageIntegrity) !== undefined;
    if (!authed) return this.error(m, 401, "Unauthorized", true);
    if (!checkIntegrity(m, this.key)) return this.error(m, 401, "Unauthorized", true);
    if (attrString(m, Attr.nonce) !== this.nonce || this.staleOnce) {
      this.staleOnce = false;
      this.nonce = `n-${Number(this.nonce.slice(2)) + 1}`;
      return this.error(m, 438, "Stale Nonce", true);
    }
    const w = new StunWriter(m.method, "success", m.tid);
    if (m.method === Method.allocate) {
      w.address(Attr.xorRelayedAddress, RELAYED, true).address(Attr.xorMappedAddress, MAPPED, true)
        .u32(Attr.lifetime, this.lifetime);
    } else if (m.method === Method.refresh) {
      w.u32(Attr.lifetime, attrU32(m, Attr.lifetime) === 0 ? 0 : this.lifetime);
    } else if (m.method === Method.channelBind && this.refuseChannel) {
      return this.error(m, 403, "Forbidden", false);
    }
    return w.finish({ integrityKey: this.key, fingerprint: true });
  }

  error(m: StunMessage, code: number, reason: string, realm: boolean): Uint8Array {
    const v = new Uint8Array([0, 0, Math.floor(code / 100), code % 100, ...enc.encode(reason)]);
    const w = new StunWriter(m.method, "error", m.tid).add(Attr.errorCode, v);
    if (realm) w.string(Attr.realm, REALM).string(Attr.nonce, this.nonce);
    return w.finish({ fingerprint: true });
  }
}

/** Runs the client against `server` until nothing is left to exchange at `now`. */
function exchange(c: TurnClient, server: FakeTurn, now: number, dropAnswers = false): TurnEvent[] {
  const events: TurnEvent[] = [];
  for (let round = 0; round < 20; round++) {
    const out = c.takeTransmits();
    if (out.length === 0) break;
    for (const b of out) {
      const answer = server.handle(b);
      if (answer && !dropAnswers) c.receive(answer, now);
    }
  }
  events.push(...c.takeEvents());
  return events;
}

function newClient(password = "secret1"): TurnClient {
  return new TurnClient({
    credentials: { username: "alice", password },
    peer: PEER,
    retransmit: { rtoMs: 100, maxSends: 3, lastWaitRtos: 2 },
  });
}

Deno.test("TURN client: 401 → authenticated Allocate → permission and channel", () => {
  const s = new FakeTurn();
  const c = newClient();
  c.start(0);
  const ev = exchange(c, s, 0);
  assertEquals(c.state, "allocated");
  assertEquals(ev.map((e) => e.type), ["allocated", "permitted", "channel"]);
  const a = ev[0] as Extract<TurnEvent, { type: "allocated" }>;
  assertEquals(a.relayed, RELAYED);
  assertEquals(a.mapped, MAPPED);
  assertEquals(a.lifetime, 20);
  // The first Allocate carried no credentials; the second USERNAME, REALM, NONCE and integrity.
  assertEquals(findAttr(s.seen[0], Attr.messageIntegrity), undefined);
  assertEquals(attrString(s.seen[1], Attr.username), "alice");
  assertEquals(attrString(s.seen[1], Attr.realm), REALM);
  assertEquals(findAttr(s.seen[1], Attr.requestedTransport), new Uint8Array([17, 0, 0, 0]));
  const perm = s.seen.find((m) => m.method === Method.createPermission);
  assert(perm);
  assertEquals(attrAddress(perm, Attr.xorPeerAddress, true), PEER);
  // Data now rides as ChannelData on 0x4000.
  const wrapped = c.wrap(enc.encode("hello"));
  assert(wrapped);
  assertEquals(parseChannelData(wrapped)?.channel, 0x4000);
  assertEquals(new TextDecoder().decode(parseChannelData(wrapped)!.data), "hello");
  // And ChannelData from the server on that channel is handed back.
  const back = new Uint8Array(16);
  const n = writeChannelData(0x4000, enc.encode("world"), back);
  assertEquals(new TextDecoder().decode(c.receive(back.subarray(0, n), 0)!), "world");
});

Deno.test("TURN client: a wrong password fails with a clear TURN auth error", () => {
  const s = new FakeTurn();
  const c = newClient("wrong");
  c.start(0);
  const ev = exchange(c, s, 0);
  assertEquals(c.state, "failed");
  const f = ev.find((e) => e.type === "failed") as Extract<TurnEvent, { type: "failed" }>;
  assert(f.auth, "marked as an authentication failure");
  assert(/TURN authentication failed \(401 Unauthorized\)/.test(f.reason), f.reason);
  assert(!f.reason.includes("wrong"), "the password never appears");
});

Deno.test("TURN client: 438 stale nonce takes the new nonce and tries again", () => {
  const s = new FakeTurn();
  s.staleOnce = true;
  const c = newClient();
  c.start(0);
  exchange(c, s, 0);
  assertEquals(c.state, "allocated");
  assertEquals(c.counters.staleNonces, 1);
  // A stale nonce at refresh time too.
  s.staleOnce = true;
  c.poll(10_000); // half the 20 s lifetime
  const ev = exchange(c, s, 10_000);
  assert(ev.some((e) => e.type === "refreshed"), JSON.stringify(ev));
  assertEquals(c.counters.refreshes, 1);
  assertEquals(c.counters.staleNonces, 2);
});

Deno.test("TURN client: refreshes keep an allocation alive over many lifetimes", () => {
  const s = new FakeTurn();
  const c = newClient();
  c.start(0);
  exchange(c, s, 0);
  let now = 0;
  for (let i = 0; i < 100 && now < 200_000; i++) {
    now = Math.max(now, c.nextDeadline());
    c.poll(now);
    exchange(c, s, now);
  }
  assertEquals(c.state, "allocated");
  assert(c.counters.refreshes >= 19, `refreshes ${c.counters.refreshes}`);
  // Permission and channel were refreshed on their own timer (every 120 s by default).
  assert(s.seen.filter((m) => m.method === Method.createPermission).length >= 2);
});

Deno.test("TURN client: an unanswered refresh loses the allocation (the link gives up)", () => {
  const s = new FakeTurn();
  const c = newClient();
  c.start(0);
  exchange(c, s, 0);
  c.poll(10_000);
  exchange(c, s, 10_000, true); // the answer is lost, and every resend too
  let now = 10_000;
  while (c.state === "allocated" && now < 20_000) {
    now = c.nextDeadline();
    c.poll(now);
    exchange(c, s, now, true);
  }
  assertEquals(c.state, "failed");
});

Deno.test("TURN client: forged answers and strays change nothing", () => {
  const s = new FakeTurn();
  const c = newClient();
  c.start(0);
  // Intercept the authenticated Allocate and answer it with a forged success (no integrity).
  const first = c.takeTransmits();
  c.receive(s.handle(first[0])!, 0);
  const allocate = parseStun(c.takeTransmits()[0])!;
  const forged = new StunWriter(Method.allocate, "success", allocate.tid)
    .address(Attr.xorRelayedAddress, { transport: "udp", hostname: "6.6.6.6", port: 6 }, true)
    .u32(Attr.lifetime, 600).finish({ fingerprint: true });
  c.receive(forged, 0);
  assertEquals(c.state, "allocating", "a success without valid integrity is ignored");
  // A forged one with integrity from a wrong key too.
  const wrongKey = new StunWriter(Method.allocate, "success", allocate.tid)
    .address(Attr.xorRelayedAddress, { transport: "udp", hostname: "6.6.6.6", port: 6 }, true)
    .finish({ integrityKey: longTermKey("alice", REALM, "guess"), fingerprint: true });
  c.receive(wrongKey, 0);
  assertEquals(c.state, "allocating");
  // The real answer still counts.
  c.receive(s.handle(allocate.raw)!, 0);
  assertEquals(c.state, "allocated");
  assertEquals(c.relayed, RELAYED);
  exchange(c, s, 0);
  // ChannelData on another channel, a Data indication from another peer, a response to nothing.
  const cd = new Uint8Array(16);
  assertEquals(c.receive(cd.subarray(0, writeChannelData(0x4001, enc.encode("x"), cd)), 0), null);
  const stranger = new StunWriter(
    Method.data,
    "indication",
    crypto.getRandomValues(new Uint8Array(12)),
  )
    .address(Attr.xorPeerAddress, { transport: "udp", hostname: "6.6.6.6", port: 8443 }, true)
    .add(Attr.data, enc.encode("evil")).finish();
  assertEquals(c.receive(stranger, 0), null);
  const orphan = new StunWriter(
    Method.refresh,
    "success",
    crypto.getRandomValues(new Uint8Array(12)),
  )
    .u32(Attr.lifetime, 0).finish();
  assertEquals(c.receive(orphan, 0), null);
  assertEquals(c.state, "allocated");
  assertEquals(c.relayed, RELAYED);
  assertEquals(c.counters.dropped, 5);
  // A Data indication from the peer is data.
  const fromPeer = new StunWriter(
    Method.data,
    "indication",
    crypto.getRandomValues(new Uint8Array(12)),
  )
    .address(Attr.xorPeerAddress, PEER, true).add(Attr.data, enc.encode("ok")).finish();
  assertEquals(new TextDecoder().decode(c.receive(fromPeer, 0)!), "ok");
});

Deno.test("TURN client: a refused channel falls back to Send indications", () => {
  const s = new FakeTurn();
  s.refuseChannel = true;
  const c = newClient();
  c.start(0);
  const ev = exchange(c, s, 0);
  assert(ev.some((e) => e.type === "no-channel"));
  assertEquals(c.channel, 0);
  const w = c.wrap(enc.encode("data"));
  assert(w);
  const m = parseStun(w);
  assert(m);
  assertEquals(m.method, Method.send);
  assertEquals(m.cls, "indication");
  assertEquals(attrAddress(m, Attr.xorPeerAddress, true), PEER);
  assertEquals(new TextDecoder().decode(findAttr(m, Attr.data)!), "data");
});

Deno.test("TURN client: close sends Refresh with LIFETIME 0 and ends deallocated", () => {
  const s = new FakeTurn();
  const c = newClient();
  c.start(0);
  exchange(c, s, 0);
  c.close(1000);
  const ev = exchange(c, s, 1000);
  const last = s.seen[s.seen.length - 1];
  assertEquals(last.method, Method.refresh);
  assertEquals(attrU32(last, Attr.lifetime), 0);
  assert(checkIntegrity(last, s.key));
  assertEquals(c.state, "closed");
  assert(ev.some((e) => e.type === "deallocated" && e.confirmed));
  assertEquals(c.wrap(enc.encode("late")), null, "nothing is sent after close");
});

Deno.test("TURN client: no answer at all gives up with a reason", () => {
  const c = newClient();
  c.start(0);
  c.takeTransmits();
  let now = 0;
  while (c.state === "allocating" && now < 10_000) {
    now = c.nextDeadline();
    c.poll(now);
    c.takeTransmits();
  }
  assertEquals(c.state, "failed");
  const f = c.takeEvents().find((e) => e.type === "failed") as Extract<
    TurnEvent,
    { type: "failed" }
  >;
  assertEquals(f.reason, "no answer from the TURN server");
  assert(now < 2000, `gave up after ${now} ms`);
});

Deno.test("TURN client: probe asks with a Refresh; an unknown allocation fails it as lost", () => {
  const s = new FakeTurn();
  const c = newClient();
  c.start(0);
  exchange(c, s, 0);
  c.probe(500);
  c.probe(501); // one in flight is enough
  const out = c.takeTransmits();
  assertEquals(out.length, 1);
  const m = parseStun(out[0])!;
  assertEquals(m.method, Method.refresh);
  // The relay restarted: it knows no allocation (437).
  const v = new Uint8Array([0, 0, 4, 37, ...enc.encode("Allocation Mismatch")]);
  c.receive(new StunWriter(Method.refresh, "error", m.tid).add(Attr.errorCode, v).finish(), 600);
  const f = c.takeEvents().find((e) => e.type === "failed") as Extract<
    TurnEvent,
    { type: "failed" }
  >;
  assert(f?.lost, "lost");
  assert(/allocation lost: Refresh refused \(437 Allocation Mismatch\)/.test(f.reason), f.reason);
});

Deno.test("TURN client: a message whose FINGERPRINT does not match is dropped", () => {
  const s = new FakeTurn();
  const c = newClient();
  c.start(0);
  const first = c.takeTransmits()[0];
  const answer = s.handle(first)!.slice();
  answer[answer.length - 1] ^= 0xff; // the CRC no longer matches
  c.receive(answer, 0);
  assertEquals(c.counters.dropped, 1);
  assertEquals(c.takeTransmits().length, 0, "no authenticated Allocate followed the bad 401");
});

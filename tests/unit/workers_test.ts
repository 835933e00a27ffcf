/**
 * The pieces of the multi-worker server (docs/workers.md) without threads:
 * the control plane's reservation table, the forward batch codec, the counter
 * batch, and the dispatcher's reserve and forward seams.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { udpEndpoint } from "../../shared/carrier/udp.ts";
import { ReservationTable } from "../../server/reservations.ts";
import { ForwardBatch, readForwards } from "../../server/forwarding.ts";
import { CounterBatch } from "../../server/counter_batch.ts";
import {
  Dispatcher,
  type HelloReservation,
  type Peer,
  type ReservationAnswer,
  type ServerSession,
} from "../../server/dispatcher.ts";
import { deriveSecrets, generateAccessKey, Masker } from "../../shared/crypto/keys.ts";
import { buildClientHello, readServerHello } from "../../shared/session/handshake.ts";
import { PacketCodec } from "../../shared/wire/packet.ts";
import { CloseCode } from "../../shared/session/session.ts";
import { parseServerConfig } from "../../shared/config/server_config.ts";
import { ConfigError, defaultServerWorkers } from "../../shared/config/types.ts";
import { parseServerArgs } from "../../server/cli.ts";

const PARAMS = { maxData: 1 << 24, maxStreamData: 1 << 22, maxStreams: 100, maxDatagramSize: 1350 };
const tick = () => new Promise((r) => setTimeout(r, 0));

function addr(port: number, hostname = "127.0.0.1"): Deno.NetAddr {
  return { transport: "udp", hostname, port };
}

Deno.test("reservations: replay, collision, cap, release and a dead worker", () => {
  const t = new ReservationTable({ maxSessions: 2, replayCacheSize: 1024, replayWindowMs: 1000 });
  const e1 = new Uint8Array(32).fill(1);
  const e2 = new Uint8Array(32).fill(2);
  const e3 = new Uint8Array(32).fill(3);
  assertEquals(t.reserve(7, e1, 0, 0), "ok");
  assertEquals(t.owner(7), 0);
  assertEquals(t.reserve(8, e1, 1, 1), "replayedHandshake", "same ephemeral on another worker");
  assertEquals(t.reserve(7, e2, 1, 1), "idCollision");
  assertEquals(t.reserve(8, e2, 1, 1), "ok");
  assertEquals(t.reserve(9, e3, 1, 1), "sessionCap");
  t.maxSessions = 3;
  assertEquals(t.reserve(9, e3, 1, 1), "ok");
  assertEquals(t.size, 3);
  assert(t.release(7));
  assert(!t.release(7));
  assertEquals(t.owner(7), undefined);
  // The replay cache outlives the session: the same hello stays refused.
  assertEquals(t.reserve(7, e1, 0, 2), "replayedHandshake");
  assertEquals(t.releaseWorker(1).sort(), [8, 9]);
  assertEquals(t.size, 0);
  // Entries expire after twice the window.
  assertEquals(t.reserve(7, e1, 0, 2001), "ok");
});

Deno.test("forward batch: records round-trip (IPv4, IPv6), take starts over", () => {
  const b = new ForwardBatch(8); // grows
  const d1 = new Uint8Array(100).fill(0xaa);
  const d2 = new Uint8Array(1400).map((_, i) => i & 0xff);
  assert(b.add(0, addr(5000), d1));
  assert(b.add(1, addr(65535, "2001:db8::1"), d2));
  assertEquals(b.count, 2);
  const { buffer, length } = b.take();
  assertEquals(b.count, 0);
  const got: [number, string, number, Uint8Array][] = [];
  const n = readForwards(buffer, length, (l, h, p, d) => got.push([l, h, p, d.slice()]));
  assertEquals(n, 2);
  assertEquals(got[0], [0, "127.0.0.1", 5000, d1]);
  assertEquals(got[1], [1, "2001:db8::1", 65535, d2]);
  // A fresh batch after take.
  assert(b.add(2, addr(1), new Uint8Array(0)));
  const again = b.take();
  assertEquals(readForwards(again.buffer, again.length, () => {}), 1);
});

Deno.test("forward batch: truncated records stop the reader; oversized input is refused", () => {
  const b = new ForwardBatch();
  b.add(0, addr(1), new Uint8Array(10));
  b.add(0, addr(2), new Uint8Array(10));
  const { buffer, length } = b.take();
  for (let cut = 0; cut < length; cut++) {
    const n = readForwards(buffer, cut, () => {});
    assert(n <= 1, `a cut at ${cut} reads at most the first record`);
  }
  assertEquals(readForwards(buffer, length + 100, () => {}), 2, "zeros past the records");
  assert(!b.add(0, addr(1), new Uint8Array(70000)), "longer than a u16 length");
  assert(!b.add(300, addr(1), new Uint8Array(1)), "listener index beyond a byte");
});

Deno.test("counter batch: sums per key, take empties", () => {
  const c = new CounterBatch();
  assert(c.empty);
  c.bytes("aa", 10, 20);
  c.bytes("aa", 1, 2);
  c.stream("aa");
  c.stream("bb");
  assertEquals(c.pendingBytes, 33);
  assertEquals(c.take().sort(), [["aa", 11, 22, 1], ["bb", 0, 0, 1]]);
  assert(c.empty);
  assertEquals(c.pendingBytes, 0);
  assertEquals(c.take(), []);
});

/** A dispatcher in worker mode: reservations wait for the test to answer. */
function workerDispatcher(key: Uint8Array) {
  const d = new Dispatcher({
    keys: [key],
    maxSessions: Number.MAX_SAFE_INTEGER,
    handshakeRate: 1_000_000,
    handshakeBurst: 1_000_000,
    replayWindowMs: 300_000,
    replayCacheSize: 4096,
    session: {},
  });
  const asked: { r: HelloReservation; answer: (a: ReservationAnswer) => void }[] = [];
  d.reserve = (r) => new Promise((answer) => asked.push({ r, answer }));
  const unused: number[] = [];
  d.onReservationUnused = (sid) => unused.push(sid);
  const sent = new Map<string, Uint8Array[]>();
  const peer = (a: Deno.NetAddr): Peer => ({
    addr: udpEndpoint(a),
    send: (data, to) => {
      const k = to.key;
      sent.set(k, [...(sent.get(k) ?? []), data.slice()]);
    },
  });
  const opened: ServerSession[] = [];
  const closed: string[] = [];
  d.onSession = (s) => opened.push(s);
  d.onSessionClosed = (_s, reason) => closed.push(reason);
  return { d, asked, unused, sent, peer, opened, closed };
}

Deno.test("dispatcher reserve seam: waits for the answer, ignores repeats, counts replays", async () => {
  const key = generateAccessKey();
  const secrets = deriveSecrets(key);
  const masker = new Masker(secrets.obfsKey);
  const w = workerDispatcher(key);
  const hello = buildClientHello(secrets, masker, PARAMS, Date.now());
  const a = addr(4000);
  w.d.handle(hello.datagram.slice(), w.peer(a));
  assertEquals(w.asked.length, 1);
  assertEquals(w.asked[0].r.sessionId, hello.sessionId);
  assertEquals(w.asked[0].r.key, key);
  assertEquals(w.sent.size, 0, "no answer before the reservation");
  // A repeat from the same address while pending: ignored; from elsewhere: a replay.
  w.d.handle(hello.datagram.slice(), w.peer(a));
  w.d.handle(hello.datagram.slice(), w.peer(addr(4001)));
  assertEquals(w.asked.length, 1);
  assertEquals(w.d.drops.replayedHandshake, 1);
  w.asked[0].answer({ kind: "ok", refused: null });
  await tick();
  assertEquals(w.opened.length, 1);
  assertEquals(w.d.sessionCount, 1);
  const replies = w.sent.get(udpEndpoint(a).key) ?? [];
  assertEquals(replies.length, 1);
  assert(readServerHello(hello, masker, replies[0]) !== null, "a valid server hello");
  // After acceptance a repeat from the same address gets the same reply (today's rule).
  w.d.handle(hello.datagram.slice(), w.peer(a));
  assertEquals(w.sent.get(udpEndpoint(a).key)!.length, 2);
  assertEquals(w.sent.get(udpEndpoint(a).key)![1], replies[0]);
  assertEquals(w.asked.length, 1, "not reserved again");
});

Deno.test("dispatcher reserve seam: refused sessions close with the reason; drops count", async () => {
  const key = generateAccessKey();
  const secrets = deriveSecrets(key);
  const masker = new Masker(secrets.obfsKey);
  const w = workerDispatcher(key);
  const h1 = buildClientHello(secrets, masker, PARAMS, Date.now());
  const h2 = buildClientHello(secrets, masker, PARAMS, Date.now());
  const h3 = buildClientHello(secrets, masker, PARAMS, Date.now());
  w.d.handle(h1.datagram.slice(), w.peer(addr(5001)));
  w.d.handle(h2.datagram.slice(), w.peer(addr(5002)));
  w.d.handle(h3.datagram.slice(), w.peer(addr(5003)));
  w.asked[0].answer({ kind: "ok", refused: "traffic limit reached" });
  w.asked[1].answer({ kind: "drop", counter: "sessionCap" });
  await tick();
  w.d.updateKeys([generateAccessKey()], CloseCode.KICKED, "key removed");
  w.asked[2].answer({ kind: "ok", refused: null });
  await tick();
  await tick();
  assertEquals(w.opened.length, 1);
  assertEquals(w.closed, ["traffic limit reached"]);
  assertEquals(w.d.drops.sessionCap, 1);
  assertEquals(w.unused, [h3.sessionId], "the key went away while the answer was pending");
  assertEquals(w.d.sessionCount, 0);
});

Deno.test("dispatcher forward seam: another worker's session id is handed over, junk is not", () => {
  const key = generateAccessKey();
  const secrets = deriveSecrets(key);
  const masker = new Masker(secrets.obfsKey);
  const w = workerDispatcher(key);
  const remote = new Set([0x12345678]);
  const handed: number[] = [];
  w.d.forward = (sid, data, peer) => {
    if (!remote.has(sid)) return false;
    assert(data.length > 0 && peer.addr.address.port === 6000);
    handed.push(sid);
    return true;
  };
  const codec = new PacketCodec({
    sessionId: 0x12345678,
    sendKey: new Uint8Array(32).fill(7),
    recvKey: new Uint8Array(32).fill(8),
    masker,
  });
  const out = new Uint8Array(200);
  const n = codec.seal(3, new Uint8Array(40), out);
  w.d.handle(out.subarray(0, n), w.peer(addr(6000)));
  assertEquals(handed, [0x12345678]);
  assertEquals(w.d.drops.unauthenticated, 0);
  const junk = crypto.getRandomValues(new Uint8Array(120));
  w.d.handle(junk, w.peer(addr(6000)));
  assertEquals(handed.length, 1, "junk unmasks to an id no worker owns");
  assertEquals(w.d.drops.unauthenticated, 1);
  assertEquals(w.asked.length, 0);
});

Deno.test("config: workers field and --workers flag", async () => {
  const key = "11".repeat(32);
  assertEquals(parseServerConfig({ keys: [key] }).workers, undefined, "absent: the caller decides");
  assertEquals(parseServerConfig({ keys: [key], workers: 3 }).workers, 3);
  for (const bad of [0, 1.5, 65, "2"]) {
    let err: unknown;
    try {
      parseServerConfig({ keys: [key], workers: bad });
    } catch (e) {
      err = e;
    }
    assert(err instanceof ConfigError && err.message.includes("workers"), `rejects ${bad}`);
  }
  const r = await parseServerArgs(["--key", key, "--workers", "2"], { warn: () => {} });
  assertEquals(r.kind === "run" ? r.config.workers : null, 2);
  const e = await parseServerArgs(["--key", key, "--workers", "0"], { warn: () => {} });
  assert(e.kind === "error" && e.text.includes("--workers"), JSON.stringify(e));
  const d = defaultServerWorkers();
  assert(d >= 1 && d <= 16 && d <= Math.max(1, navigator.hardwareConcurrency));
});

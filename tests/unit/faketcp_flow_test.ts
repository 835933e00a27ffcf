/**
 * The fake-TCP flow machine in virtual time: both sides wired through the
 * real segment codec (emit, then parse with checksums), handshake, seq/ack
 * bookkeeping, delayed and byte-count ACKs, keepalive and dead detection,
 * handshake retransmission and give-up, and garbage ignored.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { FakeTcpFlow, Rx, type RxResult, seqDiff } from "../../shared/carrier/faketcp/flow.ts";
import {
  emitSegment4,
  InboundSegment,
  parseSegment4,
  TcpFlags,
  type TcpRepr,
} from "../../shared/carrier/faketcp/segment.ts";

const C = new Uint8Array([10, 0, 0, 1]);
const S = new Uint8Array([10, 0, 0, 2]);

function seeded(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/** Emits `repr` from `src` to `dst` and parses it back (the wire in between). */
function wire(repr: TcpRepr, payload: Uint8Array | null, src: Uint8Array, dst: Uint8Array) {
  const buf = new Uint8Array(2048);
  const n = emitSegment4(repr, payload ?? 0, { src, dst, id: 1, ttl: 64 }, buf);
  const s = parseSegment4(buf.subarray(0, n), new InboundSegment());
  if (typeof s === "string") throw new Error(`own segment does not parse: ${s}`);
  return s.tcp;
}

function handshake(now = 0) {
  const client = FakeTcpFlow.client(40000, 443, now, seeded(1));
  const syn = client.control(now)!;
  assertEquals(syn.flags, TcpFlags.SYN);
  const synSeg = wire(syn, null, C, S);
  assert(FakeTcpFlow.isOpeningSyn(synSeg));
  assertEquals(synSeg.mss, 1460);
  assert(synSeg.sackPermitted && synSeg.hasTimestamps);
  assertEquals(synSeg.windowScale, 9);
  assertEquals(synSeg.window, 64240);
  assertEquals(synSeg.tsEcr, 0);
  const server = FakeTcpFlow.server(synSeg, 443, now, seeded(2));
  assertEquals(server.state, "syn-received");
  const synAck = server.control(now)!;
  assertEquals(synAck.flags, TcpFlags.SYN | TcpFlags.ACK);
  const saSeg = wire(synAck, null, S, C);
  assertEquals(saSeg.ack, (client.iss + 1) >>> 0);
  assertEquals(saSeg.tsEcr, synSeg.tsVal);
  assertEquals(saSeg.window, 65160);
  assertEquals(client.receive(saSeg, now), Rx.Control);
  assertEquals(client.state, "established");
  const ack = client.control(now)!;
  assertEquals(ack.flags, TcpFlags.ACK);
  const ackSeg = wire(ack, null, C, S);
  assertEquals(ackSeg.seq, (client.iss + 1) >>> 0);
  assertEquals(ackSeg.ack, (server.iss + 1) >>> 0);
  assertEquals(server.receive(ackSeg, now), Rx.Control);
  assertEquals(server.state, "established");
  assertEquals(client.control(now), null);
  const update = server.control(now)!;
  assertEquals(update.flags, TcpFlags.ACK, "the server's window update");
  assertEquals(server.control(now), null);
  assertEquals(client.receive(wire(update, null, S, C), now), Rx.Control);
  return { client, server };
}

function send(from: FakeTcpFlow, to: FakeTcpFlow, data: Uint8Array, now: number, fwd: boolean) {
  const seg = wire(from.data(data.length, now), data, fwd ? C : S, fwd ? S : C);
  return { seg, r: to.receive(seg, now) as RxResult };
}

Deno.test("faketcp flow: three-way handshake with Linux options both sides", () => {
  handshake();
});

Deno.test("faketcp flow: seq advances by payload length, ack follows the peer", () => {
  const { client, server } = handshake();
  const seq0 = client.sndNxt;
  const a = send(client, server, new Uint8Array(100), 1, true);
  assertEquals(a.r, Rx.Data);
  assertEquals(a.seg.flags, TcpFlags.PSH | TcpFlags.ACK);
  assertEquals(a.seg.seq, seq0);
  assertEquals(a.seg.payload.length, 100);
  assert(a.seg.hasTimestamps && a.seg.headerLength === 32, "data header: NOP NOP TS");
  const b = send(client, server, new Uint8Array(1300), 2, true);
  assertEquals(b.seg.seq, (seq0 + 100) >>> 0);
  assertEquals(client.sndNxt, (seq0 + 1400) >>> 0);
  assertEquals(server.rcvNxt, (seq0 + 1400) >>> 0);
  const c = send(server, client, new Uint8Array(7), 3, false);
  assertEquals(c.r, Rx.Data);
  assertEquals(c.seg.ack, (seq0 + 1400) >>> 0, "the server acks all it got");
  assertEquals(c.seg.window, 64240);
  assertEquals(client.rcvNxt, (server.iss + 1 + 7) >>> 0);
  // Reordered (older) data still delivers; the ack does not move back.
  const old = wire({ ...client.out, seq: seq0, flags: 0x18 }, new Uint8Array(5), C, S);
  assertEquals(server.receive(old, 4), Rx.Data);
  assertEquals(server.rcvNxt, (seq0 + 1400) >>> 0);
});

Deno.test("faketcp flow: delayed ACK after 40 ms, at once after 64 KiB", () => {
  const { client, server } = handshake();
  send(client, server, new Uint8Array(500), 10, true);
  assertEquals(server.control(10), null);
  assertEquals(server.deadline(), 50);
  server.tick(50);
  const ack = server.control(50)!;
  assertEquals(ack.flags, TcpFlags.ACK);
  assertEquals(ack.ack, client.sndNxt);
  assertEquals(server.control(50), null);
  for (let i = 0; i < 50; i++) send(client, server, new Uint8Array(1400), 60, true);
  const now = server.control(60);
  assert(now !== null && now.ack === client.sndNxt, "byte-count ACK at once");
});

Deno.test("faketcp flow: keepalive probes after silence, answered; dead when unanswered", () => {
  const { client, server } = handshake();
  assertEquals(client.deadline(), 10_000);
  client.tick(10_000);
  const probe = client.control(10_000)!;
  assertEquals(probe.seq, (client.sndNxt - 1) >>> 0, "a probe is one below snd.nxt, as Linux");
  const pSeg = wire(probe, null, C, S);
  assertEquals(pSeg.payload.length, 0);
  assertEquals(server.receive(pSeg, 10_000), Rx.Control);
  const answer = server.control(10_000)!;
  assertEquals(answer.flags, TcpFlags.ACK);
  assertEquals(client.receive(wire(answer, null, S, C), 10_001), Rx.Control);
  assertEquals(client.deadline(), 20_001, "an answer rearms the idle timer");
  // Now the NAT forgets the flow: nothing comes back.
  let t = 20_001;
  let probes = 0;
  while (client.tick(t) !== "dead" && t < 100_000) {
    if (client.control(t) !== null) probes++;
    t = client.deadline();
  }
  assertEquals(client.state, "dead");
  assertEquals(probes, 3);
  assertEquals(t, 20_001 + 3 * 3000, "dead 3 probes × 3 s after the first");
  assertEquals(client.deadline(), Infinity);
});

Deno.test("faketcp flow: lost SYN retransmitted with backoff, then given up", () => {
  const client = FakeTcpFlow.client(40000, 443, 0, seeded(3));
  client.control(0);
  const times: number[] = [];
  let t = 0;
  while (client.tick(t) !== "dead") {
    if (client.control(t) !== null) times.push(t);
    t = client.deadline();
  }
  assertEquals(times, [1000, 3000, 7000, 15000, 31000]);
});

Deno.test("faketcp flow: a retransmitted SYN gets the SYN-ACK again; a new SYN restarts", () => {
  const client = FakeTcpFlow.client(40000, 443, 0, seeded(4));
  const synSeg = wire(client.control(0)!, null, C, S);
  const server = FakeTcpFlow.server(synSeg, 443, 0, seeded(5));
  server.control(0);
  assertEquals(server.receive(synSeg, 1000), Rx.Control);
  assertEquals(server.control(1000)!.flags, TcpFlags.SYN | TcpFlags.ACK);
  const other = FakeTcpFlow.client(40000, 443, 0, seeded(6));
  assertEquals(server.receive(wire(other.control(0)!, null, C, S), 2000), Rx.Restart);
});

Deno.test("faketcp flow: garbage and forged segments are ignored and keep nobody alive", () => {
  const { client, server } = handshake();
  const base = { ...client.out };
  const cases: [string, TcpRepr][] = [
    ["no ACK flag", { ...base, flags: TcpFlags.PSH }],
    ["ACK of unsent data", { ...base, seq: client.sndNxt, ack: (server.sndNxt + 5000) >>> 0 }],
    ["seq far away", { ...base, seq: (client.sndNxt + 0x7000_0000) >>> 0, ack: server.sndNxt }],
    ["RST", { ...base, flags: TcpFlags.RST | TcpFlags.ACK, ack: server.sndNxt }],
    ["SYN-ACK to a server", { ...base, flags: TcpFlags.SYN | TcpFlags.ACK, ack: server.sndNxt }],
  ];
  for (const [what, repr] of cases) {
    const seg = wire(repr, new Uint8Array(10), C, S);
    assertEquals(server.receive(seg, 5000), Rx.Ignored, what);
  }
  assertEquals(server.lastRx, 0, "nothing counted as a sign of life");
  assertEquals(server.state, "established");
  // A client ignores a SYN-ACK of someone else and stray SYNs.
  const f = FakeTcpFlow.client(1, 2, 0, seeded(9));
  f.control(0);
  const wrong = wire({ ...base, flags: TcpFlags.SYN | TcpFlags.ACK, ack: 12345 }, null, S, C);
  assertEquals(f.receive(wrong, 1), Rx.Ignored);
  assertEquals(f.state, "syn-sent");
});

Deno.test("faketcp flow: the first flight keeps to the SYN-ACK window until the peer speaks", () => {
  const client = FakeTcpFlow.client(1, 2, 0, seeded(11));
  const server = FakeTcpFlow.server(wire(client.control(0)!, null, C, S), 2, 0, seeded(12));
  client.receive(wire(server.control(0)!, null, S, C), 0);
  let sent = 0;
  while (client.canSend(1300)) sent += 1300;
  assertEquals(sent, Math.floor(65160 / 1300) * 1300);
  server.receive(wire(client.control(0)!, null, C, S), 0);
  client.receive(wire(server.control(0)!, null, S, C), 0);
  assert(client.canSend(1300), "open once the server's window update arrived");
});

Deno.test("faketcp flow: sequence arithmetic wraps", () => {
  assertEquals(seqDiff(5, 0xffff_fffb), 10);
  assertEquals(seqDiff(0xffff_fffb, 5), -10);
  const client = FakeTcpFlow.client(1, 2, 0, () => 0xffff_fff0);
  const seg = wire(client.control(0)!, null, C, S);
  const server = FakeTcpFlow.server(seg, 2, 0, () => 0xffff_ffff);
  client.receive(wire(server.control(0)!, null, S, C), 0);
  server.receive(wire(client.control(0)!, null, C, S), 0);
  for (let i = 0; i < 3; i++) {
    assertEquals(send(client, server, new Uint8Array(16), 1, true).r, Rx.Data);
  }
  assertEquals(server.rcvNxt, (0xffff_fff1 + 48) >>> 0);
});

Deno.test("faketcp flow: a FIN is answered with FIN-ACK and ends the flow", () => {
  const { client, server } = handshake();
  const fin = wire({ ...client.data(0, 5), flags: TcpFlags.FIN | TcpFlags.ACK }, null, C, S);
  assertEquals(server.receive(fin, 5), Rx.Control);
  const finAck = server.control(5)!;
  assertEquals(finAck.flags, TcpFlags.FIN | TcpFlags.ACK);
  assertEquals(finAck.ack, (fin.seq + 1) >>> 0);
  assert(server.ended);
});

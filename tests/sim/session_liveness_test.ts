/**
 * Liveness signals of the sans-I/O session in virtual time: a peer that
 * vanishes (a restarted server drops the old session's packets in silence) is
 * reported `unresponsive` within a bounded time, whatever the session was
 * doing; a healthy or merely lossy peer never is; a peer that comes back is
 * reported `responsive`; and the silence probe does not make two idle peers
 * ping each other.
 */

import { assert, assertEquals } from "../support/assert.ts";
import { ReadResult, Session, type SessionConfig } from "../../shared/session/session.ts";
import { type FrameSink, parseFrames } from "../../shared/wire/frames.ts";
import { ClearProtector, type LinkProfile, SimNet } from "../support/simnet.ts";

/** A ClearProtector that counts the PING frames it seals. */
class PingCounter extends ClearProtector {
  pings = 0;
  private readonly sink: FrameSink = {
    onPing: () => {
      this.pings++;
    },
    onAck: () => {},
    onStream: () => {},
    onResetStream: () => {},
    onMaxData: () => {},
    onMaxStreamData: () => {},
    onDatagram: () => {},
    onClose: () => {},
  };
  override seal(pn: number, plaintext: Uint8Array, out: Uint8Array): number {
    parseFrames(plaintext, plaintext.length, this.sink);
    return super.seal(pn, plaintext, out);
  }
}

interface Liveness {
  unresponsive: { at: number; since: number }[];
  responsive: number[];
  closed: number[];
}

/** Client (0) and server (1) sessions on a SimNet, with their liveness events. */
class Bed {
  readonly net: SimNet;
  readonly s: [Session, Session];
  readonly taps = [new PingCounter(), new PingCounter()] as const;
  readonly live: [Liveness, Liveness] = [
    { unresponsive: [], responsive: [], closed: [] },
    { unresponsive: [], responsive: [], closed: [] },
  ];
  /** Runs before every step. */
  app: () => void = () => {};

  constructor(link: LinkProfile, config: Partial<SessionConfig> = {}, seed = 1) {
    const peer = { maxData: 32 << 20, maxStreamData: 8 << 20, maxStreams: 100 };
    this.s = [
      new Session({ protector: this.taps[0], isClient: true, peer, now: 0, config }),
      new Session({ protector: this.taps[1], isClient: false, peer, now: 0, config }),
    ];
    this.net = new SimNet(this.s[0], this.s[1], [{ ...link }, { ...link }], seed);
    this.net.maxStep = 10; // events are timed to 10 ms, not only at the next deadline
  }

  get now(): number {
    return this.net.now;
  }

  /** Cuts (true) or restores (false) both directions. */
  cut(on: boolean): void {
    this.net.profiles[0].loss = this.net.profiles[1].loss = on ? 1 : 0;
  }

  private pump(): void {
    for (const i of [0, 1] as const) {
      let ev;
      while ((ev = this.s[i].pollEvent())) {
        if (ev.type === "unresponsive") {
          this.live[i].unresponsive.push({ at: this.now, since: ev.since });
        } else if (ev.type === "responsive") this.live[i].responsive.push(this.now);
        else if (ev.type === "closed") this.live[i].closed.push(this.now);
      }
    }
  }

  /** Steps until `cond` or `ms` of virtual time passed; returns `cond()`. */
  run(cond: () => boolean, ms: number): boolean {
    const until = this.now + ms;
    for (let guard = 0; guard < 3_000_000; guard++) {
      this.app();
      this.pump();
      if (cond()) return true;
      if (this.now >= until) return false;
      this.net.step();
    }
    throw new Error("guard tripped");
  }

  runFor(ms: number): void {
    const until = this.now + ms;
    this.run(() => this.now >= until, ms);
  }
}

const scratch = new Uint8Array(65536);
const link: LinkProfile = { delayMs: 20, jitterMs: 0, loss: 0, duplicate: 0 };
const d = defaultsOf();

function defaultsOf(): SessionConfig {
  return new Session({
    protector: new ClearProtector(),
    isClient: true,
    peer: { maxData: 1, maxStreamData: 1, maxStreams: 1 },
    now: 0,
  }).config;
}

/**
 * The server sends `total` bytes on a stream the client opened, at most
 * `rate` bytes per ms (an origin that trickles); the client reads all.
 */
function download(b: Bed, total: number, rate = Infinity): { received: () => number } {
  const [client, server] = b.s;
  const id = client.openStream();
  client.streamWrite(id, new Uint8Array([1]));
  const chunk = new Uint8Array(16384);
  let sent = 0;
  let received = 0;
  let serverKnows = false;
  let start = 0;
  b.app = () => {
    if (!serverKnows && server.streamRead(id, scratch) > 0) {
      serverKnows = true;
      start = b.now;
    }
    const allowed = Math.min(total, (b.now - start) * rate);
    while (serverKnows && sent < allowed) {
      const n = server.streamWrite(id, chunk.subarray(0, Math.min(chunk.length, allowed - sent)));
      if (n <= 0) break;
      sent += n;
    }
    for (;;) {
      const n = client.streamRead(id, scratch);
      if (n <= 0) break;
      received += n;
    }
  };
  return { received: () => received };
}

Deno.test("liveness: the server vanishing mid-download is reported within silenceProbe + unresponsiveTimeout", () => {
  const b = new Bed(link);
  const dl = download(b, 64 << 20, 2000); // 2 MB/s: still running at the cut
  b.runFor(2000);
  assert(dl.received() > 1 << 20, `download under way: ${dl.received()}`);
  assertEquals(b.live[0].unresponsive.length, 0, "no false alarm while data flows");
  const cutAt = b.now;
  b.cut(true);
  assert(b.run(() => b.live[0].unresponsive.length > 0, 10_000), "client reports the silence");
  const ev = b.live[0].unresponsive[0];
  const after = ev.at - cutAt;
  // The receiver has nothing of its own in flight: the silence probe goes out
  // after silenceProbe, and is unanswered for unresponsiveTimeout.
  assert(after >= d.unresponsiveTimeout, `not before the timeout: ${after}`);
  assert(
    after <= d.silenceProbe + d.unresponsiveTimeout + 2 * link.delayMs + 20,
    `reported ${after} ms after the cut`,
  );
  assert(ev.since > cutAt && ev.since <= cutAt + d.silenceProbe + 2 * link.delayMs + 20);
  assertEquals(b.s[0].unansweredSince, ev.since);
  // The sender (server side) sees its data go unanswered too.
  assert(b.run(() => b.live[1].unresponsive.length > 0, 5000), "server side reports it too");
  // Reported once, and long before the idle timeout closes the session.
  b.runFor(10_000);
  assertEquals(b.live[0].unresponsive.length, 1);
  assert(b.s[0].isOpen, "the session itself stays until idle timeout");
  assert(b.run(() => b.s[0].isClosed, d.idleTimeout));
});

Deno.test("liveness: an idle session notices a vanished peer at its next write", () => {
  const b = new Bed(link);
  b.runFor(3000);
  b.cut(true);
  b.runFor(2000);
  assertEquals(b.live[0].unresponsive.length, 0, "idle and silent: nothing awaits an answer");
  assertEquals(b.s[0].unansweredSince, Infinity);
  const writeAt = b.now;
  const id = b.s[0].openStream();
  b.s[0].streamWrite(id, new Uint8Array(100));
  assert(b.run(() => b.live[0].unresponsive.length > 0, 5000));
  const ev = b.live[0].unresponsive[0];
  assert(ev.since >= writeAt && ev.since < writeAt + 1, `since ${ev.since}`);
  // Seen at the harness step after the deadline (steps are at most 10 ms).
  const after = ev.at - writeAt;
  assert(after >= d.unresponsiveTimeout && after <= d.unresponsiveTimeout + 10, `after ${after}`);
});

Deno.test("liveness: an idle session's keepalive reveals a vanished peer", () => {
  const b = new Bed(link);
  b.runFor(1000);
  const cutAt = b.now;
  b.cut(true);
  assert(b.run(() => b.live[0].unresponsive.length > 0, 30_000));
  const after = b.live[0].unresponsive[0].at - cutAt;
  assert(after <= d.keepalive + d.unresponsiveTimeout + 10, `after ${after}`);
});

Deno.test("liveness: a peer that answers again is reported responsive, the transfer completes", () => {
  const b = new Bed(link);
  const total = 16 << 20;
  const dl = download(b, total);
  b.runFor(500);
  b.cut(true);
  assert(b.run(() => b.live[0].unresponsive.length > 0, 5000));
  b.runFor(1500);
  const restoredAt = b.now;
  b.cut(false);
  assert(b.run(() => b.live[0].responsive.length > 0, 10_000), "answer after the outage");
  // The client's PTO-paced pings get through within its backed-off probe interval.
  assert(b.live[0].responsive[0] - restoredAt < 5000);
  assert(b.run(() => dl.received() === total, 60_000), `received ${dl.received()}`);
  assertEquals(b.live[0].unresponsive.length, 1);
  assert(b.s[0].isOpen && b.s[1].isOpen);
  // A second outage is a second report.
  b.cut(true);
  const id = b.s[0].openStream();
  b.s[0].streamWrite(id, new Uint8Array(10));
  assert(b.run(() => b.live[0].unresponsive.length === 2, 5000));
});

Deno.test("liveness: no report on a lossy, jittery link during a long transfer", () => {
  for (const seed of [1, 2, 3]) {
    const b = new Bed({ delayMs: 40, jitterMs: 20, loss: 0.1, duplicate: 0.02 }, {}, seed);
    const total = 8 << 20;
    const dl = download(b, total);
    assert(b.run(() => dl.received() === total, 120_000), `seed ${seed}: ${dl.received()}`);
    b.runFor(30_000); // then idle with keepalives
    assertEquals(b.live[0].unresponsive.length, 0, `seed ${seed}: client`);
    assertEquals(b.live[1].unresponsive.length, 0, `seed ${seed}: server`);
  }
});

Deno.test("liveness: the threshold grows with the RTT (never sooner than 3 PTOs)", () => {
  const slow: LinkProfile = { delayMs: 400, jitterMs: 0, loss: 0, duplicate: 0 };
  const b = new Bed(slow);
  const id = b.s[0].openStream();
  b.s[0].streamWrite(id, new Uint8Array(10));
  b.runFor(5000); // RTT samples: 800 ms
  b.cut(true);
  b.s[0].streamWrite(id, new Uint8Array(10));
  assert(b.run(() => b.live[0].unresponsive.length > 0, 20_000));
  const ev = b.live[0].unresponsive[0];
  const pto = b.s[0].rtt.pto(d.maxAckDelay);
  assert(pto >= 800, `pto ${pto}`);
  assert(ev.at - ev.since >= 3 * pto - 1, `waited ${ev.at - ev.since}, 3 PTO = ${3 * pto}`);
});

Deno.test("liveness: bursts then silence cost one probe each; idle peers do not ping each other", () => {
  const b = new Bed(link);
  const [client, server] = b.s;
  const id = client.openStream();
  client.streamWrite(id, new Uint8Array(1));
  let known = false;
  let bursts = 0;
  let nextBurst = 1000;
  b.app = () => {
    if (!known && server.streamRead(id, scratch) > 0) known = true;
    if (known && b.now >= nextBurst && bursts < 10) {
      server.streamWrite(id, new Uint8Array(50_000));
      bursts++;
      nextBurst += 3000;
    }
    while (client.streamRead(id, scratch) > 0);
  };
  b.runFor(31_000);
  assertEquals(bursts, 10);
  const burstPings = b.taps[0].pings;
  // One silence probe per burst at most, plus a few keepalives.
  assert(burstPings >= 10 && burstPings <= 10 + 4, `client pinged ${burstPings} times`);
  // Then idle for 10 minutes: only keepalives (every 10 s each side), no ping-pong.
  b.app = () => {};
  const before = [b.taps[0].pings, b.taps[1].pings];
  b.runFor(600_000);
  for (const i of [0, 1]) {
    const n = b.taps[i].pings - before[i];
    assert(n <= 600_000 / d.keepalive + 2, `side ${i} pinged ${n} times in 10 min`);
  }
  assertEquals(b.live[0].unresponsive.length + b.live[1].unresponsive.length, 0);
  assert(client.isOpen && server.isOpen);
  assert(client.streamRead(id, scratch) === ReadResult.WOULD_BLOCK);
});

Deno.test("liveness: unresponsiveTimeout 0 and silenceProbe 0 turn both off", () => {
  const b = new Bed(link, { unresponsiveTimeout: 0, silenceProbe: 0 });
  const dl = download(b, 8 << 20);
  b.runFor(1000);
  assert(dl.received() > 0);
  b.cut(true);
  b.runFor(20_000);
  assertEquals(b.live[0].unresponsive.length, 0);
  assertEquals(b.live[1].unresponsive.length, 0);
});

/**
 * The stack's TCP against the minimal client TCP of tests/support/tcp_peer.ts over a
 * simulated link in virtual time: handshake and options, byte-exact transfers both ways
 * under loss/reordering/duplication, half-close, RST cases, zero window, refusals, SYN
 * flood, SACK, RTO backoff, TIME-WAIT.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { type Impairment, pattern, SimLink, TcpPeer } from "../support/tcp_peer.ts";
import {
  ReadResult,
  Stack,
  type StackEvent,
  type StackOptions,
} from "../../shared/netstack/stack.ts";
import { TcpFlags } from "../../shared/netstack/wire/tcp.ts";

const APP4 = new Uint8Array([10, 0, 0, 2]);
const SRV4 = new Uint8Array([93, 184, 216, 34]);
const APP6 = new Uint8Array(16).fill(0).map((_, i) => (i === 0 ? 0xfd : i === 15 ? 2 : 0));
const SRV6 = new Uint8Array(16).fill(0).map((
  _,
  i,
) => (i === 0 ? 0x20 : i === 1 ? 1 : i === 15 ? 9 : 0));

/** An embedder: accepts (or refuses), sinks what it reads, sends `reply` per flow. */
class App {
  readonly got = new Map<number, Uint8Array[]>();
  readonly ended = new Set<number>();
  readonly closed = new Map<number, string>();
  readonly syns: StackEvent[] = [];
  readonly sendPos = new Map<number, number>();
  reading = true;
  refuse: "reset" | "unreachable" | null = null;
  /** Don't answer SYNs (SYN-queue tests). */
  hold = false;
  /** Close our side once the application's FIN was read. */
  closeOnEnd = true;
  readonly buf = new Uint8Array(65536);
  constructor(readonly stack: Stack, public reply: Uint8Array = new Uint8Array(0)) {}

  onEvent = (ev: StackEvent, link: SimLink): void => {
    const s = this.stack;
    switch (ev.type) {
      case "tcp-syn":
        this.syns.push(ev);
        if (this.hold) return;
        if (this.refuse) s.refuse(ev.flow, this.refuse);
        else {
          s.accept(ev.flow, link.now);
          this.sendPos.set(ev.flow, 0);
          this.pump(ev.flow);
        }
        break;
      case "readable":
        if (this.reading) this.drain(ev.flow);
        break;
      case "writable":
        this.pump(ev.flow);
        break;
      case "closed":
        this.closed.set(ev.flow, ev.reason);
        break;
    }
  };

  drain(flow: number): void {
    for (;;) {
      const n = this.stack.read(flow, this.buf);
      if (n > 0) {
        let l = this.got.get(flow);
        if (!l) this.got.set(flow, l = []);
        l.push(this.buf.slice(0, n));
        continue;
      }
      if (n === ReadResult.END && !this.ended.has(flow)) {
        this.ended.add(flow);
        if (this.closeOnEnd && (this.sendPos.get(flow) ?? 0) >= this.reply.length) {
          this.stack.close(flow);
        }
      }
      return;
    }
  }

  pump(flow: number): void {
    let pos = this.sendPos.get(flow) ?? 0;
    while (pos < this.reply.length) {
      const n = this.stack.write(flow, this.reply.subarray(pos, pos + 65536));
      if (n <= 0) break;
      pos += n;
    }
    this.sendPos.set(flow, pos);
    if (pos >= this.reply.length && this.ended.has(flow) && this.closeOnEnd) {
      this.stack.close(flow);
    }
  }

  bytes(flow: number): Uint8Array {
    const l = this.got.get(flow) ?? [];
    const out = new Uint8Array(l.reduce((a, b) => a + b.length, 0));
    let o = 0;
    for (const b of l) {
      out.set(b, o);
      o += b.length;
    }
    return out;
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function setup(
  opts: StackOptions = {},
  up?: Impairment,
  down?: Impairment,
  seed = 7,
): { stack: Stack; app: App; link: SimLink } {
  const stack = new Stack({ random: mkRandom(seed), ...opts });
  const app = new App(stack);
  const link = new SimLink(stack, app.onEvent, up, down, seed);
  return { stack, app, link };
}

function mkRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a * 1664525 + 1013904223) >>> 0;
    return a / 4294967296;
  };
}

function peer(port: number, extra: Partial<ConstructorParameters<typeof TcpPeer>[0]> = {}) {
  return new TcpPeer({ src: APP4, srcPort: port, dst: SRV4, dstPort: 443, ...extra });
}

Deno.test("handshake: SYN-ACK only after accept, options negotiated", () => {
  const { stack, app, link } = setup({ mtu: 1400 });
  app.hold = true;
  const p = link.add(peer(40000));
  p.connect();
  link.run(() => app.syns.length === 1, 1000);
  assertEquals(p.log.length, 0, "no answer before accept");
  const syn = app.syns[0] as Extract<StackEvent, { type: "tcp-syn" }>;
  assertEquals([...syn.src], [...APP4]);
  assertEquals(syn.dstPort, 443);
  stack.accept(syn.flow, link.now);
  link.run(() => p.state === "established", 1000);
  const sa = p.log[0];
  assertEquals(sa.flags, TcpFlags.SYN | TcpFlags.ACK);
  assertEquals(sa.mss, 1400 - 40);
  assert(sa.wscale >= 2, "window scale offered");
  assert(sa.sackOk && sa.ts);
  assertEquals(stack.connection(syn.flow)!.sendMss, 1360 - 12);
});

Deno.test("several MiB each way, clean link, byte exact; FIN both ways; TIME-WAIT-free passive close", () => {
  const { stack, app, link } = setup();
  const up = pattern(3 << 20, 1);
  app.reply = pattern(3 << 20, 2);
  const p = link.add(peer(40001));
  p.connect();
  p.write(up);
  p.close();
  link.run(() => app.closed.size === 1 && p.finReceived && p.allAcked, 600_000);
  const flow = [...app.closed.keys()][0];
  assert(equalBytes(app.bytes(flow), up), "app→tunnel bytes");
  assert(equalBytes(p.data, app.reply), "tunnel→app bytes");
  assertEquals(app.closed.get(flow), "done");
  link.run(() => false, link.now + 10_000);
  assertEquals(stack.connectionCount, 0);
});

for (
  const [name, im] of [
    ["2% loss", { delay: 5, jitter: 0, loss: 0.02, duplicate: 0 }],
    ["reordering + duplication", { delay: 5, jitter: 8, loss: 0, duplicate: 0.05 }],
    ["loss + reordering + duplication", { delay: 3, jitter: 6, loss: 0.03, duplicate: 0.03 }],
  ] as [string, Impairment][]
) {
  Deno.test(`transfer 2 MiB each way under ${name}`, () => {
    const { stack, app, link } = setup({}, im, im, 11);
    const up = pattern(2 << 20, 3);
    app.reply = pattern(2 << 20, 4);
    const p = link.add(peer(40002));
    p.connect();
    p.write(up);
    p.close();
    const ok = link.run(() => app.closed.size === 1 && p.finReceived && p.allAcked, 3_600_000);
    const flow = app.syns.length ? (app.syns[0] as { flow: number }).flow : -1;
    const c0 = stack.connection(flow);
    assert(
      ok,
      `finished (got ${
        app.bytes(flow).length
      }, peer ${p.receivedLen}, t=${link.now}) closed=${app.closed.size} fin=${p.finReceived} acked=${p.allAcked} una=${p.sndUna} state=${c0?.state} ended=${app.ended.size} reason=${[
        ...app.closed.values(),
      ]} last=${JSON.stringify(p.log.slice(-3))}`,
    );
    assert(equalBytes(app.bytes(flow), up), "app→tunnel bytes");
    assert(equalBytes(p.data, app.reply), "tunnel→app bytes");
    const c = stack.connection(flow);
    void c;
  });
}

Deno.test("IPv6: 1 MiB each way, MSS from the MTU", () => {
  const { stack, app, link } = setup({ mtu: 1280 });
  const up = pattern(1 << 20, 5);
  app.reply = pattern(1 << 20, 6);
  const p = link.add(new TcpPeer({ src: APP6, srcPort: 40003, dst: SRV6, dstPort: 80 }));
  p.connect();
  p.write(up);
  p.close();
  assert(link.run(() => app.closed.size === 1 && p.finReceived && p.allAcked, 600_000));
  const flow = [...app.closed.keys()][0];
  assert(equalBytes(app.bytes(flow), up));
  assert(equalBytes(p.data, app.reply));
  assertEquals(p.log[0].mss, 1280 - 60);
  void stack;
});

Deno.test("half-close: the application's FIN ends our read side, our writes go on", () => {
  const { stack, app, link } = setup();
  app.closeOnEnd = false;
  const p = link.add(peer(40010));
  p.connect();
  p.write(pattern(5000, 1));
  p.close();
  link.run(() => app.ended.size === 1, 10_000);
  const flow = (app.syns[0] as { flow: number }).flow;
  assertEquals(stack.connection(flow)!.state, "close-wait");
  // The outbound still talks: 200 KiB after the application's FIN.
  const late = pattern(200_000, 9);
  app.reply = late;
  app.pump(flow);
  link.run(() => p.receivedLen === late.length, 60_000);
  assert(equalBytes(p.data, late));
  assert(!p.finReceived);
  stack.close(flow); // the outbound's EOF
  link.run(() => p.finReceived && app.closed.size === 1, 10_000);
  assertEquals(app.closed.get(flow), "done");
});

Deno.test("half-close: our FIN first, the application keeps sending; TIME-WAIT short", () => {
  const { stack, app, link } = setup({ tcp: { timeWait: 2000 } });
  app.closeOnEnd = false;
  app.reply = pattern(1000, 3);
  const p = link.add(peer(40011));
  p.connect();
  link.run(() => p.receivedLen === 1000, 10_000);
  const flow = (app.syns[0] as { flow: number }).flow;
  stack.close(flow);
  link.run(() => p.finReceived, 10_000);
  link.run(() => stack.connection(flow)!.state === "fin-wait-2", 10_000);
  const up = pattern(300_000, 4);
  p.write(up);
  link.run(() => app.bytes(flow).length === up.length, 60_000);
  assert(equalBytes(app.bytes(flow), up));
  p.close();
  link.run(() => app.closed.size === 1, 10_000);
  assertEquals(stack.connection(flow)!.state, "time-wait");
  assertEquals(stack.timeWaitCount, 1);
  const t0 = link.now;
  link.run(() => stack.connectionCount === 0, t0 + 60_000);
  assert(link.now - t0 <= 2100, `TIME-WAIT lasted ${link.now - t0} ms`);
});

Deno.test("TIME-WAIT count is capped", () => {
  const { stack, app, link } = setup({ maxTimeWait: 5, tcp: { timeWait: 100_000 } });
  app.closeOnEnd = false;
  const peers: TcpPeer[] = [];
  for (let i = 0; i < 20; i++) {
    const p = link.add(peer(41000 + i));
    p.connect();
    peers.push(p);
  }
  link.run(() => peers.every((p) => p.state === "established"), 10_000);
  for (const ev of app.syns) stack.close((ev as { flow: number }).flow);
  link.run(() => peers.every((p) => p.finReceived), 10_000);
  for (const p of peers) p.close();
  link.run(() => app.closed.size === 20, 10_000);
  assertEquals(stack.timeWaitCount, 5);
  assertEquals(stack.connectionCount, 5);
});

Deno.test("RST from the application: exact sequence resets, in-window gets a challenge ACK", () => {
  const { stack, app, link } = setup();
  const p = link.add(peer(40020));
  p.connect();
  p.write(pattern(100, 1));
  link.run(() => app.bytes((app.syns[0] as { flow: number })?.flow ?? 0).length === 100, 10_000);
  link.run(() => false, link.now + 100);
  const flow = (app.syns[0] as { flow: number }).flow;
  // In window but not rcvNxt: challenge ACK, connection survives.
  const before = p.log.length;
  link.inject(p.craft(link.now, TcpFlags.RST, p.sndNxt + 1000));
  link.run(() => p.log.length > before, 1000);
  assertEquals(p.log[p.log.length - 1].flags, TcpFlags.ACK, "challenge ACK");
  assertEquals(stack.connection(flow)!.state, "established");
  // Out of window: ignored silently.
  const n = p.log.length;
  link.inject(p.craft(link.now, TcpFlags.RST, p.sndNxt + 10_000_000));
  link.run(() => false, link.now + 50);
  assertEquals(p.log.length, n);
  // In-window SYN: challenge ACK (RFC 5961 §4).
  link.run(() => false, link.now + 100);
  link.inject(p.craft(link.now, TcpFlags.SYN, p.sndNxt + 10));
  link.run(() => p.log.length > n, 1000);
  assertEquals(p.log[p.log.length - 1].flags, TcpFlags.ACK);
  // Exact: reset.
  link.inject(p.craft(link.now, TcpFlags.RST, p.sndNxt));
  link.run(() => app.closed.size === 1, 1000);
  assertEquals(app.closed.get(flow), "reset");
  assertEquals(stack.read(flow, new Uint8Array(10)), ReadResult.RESET);
  assertEquals(stack.connectionCount, 0);
});

Deno.test("abort sends RST; segments of no connection get RST; RST for nothing is ignored", () => {
  const { stack, app, link } = setup();
  const p = link.add(peer(40021));
  p.connect();
  link.run(() => p.state === "established", 1000);
  const flow = (app.syns[0] as { flow: number }).flow;
  stack.abort(flow);
  link.run(() => p.state === "reset", 1000);
  assertEquals(app.closed.get(flow), "aborted");
  // A stray ACK for a connection that does not exist: RST with seq = its ack.
  const q = link.add(peer(40022));
  link.inject(q.craft(link.now, TcpFlags.ACK, 1, new Uint8Array(0), 0x12345678));
  link.run(() => q.log.length > 0, 1000);
  assertEquals(q.log[0].flags, TcpFlags.RST);
  assertEquals(q.log[0].seq, 0x12345678);
  const sent = stack.stats.resetsSent;
  link.inject(q.craft(link.now, TcpFlags.RST, 1));
  link.run(() => false, link.now + 100);
  assertEquals(stack.stats.resetsSent, sent);
});

Deno.test("refused connect: RST, or ICMP port/host unreachable; never a SYN-ACK", () => {
  for (const how of ["reset", "unreachable"] as const) {
    const { stack, app, link } = setup();
    app.refuse = how;
    const p = link.add(peer(40030));
    p.connect();
    link.run(() => app.closed.size === 1 && (p.state === "reset" || p.icmp.length > 0), 2000);
    assert(!p.log.some((s) => s.flags & TcpFlags.SYN), "no SYN-ACK");
    if (how === "reset") {
      assertEquals(p.log[0].flags, TcpFlags.RST | TcpFlags.ACK);
      assertEquals(p.log[0].ack, (p.o.isn + 1) >>> 0);
    } else {
      assertEquals(p.icmp[0], { type: 3, code: 3 });
    }
    assertEquals(stack.connectionCount, 0);
  }
});

Deno.test("SYN flood: pending SYNs bounded, SYN timeout answers with RST", () => {
  const { stack, app, link } = setup({ maxSynQueue: 16, synTimeout: 5000 });
  app.hold = true;
  const peers: TcpPeer[] = [];
  for (let i = 0; i < 200; i++) {
    const p = link.add(peer(42000 + i, { rto: 100_000 }));
    p.connect();
    peers.push(p);
  }
  link.run(() => false, 1000);
  assertEquals(stack.pendingSynCount, 16);
  assertEquals(app.syns.length, 16);
  assertEquals(stack.stats.synDropped, 184);
  assertEquals(stack.allocatedBytes, 0, "no buffers before accept");
  link.run(() => false, 7000);
  assertEquals(stack.pendingSynCount, 0);
  assertEquals(peers.filter((p) => p.state === "reset").length, 16);
  assertEquals([...app.closed.values()].filter((r) => r === "timeout").length, 16);
});

Deno.test("connection limit: SYNs over it are refused with RST", () => {
  const { stack, app, link } = setup({ maxConnections: 4 });
  const peers: TcpPeer[] = [];
  for (let i = 0; i < 6; i++) {
    const p = link.add(peer(43000 + i));
    p.connect();
    peers.push(p);
  }
  link.run(() => peers.every((p) => p.state !== "syn-sent"), 5000);
  assertEquals(peers.filter((p) => p.state === "established").length, 4);
  assertEquals(peers.filter((p) => p.state === "reset").length, 2);
  assertEquals(stack.stats.synRefused, 2);
  void app;
});

Deno.test("zero window: the application stops reading; memory bounded, probes sent, resumes", () => {
  const { stack, app, link } = setup({ tcp: { sendBuffer: 64 * 1024 } });
  const total = 4 << 20;
  app.reply = pattern(total, 8);
  const p = link.add(peer(40040, { rcvBuf: 32 * 1024 }));
  p.reading = false;
  p.connect();
  link.run(() => false, 20_000);
  const flow = (app.syns[0] as { flow: number }).flow;
  const c = stack.connection(flow)!;
  // The outbound's bytes wait in our bounded send buffer (the embedder sees short writes).
  assert(p.receivedLen <= 32 * 1024, `peer holds ${p.receivedLen}`);
  assert(c.unacknowledged <= 64 * 1024);
  assert(stack.bufferedBytes <= 64 * 1024 + 1024, `buffered ${stack.bufferedBytes}`);
  assert(c.stats.windowProbes >= 3, `probes ${c.stats.windowProbes}`);
  // Probe intervals back off.
  const probes = p.log.filter((s) => s.len === 1 && s.at > 100);
  assert(probes.length >= 3);
  const gaps = probes.slice(1).map((s, i) => s.at - probes[i].at);
  assert(gaps[gaps.length - 1] > gaps[0], `backoff ${gaps}`);
  assertEquals(c.state, "established");
  p.reading = true;
  p.readAll();
  assert(link.run(() => p.receivedLen === total, 600_000), `resumed: ${p.receivedLen}`);
  assert(equalBytes(p.data, app.reply));
});

Deno.test("receive side: the embedder stops reading; our window closes, memory bounded", () => {
  const { stack, app, link } = setup({ tcp: { recvBuffer: 64 * 1024 } });
  app.reading = false;
  const up = pattern(1 << 20, 12);
  const p = link.add(peer(40041));
  p.connect();
  p.write(up);
  link.run(() => false, 30_000);
  const flow = (app.syns[0] as { flow: number }).flow;
  const c = stack.connection(flow)!;
  assert(c.readable >= 64 * 1024 - 1 && c.readable <= 64 * 1024, `${c.readable}`);
  assertEquals(p.sndWnd, 0);
  assert(stack.bufferedBytes <= 64 * 1024);
  app.reading = true;
  app.drain(flow);
  assert(link.run(() => app.bytes(flow).length === up.length, 600_000));
  assert(equalBytes(app.bytes(flow), up));
});

Deno.test("out-of-order data: SACK blocks emitted, most recent first; hole fill delivers", () => {
  const { app, link } = setup();
  const p = link.add(peer(40050));
  p.connect();
  link.run(() => p.state === "established", 1000);
  link.run(() => false, link.now + 100);
  const flow = (app.syns[0] as { flow: number }).flow;
  const d = pattern(4000, 2);
  // Segments 1000..2000 and 3000..4000 first.
  const n0 = p.log.length;
  link.inject(p.craft(link.now, TcpFlags.ACK, 1 + 1000, d.subarray(1000, 2000)));
  link.run(() => p.log.length > n0, 1000);
  let a = p.log[p.log.length - 1];
  assertEquals(a.ack, (p.o.isn + 1) >>> 0, "duplicate ACK");
  assertEquals(a.sack, [(p.o.isn + 1001) >>> 0, (p.o.isn + 2001) >>> 0]);
  const n1 = p.log.length;
  link.inject(p.craft(link.now, TcpFlags.ACK, 1 + 3000, d.subarray(3000, 4000)));
  link.run(() => p.log.length > n1, 1000);
  a = p.log[p.log.length - 1];
  assertEquals(a.sack, [
    (p.o.isn + 3001) >>> 0,
    (p.o.isn + 4001) >>> 0,
    (p.o.isn + 1001) >>> 0,
    (p.o.isn + 2001) >>> 0,
  ]);
  link.inject(p.craft(link.now, TcpFlags.ACK, 1, d.subarray(0, 1000)));
  link.inject(p.craft(link.now, TcpFlags.ACK, 1 + 2000, d.subarray(2000, 3000)));
  link.run(() => app.bytes(flow).length === 4000, 1000);
  assert(equalBytes(app.bytes(flow), d));
});

Deno.test("RTO: exponential backoff while the application is silent, then abort", () => {
  const { stack, app, link } = setup({ tcp: { maxRetries: 6, keepaliveIdle: 0 } });
  app.reply = pattern(1000, 1);
  const p = link.add(peer(40060));
  p.connect();
  link.run(() => p.receivedLen === 1000, 5000);
  const flow = (app.syns[0] as { flow: number }).flow;
  const c = stack.connection(flow)!;
  const rto0 = c.rto;
  assert(rto0 >= 200, `min RTO ${rto0}`);
  // The application's host vanishes: nothing reaches the peer any more.
  link.peers.length = 0;
  link.recordStack = true;
  app.reply = pattern(2000, 2);
  app.pump(flow);
  link.run(() => app.closed.size === 1, 3_600_000);
  assertEquals(app.closed.get(flow), "timeout");
  assertEquals(c.stats.timeouts, 6);
  // The same first segment again and again, at doubling intervals.
  const times: number[] = [];
  link.fromStack.forEach((pkt, i) => {
    const len = pkt.length - 20 - ((pkt[32] >> 4) * 4);
    if (len > 0 && times.length < 10) times.push(link.fromStackAt[i]);
  });
  const gaps = times.slice(1).map((t, i) => t - times[i]).filter((g) => g > 1);
  assert(gaps.length >= 6, `gaps ${gaps}`);
  // First a tail loss probe (2·SRTT + the delayed-ACK allowance), then the RTO.
  assert(gaps[0] < rto0, `TLP before the RTO: ${gaps}`);
  assert(Math.abs(gaps[0] + gaps[1] - rto0) < 2, `RTO from the first send: ${gaps}`);
  const rtos = gaps.slice(1);
  for (let i = 2; i < rtos.length; i++) {
    assert(Math.abs(rtos[i] / rtos[i - 1] - 2) < 0.01, `doubling: ${gaps}`);
  }
  // The last one is a RST.
  const last = link.fromStack[link.fromStack.length - 1];
  assertEquals(last[33] & TcpFlags.RST, TcpFlags.RST);
});

Deno.test("fast retransmit on three duplicate ACKs (no RTO), SACK used in recovery", () => {
  const { stack, app, link } = setup();
  app.reply = pattern(60 * 1448, 5);
  const p = link.add(peer(40070));
  p.connect();
  link.run(() => p.state === "established", 1000);
  const flow = (app.syns[0] as { flow: number }).flow;
  let dataSeen = 0;
  link.filter = (pkt, toStack) => {
    if (toStack) return true;
    const len = pkt.length - 20 - ((pkt[32] >> 4) * 4);
    if (len > 0) {
      dataSeen++;
      if (dataSeen === 3 || dataSeen === 6) return false; // two holes, once each
    }
    return true;
  };
  link.run(() => p.receivedLen === app.reply.length, 10_000);
  assert(equalBytes(p.data, app.reply));
  const c = stack.connection(flow)!;
  assertEquals(c.stats.timeouts, 0, "recovered without RTO");
  assertEquals(c.stats.fastRetransmits, 1);
  assertEquals(c.stats.retransmits, 2, "each hole resent once, SACKed data not resent");
});

Deno.test("keepalive: an idle application that vanished is detected", () => {
  const { app, link } = setup({
    tcp: { keepaliveIdle: 10_000, keepaliveInterval: 1000, keepaliveCount: 3 },
  });
  const p = link.add(peer(40080));
  p.connect();
  link.run(() => p.state === "established", 1000);
  link.run(() => false, 5000);
  // The peer answers keepalives while it is there.
  link.run(() => false, 30_000);
  assertEquals(app.closed.size, 0);
  link.peers.length = 0;
  link.run(() => app.closed.size === 1, 100_000);
  assertEquals([...app.closed.values()][0], "timeout");
});

Deno.test("tail loss: the last segment lost is recovered by a tail loss probe, not an RTO", () => {
  const { stack, app, link } = setup();
  const p = link.add(peer(40090));
  p.connect();
  link.run(() => p.state === "established", 1000);
  const flow = (app.syns[0] as { flow: number }).flow;
  // Warm up (an RTT sample), then lose the last segment of a 10-segment burst once.
  app.reply = pattern(1000, 1);
  app.pump(flow);
  link.run(() => p.receivedLen === 1000, 1000);
  const burst = pattern(10 * 1448, 2);
  let n = 0;
  link.filter = (pkt, toStack) => {
    if (toStack) return true;
    const len = pkt.length - 20 - ((pkt[32] >> 4) * 4);
    return !(len > 0 && ++n === 10);
  };
  assertEquals(stack.write(flow, burst), burst.length);
  link.run(() => p.receivedLen === 1000 + burst.length, 5000);
  const c = stack.connection(flow)!;
  assertEquals(c.stats.timeouts, 0);
  assert(link.now < 2000 + 100, `recovered fast (${link.now})`);
});

Deno.test("a lost retransmission is detected from later SACKs, not by the RTO", () => {
  const { stack, app, link } = setup();
  const p = link.add(peer(40091));
  p.connect();
  link.run(() => p.state === "established", 1000);
  const flow = (app.syns[0] as { flow: number }).flow;
  app.reply = pattern(200 * 1448, 3);
  let seen = 0;
  let firstLen = -1;
  let drops = 0;
  link.filter = (pkt, toStack) => {
    if (toStack) return true;
    const len = pkt.length - 20 - ((pkt[32] >> 4) * 4);
    if (len <= 0) return true;
    const seq = ((pkt[24] << 24) | (pkt[25] << 16) | (pkt[26] << 8) | pkt[27]) >>> 0;
    seen++;
    // Drop the 5th data segment, and its first retransmission.
    if (seen === 5) {
      firstLen = seq;
      drops++;
      return false;
    }
    if (seq === firstLen && drops === 1) {
      drops++;
      return false;
    }
    return true;
  };
  app.pump(flow);
  link.run(() => p.receivedLen === app.reply.length, 10_000);
  assert(equalBytes(p.data, app.reply));
  assertEquals(drops, 2);
  const c = stack.connection(flow)!;
  assertEquals(c.stats.timeouts, 0, "no RTO");
});

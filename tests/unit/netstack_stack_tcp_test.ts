/**
 * Targeted TCP cases of the stack: PMTU errors and offloaded super-segments, a lost
 * SYN-ACK, a bad ACK in SYN-RECEIVED, RFC 5961 old ACKs, TIME-WAIT reuse by a new SYN,
 * the write/read API edges.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { pattern, SimLink, TcpPeer } from "../support/tcp_peer.ts";
import { ReadResult, Stack, type StackEvent } from "../../shared/netstack/stack.ts";
import { TcpFlags } from "../../shared/netstack/wire/tcp.ts";

const APP = new Uint8Array([10, 0, 0, 2]);
const SRV = new Uint8Array([1, 2, 3, 4]);

function bed(opts: ConstructorParameters<typeof Stack>[0] = {}) {
  const stack = new Stack({ random: () => 0.25, ...opts });
  const flows: number[] = [];
  const got: number[] = [];
  const closed: string[] = [];
  let accept = true;
  const buf = new Uint8Array(1 << 16);
  const link = new SimLink(stack, (ev: StackEvent, l) => {
    if (ev.type === "tcp-syn") {
      flows.push(ev.flow);
      if (accept) stack.accept(ev.flow, l.now);
    } else if (ev.type === "readable") {
      for (let n = stack.read(ev.flow, buf); n > 0; n = stack.read(ev.flow, buf)) {
        got.push(n);
      }
    } else if (ev.type === "closed") closed.push(ev.reason);
  });
  return {
    stack,
    link,
    flows,
    got,
    closed,
    hold() {
      accept = false;
    },
  };
}

function peer(port: number): TcpPeer {
  return new TcpPeer({ src: APP, srcPort: port, dst: SRV, dstPort: 80 });
}

Deno.test("a TCP segment over the MTU with DF gets fragmentation-needed; offloaded is taken", () => {
  const { stack, link, got } = bed({ mtu: 1500 });
  const p = link.add(peer(1000));
  p.connect();
  link.run(() => p.state === "established", 1000);
  link.run(() => false, link.now + 50);
  const big = pattern(4000, 1);
  link.inject(p.craft(link.now, TcpFlags.ACK, 1, big));
  link.run(() => p.icmp.length > 0, 1000);
  assertEquals(p.icmp[0], { type: 3, code: 4 });
  assertEquals(got.length, 0);
  // The same as a GSO super-segment from an offloading TUN: one segment.
  const seg = p.craft(link.now, TcpFlags.ACK, 1, big);
  assertEquals(stack.input(seg, link.now, { checksumOffloaded: true }), "ok");
  link.run(() => got.reduce((a, b) => a + b, 0) === 4000, 1000);
});

Deno.test("a lost SYN-ACK: the retransmitted SYN is answered again (and RTO resends it)", () => {
  const { stack, link, flows } = bed();
  let dropped = 0;
  link.filter = (pkt, toStack) => {
    if (!toStack && (pkt[33] & TcpFlags.SYN) && dropped < 2) {
      dropped++;
      return false;
    }
    return true;
  };
  const p = link.add(new TcpPeer({ src: APP, srcPort: 1001, dst: SRV, dstPort: 80, rto: 5000 }));
  p.connect();
  link.run(() => p.state === "established", 20_000);
  assertEquals(flows.length, 1, "one flow for the retransmitted SYNs");
  assertEquals(stack.connectionCount, 1);
});

Deno.test("SYN-RECEIVED: an ACK that acks nothing we sent gets RST seq = its ack", () => {
  const { link } = bed();
  const p = link.add(peer(1002));
  let first = true;
  link.filter = (pkt, toStack) => {
    if (toStack && first && pkt[33] === TcpFlags.ACK) {
      first = false;
      return false;
    }
    return true;
  };
  p.connect();
  link.run(() => p.state === "established", 1000);
  link.inject(p.craft(link.now, TcpFlags.ACK, 1, new Uint8Array(0), 0xdeadbeef));
  link.run(() => p.log.some((s) => s.flags === TcpFlags.RST), 1000);
  assertEquals(p.log.find((s) => s.flags === TcpFlags.RST)!.seq, 0xdeadbeef);
});

Deno.test("RFC 5961: an ACK far below SND.UNA is dropped with a challenge ACK", () => {
  const { stack, link, flows } = bed();
  const p = link.add(peer(1003));
  p.connect();
  link.run(() => p.state === "established", 1000);
  stack.write(flows[0], pattern(1000, 2));
  link.run(() => p.receivedLen === 1000, 1000);
  link.run(() => false, link.now + 100);
  const n = p.log.length;
  const old = (p.irs + 1 - 400_000) >>> 0; // below SND.UNA − MAX.SND.WND (256 KiB)
  link.inject(p.craft(link.now, TcpFlags.ACK, p.sndNxt, pattern(10, 3), old));
  link.run(() => p.log.length > n, 1000);
  assertEquals(p.log[n].flags, TcpFlags.ACK);
  assertEquals(p.log[n].ack, (p.o.isn + 1) >>> 0, "the data was not taken");
});

Deno.test("TIME-WAIT: a new SYN on the same 4-tuple opens a new connection", () => {
  const { stack, link, flows, closed } = bed({ tcp: { timeWait: 60_000 } });
  const p = link.add(peer(1004));
  p.connect();
  link.run(() => p.state === "established", 1000);
  stack.close(flows[0]);
  link.run(() => p.finReceived, 1000);
  p.close();
  link.run(() => stack.timeWaitCount === 1, 1000);
  assertEquals(closed, ["done"]);
  link.peers.length = 0;
  const q = link.add(new TcpPeer({ src: APP, srcPort: 1004, dst: SRV, dstPort: 80, isn: 99999 }));
  q.connect();
  link.run(() => q.state === "established", 1000);
  assertEquals(flows.length, 2);
  assertEquals(stack.timeWaitCount, 0);
});

Deno.test("API edges: unknown flows, write after close, read after reset", () => {
  const { stack, link, flows } = bed();
  assertEquals(stack.read(12345, new Uint8Array(4)), ReadResult.RESET);
  assertEquals(stack.write(12345, new Uint8Array(4)), ReadResult.RESET);
  assert(!stack.accept(12345, 0));
  assert(!stack.refuse(12345));
  stack.close(12345);
  stack.abort(12345);
  const p = link.add(peer(1005));
  p.connect();
  link.run(() => p.state === "established", 1000);
  const f = flows[0];
  assert(!stack.accept(f, link.now), "accept twice");
  assertEquals(stack.read(f, new Uint8Array(4)), ReadResult.WOULD_BLOCK);
  stack.close(f);
  assertEquals(stack.write(f, new Uint8Array(4)), ReadResult.RESET);
  assertEquals(stack.writable(f), 0);
  stack.abort(f);
  link.run(() => p.state === "reset", 1000);
  assertEquals(stack.read(f, new Uint8Array(4)), ReadResult.RESET);
});

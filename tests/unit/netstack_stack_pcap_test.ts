/**
 * The stack against recorded kernel traffic (tests/fixtures/netstack/*.pcap): the kernel
 * client's SYN gets a SYN-ACK with the options negotiated as the kernel server did; with
 * our initial sequence number set to the kernel server's, the client's whole recorded
 * side of a curl session replays against the stack; UDP and ICMP from the captures.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { readFixture } from "../support/pcap.ts";
import { ReadResult, Stack, type StackEvent } from "../../shared/netstack/stack.ts";
import { parseIp } from "../../shared/netstack/wire/packet.ts";
import { parseTcp, TcpFlags, type TcpSegment } from "../../shared/netstack/wire/tcp.ts";
import { IpProtocol } from "../../shared/netstack/wire/ip_protocol.ts";

interface Seg {
  ip: Uint8Array;
  tcp: TcpSegment;
  fromClient: boolean;
}

function tcpSegments(name: string, serverPort: number): Seg[] {
  const out: Seg[] = [];
  for (const p of readFixture(name)) {
    if (!p.ip) continue;
    const ip = parseIp(p.ip);
    if (typeof ip === "string" || ip.protocol !== IpProtocol.Tcp) continue;
    const t = parseTcp(ip.payload, ip.src, ip.dst);
    if (typeof t === "string") throw new Error(t);
    out.push({ ip: p.ip, tcp: t, fromClient: t.dstPort === serverPort });
  }
  return out;
}

function drain(stack: Stack, now: number): TcpSegment[] {
  const buf = new Uint8Array(stack.mtu);
  const segs: TcpSegment[] = [];
  for (let n = stack.poll(now, buf); n > 0; n = stack.poll(now, buf)) {
    const ip = parseIp(buf.slice(0, n));
    if (typeof ip === "string") throw new Error(ip);
    const t = parseTcp(ip.payload, ip.src, ip.dst);
    if (typeof t === "string") throw new Error(`our segment: ${t}`);
    segs.push(t);
  }
  return segs;
}

function events(stack: Stack): StackEvent[] {
  const evs: StackEvent[] = [];
  for (let e = stack.pollEvent(); e; e = stack.pollEvent()) evs.push(e);
  return evs;
}

for (const [file, mtu] of [["tcp4.pcap", 1280], ["tcp6.pcap", 1280]] as const) {
  Deno.test(`${file}: the kernel's SYN gets the SYN-ACK the kernel server sent (options)`, () => {
    const segs = tcpSegments(file, 8080);
    const syn = segs.find((s) => s.tcp.flags === TcpFlags.SYN)!;
    const kernelSynAck = segs.find((s) => s.tcp.flags === (TcpFlags.SYN | TcpFlags.ACK))!;
    const stack = new Stack({ mtu });
    assertEquals(stack.input(syn.ip, 0), "ok");
    const ev = events(stack);
    assertEquals(ev.length, 1);
    assertEquals(ev[0].type, "tcp-syn");
    assertEquals(drain(stack, 0).length, 0, "nothing before accept");
    const flow = (ev[0] as { flow: number }).flow;
    stack.accept(flow, 1);
    const [sa] = drain(stack, 1);
    const k = kernelSynAck.tcp;
    assertEquals(sa.flags, TcpFlags.SYN | TcpFlags.ACK);
    assertEquals(sa.ack, k.ack, "ack = SYN + 1");
    assertEquals(sa.mss, k.mss, "MSS from the MTU equals the kernel's on the same MTU");
    assertEquals(sa.sackPermitted, k.sackPermitted);
    assertEquals(sa.hasTimestamps, k.hasTimestamps);
    assertEquals(sa.tsEcr, syn.tcp.tsVal, "TSecr echoes the SYN's TSval");
    assert(sa.windowScale >= 0, "window scale offered since the SYN offered it");
    assert(sa.window <= 0xffff && sa.window > 0);
    const c = stack.connection(flow)!;
    assertEquals(c.sendShift, syn.tcp.windowScale);
    assertEquals(c.sendMss, Math.min(syn.tcp.mss, mtu - (file === "tcp4.pcap" ? 40 : 60)) - 12);
  });

  Deno.test(`${file}: the client's recorded side replays against the stack`, () => {
    const segs = tcpSegments(file, 8080);
    const server = segs.filter((s) => !s.fromClient);
    const client = segs.filter((s) => s.fromClient);
    const iss = server[0].tcp.seq;
    const values = [iss / 4294967296, 0.5];
    const stack = new Stack({ mtu, random: () => values.shift() ?? 0.25 });
    // The kernel server's bytes, to send as the outbound's reply.
    const reply: number[] = [];
    for (const s of server) reply.push(...s.tcp.payload);
    const serverFinAfter = server.findIndex((s) => s.tcp.flags & TcpFlags.FIN);
    let flow = -1;
    const got: number[] = [];
    let sent = false;
    const ours: TcpSegment[] = [];
    let now = 0;
    for (const s of client) {
      now += 1;
      const r = stack.input(s.ip, now);
      assertEquals(r, "ok");
      for (const e of events(stack)) {
        if (e.type === "tcp-syn") {
          flow = e.flow;
          stack.accept(flow, now);
        }
      }
      const buf = new Uint8Array(4096);
      for (let n = stack.read(flow, buf); n > 0; n = stack.read(flow, buf)) {
        got.push(...buf.subarray(0, n));
      }
      if (!sent && got.length > 0) {
        sent = true;
        assertEquals(stack.write(flow, new Uint8Array(reply)), reply.length);
        if (serverFinAfter >= 0) stack.close(flow);
      }
      ours.push(...drain(stack, now));
    }
    for (const e of events(stack)) void e;
    const request = new TextDecoder().decode(new Uint8Array(got));
    assert(request.startsWith("GET /hello.txt HTTP/1.1\r\n"), request);
    assert(!ours.some((s) => s.flags & TcpFlags.RST), "no RST");
    // What we sent covers the kernel server's bytes, in order, at its sequence numbers.
    const dataSegs = ours.filter((s) => s.payload.length > 0);
    assertEquals(dataSegs[0].seq, server.find((s) => s.tcp.payload.length > 0)!.tcp.seq);
    assertEquals(dataSegs.reduce((a, s) => a + s.payload.length, 0), reply.length);
    assert(ours.some((s) => s.flags & TcpFlags.FIN), "our FIN");
    const c = stack.connection(flow);
    assert(!c || c.state === "closed" || c.state === "time-wait" || c.state === "last-ack");
    assertEquals(stack.read(flow, new Uint8Array(10)) <= 0, true);
    void ReadResult;
  });
}

Deno.test("udp_icmp.pcap: UDP to the embedder, echo answered, replies full cone", () => {
  const stack = new Stack({ mtu: 1280 });
  let udp = 0;
  let replies = 0;
  for (const p of readFixture("udp_icmp.pcap")) {
    if (!p.ip) continue;
    const ip = parseIp(p.ip);
    if (typeof ip === "string") continue;
    const isClient = (ip.version === 4 && ip.src[3] === 1) ||
      (ip.version === 6 && ip.src[15] === 1 && ip.src[0] === 0xfd);
    if (!isClient) continue;
    stack.input(p.ip, 0);
    for (let e = stack.pollEvent(); e; e = stack.pollEvent()) {
      if (e.type === "udp") {
        udp++;
        // Full cone: reply from another address than the one asked.
        const from = e.dst.slice();
        from[from.length - 1] ^= 0x40;
        assert(stack.sendUdp(e.flow, from, 9999, e.payload, 0));
      }
    }
    const buf = new Uint8Array(2000);
    for (let n = stack.poll(0, buf); n > 0; n = stack.poll(0, buf)) {
      const r = parseIp(buf.slice(0, n));
      if (typeof r === "string") throw new Error(r);
      replies++;
    }
  }
  assert(udp >= 4, `udp ${udp}`);
  assert(replies >= udp + 1, `replies ${replies}`);
  assert(stack.stats.echoReplies >= 1);
});

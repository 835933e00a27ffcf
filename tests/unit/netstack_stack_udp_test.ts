/**
 * The stack's UDP flows (full cone, idle timeout, bounded count), ICMP echo (answered,
 * or not by policy), and the ICMP errors it generates (packet too big for UDP over the
 * tunnel's payload room and for packets over the MTU, protocol unreachable).
 */
import { assert, assertEquals } from "../support/assert.ts";
import { Stack, type StackEvent } from "../../shared/netstack/stack.ts";
import { emitIpHeader, parseIp } from "../../shared/netstack/wire/packet.ts";
import { emitUdp, parseUdp } from "../../shared/netstack/wire/udp.ts";
import { echoRest, emitIcmpv4, emitIcmpv6 } from "../../shared/netstack/wire/icmp.ts";
import { IpProtocol } from "../../shared/netstack/wire/ip_protocol.ts";
import { UdpFlows } from "../../shared/netstack/udp_flows.ts";

const APP4 = new Uint8Array([10, 0, 0, 2]);
const DNS = new Uint8Array([1, 1, 1, 1]);
const OTHER = new Uint8Array([8, 8, 8, 8]);
const APP6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
const SRV6 = new Uint8Array([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);

function udpPacket(
  src: Uint8Array,
  sport: number,
  dst: Uint8Array,
  dport: number,
  payload: Uint8Array,
  df = true,
): Uint8Array {
  const hl = src.length === 4 ? 20 : 40;
  const out = new Uint8Array(hl + 8 + payload.length);
  const ul = emitUdp({ srcPort: sport, dstPort: dport }, payload, src, dst, out, hl);
  emitIpHeader(
    { src, dst, protocol: IpProtocol.Udp, ttl: 64, payloadLength: ul, dontFragment: df },
    out,
    0,
  );
  return out;
}

function echo(src: Uint8Array, dst: Uint8Array, id: number, seq: number): Uint8Array {
  const v6 = src.length === 16;
  const hl = v6 ? 40 : 20;
  const body = new TextEncoder().encode("ping-data");
  const out = new Uint8Array(hl + 8 + body.length);
  const rest = echoRest(id, seq);
  const len = v6
    ? emitIcmpv6({ type: 128, code: 0, rest }, body, src, dst, out, hl)
    : emitIcmpv4({ type: 8, code: 0, rest }, body, out, hl);
  emitIpHeader(
    { src, dst, protocol: v6 ? IpProtocol.Icmpv6 : IpProtocol.Icmp, ttl: 64, payloadLength: len },
    out,
    0,
  );
  return out;
}

function events(s: Stack): StackEvent[] {
  const e: StackEvent[] = [];
  for (let x = s.pollEvent(); x; x = s.pollEvent()) e.push(x);
  return e;
}

function out(s: Stack, now = 0): Uint8Array[] {
  const b = new Uint8Array(s.mtu);
  const r: Uint8Array[] = [];
  for (let n = s.poll(now, b); n > 0; n = s.poll(now, b)) r.push(b.slice(0, n));
  return r;
}

Deno.test("UDP: one flow per application endpoint, replies from any address (full cone)", () => {
  const s = new Stack();
  const q = new TextEncoder().encode("query");
  assertEquals(s.input(udpPacket(APP4, 5353, DNS, 53, q), 0), "ok");
  assertEquals(s.input(udpPacket(APP4, 5353, OTHER, 53, q), 1), "ok");
  const ev = events(s);
  assertEquals(ev.map((e) => e.type), ["udp-open", "udp", "udp"]);
  const d1 = ev[1] as Extract<StackEvent, { type: "udp" }>;
  const d2 = ev[2] as Extract<StackEvent, { type: "udp" }>;
  assertEquals(d1.flow, d2.flow, "same mapping for both destinations");
  assertEquals([...d2.dst], [...OTHER]);
  assertEquals(new TextDecoder().decode(d1.payload), "query");
  // A reply from a third address reaches the application.
  const third = new Uint8Array([9, 9, 9, 9]);
  assert(s.sendUdp(d1.flow, third, 7777, new TextEncoder().encode("answer"), 2));
  const [pkt] = out(s);
  const ip = parseIp(pkt);
  if (typeof ip === "string") throw new Error(ip);
  assertEquals([...ip.src], [...third]);
  assertEquals([...ip.dst], [...APP4]);
  const u = parseUdp(ip.payload, ip.src, ip.dst);
  if (typeof u === "string") throw new Error(u);
  assertEquals(u.srcPort, 7777);
  assertEquals(u.dstPort, 5353);
  assertEquals(new TextDecoder().decode(u.payload), "answer");
  // Another source port is another flow.
  s.input(udpPacket(APP4, 5354, DNS, 53, q), 3);
  const ev2 = events(s);
  assertEquals(ev2[0].type, "udp-open");
  assert((ev2[0] as { flow: number }).flow !== d1.flow);
  assertEquals(s.udpFlowCount, 2);
});

Deno.test("UDP: idle timeout (refreshed by traffic both ways) and a bounded flow count", () => {
  const s = new Stack({ udpIdleTimeout: 1000, udpMaxFlows: 3 });
  const q = new Uint8Array(10);
  s.input(udpPacket(APP4, 1000, DNS, 53, q), 0);
  const flow = (events(s)[0] as { flow: number }).flow;
  s.sendUdp(flow, DNS, 53, q, 900); // reply refreshes
  out(s);
  assertEquals(s.nextDeadline(), 1900);
  s.handleTimeout(1899);
  assertEquals(s.udpFlowCount, 1);
  s.handleTimeout(1900);
  assertEquals(s.udpFlowCount, 0);
  assertEquals(events(s), [{ type: "udp-closed", flow }]);
  for (let p = 0; p < 5; p++) s.input(udpPacket(APP4, 2000 + p, DNS, 53, q), 2000);
  assertEquals(s.udpFlowCount, 3);
  assertEquals(events(s).filter((e) => e.type === "udp-closed").length, 2);
  assert(!s.sendUdp(flow, DNS, 53, q, 2001), "expired flow");
});

Deno.test("UDP: a datagram over the tunnel's payload room gets packet-too-big", () => {
  const s = new Stack({ mtu: 1500, udpMaxPayload: 1200 });
  s.input(udpPacket(APP4, 1000, DNS, 53, new Uint8Array(1201)), 0);
  let [pkt] = out(s);
  let ip = parseIp(pkt);
  if (typeof ip === "string") throw new Error(ip);
  assertEquals([ip.payload[0], ip.payload[1]], [3, 4], "fragmentation needed");
  assertEquals((ip.payload[6] << 8) | ip.payload[7], 1200 + 28, "next-hop MTU");
  assertEquals(events(s).length, 0);
  // Without DF (IPv4): dropped silently (nothing to tell a sender that lets us fragment).
  s.input(udpPacket(APP4, 1000, DNS, 53, new Uint8Array(1201), false), 0);
  assertEquals(out(s).length, 0);
  s.input(udpPacket(APP6, 1000, SRV6, 53, new Uint8Array(1300)), 0);
  [pkt] = out(s);
  ip = parseIp(pkt);
  if (typeof ip === "string") throw new Error(ip);
  assertEquals(ip.payload[0], 2, "ICMPv6 packet too big");
  // The embedder says the room changed.
  s.udpMaxPayload = 1400;
  s.input(udpPacket(APP4, 1000, DNS, 53, new Uint8Array(1300)), 0);
  assertEquals(events(s).filter((e) => e.type === "udp").length, 1);
});

Deno.test("UDP: IPv6 datagrams have their own payload room", () => {
  // The tunnel's relay header is 12 bytes larger for an IPv6 destination.
  const s = new Stack({ mtu: 9000, udpMaxPayload: 1242, udpMaxPayload6: 1230 });
  assertEquals([s.udpMaxPayload, s.udpMaxPayload6], [1242, 1230]);
  s.input(udpPacket(APP4, 1000, DNS, 53, new Uint8Array(1242)), 0);
  s.input(udpPacket(APP6, 1000, SRV6, 53, new Uint8Array(1230)), 0);
  assertEquals(events(s).filter((e) => e.type === "udp").length, 2, "both fit");
  assertEquals(out(s).length, 0);
  s.input(udpPacket(APP6, 1000, SRV6, 53, new Uint8Array(1231)), 0);
  const [pkt] = out(s);
  const ip = parseIp(pkt);
  if (typeof ip === "string") throw new Error(ip);
  assertEquals(ip.payload[0], 2, "ICMPv6 packet too big");
  const mtu = new DataView(ip.payload.buffer, ip.payload.byteOffset).getUint32(4);
  assertEquals(mtu, 1230 + 48, "the IPv6 packet that fits");
  assertEquals(events(s).length, 0);
  // Setting the room for both, then IPv6's alone.
  s.udpMaxPayload = 1300;
  assertEquals([s.udpMaxPayload, s.udpMaxPayload6], [1300, 1300]);
  s.udpMaxPayload6 = 1288;
  assertEquals([s.udpMaxPayload, s.udpMaxPayload6], [1300, 1288]);
  // Never above what the MTU allows.
  s.udpMaxPayload6 = 100_000;
  assertEquals(s.udpMaxPayload6, 9000 - 28);
});

Deno.test("ICMP echo to any address answered, unless the policy says no", () => {
  const s = new Stack({ echoPolicy: (_src, dst) => dst[0] !== 10 });
  for (const [src, dst] of [[APP4, OTHER], [APP6, SRV6]]) {
    assertEquals(s.input(echo(src, dst, 7, 1), 0), "ok");
    const [pkt] = out(s);
    const ip = parseIp(pkt);
    if (typeof ip === "string") throw new Error(ip);
    assertEquals([...ip.src], [...dst]);
    assertEquals(ip.payload[0], src.length === 4 ? 0 : 129, "echo reply");
  }
  assertEquals(s.input(echo(APP4, new Uint8Array([10, 9, 9, 9]), 7, 2), 0), "dropped");
  assertEquals(out(s).length, 0);
});

Deno.test("protocol unreachable for an unknown transport; nothing for multicast", () => {
  const s = new Stack();
  const p = new Uint8Array(28);
  emitIpHeader({ src: APP4, dst: OTHER, protocol: 132, ttl: 64, payloadLength: 8 }, p, 0);
  s.input(p, 0);
  const [pkt] = out(s);
  const ip = parseIp(pkt);
  if (typeof ip === "string") throw new Error(ip);
  assertEquals([ip.payload[0], ip.payload[1]], [3, 2]);
  assertEquals(
    s.input(udpPacket(APP4, 1, new Uint8Array([224, 0, 0, 251]), 5353, p), 0),
    "dropped",
  );
});

Deno.test("UdpFlows: LRU order, endpoint keys for both families", () => {
  const f = new UdpFlows({ maxFlows: 2, idleTimeout: 100 });
  f.add(1, APP4, 1, 0);
  f.add(2, APP6, 1, 10);
  assert(f.find(APP4, 1, 20)); // refresh 1: now 2 is the oldest
  const ev = f.add(3, APP4, 2, 30);
  assertEquals(ev?.flow, 2);
  assertEquals(f.nextDeadline(), 120);
  assertEquals(f.expire(200), [1, 3]);
});

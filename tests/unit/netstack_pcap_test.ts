/**
 * Recorded kernel traffic (tests/fixtures/netstack/*.pcap, made by capture.sh on a veth
 * pair with checksum offload off): every packet parses, every checksum verifies, every
 * header re-emits byte for byte; fragments reassemble; our ICMP replies match the kernel's.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { type PcapPacket, readFixture } from "../support/pcap.ts";
import { type IpPacket, parseIp } from "../../shared/netstack/wire/packet.ts";
import { emitIpv4 } from "../../shared/netstack/wire/ipv4.ts";
import { emitIpv6, parseIpv6 } from "../../shared/netstack/wire/ipv6.ts";
import { emitTcp, parseTcp, TcpFlags, type TcpSegment } from "../../shared/netstack/wire/tcp.ts";
import { emitUdp, parseUdp, UdpDatagram } from "../../shared/netstack/wire/udp.ts";
import {
  buildEchoReply,
  buildIcmpError,
  emitIcmpv4,
  emitIcmpv6,
  IcmpErrorKind,
  type IcmpMessage,
  parseIcmpv4,
  parseIcmpv6,
} from "../../shared/netstack/wire/icmp.ts";
import { IpProtocol } from "../../shared/netstack/wire/ip_protocol.ts";
import { isWireError } from "../../shared/netstack/wire/error.ts";
import { Reassembler } from "../../shared/netstack/reassembly.ts";

const FIXTURES = ["tcp4.pcap", "tcp6.pcap", "udp_icmp.pcap", "frag.pcap"];

interface Seen {
  tcp: TcpSegment[];
  udp: number;
  icmp: IcmpMessage[];
  fragments: IpPacket[];
  ip: IpPacket[];
}

/** Parses, verifies and re-emits every packet of a fixture. */
function checkAll(name: string): Seen {
  const seen: Seen = { tcp: [], udp: 0, icmp: [], fragments: [], ip: [] };
  const pkts = readFixture(name).filter((p: PcapPacket) => p.ip !== null);
  assert(pkts.length > 0, `${name}: no IP packets`);
  for (const pk of pkts) {
    const where = `${name}#${pk.index}`;
    const ip = parseIp(pk.ip!);
    if (isWireError(ip)) throw new Error(`${where}: ${ip}`);
    seen.ip.push(ip);
    const out = new Uint8Array(ip.buf.length + 64);
    if (ip.version === 4) {
      assertEquals(ip.v4.headerLength, 20, `${where}: kernel sent IPv4 options`);
      emitIpv4(ip.v4, out, 0);
      assertEquals(out.subarray(0, 20), ip.buf.subarray(0, 20), `${where}: IPv4 header re-emit`);
    } else {
      emitIpv6(ip.v6, out, 0);
      assertEquals(out.subarray(0, 40), ip.buf.subarray(0, 40), `${where}: IPv6 header re-emit`);
    }
    if (ip.isFragment) {
      seen.fragments.push(ip);
      continue; // transport checksums cover the whole datagram: checked after reassembly
    }
    const t = ip.payload;
    const body = out.subarray(ip.payloadOffset);
    if (ip.protocol === IpProtocol.Tcp) {
      const s = parseTcp(t, ip.src, ip.dst);
      if (isWireError(s)) throw new Error(`${where}: tcp ${s}`);
      const n = emitTcp(s, s.payload, ip.src, ip.dst, body, 0);
      assertEquals(body.subarray(0, n), t, `${where}: TCP re-emit`);
      seen.tcp.push(s);
    } else if (ip.protocol === IpProtocol.Udp) {
      const u = parseUdp(t, ip.src, ip.dst, new UdpDatagram());
      if (isWireError(u)) throw new Error(`${where}: udp ${u}`);
      const n = emitUdp(u, u.payload, ip.src, ip.dst, body, 0);
      assertEquals(body.subarray(0, n), t, `${where}: UDP re-emit`);
      seen.udp++;
    } else if (ip.protocol === IpProtocol.Icmp) {
      const m = parseIcmpv4(t);
      if (isWireError(m)) throw new Error(`${where}: icmp ${m}`);
      const n = emitIcmpv4(m, m.body, body, 0);
      assertEquals(body.subarray(0, n), t, `${where}: ICMP re-emit`);
      seen.icmp.push(m);
    } else if (ip.protocol === IpProtocol.Icmpv6) {
      const m = parseIcmpv6(t, ip.src, ip.dst);
      if (isWireError(m)) throw new Error(`${where}: icmpv6 ${m}`);
      const n = emitIcmpv6(m, m.body, ip.src, ip.dst, body, 0);
      assertEquals(body.subarray(0, n), t, `${where}: ICMPv6 re-emit`);
      seen.icmp.push(m);
    } else {
      throw new Error(`${where}: unexpected protocol ${ip.protocol}`);
    }
  }
  return seen;
}

Deno.test("pcap: every fixture packet parses, verifies and re-emits byte for byte", () => {
  let total = 0;
  for (const f of FIXTURES) total += checkAll(f).ip.length;
  assert(total >= 40, `only ${total} packets`);
});

Deno.test("pcap: IPv4 TCP handshake options, data and FIN as the kernel sent them", () => {
  const { tcp } = checkAll("tcp4.pcap");
  const syn = tcp[0];
  assertEquals(syn.flags, TcpFlags.SYN);
  assertEquals(syn.mss, 1240); // veth MTU 1280 − 40
  assert(syn.sackPermitted && syn.hasTimestamps, "SACK-permitted and timestamps");
  assertEquals(syn.windowScale, 10);
  assertEquals(syn.tsEcr, 0);
  const synAck = tcp[1];
  assertEquals(synAck.flags, TcpFlags.SYN | TcpFlags.ACK);
  assertEquals(synAck.ack, (syn.seq + 1) >>> 0);
  assertEquals(synAck.tsEcr, syn.tsVal);
  const data = tcp.find((s) => s.payload.length > 0)!;
  assertEquals(new TextDecoder().decode(data.payload.subarray(0, 14)), "GET /hello.txt");
  assert(data.has(TcpFlags.PSH | TcpFlags.ACK));
  assertEquals(tcp.filter((s) => s.flags & TcpFlags.FIN).length, 2);
  // The IPv6 multicast listener reports of link-up carry a Hop-by-Hop header.
  const { ip } = checkAll("tcp4.pcap");
  const mld = ip.find((p) => p.version === 6 && p.v6.nextHeader === IpProtocol.HopByHop);
  assert(mld, "an MLD report with Hop-by-Hop");
  assertEquals(mld.protocol, IpProtocol.Icmpv6);
  assertEquals(mld.v6.extensionHeaders, 1);
  assertEquals(mld.payloadOffset, 48);
});

Deno.test("pcap: IPv6 TCP handshake and teardown", () => {
  const { tcp, ip } = checkAll("tcp6.pcap");
  assert(ip.every((p) => p.version === 6));
  assertEquals(tcp[0].mss, 1220); // 1280 − 60
  assertEquals(tcp[0].windowScale, 10);
  assertEquals(tcp.filter((s) => s.flags & TcpFlags.FIN).length, 2);
});

Deno.test("pcap: UDP both families, ICMP errors quote the datagram, echo both families", () => {
  const { udp, icmp, ip } = checkAll("udp_icmp.pcap");
  assertEquals(udp, 6); // two queries + two answers to port 5300, two queries to port 53
  const unreach4 = icmp.find((m) => m.version === 4 && m.type === 3)!;
  assertEquals(unreach4.code, 3);
  const quoted = parseIp(unreach4.body);
  assert(!isWireError(quoted) && quoted.protocol === IpProtocol.Udp, "quoted IPv4 UDP");
  const unreach6 = icmp.find((m) => m.version === 6 && m.type === 1)!;
  assertEquals(unreach6.code, 4);
  assert(icmp.some((m) => m.version === 4 && m.type === 8));
  assert(icmp.some((m) => m.version === 6 && m.type === 129));

  // Our own port-unreachable for the same queries.
  const query6 = ip.find((p) =>
    p.version === 6 && p.protocol === IpProtocol.Udp &&
    ((p.payload[2] << 8) | p.payload[3]) === 53
  )!;
  const kernel6 = ip.find((p) =>
    p.version === 6 && p.protocol === IpProtocol.Icmpv6 &&
    p.payload[0] === 1
  )!;
  const out = new Uint8Array(1280);
  const n6 = buildIcmpError(query6.buf, IcmpErrorKind.PortUnreachable, out);
  assert(typeof n6 === "number");
  // Identical but for the flow label the kernel picked.
  assertEquals(out.subarray(4, n6), kernel6.buf.subarray(4), "ICMPv6 error as the kernel's");
  assertEquals(out[0] >> 4, 6);

  const query4 = ip.find((p) =>
    p.version === 4 && p.protocol === IpProtocol.Udp &&
    ((p.payload[2] << 8) | p.payload[3]) === 53
  )!;
  const kernel4 = ip.find((p) =>
    p.version === 4 && p.protocol === IpProtocol.Icmp &&
    p.payload[0] === 3
  )!;
  const n4 = buildIcmpError(query4.buf, IcmpErrorKind.PortUnreachable, out);
  assertEquals(n4, 20 + 8 + 20 + 8); // RFC 792: IP header + 64 bits (Linux sends more)
  const mine = parseIp(out.subarray(0, n4 as number));
  assert(!isWireError(mine));
  assertEquals(mine.src, kernel4.src);
  assertEquals(mine.dst, kernel4.dst);
  const mm = parseIcmpv4(mine.payload);
  assert(!isWireError(mm));
  assertEquals([mm.type, mm.code], [3, 3]);
  assertEquals(mm.body, kernel4.payload.subarray(8, 8 + 28));

  // Echo replies: ICMP bytes identical to the kernel's (IP id and flow label are its own).
  for (const v of [4, 6]) {
    const reqType = v === 4 ? 8 : 128;
    const req = ip.find((p) =>
      p.version === v && p.payload[0] === reqType &&
      (p.protocol === IpProtocol.Icmp || p.protocol === IpProtocol.Icmpv6)
    )!;
    const rep = ip.find((p) =>
      p.version === v && p.payload[0] === (v === 4 ? 0 : 129) &&
      (p.protocol === IpProtocol.Icmp || p.protocol === IpProtocol.Icmpv6)
    )!;
    const n = buildEchoReply(req.buf, out);
    assert(typeof n === "number", `echo reply v${v}`);
    assertEquals(n, rep.buf.length);
    const skip = v === 4 ? 20 : 40;
    assertEquals(out.subarray(skip, n), rep.buf.subarray(skip), `v${v} echo reply ICMP`);
    assertEquals(out.subarray(v === 4 ? 12 : 8, skip), rep.buf.subarray(v === 4 ? 12 : 8, skip));
    // In place, over the request's own bytes, too.
    const copy = req.buf.slice();
    assertEquals(buildEchoReply(copy, copy), n);
    assertEquals(copy.subarray(skip, n), rep.buf.subarray(skip));
  }
});

Deno.test("pcap: kernel fragments reassemble into datagrams whose checksums verify", () => {
  const { fragments } = checkAll("frag.pcap");
  assertEquals(fragments.length, 8); // 1400-byte pings over MTU 1280: 2 fragments × 4
  const r = new Reassembler();
  const whole: Uint8Array[] = [];
  let t = 0;
  for (const f of fragments) {
    const res = f.version === 4 ? r.push(f.v4, t++) : r.pushIpv6(f.v6, t++);
    if (isWireError(res)) throw new Error(res);
    if (res) whole.push(res);
  }
  assertEquals(whole.length, 4);
  assertEquals(r.size, 0);
  assertEquals(r.bytesHeld, 0);
  for (const d of whole) {
    const ip = parseIp(d);
    if (isWireError(ip)) throw new Error(ip);
    assert(!ip.isFragment);
    assertEquals(ip.payloadLength, 1408); // ICMP header + 1400 bytes
    const m = ip.version === 4 ? parseIcmpv4(ip.payload) : parseIcmpv6(ip.payload, ip.src, ip.dst);
    if (isWireError(m)) throw new Error(`v${ip.version}: ${m}`);
    assert(m.type === 8 || m.type === 0 || m.type === 128 || m.type === 129);
  }
  // The IPv6 fragments: a Fragment header right after the fixed header.
  const f6 = fragments.find((f) => f.version === 6)!;
  const v6 = parseIpv6(f6.buf);
  assert(!isWireError(v6) && v6.fragmentHeaderOffset === 40 && v6.moreFragments);
  // And reversed order gives the same datagrams.
  const r2 = new Reassembler();
  const again: Uint8Array[] = [];
  for (const f of [...fragments].reverse()) {
    const res = f.version === 4 ? r2.push(f.v4, 0) : r2.pushIpv6(f.v6, 0);
    if (res && !isWireError(res)) again.push(res);
  }
  assertEquals(again.reverse(), whole);
});

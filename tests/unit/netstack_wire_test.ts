/** The wire layer of the userspace TCP/IP stack: round trips and every malformed case. */
import { assert, assertEquals, assertThrows, fromHex } from "../support/assert.ts";
import { WireError } from "../../shared/netstack/wire/error.ts";
import { IpProtocol } from "../../shared/netstack/wire/ip_protocol.ts";
import { checksumValid, internetChecksum } from "../../shared/netstack/wire/checksum.ts";
import {
  emitIpv4,
  formatIpv4,
  Ipv4Packet,
  isIpv4Fragment,
  parseIpv4,
  rewriteIpv4Checksum,
} from "../../shared/netstack/wire/ipv4.ts";
import { emitIpv6, formatIpv6, parseIpv6 } from "../../shared/netstack/wire/ipv6.ts";
import {
  emitTcp,
  parseTcp,
  TcpFlags,
  tcpHeaderLength,
  TcpSegment,
} from "../../shared/netstack/wire/tcp.ts";
import { emitUdp, parseUdp } from "../../shared/netstack/wire/udp.ts";
import {
  buildEchoReply,
  buildIcmpError,
  echoRest,
  emitIcmpv4,
  emitIcmpv6,
  IcmpErrorKind,
  parseIcmpv4,
  parseIcmpv6,
} from "../../shared/netstack/wire/icmp.ts";
import { emitIpHeader, parseIp } from "../../shared/netstack/wire/packet.ts";

const A4 = fromHex("0a000001");
const B4 = fromHex("0a000002");
const A6 = fromHex("fd000000000000000000000000000001");
const B6 = fromHex("fd000000000000000000000000000002");

/** A whole IPv4/IPv6 packet around a transport payload built by `body(out, off)`. */
function packet(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  len: number,
  body: (out: Uint8Array, off: number) => void,
): Uint8Array {
  const hl = src.length === 4 ? 20 : 40;
  const out = new Uint8Array(hl + len);
  emitIpHeader({ src, dst, protocol, ttl: 64, payloadLength: len, identification: 7 }, out);
  body(out, hl);
  return out;
}

function udpPacket(src: Uint8Array, dst: Uint8Array, data: Uint8Array): Uint8Array {
  return packet(src, dst, IpProtocol.Udp, 8 + data.length, (o, off) => {
    emitUdp({ srcPort: 1234, dstPort: 53 }, data, src, dst, o, off);
  });
}

Deno.test("ipv4: round trip of every field; options skipped; padding ignored", () => {
  const out = new Uint8Array(40);
  emitIpv4({
    src: A4,
    dst: B4,
    protocol: 17,
    ttl: 3,
    identification: 0xbeef,
    dscpEcn: 0xb8,
    dontFragment: false,
    moreFragments: true,
    fragmentOffset: 8 * 100,
    payloadLength: 12,
  }, out);
  const p = parseIpv4(out.subarray(0, 32 + 8)); // 8 bytes of link padding past total length
  if (typeof p === "string") throw new Error(p);
  assertEquals([p.totalLength, p.ttl, p.identification, p.dscpEcn, p.protocol], [
    32,
    3,
    0xbeef,
    0xb8,
    17,
  ]);
  assertEquals([p.dontFragment, p.moreFragments, p.fragmentOffset], [false, true, 800]);
  assertEquals([formatIpv4(p.src), formatIpv4(p.dst), p.srcU32, p.dstU32], [
    "10.0.0.1",
    "10.0.0.2",
    0x0a000001,
    0x0a000002,
  ]);
  assertEquals(p.buf.length, 32);
  assertEquals(p.payload.length, 12);
  assert(p.isFragment && isIpv4Fragment(p));
  // With 4 bytes of options: IHL 6, payload after them.
  const opt = new Uint8Array(28);
  opt.set(out.subarray(0, 20));
  opt[0] = 0x46;
  opt[3] = 28;
  opt.set([1, 1, 1, 0], 20);
  rewriteIpv4Checksum(opt);
  const q = parseIpv4(opt);
  if (typeof q === "string") throw new Error(q);
  assertEquals([q.headerLength, q.payloadOffset, q.payloadLength], [24, 24, 4]);
  // The parsed view is a repr: emit it again.
  const again = new Uint8Array(20);
  emitIpv4(p, again);
  assertEquals(again, out.subarray(0, 20));
});

Deno.test("ipv4: every malformed length, version and checksum is a typed error", () => {
  const good = udpPacket(A4, B4, fromHex("00112233"));
  assert(typeof parseIpv4(good) !== "string");
  for (let n = 0; n < 20; n++) assertEquals(parseIpv4(good.subarray(0, n)), WireError.Truncated);
  const m = (f: (b: Uint8Array) => void, fix = true) => {
    const b = good.slice();
    f(b);
    if (fix) rewriteIpv4Checksum(b);
    return parseIpv4(b);
  };
  assertEquals(m((b) => b[0] = 0x65, false), WireError.BadVersion);
  assertEquals(m((b) => b[0] = 0x44, false), WireError.BadHeaderLength);
  assertEquals(m((b) => b[0] = 0x4f, false), WireError.Truncated); // IHL 60 > 32 bytes
  assertEquals(m((b) => b[3] = 19), WireError.BadLength); // total < header
  assertEquals(m((b) => b[3] = good.length + 1), WireError.Truncated);
  assertEquals(m((b) => b[8] ^= 1, false), WireError.BadChecksum);
  const skip = new Ipv4Packet();
  const bad = good.slice();
  bad[8] ^= 1;
  assertEquals(parseIpv4(bad, skip, { skipChecksum: true }), skip);
  assertEquals(parseIp(new Uint8Array(0)), WireError.Truncated);
  assertEquals(parseIp(fromHex("50")), WireError.BadVersion);
});

Deno.test("ipv4: emit rejects programmer errors with RangeError", () => {
  const r = {
    src: A4,
    dst: B4,
    protocol: 6,
    ttl: 64,
    identification: 1,
    dontFragment: true,
    payloadLength: 0,
  };
  assertThrows(() => emitIpv4(r, new Uint8Array(19)), RangeError);
  assertThrows(() => emitIpv4(r, new Uint8Array(40), 21), RangeError);
  assertThrows(() => emitIpv4({ ...r, src: A6 }, new Uint8Array(20)), RangeError);
  assertThrows(() => emitIpv4({ ...r, payloadLength: 65516 }, new Uint8Array(20)), RangeError);
  assertThrows(() => emitIpv4({ ...r, ttl: 256 }, new Uint8Array(20)), RangeError);
  assertThrows(() => emitIpv4({ ...r, fragmentOffset: 7 }, new Uint8Array(20)), RangeError);
  assertThrows(() => rewriteIpv4Checksum(new Uint8Array(10)), RangeError);
});

/** An IPv6 packet with the given extension headers (raw bytes) before a UDP datagram. */
function v6WithExt(exts: Array<[number, Uint8Array]>, data = fromHex("cafe")): Uint8Array {
  const udpLen = 8 + data.length;
  const extLen = exts.reduce((s, [, b]) => s + b.length, 0);
  const out = new Uint8Array(40 + extLen + udpLen);
  emitIpv6({
    src: A6,
    dst: B6,
    nextHeader: exts.length ? exts[0][0] : 17,
    hopLimit: 9,
    ipPayloadLength: extLen + udpLen,
  }, out);
  let off = 40;
  for (let i = 0; i < exts.length; i++) {
    out.set(exts[i][1], off);
    out[off] = i + 1 < exts.length ? exts[i + 1][0] : 17;
    off += exts[i][1].length;
  }
  emitUdp({ srcPort: 1, dstPort: 2 }, data, A6, B6, out, off);
  return out;
}

Deno.test("ipv6: fixed header round trip and the extension-header walk", () => {
  const out = new Uint8Array(40);
  emitIpv6({
    src: A6,
    dst: B6,
    nextHeader: 59,
    hopLimit: 255,
    trafficClass: 0xab,
    flowLabel: 0xfedcb,
    ipPayloadLength: 0,
  }, out);
  const p = parseIpv6(out);
  if (typeof p === "string") throw new Error(p);
  assertEquals([p.trafficClass, p.flowLabel, p.hopLimit, p.protocol, p.payloadLength], [
    0xab,
    0xfedcb,
    255,
    59,
    0,
  ]);
  assertEquals([formatIpv6(p.src), formatIpv6(fromHex("20010db8000000000001000000000001"))], [
    "fd00::1",
    "2001:db8::1:0:0:1",
  ]);

  const hbh = new Uint8Array(8); // Hdr Ext Len 0: 8 bytes
  const rt = new Uint8Array(24);
  rt[1] = 2; // 24 bytes
  const dst = new Uint8Array(16);
  dst[1] = 1;
  const ah = new Uint8Array(24);
  ah[1] = 4; // (4 + 2) × 4 = 24 bytes
  const frag0 = new Uint8Array(8); // atomic fragment, offset 0, M clear
  frag0.set([0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
  const pk = v6WithExt([[0, hbh], [43, rt], [44, frag0], [51, ah], [60, dst]]);
  const q = parseIpv6(pk);
  if (typeof q === "string") throw new Error(q);
  assertEquals(q.extensionHeaders, 5);
  assertEquals(q.protocol, 17);
  assertEquals(q.payloadOffset, 40 + 8 + 24 + 8 + 24 + 16);
  assertEquals([q.fragmentHeaderOffset, q.fragmentId, q.isFragment], [72, 0x12345678, false]);
  assertEquals(q.protocolFieldOffset, 40 + 8 + 24 + 8 + 24);
  const u = parseUdp(q.payload, q.src, q.dst);
  assert(typeof u !== "string" && u.payload[0] === 0xca);

  // A non-first fragment stops the walk; what follows is data.
  const fragN = new Uint8Array(8);
  fragN.set([0, 0, 0x00, 0x11]); // offset 16 bytes (2 units), M set
  const f = parseIpv6(v6WithExt([[44, fragN]]));
  if (typeof f === "string") throw new Error(f);
  assertEquals([f.isFragment, f.fragmentOffset, f.moreFragments, f.protocol, f.payloadOffset], [
    true,
    16,
    true,
    17,
    48,
  ]);
  // ESP and No Next Header end the walk.
  const esp = v6WithExt([[0, hbh]]);
  esp[40] = 50;
  const e = parseIpv6(esp);
  assert(typeof e !== "string" && e.protocol === 50 && e.payloadOffset === 48);
});

Deno.test("ipv6: malformed packets and extension chains are typed errors", () => {
  const good = v6WithExt([]);
  for (let n = 0; n < 40; n++) assertEquals(parseIpv6(good.subarray(0, n)), WireError.Truncated);
  const bad = good.slice();
  bad[0] = 0x40;
  assertEquals(parseIpv6(bad), WireError.BadVersion);
  const long = good.slice();
  long[5]++;
  assertEquals(parseIpv6(long), WireError.Truncated);
  // Extension header past the end.
  const big = new Uint8Array(8);
  big[1] = 200;
  assertEquals(parseIpv6(v6WithExt([[60, big]])), WireError.Truncated);
  const ah = new Uint8Array(8);
  ah[1] = 100;
  assertEquals(parseIpv6(v6WithExt([[51, ah]])), WireError.Truncated);
  // Extension header's length byte itself missing.
  const cut = new Uint8Array(41);
  emitIpv6({ src: A6, dst: B6, nextHeader: 0, hopLimit: 1, ipPayloadLength: 1 }, cut);
  assertEquals(parseIpv6(cut), WireError.Truncated);
  // Hop-by-Hop anywhere but first.
  assertEquals(
    parseIpv6(v6WithExt([[60, new Uint8Array(8)], [0, new Uint8Array(8)]])),
    WireError.BadExtensionHeader,
  );
  // Two Fragment headers.
  assertEquals(
    parseIpv6(v6WithExt([[44, new Uint8Array(8)], [44, new Uint8Array(8)]])),
    WireError.BadExtensionHeader,
  );
  // Too many headers (a loop of Destination Options).
  const many: Array<[number, Uint8Array]> = [];
  for (let i = 0; i < 9; i++) many.push([60, new Uint8Array(8)]);
  assertEquals(parseIpv6(v6WithExt(many)), WireError.BadExtensionHeader);
  many.pop();
  assert(typeof parseIpv6(v6WithExt(many)) !== "string", "8 headers are fine");
  assertThrows(
    () =>
      emitIpv6(
        { src: A4, dst: B6, nextHeader: 0, hopLimit: 1, ipPayloadLength: 0 },
        new Uint8Array(40),
      ),
    RangeError,
  );
  assertThrows(
    () =>
      emitIpv6(
        { src: A6, dst: B6, nextHeader: 0, hopLimit: 1, ipPayloadLength: 0 },
        new Uint8Array(39),
      ),
    RangeError,
  );
  assertThrows(
    () =>
      emitIpv6(
        { src: A6, dst: B6, nextHeader: 0, hopLimit: 1, ipPayloadLength: 70000 },
        new Uint8Array(40),
      ),
    RangeError,
  );
});

function tcpSeg(
  repr: Parameters<typeof emitTcp>[0],
  data: Uint8Array,
  src = A4,
  dst = B4,
): Uint8Array {
  const out = new Uint8Array(tcpHeaderLength(repr) + data.length);
  emitTcp(repr, data, src, dst, out);
  return out;
}

Deno.test("tcp: round trip with every option, both families, payload in place or copied", () => {
  const sack = [1, 2, 3, 4, 5, 6, 0xfffffff0, 0x10];
  const repr = {
    srcPort: 40000,
    dstPort: 443,
    seq: 0xfffffffe,
    ack: 0x80000000,
    flags: TcpFlags.ACK | TcpFlags.PSH | 0x100,
    window: 65535,
    urgent: 7,
    mss: 1460,
    windowScale: 7,
    sackPermitted: true,
    hasTimestamps: true,
    tsVal: 0xdeadbeef,
    tsEcr: 1,
    sackCount: 4,
    sackBlocks: sack,
  };
  assertThrows(() =>
    tcpHeaderLength(repr) <= 60 ? tcpSeg(repr, new Uint8Array(0)) : (() => {
      throw new RangeError();
    })(), RangeError);
  const r2 = { ...repr, mss: -1, windowScale: -1, sackPermitted: false, sackCount: 3 };
  for (const [src, dst] of [[A4, B4], [A6, B6]]) {
    const seg = tcpSeg(r2, fromHex("68656c6c6f"), src, dst);
    const s = parseTcp(seg, src, dst);
    if (typeof s === "string") throw new Error(s);
    assertEquals([s.srcPort, s.dstPort, s.seq, s.ack, s.flags, s.window, s.urgent], [
      40000,
      443,
      0xfffffffe,
      0x80000000,
      repr.flags,
      65535,
      7,
    ]);
    assertEquals([s.mss, s.windowScale, s.sackPermitted, s.hasTimestamps, s.tsVal, s.tsEcr], [
      -1,
      -1,
      false,
      true,
      0xdeadbeef,
      1,
    ]);
    assertEquals([s.sackCount, ...s.sackBlocks.subarray(0, 6)], [3, 1, 2, 3, 4, 5, 6]);
    assertEquals(new TextDecoder().decode(s.payload), "hello");
    assertEquals(s.headerLength, 20 + 12 + 4 + 24);
    // Re-emit with the data already in place.
    const out = new Uint8Array(seg.length);
    out.set(s.payload, s.headerLength);
    emitTcp(s, s.payload.length, src, dst, out);
    assertEquals(out, seg);
    // The wrong pseudo header fails the checksum.
    // (Swapping src and dst would not: the sum commutes.)
    assertEquals(parseTcp(seg, src, src === A4 ? fromHex("0a000003") : A6), WireError.BadChecksum);
  }
  // SYN layouts: SACK-permitted without timestamps; window scale above 14 clamps.
  const syn = tcpSeg({
    srcPort: 1,
    dstPort: 2,
    seq: 0,
    ack: 0,
    flags: TcpFlags.SYN,
    window: 100,
    mss: 536,
    sackPermitted: true,
    windowScale: 14,
  }, new Uint8Array(0));
  assertEquals(syn.subarray(20), fromHex("02040218010104020103030e"));
  const s = parseTcp(syn, A4, B4, new TcpSegment());
  assert(
    typeof s !== "string" && s.sackPermitted && s.mss === 536 && s.windowScale === 14 &&
      s.has(TcpFlags.SYN),
  );
});

Deno.test("tcp: every malformed length and option is a typed error; unknown options skipped", () => {
  const base = { srcPort: 1, dstPort: 2, seq: 5, ack: 6, flags: TcpFlags.ACK, window: 9 };
  const withOptions = (opts: number[], fixOffset = true) => {
    const padded = [...opts];
    while (padded.length % 4) padded.push(0);
    const seg = new Uint8Array(20 + padded.length);
    emitTcp(base, 0, A4, B4, seg);
    seg.set(padded, 20);
    if (fixOffset) seg[12] = ((20 + padded.length) / 4) << 4;
    seg[16] = seg[17] = 0;
    const c = internetChecksum(
      seg,
      0,
      seg.length,
      0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + seg.length,
    );
    seg[16] = c >> 8;
    seg[17] = c & 0xff;
    assert(checksumValid(seg, 0, seg.length, 0x0a00 + 1 + 0x0a00 + 2 + 6 + seg.length));
    return parseTcp(seg, A4, B4);
  };
  const ok = withOptions([254, 6, 1, 2, 3, 4, 1, 0, 9, 9]); // experimental option, NOP, EOL, junk after EOL
  assert(typeof ok !== "string" && ok.mss === -1, "unknown option skipped");
  assertEquals(withOptions([2]), WireError.BadOption); // length byte missing (EOL padding ends header at 24: [2,0,0,0] → len 0)
  assertEquals(withOptions([2, 3, 0, 0]), WireError.BadOption); // MSS length 3
  assertEquals(withOptions([3, 4, 1, 1]), WireError.BadOption); // WS length 4
  assertEquals(withOptions([4, 3, 0, 0]), WireError.BadOption); // SACK-permitted length 3
  assertEquals(withOptions([8, 9, 0, 0, 0, 0, 0, 0, 0]), WireError.BadOption); // TS length 9
  assertEquals(withOptions([5, 9, 0, 0, 0, 0, 0, 0, 0]), WireError.BadOption); // SACK 7 bytes
  assertEquals(withOptions([5, 2]), WireError.BadOption); // SACK with no block
  assertEquals(withOptions([254, 1, 0, 0]), WireError.BadOption); // length < 2
  assertEquals(withOptions([254, 9, 0, 0]), WireError.BadOption); // past the header
  assertEquals(withOptions([1, 1, 1, 254]), WireError.BadOption); // kind at the last byte
  const seg = tcpSeg(base, fromHex("00"));
  for (let n = 0; n < 20; n++) {
    assertEquals(parseTcp(seg.subarray(0, n), A4, B4), WireError.Truncated);
  }
  const small = seg.slice();
  small[12] = 0x40;
  assertEquals(parseTcp(small, A4, B4), WireError.BadHeaderLength);
  const over = seg.slice();
  over[12] = 0x60; // 24 > 21 bytes
  assertEquals(parseTcp(over, A4, B4), WireError.Truncated);
  const flip = seg.slice();
  flip[20] ^= 0x80;
  assertEquals(parseTcp(flip, A4, B4), WireError.BadChecksum);
  assert(typeof parseTcp(flip, A4, B4, undefined, { skipChecksum: true }) !== "string");
  assertThrows(() => emitTcp(base, 10, A4, B4, new Uint8Array(29)), RangeError);
  assertThrows(
    () => emitTcp({ ...base, srcPort: 65536 }, 0, A4, B4, new Uint8Array(20)),
    RangeError,
  );
  assertThrows(
    () => emitTcp({ ...base, sackCount: 2, sackBlocks: [1, 2] }, 0, A4, B4, new Uint8Array(60)),
    RangeError,
  );
  assertThrows(
    () => emitTcp({ ...base, sackCount: 5, sackBlocks: [] }, 0, A4, B4, new Uint8Array(80)),
    RangeError,
  );
});

Deno.test("udp: round trip; length field checks; zero checksum allowed on IPv4 only", () => {
  for (const [src, dst] of [[A4, B4], [A6, B6]]) {
    const pk = udpPacket(src, dst, fromHex("010203"));
    const ip = parseIp(pk);
    if (typeof ip === "string") throw new Error(ip);
    const u = parseUdp(ip.payload, src, dst);
    if (typeof u === "string") throw new Error(u);
    assertEquals([u.srcPort, u.dstPort, u.length, u.payload], [1234, 53, 11, fromHex("010203")]);
    const d = ip.payload.slice();
    for (let n = 0; n < 8; n++) {
      assertEquals(parseUdp(d.subarray(0, n), src, dst), WireError.Truncated);
    }
    const short = d.slice();
    short[5] = 7;
    assertEquals(parseUdp(short, src, dst), WireError.BadLength);
    const long = d.slice();
    long[5] = 12;
    assertEquals(parseUdp(long, src, dst), WireError.Truncated);
    const flip = d.slice();
    flip[9] ^= 1;
    assertEquals(parseUdp(flip, src, dst), WireError.BadChecksum);
    const zero = d.slice();
    zero[6] = zero[7] = 0;
    assertEquals(typeof parseUdp(zero, src, dst) === "string", src.length === 16);
    // Trailing bytes past the length field are ignored.
    const pad = new Uint8Array(d.length + 5);
    pad.set(d);
    const p2 = parseUdp(pad, src, dst);
    assert(typeof p2 !== "string" && p2.payload.length === 3);
  }
  // A computed checksum of 0 goes out as 0xffff: find a payload that sums to it.
  const out = new Uint8Array(10);
  emitUdp({ srcPort: 0, dstPort: 0 }, new Uint8Array(2), A4, B4, out);
  const c = (out[6] << 8) | out[7];
  const fix = fromHex("0000");
  fix[0] = c >> 8;
  fix[1] = c & 0xff; // adding the old checksum's value makes the new sum 0xffff → checksum 0
  emitUdp({ srcPort: 0, dstPort: 0 }, fix, A4, B4, out);
  assertEquals((out[6] << 8) | out[7], 0xffff);
  assert(typeof parseUdp(out, A4, B4) !== "string");
  assertThrows(
    () => emitUdp({ srcPort: 1, dstPort: 2 }, 65528, A4, B4, new Uint8Array(70000)),
    RangeError,
  );
  assertThrows(
    () => emitUdp({ srcPort: -1, dstPort: 2 }, 0, A4, B4, new Uint8Array(8)),
    RangeError,
  );
  assertThrows(() => emitUdp({ srcPort: 1, dstPort: 2 }, 1, A4, B4, new Uint8Array(8)), RangeError);
});

Deno.test("icmp: parse/emit round trips for echo, unreachable, frag needed, packet too big, time exceeded", () => {
  const out = new Uint8Array(64);
  const n = emitIcmpv4({ type: 8, code: 0, rest: echoRest(0x1234, 7) }, fromHex("abcd"), out);
  const m = parseIcmpv4(out.subarray(0, n));
  if (typeof m === "string") throw new Error(m);
  assertEquals([m.type, m.identifier, m.sequence, m.body, m.isError], [
    8,
    0x1234,
    7,
    fromHex("abcd"),
    false,
  ]);
  const fn = emitIcmpv4({ type: 3, code: 4, rest: 1400 }, new Uint8Array(28), out);
  const f = parseIcmpv4(out.subarray(0, fn));
  assert(typeof f !== "string" && f.mtu === 1400 && f.isError);
  const te = emitIcmpv4({ type: 11, code: 0, rest: 0 }, 0, out);
  assert(typeof parseIcmpv4(out.subarray(0, te)) !== "string");
  const pn = emitIcmpv6({ type: 2, code: 0, rest: 1280 }, new Uint8Array(40), A6, B6, out);
  const p = parseIcmpv6(out.subarray(0, pn), A6, B6);
  assert(typeof p !== "string" && p.mtu === 1280 && p.isError && p.version === 6);
  assertEquals(parseIcmpv6(out.subarray(0, pn), A6, A6), WireError.BadChecksum);
  for (let k = 0; k < 8; k++) {
    assertEquals(parseIcmpv4(out.subarray(0, k)), WireError.Truncated);
    assertEquals(parseIcmpv6(out.subarray(0, k), A6, B6), WireError.Truncated);
  }
  const bad = out.slice(0, n);
  bad[9] ^= 1;
  assertEquals(parseIcmpv4(bad), WireError.BadChecksum);
  assertThrows(() => emitIcmpv4({ type: 256, code: 0, rest: 0 }, 0, out), RangeError);
  assertThrows(() => emitIcmpv4({ type: 0, code: 0, rest: 0 }, 57, out), RangeError);
});

Deno.test("icmp: errors quote RFC 792 / RFC 4443 amounts, with the right addresses and types", () => {
  const out = new Uint8Array(1280);
  // IPv4: header + 8 bytes.
  const q4 = udpPacket(A4, B4, new Uint8Array(100));
  const n = buildIcmpError(q4, IcmpErrorKind.PacketTooBig, out, { mtu: 1280 });
  assertEquals(n, 20 + 8 + 28);
  const ip = parseIp(out.subarray(0, n as number));
  if (typeof ip === "string") throw new Error(ip);
  assertEquals([ip.src, ip.dst, ip.protocol, ip.ttl], [B4, A4, 1, 64]);
  const m = parseIcmpv4(ip.payload);
  assert(typeof m !== "string" && m.type === 3 && m.code === 4 && m.mtu === 1280);
  assertEquals(m.body, q4.subarray(0, 28));
  // IPv6: as much as fits in 1280 bytes; source override.
  const q6 = udpPacket(A6, B6, new Uint8Array(1400));
  const gw = fromHex("fd00000000000000000000000000fffe");
  const n6 = buildIcmpError(q6, IcmpErrorKind.TimeExceeded, out, { source: gw, ttl: 255 });
  assertEquals(n6, 1280);
  const ip6 = parseIp(out.subarray(0, n6 as number));
  if (typeof ip6 === "string") throw new Error(ip6);
  assertEquals([ip6.src, ip6.dst, ip6.ttl], [gw, A6, 255]);
  const m6 = parseIcmpv6(ip6.payload, ip6.src, ip6.dst);
  assert(typeof m6 !== "string" && m6.type === 3 && m6.code === 0);
  assertEquals(m6.body, q6.subarray(0, 1232));
  const kinds: Array<[IcmpErrorKind, number, number, number, number]> = [
    [IcmpErrorKind.NetUnreachable, 3, 0, 1, 0],
    [IcmpErrorKind.HostUnreachable, 3, 1, 1, 3],
    [IcmpErrorKind.ProtocolUnreachable, 3, 2, 4, 1],
    [IcmpErrorKind.PortUnreachable, 3, 3, 1, 4],
    [IcmpErrorKind.AdminProhibited, 3, 13, 1, 1],
    [IcmpErrorKind.ReassemblyTimeExceeded, 11, 1, 3, 1],
  ];
  for (const [k, t4, c4, t6, c6] of kinds) {
    const a = buildIcmpError(q4, k, out);
    assert(typeof a === "number");
    assertEquals([out[20], out[21]], [t4, c4], k);
    const b = buildIcmpError(q6, k, out);
    assert(typeof b === "number");
    assertEquals([out[40], out[41]], [t6, c6], k);
    if (k === IcmpErrorKind.ProtocolUnreachable) assertEquals(out[47], 6); // pointer to Next Header
  }
  assertThrows(() => buildIcmpError(q4, IcmpErrorKind.PacketTooBig, out), RangeError);
  assertThrows(
    () => buildIcmpError(q6, IcmpErrorKind.PortUnreachable, new Uint8Array(100)),
    RangeError,
  );
});

Deno.test("icmp: never an error about an ICMP error, multicast/broadcast, a bad source, a later fragment", () => {
  const out = new Uint8Array(1280);
  const err4 = packet(
    A4,
    B4,
    IpProtocol.Icmp,
    36,
    (o, off) => emitIcmpv4({ type: 3, code: 3, rest: 0 }, 28, o, off),
  );
  assertEquals(buildIcmpError(err4, IcmpErrorKind.PortUnreachable, out), WireError.NotAllowed);
  const echo4 = packet(
    A4,
    B4,
    IpProtocol.Icmp,
    8,
    (o, off) => emitIcmpv4({ type: 8, code: 0, rest: 1 }, 0, o, off),
  );
  assert(
    typeof buildIcmpError(echo4, IcmpErrorKind.HostUnreachable, out) === "number",
    "about an echo: fine",
  );
  const err6 = packet(
    A6,
    B6,
    IpProtocol.Icmpv6,
    8,
    (o, off) => emitIcmpv6({ type: 1, code: 4, rest: 0 }, 0, A6, B6, o, off),
  );
  assertEquals(buildIcmpError(err6, IcmpErrorKind.PortUnreachable, out), WireError.NotAllowed);
  for (const d of ["e0000001", "ffffffff", "efffffff"]) {
    assertEquals(
      buildIcmpError(
        udpPacket(A4, fromHex(d), new Uint8Array(4)),
        IcmpErrorKind.PortUnreachable,
        out,
      ),
      WireError.NotAllowed,
    );
  }
  assertEquals(
    buildIcmpError(
      udpPacket(fromHex("00000000"), B4, new Uint8Array(4)),
      IcmpErrorKind.PortUnreachable,
      out,
    ),
    WireError.NotAllowed,
  );
  const mc6 = fromHex("ff020000000000000000000000000001");
  const toMc6 = udpPacket(A6, mc6, new Uint8Array(4));
  assertEquals(buildIcmpError(toMc6, IcmpErrorKind.PortUnreachable, out), WireError.NotAllowed);
  // Packet Too Big is the exception (RFC 4443 §2.4 e.3), from one of our unicast addresses.
  assertEquals(
    buildIcmpError(toMc6, IcmpErrorKind.PacketTooBig, out, { mtu: 1280 }),
    WireError.NotAllowed,
  );
  assert(
    typeof buildIcmpError(toMc6, IcmpErrorKind.PacketTooBig, out, { mtu: 1280, source: B6 }) ===
      "number",
  );
  assertEquals(
    buildIcmpError(
      udpPacket(fromHex("00000000000000000000000000000000"), B6, new Uint8Array(4)),
      IcmpErrorKind.PortUnreachable,
      out,
    ),
    WireError.NotAllowed,
  );
  // A non-first IPv4 fragment.
  const frag = new Uint8Array(28);
  emitIpv4({
    src: A4,
    dst: B4,
    protocol: 17,
    ttl: 1,
    identification: 1,
    dontFragment: false,
    fragmentOffset: 8,
    payloadLength: 8,
  }, frag);
  assertEquals(buildIcmpError(frag, IcmpErrorKind.TimeExceeded, out), WireError.NotAllowed);
  // A first fragment is fine.
  emitIpv4({
    src: A4,
    dst: B4,
    protocol: 17,
    ttl: 1,
    identification: 1,
    dontFragment: false,
    moreFragments: true,
    payloadLength: 8,
  }, frag);
  assert(typeof buildIcmpError(frag, IcmpErrorKind.TimeExceeded, out) === "number");
  // Garbage is reported as its parse error.
  assertEquals(
    buildIcmpError(fromHex("45"), IcmpErrorKind.PortUnreachable, out),
    WireError.Truncated,
  );
  assertEquals(
    buildIcmpError(new Uint8Array(0), IcmpErrorKind.PortUnreachable, out),
    WireError.Truncated,
  );
});

Deno.test("icmp: echo replies only to unfragmented unicast echo requests", () => {
  const out = new Uint8Array(200);
  const req = packet(
    A4,
    B4,
    IpProtocol.Icmp,
    12,
    (o, off) => emitIcmpv4({ type: 8, code: 0, rest: echoRest(9, 9) }, fromHex("01020304"), o, off),
  );
  const n = buildEchoReply(req, out);
  assertEquals(n, req.length);
  const ip = parseIp(out.subarray(0, n as number));
  assert(typeof ip !== "string" && formatIpv4(ip.src) === "10.0.0.2");
  const rep = packet(
    A4,
    B4,
    IpProtocol.Icmp,
    8,
    (o, off) => emitIcmpv4({ type: 0, code: 0, rest: 1 }, 0, o, off),
  );
  assertEquals(buildEchoReply(rep, out), WireError.Unsupported);
  assertEquals(buildEchoReply(udpPacket(A4, B4, new Uint8Array(1)), out), WireError.Unsupported);
  const bc = packet(
    A4,
    fromHex("ffffffff"),
    IpProtocol.Icmp,
    8,
    (o, off) => emitIcmpv4({ type: 8, code: 0, rest: 1 }, 0, o, off),
  );
  assertEquals(buildEchoReply(bc, out), WireError.NotAllowed);
  const bad = req.slice();
  bad[25] ^= 1;
  assertEquals(buildEchoReply(bad, out), WireError.BadChecksum);
  const req6 = packet(
    A6,
    B6,
    IpProtocol.Icmpv6,
    8,
    (o, off) => emitIcmpv6({ type: 128, code: 0, rest: 5 }, 0, A6, B6, o, off),
  );
  const n6 = buildEchoReply(req6, out);
  assertEquals(n6, 48);
  const m6 = parseIcmpv6(out.subarray(40, 48), B6, A6);
  assert(typeof m6 !== "string" && m6.type === 129 && m6.rest === 5);
  assertThrows(() => buildEchoReply(req6, new Uint8Array(47)), RangeError);
});

Deno.test("tcp: random valid reprs survive emit → parse unchanged (both families)", () => {
  let a = 7;
  const r = () => ((a = (Math.imul(a, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const u32 = () => (r() * 2 ** 32) >>> 0;
  const out = new Uint8Array(200);
  for (let i = 0; i < 2000; i++) {
    const [src, dst] = i & 1 ? [A6, B6] : [A4, B4];
    const hasTs = r() < 0.5;
    const sackCount = hasTs ? (r() * 4) | 0 : (r() * 5) | 0;
    const syn = sackCount === 0 && r() < 0.5;
    const blocks = Array.from({ length: 8 }, u32);
    const repr = {
      srcPort: (r() * 65536) | 0,
      dstPort: (r() * 65536) | 0,
      seq: u32(),
      ack: u32(),
      flags: (r() * 512) | 0,
      window: (r() * 65536) | 0,
      urgent: (r() * 65536) | 0,
      mss: syn ? (r() * 65536) | 0 : -1,
      windowScale: syn ? (r() * 15) | 0 : -1,
      sackPermitted: syn && r() < 0.5,
      hasTimestamps: hasTs,
      tsVal: hasTs ? u32() : 0,
      tsEcr: hasTs ? u32() : 0,
      sackCount,
      sackBlocks: blocks,
    };
    const data = new Uint8Array((r() * 50) | 0).map(() => (r() * 256) | 0);
    const n = emitTcp(repr, data, src, dst, out);
    const s = parseTcp(out.subarray(0, n), src, dst);
    if (typeof s === "string") throw new Error(`${i}: ${s}`);
    const got = [s.srcPort, s.dstPort, s.seq, s.ack, s.flags, s.window, s.urgent, s.mss];
    assertEquals(got, [
      repr.srcPort,
      repr.dstPort,
      repr.seq,
      repr.ack,
      repr.flags,
      repr.window,
      repr.urgent,
      repr.mss,
    ]);
    assertEquals([s.windowScale, s.sackPermitted, s.hasTimestamps, s.tsVal, s.tsEcr, s.sackCount], [
      repr.windowScale,
      repr.sackPermitted,
      repr.hasTimestamps,
      repr.tsVal,
      repr.tsEcr,
      repr.sackCount,
    ]);
    assertEquals([...s.sackBlocks.subarray(0, 2 * sackCount)], blocks.slice(0, 2 * sackCount));
    assertEquals(s.payload, data);
  }
});

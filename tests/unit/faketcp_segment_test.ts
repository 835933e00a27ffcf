/**
 * The fake-TCP segment codec against bytes computed independently (a
 * separate RFC 1071 implementation, by hand in Python: the IPv4 and TCP
 * checksums in them are what a kernel computes for these fields), the Linux
 * option layouts, and malformed input: a typed error, never a throw.
 */
import { assert, assertEquals, fromHex, toHexStr } from "../support/assert.ts";
import {
  DATA_TCP_HEADER,
  emitSegment,
  emitSegment4,
  FAKETCP_OVERHEAD,
  InboundSegment,
  parseSegment,
  parseSegment4,
  SegmentError,
  SYN_TCP_HEADER,
  TcpFlags,
  WireError,
} from "../../shared/carrier/faketcp/segment.ts";

const C = new Uint8Array([10, 0, 0, 1]);
const S = new Uint8Array([10, 0, 0, 2]);

/** 10.0.0.1:40000 → 10.0.0.2:443 SYN, id 0x1234, DF, TTL 64, MSS 1460 SACK TS(0x11223344, 0) NOP WS 9. */
const SYN =
  "4500003c12344000400614860a0000010a0000029c4001bb0102030400000000a002faf052a30000020405b40402080a112233440000000001030309";
/** The same flow's PSH|ACK with 17 bytes "hello, fake tcp!!", NOP NOP TS(0x11223399, 0xaabbccdd). */
const DATA =
  "45000045123540004006147c0a0000010a0000029c4001bb010203050a0b0c0d8018faf0c2cc00000101080a11223399aabbccdd68656c6c6f2c2066616b65207463702121";

const synRepr = {
  srcPort: 40000,
  dstPort: 443,
  seq: 0x01020304,
  ack: 0,
  flags: TcpFlags.SYN,
  window: 64240,
  mss: 1460,
  sackPermitted: true,
  hasTimestamps: true,
  tsVal: 0x11223344,
  tsEcr: 0,
  windowScale: 9,
};

const dataRepr = {
  srcPort: 40000,
  dstPort: 443,
  seq: 0x01020305,
  ack: 0x0a0b0c0d,
  flags: TcpFlags.PSH | TcpFlags.ACK,
  window: 64240,
  hasTimestamps: true,
  tsVal: 0x11223399,
  tsEcr: 0xaabbccdd,
};

Deno.test("faketcp segment: SYN emitted byte for byte as computed by hand", () => {
  const out = new Uint8Array(100);
  const n = emitSegment4(synRepr, 0, { src: C, dst: S, id: 0x1234, ttl: 64 }, out);
  assertEquals(n, 20 + SYN_TCP_HEADER);
  assertEquals(toHexStr(out.subarray(0, n)), SYN);
});

Deno.test("faketcp segment: data segment emitted byte for byte, payload in place too", () => {
  const payload = new TextEncoder().encode("hello, fake tcp!!");
  const out = new Uint8Array(200);
  const n = emitSegment4(dataRepr, payload, { src: C, dst: S, id: 0x1235, ttl: 64 }, out, 0);
  assertEquals(toHexStr(out.subarray(0, n)), DATA);
  // The payload already in place (the carrier's zero-copy path): same bytes.
  const out2 = new Uint8Array(200);
  out2.set(payload, 20 + DATA_TCP_HEADER);
  const n2 = emitSegment4(dataRepr, payload.length, { src: C, dst: S, id: 0x1235, ttl: 64 }, out2);
  assertEquals(toHexStr(out2.subarray(0, n2)), DATA);
  assertEquals(FAKETCP_OVERHEAD, 24);
  // TCP alone with the pseudo header: the same segment as inside the packet.
  const t = new Uint8Array(100);
  const m = emitSegment(dataRepr, payload, C, S, t);
  assertEquals(toHexStr(t.subarray(0, m)), DATA.slice(40));
});

Deno.test("faketcp segment: parses the reference packets, options included", () => {
  const s = parseSegment4(fromHex(SYN), new InboundSegment());
  assert(typeof s !== "string", String(s));
  assertEquals(s.tcp.flags, TcpFlags.SYN);
  assertEquals(s.tcp.mss, 1460);
  assertEquals(s.tcp.windowScale, 9);
  assert(s.tcp.sackPermitted && s.tcp.hasTimestamps);
  assertEquals(s.tcp.tsVal, 0x11223344);
  assertEquals(s.ip.identification, 0x1234);
  assert(s.ip.dontFragment);
  const d = parseSegment4(fromHex(DATA), new InboundSegment());
  assert(typeof d !== "string", String(d));
  assertEquals(new TextDecoder().decode(d.tcp.payload), "hello, fake tcp!!");
  assertEquals(d.tcp.seq, 0x01020305);
  assertEquals(d.tcp.ack, 0x0a0b0c0d);
  assertEquals(d.tcp.tsEcr, 0xaabbccdd);
  const t = parseSegment(fromHex(DATA).subarray(20), C, S);
  assert(typeof t !== "string");
  assertEquals(t.payload.length, 17);
});

Deno.test("faketcp segment: malformed input yields a typed error, never a throw", () => {
  const ref = fromHex(DATA);
  const seg = new InboundSegment();
  const cases: [string, Uint8Array, unknown][] = [
    ["empty", new Uint8Array(0), WireError.Truncated],
    ["IPv6 version", Uint8Array.from(ref, (b, i) => (i === 0 ? 0x65 : b)), WireError.BadVersion],
    ["truncated TCP", ref.subarray(0, 30), WireError.Truncated],
    [
      "bad IP checksum",
      Uint8Array.from(ref, (b, i) => (i === 10 ? b ^ 1 : b)),
      WireError.BadChecksum,
    ],
  ];
  for (const [what, bytes, want] of cases) {
    assertEquals<unknown>(parseSegment4(bytes, seg), want, what);
  }
  // A flipped payload bit: the TCP checksum catches it (when verified).
  const flipped = ref.slice();
  flipped[60] ^= 0x40;
  assertEquals(parseSegment4(flipped, seg), WireError.BadChecksum);
  assert(typeof parseSegment4(flipped, seg, false) !== "string", "unverified: parses");
  // UDP in the protocol field (IP checksum fixed up by hand).
  const udp = fromHex(
    "45000045123540004011147c0a0000010a0000029c4001bb010203050a0b0c0d8018faf0c2cc00000101080a11223399aabbccdd68656c6c6f2c2066616b65207463702121",
  );
  udp[10] = 0x14;
  udp[11] = 0x71;
  assertEquals(parseSegment4(udp, seg), SegmentError.NotTcp);
  // A fragment.
  const frag = ref.slice();
  frag[6] = 0x20; // MF
  const sum = ((frag[10] << 8) | frag[11]) + 0x4000 - 0x2000;
  frag[10] = (sum >> 8) & 0xff;
  frag[11] = sum & 0xff;
  assertEquals(parseSegment4(frag, seg), SegmentError.Fragment);
  // A TCP option running past the header.
  const opt = ref.slice();
  opt[41] = 0x20; // NOP NOP then kind 8 with length 32
  opt[42] = 8;
  opt[43] = 40;
  assertEquals(parseSegment4(opt, seg, false), WireError.BadOption);
  // Random garbage of every length: no throw.
  let x = 7;
  for (let len = 0; len < 200; len++) {
    const b = new Uint8Array(len);
    for (let i = 0; i < len; i++) b[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
    if (len > 0) b[0] = 0x45;
    parseSegment4(b, seg);
    parseSegment4(b, seg, false);
  }
  assertEquals(parseSegment(ref, new Uint8Array(4), new Uint8Array(16)), WireError.Unsupported);
});

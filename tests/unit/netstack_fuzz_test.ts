/**
 * Fuzz of the wire layer and the reassembler: random bytes and mutations of the recorded
 * kernel packets through every parser and builder. Seeded (OSTP_FUZZ_SEED overrides),
 * a few hundred thousand inputs. Property: only views, results or typed errors come back
 * (never a throw), what parses re-emits and parses again, and the reassembler's memory
 * stays within its bounds.
 */
import { assert } from "../support/assert.ts";
import { readFixture } from "../support/pcap.ts";
import { IpPacket, parseIp } from "../../shared/netstack/wire/packet.ts";
import { Ipv4Packet, parseIpv4, rewriteIpv4Checksum } from "../../shared/netstack/wire/ipv4.ts";
import { Ipv6Packet, parseIpv6 } from "../../shared/netstack/wire/ipv6.ts";
import { emitTcp, parseTcp, TcpSegment } from "../../shared/netstack/wire/tcp.ts";
import { emitUdp, parseUdp, UdpDatagram } from "../../shared/netstack/wire/udp.ts";
import {
  buildEchoReply,
  buildIcmpError,
  emitIcmpv4,
  emitIcmpv6,
  IcmpErrorKind,
  IcmpMessage,
  parseIcmpv4,
  parseIcmpv6,
} from "../../shared/netstack/wire/icmp.ts";
import { IpProtocol } from "../../shared/netstack/wire/ip_protocol.ts";
import { Reassembler } from "../../shared/netstack/reassembly.ts";
import { toHexStr } from "../support/assert.ts";

const SEED = Number(Deno.env.get("OSTP_FUZZ_SEED") ?? 20261202);

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const corpus: Uint8Array[] = [];
for (const f of ["tcp4.pcap", "tcp6.pcap", "udp_icmp.pcap", "frag.pcap"]) {
  for (const p of readFixture(f)) if (p.ip) corpus.push(p.ip.slice());
}

const KINDS = Object.values(IcmpErrorKind);
const LIMITS = { maxReassemblies: 16, maxBytes: 64 * 1024, maxFragments: 32, timeoutMs: 500 };

/** Everything the stack would do with one packet. Throws only on a broken property. */
class Harness {
  readonly ip = new IpPacket();
  readonly v4 = new Ipv4Packet();
  readonly v6 = new Ipv6Packet();
  readonly tcp = new TcpSegment();
  readonly udp = new UdpDatagram();
  readonly icmp = new IcmpMessage();
  readonly out = new Uint8Array(70_000);
  readonly reasm = new Reassembler(LIMITS);
  now = 0;
  parsed = 0;
  /** Inputs that reached each depth, so a shallow fuzz fails loudly. */
  readonly reached = { transport: 0, reassembled: 0, icmpError: 0 };

  run(buf: Uint8Array, skip: boolean): void {
    const o = { skipChecksum: skip };
    parseIpv4(buf, this.v4, o);
    parseIpv6(buf, this.v6);
    const ip = parseIp(buf, this.ip, o);
    if (typeof ip === "string") return;
    this.parsed++;
    this.now += 3;
    const r = ip.version === 4
      ? this.reasm.push(ip.v4, this.now)
      : this.reasm.pushIpv6(ip.v6, this.now);
    if (this.now % 97 === 0) this.reasm.expire(this.now);
    assert(this.reasm.size <= LIMITS.maxReassemblies, "reassemblies bound");
    assert(this.reasm.bytesHeld <= LIMITS.maxBytes && this.reasm.bytesHeld >= 0, "bytes bound");
    if (r instanceof Uint8Array && r !== ip.buf) {
      const whole = parseIp(r);
      assert(typeof whole !== "string" && !whole.isFragment, "reassembled datagram parses");
      this.reached.reassembled++;
    }
    // One error kind per input, in turn: every kind gets a third of the inputs' worth.
    const k = KINDS[this.parsed % KINDS.length];
    const e = buildIcmpError(ip.buf, k, this.out, { mtu: 1280, skipChecksum: skip });
    if (typeof e === "number") {
      this.reached.icmpError++;
      assert(typeof parseIp(this.out.subarray(0, e)) !== "string", "ICMP error parses");
    }
    buildEchoReply(ip.buf, this.out);
    if (ip.isFragment && ip.fragmentOffset !== 0) return;
    const t = ip.payload;
    const out = this.out;
    if (ip.protocol === IpProtocol.Tcp) {
      const s = parseTcp(t, ip.src, ip.dst, this.tcp, o);
      if (typeof s === "string") return;
      const n = emitTcp(s, s.payload, ip.src, ip.dst, out);
      assert(
        typeof parseTcp(out.subarray(0, n), ip.src, ip.dst) !== "string",
        "TCP re-emit parses",
      );
      this.reached.transport++;
    } else if (ip.protocol === IpProtocol.Udp) {
      const u = parseUdp(t, ip.src, ip.dst, this.udp, o);
      if (typeof u === "string") return;
      const n = emitUdp(u, u.payload, ip.src, ip.dst, out);
      assert(
        typeof parseUdp(out.subarray(0, n), ip.src, ip.dst) !== "string",
        "UDP re-emit parses",
      );
      this.reached.transport++;
    } else if (ip.protocol === IpProtocol.Icmp) {
      const m = parseIcmpv4(t, this.icmp, o);
      if (typeof m === "string") return;
      const n = emitIcmpv4(m, m.body, out);
      assert(typeof parseIcmpv4(out.subarray(0, n)) !== "string", "ICMP re-emit parses");
      this.reached.transport++;
    } else if (ip.protocol === IpProtocol.Icmpv6) {
      const m = parseIcmpv6(t, ip.src, ip.dst, this.icmp, o);
      if (typeof m === "string") return;
      const n = emitIcmpv6(m, m.body, ip.src, ip.dst, out);
      assert(typeof parseIcmpv6(out.subarray(0, n), ip.src, ip.dst) !== "string", "ICMPv6 re-emit");
      this.reached.transport++;
    }
  }
}

function mutate(r: () => number, src: Uint8Array): Uint8Array {
  let b = src.slice();
  const edits = 1 + ((r() * 4) | 0);
  for (let e = 0; e < edits; e++) {
    const op = (r() * 6) | 0;
    if (b.length === 0) b = new Uint8Array(1);
    const at = (r() * b.length) | 0;
    if (op === 0) b[at] ^= 1 << ((r() * 8) | 0);
    else if (op === 1) b[at] = (r() * 256) | 0;
    else if (op === 2) b = b.subarray(0, (r() * b.length) | 0).slice();
    else if (op === 3) {
      const n = new Uint8Array(b.length + 1 + ((r() * 40) | 0));
      n.set(b);
      b = n;
    } else if (op === 4) {
      // A length / offset field: IPv4 IHL, total length, IPv6 payload length, transport.
      const fields = [
        0,
        2,
        3,
        4,
        5,
        6,
        7,
        20 + 4,
        20 + 5,
        20 + 12,
        40 + 1,
        40 + 4,
        40 + 5,
        40 + 12,
      ];
      const f = fields[(r() * fields.length) | 0];
      if (f < b.length) b[f] = (r() * 256) | 0;
    } else {
      // A TCP/IPv6 option or extension length byte somewhere in the first 100 bytes.
      const i = 20 + ((r() * 80) | 0);
      if (i < b.length) b[i] = [0, 1, 2, 3, 4, 5, 8, 10, 255][(r() * 9) | 0];
    }
  }
  // Half the time, make the IPv4 header checksum right so the deeper layers are reached.
  if (r() < 0.5 && b.length >= 20 && b[0] >> 4 === 4) {
    try {
      rewriteIpv4Checksum(b);
    } catch { /* IHL past the end: the parser rejects it anyway */ }
  }
  return b;
}

/** A random IPv4/IPv6 fragment of one of a few datagrams, to churn the reassembler. */
function randomFragment(r: () => number, v6: boolean): Uint8Array {
  const start = 8 * ((r() * 200) | 0);
  const len = r() < 0.8 ? 8 * (1 + ((r() * 60) | 0)) : (r() * 500) | 0;
  const more = r() < 0.8;
  const id = (r() * 6) | 0;
  if (!v6) {
    const b = new Uint8Array(20 + len);
    b.set([
      0x45,
      0,
      (20 + len) >> 8,
      (20 + len) & 0xff,
      0,
      id,
      (more ? 0x20 : 0) | (start / 8) >> 8,
      (start / 8) & 0xff,
      64,
      r() < 0.5 ? 17 : 6,
      0,
      0,
      10,
      0,
      0,
      1,
      10,
      0,
      0,
      2,
    ]);
    for (let i = 20; i < b.length; i++) b[i] = (r() * 256) | 0;
    rewriteIpv4Checksum(b);
    return b;
  }
  const b = new Uint8Array(48 + len);
  b.set([0x60, 0, 0, 0, (8 + len) >> 8, (8 + len) & 0xff, 44, 64]);
  b[8] = b[24] = 0xfd;
  b[23] = 1;
  b[39] = 2;
  b.set([17, 0, start >> 8, (start & 0xf8) | (more ? 1 : 0), 0, 0, 0, id], 40);
  for (let i = 48; i < b.length; i++) b[i] = (r() * 256) | 0;
  return b;
}

Deno.test("fuzz: random and mutated packets never throw; reassembly stays bounded", () => {
  const r = rng(SEED);
  const h = new Harness();
  const ITER = 100_000;
  let current: Uint8Array = new Uint8Array(0);
  try {
    for (let i = 0; i < ITER; i++) {
      // 1. random bytes, with a plausible first nibble half the time
      const n = (r() * 120) | 0;
      current = new Uint8Array(n);
      for (let j = 0; j < n; j++) current[j] = (r() * 256) | 0;
      if (n > 0 && r() < 0.5) current[0] = (r() < 0.5 ? 0x45 : 0x60) | (current[0] & 0x0f);
      h.run(current, r() < 0.5);
      // 2. a mutation of a recorded packet
      current = mutate(r, corpus[(r() * corpus.length) | 0]);
      h.run(current, r() < 0.5);
      // 3. a random fragment
      current = randomFragment(r, r() < 0.4);
      h.run(current, false);
    }
  } catch (e) {
    throw new Error(`seed ${SEED}: input ${toHexStr(current)}: ${(e as Error).stack}`);
  }
  h.reasm.expire(h.now + LIMITS.timeoutMs);
  assert(h.reasm.size === 0 && h.reasm.bytesHeld === 0, "everything expires");
  console.log(`seed ${SEED}: ${h.parsed} parsed as IP,`, h.reached);
  assert(
    h.reached.transport > 10_000 && h.reached.reassembled > 100 && h.reached.icmpError > 5_000,
    "depth",
  );
  assert(h.parsed > ITER / 2, `only ${h.parsed} inputs parsed as IP: the fuzz is too shallow`);
});

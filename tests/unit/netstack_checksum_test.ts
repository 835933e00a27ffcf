import { assert, assertEquals, fromHex } from "../support/assert.ts";
import {
  checksumValid,
  finishChecksum,
  foldSum,
  internetChecksum,
  onesSum,
  pseudoHeaderSum,
  updateChecksum16,
  updateChecksum32,
  updateChecksumBytes,
} from "../../shared/netstack/wire/checksum.ts";
import { readFixture } from "../support/pcap.ts";
import { parseIp } from "../../shared/netstack/wire/packet.ts";
import { parseTcp } from "../../shared/netstack/wire/tcp.ts";

/** A deterministic PRNG (mulberry32) so failures reproduce. */
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

/** The textbook 16-bit loop, as the reference. */
function naive(b: Uint8Array, start = 0, end = b.length): number {
  let s = 0;
  for (let i = start; i < end; i += 2) s += (b[i] << 8) | (i + 1 < end ? b[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

Deno.test("checksum: RFC 1071 §3 example sums to ddf2", () => {
  const b = fromHex("0001f203f4f5f6f7");
  assertEquals(foldSum(onesSum(b)), 0xddf2);
  assertEquals(internetChecksum(b), 0x220d);
  // With the checksum appended, the data verifies.
  const withSum = fromHex("0001f203f4f5f6f7220d");
  assert(checksumValid(withSum));
});

Deno.test("checksum: odd lengths, offsets and unaligned views match the 16-bit reference", () => {
  const r = rng(1);
  const big = new Uint8Array(5000);
  for (let i = 0; i < big.length; i++) big[i] = (r() * 256) | 0;
  for (let n = 0; n < 400; n++) {
    const start = (r() * 100) | 0;
    const end = start + ((r() * 4000) | 0);
    assertEquals(internetChecksum(big, start, end), naive(big, start, end), `${start}..${end}`);
    const view = big.subarray(start, end);
    assertEquals(internetChecksum(view), naive(big, start, end));
  }
  assertEquals(internetChecksum(new Uint8Array(0)), 0xffff);
  assertEquals(internetChecksum(fromHex("ff")), 0x00ff);
  // Clamped ranges never read outside the buffer.
  assertEquals(internetChecksum(fromHex("0102"), -5, 99), naive(fromHex("0102")));
  // A 64 KiB buffer of 0xff words (largest sums) still folds right.
  const ones = new Uint8Array(65536).fill(0xff);
  assertEquals(internetChecksum(ones), naive(ones));
});

Deno.test("checksum: pieces combine by addition (pseudo header + segment)", () => {
  const src = fromHex("0a000001");
  const dst = fromHex("0a000002");
  const seg = fromHex("d43100350011000061626364656667686900");
  const whole = new Uint8Array([...src, ...dst, 0, 17, 0, seg.length, ...seg]);
  assertEquals(
    finishChecksum(pseudoHeaderSum(src, dst, 17, seg.length) + onesSum(seg)),
    naive(whole),
  );
  const s6 = fromHex("fd770000000000000000000000000001");
  const d6 = fromHex("fd770000000000000000000000000002");
  const len = 70000; // a 32-bit upper-layer length (RFC 8200 §8.1)
  const ph6 = new Uint8Array([...s6, ...d6, 0, 1, 0x11, 0x70, 0, 0, 0, 6]);
  assertEquals(finishChecksum(pseudoHeaderSum(s6, d6, 6, len)), naive(ph6));
});

Deno.test("checksum: a kernel-captured TCP SYN verifies and its recomputed checksum matches", () => {
  const syn = readFixture("tcp4.pcap").find((p) => p.ip && p.ip[0] >> 4 === 4 && p.ip[9] === 6)!;
  const ip = syn.ip!;
  const hl = (ip[0] & 15) * 4;
  const total = (ip[2] << 8) | ip[3];
  assert(checksumValid(ip, 0, hl), "IPv4 header checksum");
  const seg = ip.slice(hl, total);
  const ph = pseudoHeaderSum(ip.subarray(12, 16), ip.subarray(16, 20), 6, seg.length);
  assert(checksumValid(seg, 0, seg.length, ph), "TCP checksum");
  const was = (seg[16] << 8) | seg[17];
  seg[16] = seg[17] = 0;
  assertEquals(finishChecksum(onesSum(seg, 0, seg.length, ph)), was);
});

Deno.test("checksum: RFC 1624 incremental updates equal a full recompute over random rewrites", () => {
  const r = rng(42);
  for (let iter = 0; iter < 5000; iter++) {
    const n = 20 + 2 * ((r() * 200) | 0);
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
    b[10] = b[11] = 0;
    let c = internetChecksum(b);
    b[10] = c >> 8;
    b[11] = c & 0xff;
    const at = 2 * ((r() * ((n - 12) / 2 - 2)) | 0) + 12; // even offset past the checksum
    const kind = iter % 3;
    if (kind === 0) {
      const old = (b[at] << 8) | b[at + 1];
      const nw = (r() * 65536) | 0;
      b[at] = nw >> 8;
      b[at + 1] = nw & 0xff;
      c = updateChecksum16(c, old, nw);
    } else if (kind === 1) {
      const old = ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
      const nw = (r() * 2 ** 32) >>> 0;
      b[at] = nw >>> 24;
      b[at + 1] = (nw >>> 16) & 0xff;
      b[at + 2] = (nw >>> 8) & 0xff;
      b[at + 3] = nw & 0xff;
      c = updateChecksum32(c, old, nw);
    } else {
      const len = Math.min(16, n - at) & ~1;
      const old = b.slice(at, at + len);
      const nw = new Uint8Array(len);
      for (let i = 0; i < len; i++) nw[i] = (r() * 256) | 0;
      c = updateChecksumBytes(c, old, nw);
      b.set(nw, at);
    }
    b[10] = c >> 8;
    b[11] = c & 0xff;
    assert(checksumValid(b), `iteration ${iter}: incremental checksum does not verify`);
    b[10] = b[11] = 0;
    const full = internetChecksum(b);
    // One's complement has two zeros: accept 0x0000/0xffff as the same value.
    assert(full === c || (full ^ c) === 0xffff && (full === 0 || c === 0), `iteration ${iter}`);
  }
});

Deno.test("checksum: NAT-style rewrite of a captured segment, incrementally, verifies", () => {
  for (const f of ["tcp4.pcap", "tcp6.pcap"]) {
    for (const pk of readFixture(f)) {
      if (!pk.ip) continue;
      const b = pk.ip.slice();
      const ip = parseIp(b);
      if (typeof ip === "string" || ip.protocol !== 6) continue;
      const v4 = ip.version === 4;
      const newDst = v4 ? fromHex("c0000207") : fromHex("20010db8000000000000000000000007");
      const t = ip.payloadOffset;
      let tcpSum = (b[t + 16] << 8) | b[t + 17];
      // The address is in the TCP pseudo header (and, for IPv4, in the header checksum).
      tcpSum = updateChecksumBytes(tcpSum, ip.dst, newDst);
      if (v4) {
        const h = updateChecksumBytes((b[10] << 8) | b[11], ip.dst, newDst);
        b[10] = h >> 8;
        b[11] = h & 0xff;
      }
      const oldPort = (b[t + 2] << 8) | b[t + 3];
      tcpSum = updateChecksum16(tcpSum, oldPort, 80);
      ip.dst.set(newDst);
      b[t + 2] = 0;
      b[t + 3] = 80;
      b[t + 16] = tcpSum >> 8;
      b[t + 17] = tcpSum & 0xff;
      const again = parseIp(b);
      if (typeof again === "string") throw new Error(`${f}#${pk.index}: ${again}`);
      const s = parseTcp(again.payload, again.src, again.dst);
      if (typeof s === "string") throw new Error(`${f}#${pk.index}: ${s}`);
      assertEquals(s.dstPort, 80);
    }
  }
});

/** IPv4/IPv6 fragment reassembly: order, overlaps, tiny fragments, bounds, timeout. */
import { assert, assertEquals, fromHex } from "../support/assert.ts";
import { Reassembler } from "../../shared/netstack/reassembly.ts";
import { emitIpv4, parseIpv4 } from "../../shared/netstack/wire/ipv4.ts";
import { emitIpv6, parseIpv6 } from "../../shared/netstack/wire/ipv6.ts";
import { emitUdp, parseUdp } from "../../shared/netstack/wire/udp.ts";
import { WireError } from "../../shared/netstack/wire/error.ts";

const A4 = fromHex("0a000001");
const B4 = fromHex("0a000002");
const A6 = fromHex("fd000000000000000000000000000001");
const B6 = fromHex("fd000000000000000000000000000002");

/** A UDP datagram of `n` data bytes (the transport part of the whole datagram). */
function udp(n: number, src = A4, dst = B4): Uint8Array {
  const d = new Uint8Array(n);
  for (let i = 0; i < n; i++) d[i] = i * 7;
  const out = new Uint8Array(8 + n);
  emitUdp({ srcPort: 5, dstPort: 6 }, d, src, dst, out);
  return out;
}

/** An IPv4 fragment carrying `data[start..end)` of datagram `id`. */
function frag4(data: Uint8Array, start: number, end: number, more: boolean, id = 1, protocol = 17) {
  const out = new Uint8Array(20 + end - start);
  emitIpv4({
    src: A4,
    dst: B4,
    protocol,
    ttl: 64,
    identification: id,
    dontFragment: false,
    moreFragments: more,
    fragmentOffset: start,
    payloadLength: end - start,
  }, out);
  out.set(data.subarray(start, end), 20);
  const p = parseIpv4(out);
  if (typeof p === "string") throw new Error(p);
  return p;
}

function frag6(data: Uint8Array, start: number, end: number, more: boolean, id = 9) {
  const out = new Uint8Array(48 + end - start);
  emitIpv6(
    { src: A6, dst: B6, nextHeader: 44, hopLimit: 64, ipPayloadLength: 8 + end - start },
    out,
  );
  out.set([17, 0, start >> 8, (start & 0xf8) | (more ? 1 : 0), 0, 0, 0, id], 40);
  out.set(data.subarray(start, end), 48);
  const p = parseIpv6(out);
  if (typeof p === "string") throw new Error(p);
  return p;
}

Deno.test("reassembly: in order, out of order and with duplicates gives the datagram", () => {
  const d = udp(3000);
  for (const order of [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]]) {
    const r = new Reassembler();
    const cuts = [[0, 1480], [1480, 2960], [2960, d.length]];
    let got: Uint8Array | null = null;
    for (const i of order) {
      const [s, e] = cuts[i];
      const res = r.push(frag4(d, s, e, i < 2), 0);
      assert(typeof res !== "string", String(res));
      if (i === order[0]) assertEquals(r.push(frag4(d, s, e, i < 2), 0), null); // duplicate
      if (res) got = res;
    }
    assert(got, `order ${order}`);
    const p = parseIpv4(got);
    if (typeof p === "string") throw new Error(p);
    assertEquals([p.totalLength, p.isFragment, p.dontFragment], [20 + d.length, false, false]);
    assert(typeof parseUdp(p.payload, p.src, p.dst) !== "string", "UDP checksum over the whole");
    assertEquals(p.payload, d);
    assertEquals([r.size, r.bytesHeld, r.nextDeadline()], [0, 0, Infinity]);
  }
  // IPv6 too.
  const d6 = udp(2000, A6, B6);
  const r = new Reassembler();
  assertEquals(r.pushIpv6(frag6(d6, 1232, d6.length, false), 0), null);
  const w = r.pushIpv6(frag6(d6, 0, 1232, true), 0);
  assert(w instanceof Uint8Array);
  const p6 = parseIpv6(w);
  if (typeof p6 === "string") throw new Error(p6);
  assertEquals([p6.protocol, p6.payloadLength, p6.fragmentHeaderOffset], [17, d6.length, -1]);
  assert(typeof parseUdp(p6.payload, p6.src, p6.dst) !== "string");
  // Not a fragment: passed through as is.
  const whole = frag4(d, 0, 100, false);
  assertEquals(r.push(whole, 0), whole.buf);
});

Deno.test("reassembly: overlaps drop the datagram; malformed and tiny fragments are refused", () => {
  const d = udp(3000);
  const r = new Reassembler();
  assertEquals(r.push(frag4(d, 0, 1480, true), 0), null);
  assertEquals(r.push(frag4(d, 1472, 2960, true), 0), WireError.OverlappingFragment);
  assertEquals(r.size, 0);
  assertEquals(r.bytesHeld, 0);
  // Overlap that contains earlier pieces.
  r.push(frag4(d, 8, 16, true), 0);
  r.push(frag4(d, 32, 40, true), 0);
  assertEquals(r.push(frag4(d, 0, 1480, true), 0), WireError.OverlappingFragment);
  // Non-last fragment not a multiple of 8, or empty.
  assertEquals(r.push(frag4(d, 0, 1001, true), 0), WireError.BadFragment);
  // Tiny first fragment: UDP header cut; TCP header cut; TCP at offset 8.
  assertEquals(r.push(frag4(d, 0, 0, true), 0), WireError.BadFragment);
  const t = new Uint8Array(64);
  assertEquals(r.push(frag4(t, 0, 16, true, 2, 6), 0), WireError.BadFragment);
  assertEquals(r.push(frag4(t, 8, 64, false, 2, 6), 0), WireError.BadFragment);
  // Last fragments that disagree, data past the end, past 65535.
  assertEquals(r.push(frag4(d, 1480, 2000, false, 3), 0), null);
  assertEquals(r.push(frag4(d, 1480, 2008, false, 3), 0), WireError.BadFragment);
  r.push(frag4(d, 1480, 2000, false, 4), 0);
  assertEquals(r.push(frag4(d, 2000, 2008, true, 4), 0), WireError.BadFragment);
  const big = new Uint8Array(65536);
  assertEquals(r.push(frag4(big, 65000, 65520, false, 5), 0), WireError.BadFragment);
  assertEquals(r.size, 0);
});

Deno.test("reassembly: timeout, expire() hands back first fragments, nextDeadline", () => {
  const d = udp(3000);
  const r = new Reassembler({ timeoutMs: 1000 });
  r.push(frag4(d, 0, 1480, true, 1), 100);
  r.push(frag4(d, 1480, 2960, true, 2), 500);
  assertEquals(r.nextDeadline(), 1100);
  assertEquals(r.expire(1099).length, 0);
  const firsts = r.expire(1100);
  assertEquals(firsts.length, 1);
  assertEquals(firsts[0].length, 1500);
  assertEquals(r.nextDeadline(), 1500);
  assertEquals(r.expire(2000).length, 0); // no first fragment: nothing to quote
  assertEquals([r.size, r.bytesHeld], [0, 0]);
  // A stale reassembly is not completed by a late fragment.
  r.push(frag4(d, 0, 1480, true, 7), 0);
  assertEquals(r.push(frag4(d, 1480, d.length, false, 7), 5000), null);
  assertEquals(r.size, 1);
});

Deno.test("reassembly: bounds on reassemblies, fragments and bytes evict the oldest", () => {
  const d = udp(3000);
  const r = new Reassembler({ maxReassemblies: 4, maxBytes: 10_000, maxFragments: 3 });
  for (let id = 0; id < 10; id++) {
    r.push(frag4(d, 0, 1480, true, id), id);
    assert(r.size <= 4);
    assert(r.bytesHeld <= 10_000);
  }
  assertEquals(r.size, 4);
  assertEquals(r.nextDeadline(), 6 + 30_000); // ids 6..9 remain
  // Bytes: 1500 per first fragment; 7 × 1480 more would pass 10000.
  for (let id = 6; id < 10; id++) r.push(frag4(d, 1480, 2960, true, id), 20);
  assert(r.bytesHeld <= 10_000);
  // Fragments per datagram.
  const r2 = new Reassembler({ maxFragments: 3 });
  for (let i = 0; i < 3; i++) {
    assertEquals(r2.push(frag4(d, 8 * i * 2, 8 * i * 2 + 8, true, 1), 0), null);
  }
  assertEquals(r2.push(frag4(d, 200, 208, true, 1), 0), WireError.LimitReached);
  // A datagram larger than the byte limit alone.
  const r3 = new Reassembler({ maxBytes: 2000 });
  assertEquals(r3.push(frag4(d, 0, 1480, true), 0), null);
  assertEquals(r3.push(frag4(d, 1480, 2960, true), 0), WireError.LimitReached);
  assertEquals([r3.size, r3.bytesHeld], [0, 0]);
  // Datagram size bound.
  const r4 = new Reassembler({ maxDatagramSize: 1500 });
  assertEquals(r4.push(frag4(d, 1480, 2000, false), 0), WireError.BadFragment);
});

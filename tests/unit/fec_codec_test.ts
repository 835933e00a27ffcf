import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import {
  FEC_HEADER_LENGTH,
  FEC_PARITY_OVERHEAD,
  FecDecoder,
  FecEncoder,
} from "../../shared/fec/fec_codec.ts";

/** Deterministic xorshift32 generator in [0, 1). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

/** Payload number `seq`: u32be(seq) then bytes derived from it, `len` ≥ 4 bytes long. */
function payload(seq: number, len: number): Uint8Array {
  const p = new Uint8Array(len);
  new DataView(p.buffer).setUint32(0, seq);
  for (let i = 4; i < len; i++) p[i] = (seq * 31 + i * 7) & 255;
  return p;
}

function seqOf(p: Uint8Array): number {
  return new DataView(p.buffer, p.byteOffset).getUint32(0);
}

interface Sent {
  wire: Uint8Array;
  group: number;
}

function pair(opts: { k?: number; m?: number; timeoutMs?: number; maxGroups?: number } = {}) {
  const wires: Sent[] = [];
  const enc = new FecEncoder({
    dataShards: opts.k ?? 10,
    parityShards: opts.m ?? 3,
    timeoutMs: opts.timeoutMs,
    onDatagram: (w) => wires.push({ wire: w.slice(), group: (w[0] << 8) | w[1] }),
  });
  const got: Uint8Array[] = [];
  const dec = new FecDecoder({ onData: (p) => got.push(p.slice()), maxGroups: opts.maxGroups });
  return { enc, dec, wires, got };
}

Deno.test("fec codec: header format of data and parity datagrams", () => {
  const { enc, wires } = pair({ k: 2, m: 1 });
  enc.send(new Uint8Array([0xaa, 0xbb, 0xcc]), 0);
  assertEquals(wires.length, 1);
  assertEquals(wires[0].wire, new Uint8Array([0, 0, 0, 2, 1, 0xaa, 0xbb, 0xcc]));
  enc.send(new Uint8Array([0x11]), 0);
  assertEquals(wires.length, 3);
  assertEquals(wires[1].wire, new Uint8Array([0, 0, 1, 2, 1, 0x11]));
  const parity = wires[2].wire;
  assertEquals(parity.length, 3 + FEC_PARITY_OVERHEAD);
  assertEquals([...parity.subarray(0, FEC_HEADER_LENGTH)], [0, 0, 2, 2, 1]);
  enc.send(new Uint8Array([1]), 0);
  assertEquals([...wires[3].wire.subarray(0, 5)], [0, 1, 0, 2, 1], "next group is 1");
  assertEquals(enc.stats.dataSent, 3);
  assertEquals(enc.stats.paritySent, 1);
});

Deno.test("fec codec: random loss, reordering and duplicates — each datagram exactly once", () => {
  for (const [k, m, loss] of [[10, 3, 0.1], [20, 10, 0.25], [4, 2, 0.2], [1, 1, 0.3]]) {
    const rand = rng(k * 1000 + m);
    const { enc, dec, wires, got } = pair({ k, m });
    const sent: Uint8Array[] = [];
    let now = 0;
    for (let seq = 0; seq < 2000; seq++) {
      const p = payload(seq, 4 + Math.floor(rand() * 1200));
      sent.push(p);
      enc.send(p, now);
      now += 0.01;
    }
    enc.flush(now + 100);
    // The network: drop, duplicate, then shuffle within a window of 40.
    const delivered: Sent[] = [];
    for (const s of wires) {
      if (rand() < loss) continue;
      delivered.push(s);
      if (rand() < 0.05) delivered.push(s);
    }
    for (let i = delivered.length - 1; i > 0; i--) {
      const j = Math.max(0, i - Math.floor(rand() * 40));
      [delivered[i], delivered[j]] = [delivered[j], delivered[i]];
    }
    // What the decoder can get: a group with ≥ k' distinct datagrams through, or its data.
    const through = new Map<number, Set<number>>();
    for (const s of delivered) {
      const set = through.get(s.group) ?? new Set();
      set.add(s.wire[2]);
      through.set(s.group, set);
    }
    for (const s of delivered) dec.push(s.wire, now);
    const bySeq = new Map<number, Uint8Array>();
    for (const p of got) {
      const seq = seqOf(p);
      assert(!bySeq.has(seq), `seq ${seq} delivered twice (${k}:${m})`);
      bySeq.set(seq, p);
    }
    let expected = 0;
    for (let seq = 0; seq < sent.length; seq++) {
      const group = Math.floor(seq / k);
      const idx = seq % k;
      const arrived = through.get(group);
      const recoverable = arrived !== undefined && arrived.size >= k;
      if (recoverable || arrived?.has(idx)) {
        expected++;
        assertEquals(bySeq.get(seq), sent[seq], `seq ${seq} (${k}:${m})`);
      } else {
        assert(!bySeq.has(seq), `seq ${seq} cannot have arrived`);
      }
    }
    assertEquals(got.length, expected);
    assert(dec.stats.recovered > 0, "loss was recovered");
    assertEquals(dec.stats.dataReceived + dec.stats.recovered, expected);
    assertEquals(dec.stats.malformed, 0);
    assert(dec.stats.duplicates > 0);
  }
});

Deno.test("fec codec: a data datagram is delivered at once, before its group completes", () => {
  const { enc, dec, wires, got } = pair({ k: 5, m: 2 });
  enc.send(payload(1, 50), 0);
  dec.push(wires[0].wire, 0);
  assertEquals(got.length, 1);
  assertEquals(got[0], payload(1, 50));
});

Deno.test("fec codec: recovered datagrams keep their exact length, including empty ones", () => {
  const lens = [0, 1, 1300, 2, 700];
  const { enc, dec, wires, got } = pair({ k: 5, m: 2 });
  const sent = lens.map((n, i) => {
    const p = new Uint8Array(n).fill(i + 1);
    enc.send(p, 0);
    return p;
  });
  assertEquals(wires.length, 7);
  assertEquals(wires[5].wire.length, 1300 + FEC_PARITY_OVERHEAD);
  // Lose the empty one and the longest; keep the rest in reverse order.
  for (const i of [6, 5, 4, 3, 1]) dec.push(wires[i].wire, 0);
  const sorted = [...got].sort((a, b) => a.length - b.length || a[0] - b[0]);
  assertEquals(sorted, [...sent].sort((a, b) => a.length - b.length || a[0] - b[0]));
  assertEquals(dec.stats.recovered, 2);
});

Deno.test("fec codec: garbage and truncated headers are dropped and counted, never thrown", () => {
  const { enc, dec, wires, got } = pair({ k: 3, m: 2 });
  for (let i = 0; i < 3; i++) enc.send(payload(i, 100), 0);
  const rand = rng(42);
  const bad: Uint8Array[] = [
    new Uint8Array(0),
    new Uint8Array([0]),
    new Uint8Array([0, 0, 0, 3]),
    new Uint8Array([0, 9, 0, 0, 1, 5]), // k = 0
    new Uint8Array([0, 9, 7, 3, 2]), // index ≥ k + m
    new Uint8Array([0, 9, 0, 200, 100]), // k + m > 255
    new Uint8Array([0, 9, 3, 3, 2, 1]), // parity of 1 byte (< the 2-byte prefix)
    new Uint8Array(FEC_HEADER_LENGTH + 1501), // data longer than maxPayload
  ];
  for (const b of bad) dec.push(b, 0);
  assertEquals(dec.stats.malformed, bad.length);
  assertEquals(got.length, 0);
  // Random garbage: no throw; then the real stream still decodes.
  for (let i = 0; i < 2000; i++) {
    const b = new Uint8Array(Math.floor(rand() * 40));
    for (let j = 0; j < b.length; j++) b[j] = (rand() * 256) | 0;
    b[0] = 0x80 | b[0]; // keep garbage off group 0
    dec.push(b, 0);
  }
  got.length = 0;
  // Parity inconsistent with the group's data (k grown, other length) is malformed.
  dec.push(wires[0].wire, 0);
  const grown = wires[3].wire.slice();
  grown[3] = 4;
  grown[2] = 4;
  const before = dec.stats.malformed;
  dec.push(grown, 0);
  const shortParity = wires[3].wire.subarray(0, 50);
  dec.push(wires[4].wire, 0);
  dec.push(shortParity, 0);
  assertEquals(dec.stats.malformed, before + 2);
  dec.push(wires[3].wire, 0);
  assertEquals(got.map(seqOf).sort(), [0, 1, 2]);
  for (const p of got) assertEquals(p, payload(seqOf(p), 100));
});

Deno.test("fec codec: flush cuts a timed-out group short and the decoder takes its k'", () => {
  const { enc, dec, wires, got } = pair({ k: 10, m: 4, timeoutMs: 5 });
  enc.send(payload(0, 80), 100);
  enc.send(payload(1, 90), 101);
  enc.send(payload(2, 10), 102);
  assertEquals(enc.deadline(), 105);
  enc.flush(104.9);
  assertEquals(wires.length, 3, "not yet");
  enc.flush(105);
  // k' = 3, m' = ceil(4·3/10) = 2
  assertEquals(wires.length, 5);
  assertEquals([...wires[3].wire.subarray(0, 5)], [0, 0, 3, 3, 2]);
  assertEquals([...wires[4].wire.subarray(0, 5)], [0, 0, 4, 3, 2]);
  assertEquals(enc.deadline(), Infinity);
  assertEquals(enc.stats.groupsFlushed, 1);
  // Lose two data datagrams (headers said k = 10): recovered from the two parity.
  dec.push(wires[1].wire, 0);
  dec.push(wires[4].wire, 0);
  dec.push(wires[3].wire, 0);
  assertEquals(got.map(seqOf).sort(), [0, 1, 2]);
  assertEquals(got.find((p) => seqOf(p) === 2), payload(2, 10));
  // Parity first, then data whose header still says k = 10.
  const got2: Uint8Array[] = [];
  const dec2 = new FecDecoder({ onData: (p) => got2.push(p.slice()) });
  dec2.push(wires[3].wire, 0);
  dec2.push(wires[2].wire, 0);
  dec2.push(wires[0].wire, 0);
  assertEquals(got2.map(seqOf).sort(), [0, 1, 2]);
  assertEquals(dec2.stats.malformed, 0);
  enc.send(payload(3, 10), 200);
  assertEquals(wires[5].group, 1);
});

Deno.test("fec codec: k:m changes between groups, m = 0 sends only the header", () => {
  const { enc, dec, wires, got } = pair({ k: 2, m: 1 });
  enc.send(payload(0, 20), 0);
  enc.setRatio(3, 0); // applies from the next group
  enc.send(payload(1, 20), 0);
  assertEquals(wires.length, 3);
  for (let i = 2; i < 5; i++) enc.send(payload(i, 20), 0);
  assertEquals(wires.length, 6, "no parity at m = 0");
  assertEquals([...wires[3].wire.subarray(0, 5)], [0, 1, 0, 3, 0]);
  assertEquals(wires[3].wire.length, 20 + FEC_HEADER_LENGTH);
  enc.setRatio(4, 4);
  for (let i = 5; i < 9; i++) enc.send(payload(i, 20 + i), 0);
  assertEquals(wires.length, 14);
  assertEquals([...wires[13].wire.subarray(0, 5)], [0, 2, 7, 4, 4]);
  // Group 0 loses one data, group 1 (m = 0) loses one (gone), group 2 loses all data.
  for (const i of [1, 2, 3, 5, 10, 11, 12, 13]) dec.push(wires[i].wire, 0);
  assertEquals(got.map(seqOf).sort((a, b) => a - b), [0, 1, 2, 4, 5, 6, 7, 8]);
  assertEquals(got.find((p) => seqOf(p) === 8), payload(8, 28));
  // m = 0 groups still drop duplicates.
  dec.push(wires[3].wire, 0);
  assertEquals(dec.stats.duplicates, 1);
});

Deno.test("fec codec: groups are forgotten by count and by time; unrecoverable counted", () => {
  const { enc, dec, wires, got } = pair({ k: 4, m: 1, maxGroups: 8 });
  for (let i = 0; i < 4 * 20; i++) enc.send(payload(i, 30), 0);
  // Each group loses data 0 and 1: unrecoverable with m = 1.
  for (const s of wires) if (s.wire[2] >= 2) dec.push(s.wire, 0);
  assert(dec.openGroups <= 8);
  assertEquals(dec.stats.unrecoverableGroups, 20 - 8);
  dec.expire(999);
  assertEquals(dec.openGroups, 8);
  dec.expire(1000);
  assertEquals(dec.openGroups, 0);
  assertEquals(dec.stats.unrecoverableGroups, 20);
  const n = got.length;
  // A late datagram of a forgotten group is stale, not delivered again.
  dec.push(wires[2].wire, 1000);
  assertEquals(dec.stats.stale, 1);
  assertEquals(got.length, n);
  // A new sequence far from the old numbers is accepted.
  const enc2 = new FecEncoder({
    dataShards: 4,
    parityShards: 1,
    firstGroup: 30000,
    onDatagram: (w) => dec.push(w, 1001),
  });
  enc2.send(payload(500, 9), 0);
  assertEquals(seqOf(got[got.length - 1]), 500);
});

Deno.test("fec codec: group numbers wrap at 2^16", () => {
  const { dec, got } = pair();
  let lost = 0;
  const enc = new FecEncoder({
    dataShards: 2,
    parityShards: 1,
    firstGroup: 0xfffe,
    onDatagram: (w) => {
      if (w[2] === 0 && lost++ % 2 === 0) return; // lose every other first datagram
      dec.push(w, 0);
    },
  });
  for (let i = 0; i < 12; i++) enc.send(payload(i, 40), 0);
  assertEquals(enc.group, 4);
  assertEquals(got.map(seqOf).sort((a, b) => a - b), [...Array(12).keys()]);
  assertEquals(dec.stats.stale, 0);
});

Deno.test("fec codec: oversize payloads refused; bad options throw", () => {
  const { enc, wires } = pair();
  assertEquals(enc.send(new Uint8Array(1501), 0), false);
  assertEquals(enc.stats.oversize, 1);
  assertEquals(wires.length, 0);
  assertThrows(() => enc.setRatio(0, 1), RangeError);
  assertThrows(() => enc.setRatio(200, 56), RangeError);
  assertThrows(() => new FecEncoder({ onDatagram: () => {}, maxPayload: 0 }), RangeError);
  assertThrows(() => new FecDecoder({ onData: () => {}, maxGroups: 0 }), RangeError);
});

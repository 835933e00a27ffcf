import { assert, assertEquals } from "../support/assert.ts";
import { prng } from "../support/simnet.ts";
import { RangeSet } from "../../shared/session/ranges.ts";
import { RecvBuffer, SendBuffer } from "../../shared/session/stream.ts";

// ---------------------------------------------------------------- RangeSet

/** Naive model: a set of integers in a small universe. */
class Model {
  bits: boolean[];
  constructor(readonly size: number) {
    this.bits = new Array(size).fill(false);
  }
  add(s: number, e: number): void {
    for (let i = Math.max(0, s); i < Math.min(e, this.size); i++) this.bits[i] = true;
  }
  remove(s: number, e: number): void {
    for (let i = Math.max(0, s); i < Math.min(e, this.size); i++) this.bits[i] = false;
  }
  has(v: number): boolean {
    return v >= 0 && v < this.size && this.bits[v];
  }
  covers(s: number, e: number): boolean {
    for (let i = s; i < e; i++) if (!this.has(i)) return false;
    return true;
  }
  /** Maximal runs as half-open ranges, ascending. */
  runs(): [number, number][] {
    const out: [number, number][] = [];
    for (let i = 0; i < this.size; i++) {
      if (!this.bits[i]) continue;
      let j = i;
      while (j < this.size && this.bits[j]) j++;
      out.push([i, j]);
      i = j;
    }
    return out;
  }
  setRuns(runs: [number, number][]): void {
    this.bits.fill(false);
    for (const [s, e] of runs) this.add(s, e);
  }
}

function runsOf(r: RangeSet): [number, number][] {
  return r.starts.map((s, i) => [s, r.ends[i]]);
}

function checkInvariants(r: RangeSet): void {
  assertEquals(r.starts.length, r.ends.length);
  assertEquals(r.length, r.starts.length);
  assertEquals(r.empty, r.starts.length === 0);
  for (let i = 0; i < r.length; i++) {
    assert(r.starts[i] < r.ends[i], `range ${i} empty or inverted`);
    // Disjoint and not touching (touching ranges must have been merged).
    if (i > 0) assert(r.ends[i - 1] < r.starts[i], `ranges ${i - 1},${i} touch or overlap`);
  }
}

Deno.test("RangeSet: add/remove/has/covers/truncate match a naive model (seeded)", () => {
  const U = 300;
  for (const seed of [1, 2, 3, 4, 5]) {
    const rand = prng(seed);
    const r = new RangeSet();
    const m = new Model(U);
    for (let op = 0; op < 3000; op++) {
      const s = Math.floor(rand() * U);
      const len = rand() < 0.8 ? Math.floor(rand() * 8) : Math.floor(rand() * 60);
      const e = Math.min(U, s + len);
      const x = rand();
      if (x < 0.5) {
        r.add(s, e);
        m.add(s, e);
      } else if (x < 0.9) {
        r.remove(s, e);
        m.remove(s, e);
      } else if (x < 0.95) {
        const max = Math.floor(rand() * 10);
        r.truncate(max);
        const runs = m.runs();
        m.setRuns(runs.slice(Math.max(0, runs.length - max)));
      } else {
        const v = Math.floor(rand() * U);
        r.dropBelow(v);
        m.remove(0, v);
      }
      checkInvariants(r);
      assertEquals(runsOf(r), m.runs(), `seed ${seed} op ${op}`);
      for (let k = 0; k < 4; k++) {
        const v = Math.floor(rand() * U);
        assertEquals(r.has(v), m.has(v), `has(${v})`);
        const cs = Math.floor(rand() * U);
        const ce = Math.min(U, cs + 1 + Math.floor(rand() * 10));
        assertEquals(r.covers(cs, ce), m.covers(cs, ce), `covers(${cs},${ce})`);
      }
    }
  }
});

Deno.test("RangeSet: merging edge cases", () => {
  const r = new RangeSet();
  r.add(10, 20);
  r.add(20, 30); // touching on the right merges
  assertEquals(runsOf(r), [[10, 30]]);
  r.add(5, 10); // touching on the left merges
  assertEquals(runsOf(r), [[5, 30]]);
  r.add(40, 50);
  r.add(60, 70);
  r.add(0, 100); // swallows everything
  assertEquals(runsOf(r), [[0, 100]]);
  r.add(7, 7); // empty: no-op
  r.add(9, 3); // inverted: no-op
  assertEquals(runsOf(r), [[0, 100]]);
  r.remove(40, 60); // split
  assertEquals(runsOf(r), [[0, 40], [60, 100]]);
  r.remove(-5, 0); // nothing there
  r.remove(100, 200);
  assertEquals(runsOf(r), [[0, 40], [60, 100]]);
  assert(r.has(0) && r.has(39) && !r.has(40) && !r.has(59) && r.has(60) && !r.has(100));
  assert(r.covers(0, 40) && !r.covers(0, 41) && !r.covers(39, 61) && r.covers(60, 100));
  r.truncate(1);
  assertEquals(runsOf(r), [[60, 100]]);
  r.truncate(5); // fewer than max: unchanged
  assertEquals(runsOf(r), [[60, 100]]);
  r.clear();
  assert(r.empty && !r.has(60));
  // Large packet-number-like values.
  r.add(2 ** 52 - 10, 2 ** 52);
  assert(r.has(2 ** 52 - 1) && !r.has(2 ** 52));
});

// --------------------------------------------------------------- SendBuffer

function seq(start: number, len: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (start + i) * 31 & 0xff);
}

function bufLen(s: SendBuffer): number {
  return s.capacity;
}

Deno.test("SendBuffer: write is bounded by the limit and room returns as the prefix is acked", () => {
  const s = new SendBuffer(100_000);
  assertEquals(s.room, 100_000);
  assertEquals(s.write(seq(0, 60_000)), 60_000);
  assertEquals(s.write(seq(60_000, 60_000)), 40_000, "only the room is taken");
  assertEquals(s.room, 0);
  assertEquals(s.write(seq(0, 1)), 0, "full: nothing taken");
  assertEquals(s.buffered, 100_000);
  assertEquals(s.writeOffset, 100_000);
  // Acknowledging a range above the prefix frees nothing.
  s.nextSend = 100_000;
  s.onAcked(50_000, 60_000);
  assertEquals(s.ackedPrefix, 0);
  assertEquals(s.room, 0);
  // Acknowledging the prefix frees it, and merges with the range above.
  s.onAcked(0, 50_000);
  assertEquals(s.ackedPrefix, 60_000);
  assertEquals(s.room, 60_000);
  assert(s.acked.empty);
  // Writing after the prefix moved keeps the bytes addressable by absolute offset.
  assertEquals(s.write(seq(100_000, 60_000)), 60_000);
  assertEquals(s.view(60_000, 40_000), seq(60_000, 40_000));
  assertEquals(s.view(100_000, 60_000), seq(100_000, 60_000));
  assertEquals(s.writeOffset, 160_000);
});

Deno.test("SendBuffer: grows from empty, keeps content across chunks as the prefix is acknowledged", () => {
  const s = new SendBuffer(1 << 20);
  assertEquals(bufLen(s), 0, "starts with no memory");
  s.write(seq(0, 10));
  assert(bufLen(s) >= 10 && bufLen(s) <= 65536, "one chunk at first");
  const rand = prng(3);
  let w = 10;
  let acked = 0;
  for (let i = 0; i < 400; i++) {
    const n = Math.floor(rand() * 9000);
    w += s.write(seq(w, n));
    assert(s.buffered <= 1 << 20);
    // Ack some prefix now and then (as if sent).
    s.nextSend = w;
    if (rand() < 0.5) {
      const upTo = acked + Math.floor(rand() * (w - acked));
      s.onAcked(acked, upTo);
      acked = upTo;
    }
    assertEquals(s.ackedPrefix, acked);
    // Everything still buffered is intact.
    const from = acked + Math.floor(rand() * (w - acked));
    const len = Math.min(w - from, 2000);
    assertEquals(s.view(from, len), seq(from, len), `iter ${i}`);
    assert(bufLen(s) <= 2 << 20, "buffer never exceeds twice the limit");
  }
});

Deno.test("SendBuffer: fully acknowledged large buffer gives its memory back", () => {
  const s = new SendBuffer(1 << 20);
  s.write(seq(0, 500_000));
  assert(bufLen(s) >= 500_000);
  s.nextSend = 500_000;
  s.onAcked(0, 250_000);
  assertEquals(s.ackedPrefix, 250_000);
  assert(bufLen(s) >= 250_000, "unacknowledged bytes stay held");
  assert(bufLen(s) <= 250_000 + 2 * 65536, "acknowledged chunks are freed as the prefix passes");
  s.onAcked(250_000, 500_000);
  assertEquals(s.ackedPrefix, 500_000);
  assertEquals(s.buffered, 0);
  assertEquals(bufLen(s), 0, "memory released when idle");
  // Still usable afterwards.
  assertEquals(s.write(seq(500_000, 100)), 100);
  assertEquals(s.view(500_000, 100), seq(500_000, 100));
});

Deno.test("SendBuffer: onAcked out of order, overlapping and duplicate", () => {
  const s = new SendBuffer(1 << 20);
  s.write(seq(0, 10_000));
  s.nextSend = 10_000;
  s.onAcked(8000, 9000);
  s.onAcked(2000, 3000);
  s.onAcked(2500, 8500); // overlaps both
  assertEquals(s.ackedPrefix, 0);
  assertEquals(runsOf(s.acked), [[2000, 9000]]);
  s.onAcked(0, 2000);
  assertEquals(s.ackedPrefix, 9000);
  assert(s.acked.empty);
  s.onAcked(0, 5000); // duplicate below the prefix: no-op
  s.onAcked(4000, 9500); // straddles the prefix
  assertEquals(s.ackedPrefix, 9500);
  assert(s.acked.empty);
});

Deno.test("SendBuffer: onLost skips parts already acknowledged; ack clears lost", () => {
  const s = new SendBuffer(1 << 20);
  s.write(seq(0, 10_000));
  s.nextSend = 10_000;
  s.onAcked(0, 1000);
  s.onAcked(3000, 4000);
  s.onAcked(6000, 6500);
  s.onLost(0, 8000);
  assertEquals(runsOf(s.lost), [[1000, 3000], [4000, 6000], [6500, 8000]]);
  assert(s.hasPending);
  // A late ack of a lost range removes it from the retransmit queue.
  s.onAcked(1000, 2000);
  assertEquals(runsOf(s.lost), [[2000, 3000], [4000, 6000], [6500, 8000]]);
  assertEquals(s.ackedPrefix, 2000);
  // Loss wholly below the prefix is ignored.
  s.onLost(0, 2000);
  assertEquals(runsOf(s.lost), [[2000, 3000], [4000, 6000], [6500, 8000]]);
  // Everything acked: nothing pending.
  s.onAcked(0, 10_000);
  assert(s.lost.empty);
  assertEquals(s.ackedPrefix, 10_000);
  assert(!s.hasPending);
});

Deno.test("SendBuffer: hasPending tracks unsent bytes; discard drops everything", () => {
  const s = new SendBuffer(50_000);
  assert(!s.hasPending);
  s.write(seq(0, 40_000));
  assert(s.hasPending);
  s.nextSend = 30_000; // 30k sent, 10k unsent
  s.onAcked(0, 5000);
  s.onAcked(10_000, 12_000);
  s.onLost(5000, 10_000);
  s.discard();
  assert(!s.hasPending, "nothing to send after discard");
  assert(s.lost.empty && s.acked.empty);
  assertEquals(s.writeOffset, 30_000, "final size is what was sent");
  assertEquals(s.ackedPrefix, 30_000);
  assertEquals(s.buffered, 0);
  assertEquals(s.room, 50_000);
  assertEquals(bufLen(s), 0);
});

// --------------------------------------------------------------- RecvBuffer

function readAll(r: RecvBuffer, chunk = 1000): Uint8Array {
  const parts: number[] = [];
  const out = new Uint8Array(chunk);
  for (;;) {
    const n = r.read(out);
    if (n === 0) break;
    for (let i = 0; i < n; i++) parts.push(out[i]);
  }
  return Uint8Array.from(parts);
}

Deno.test("RecvBuffer: in-order segments read back in order, partial reads", () => {
  const r = new RecvBuffer();
  const data = seq(0, 5000);
  assertEquals(r.insert(0, data.subarray(0, 1000)), 1000);
  assertEquals(r.insert(1000, data.subarray(1000, 3000)), 2000);
  assertEquals(r.readable, 3000);
  const out = new Uint8Array(700);
  assertEquals(r.read(out), 700);
  assertEquals(out, data.subarray(0, 700));
  assertEquals(r.readOffset, 700);
  assertEquals(r.insert(3000, data.subarray(3000)), 2000);
  assertEquals(readAll(r, 333), data.subarray(700));
  assertEquals(r.readOffset, 5000);
  assertEquals(r.readable, 0);
  assert(!r.finished, "no final size yet");
  r.finalSize = 5000;
  assert(r.finished);
});

Deno.test("RecvBuffer: insert copies its input", () => {
  const r = new RecvBuffer();
  const a = seq(0, 100);
  const b = seq(100, 100);
  r.insert(100, b); // out of order: stored pending
  r.insert(0, a); // in order
  a.fill(0);
  b.fill(0);
  assertEquals(readAll(r), seq(0, 200));
});

Deno.test("RecvBuffer: out-of-order, overlapping and duplicate segments reassemble", () => {
  const r = new RecvBuffer();
  const d = seq(0, 100);
  assertEquals(r.insert(50, d.subarray(50, 60)), 60, "highest grew to 60");
  assertEquals(r.readable, 0);
  assertEquals(r.insert(55, d.subarray(55, 70)), 10, "overlap extends highest");
  assertEquals(r.insert(50, d.subarray(50, 60)), 0, "duplicate");
  assertEquals(r.insert(52, d.subarray(52, 58)), 0, "contained");
  assertEquals(r.insert(80, d.subarray(80, 100)), 30);
  assertEquals(r.highest, 100);
  assertEquals(r.insert(0, d.subarray(0, 52)), 0);
  assertEquals(r.contiguous, 70);
  assertEquals(readAll(r), d.subarray(0, 70));
  assertEquals(r.insert(60, d.subarray(60, 85)), 0, "fills the gap and overlaps both sides");
  assertEquals(r.contiguous, 100);
  assertEquals(readAll(r), d.subarray(70, 100));
  // Old data after reading is ignored.
  assertEquals(r.insert(0, d.subarray(0, 100)), 0);
  assertEquals(r.readable, 0);
});

Deno.test("RecvBuffer: random segmentation, random order, duplicates read back identical", () => {
  for (const seed of [11, 12, 13, 14, 15, 16, 17, 18]) {
    const rand = prng(seed);
    const size = 1 + Math.floor(rand() * 60_000);
    const data = Uint8Array.from({ length: size }, () => Math.floor(rand() * 256));
    // Random segmentation, plus extra overlapping segments and duplicates.
    const segs: [number, number][] = [];
    for (let off = 0; off < size;) {
      const len = Math.min(size - off, 1 + Math.floor(rand() * 1500));
      segs.push([off, off + len]);
      off += len;
    }
    const base = segs.length;
    for (let i = 0; i < base / 2; i++) {
      const s = Math.floor(rand() * size);
      segs.push([s, Math.min(size, s + 1 + Math.floor(rand() * 3000))]);
    }
    for (let i = 0; i < base / 3; i++) segs.push(segs[Math.floor(rand() * segs.length)]);
    // Shuffle (Fisher-Yates).
    for (let i = segs.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [segs[i], segs[j]] = [segs[j], segs[i]];
    }
    const r = new RecvBuffer();
    const got: number[] = [];
    const out = new Uint8Array(1 + Math.floor(rand() * 4000));
    let grewTotal = 0;
    for (const [s, e] of segs) {
      grewTotal += r.insert(s, data.subarray(s, e));
      assert(r.contiguous <= r.highest);
      // Read interleaved with arrivals.
      if (rand() < 0.3) {
        const n = r.read(out);
        for (let i = 0; i < n; i++) got.push(out[i]);
      }
    }
    assertEquals(grewTotal, size, "highest grew by exactly the stream size in total");
    assertEquals(r.highest, size);
    assertEquals(r.contiguous, size);
    for (const b of readAll(r, 777)) got.push(b);
    assertEquals(Uint8Array.from(got), data, `seed ${seed}`);
    r.finalSize = size;
    assert(r.finished);
  }
});

function pendingBytes(r: RecvBuffer): number {
  const p = (r as unknown as { pending: { data: Uint8Array }[] }).pending;
  return p.reduce((a, s) => a + s.data.length, 0);
}

Deno.test("RecvBuffer: overlapping out-of-order segments are stored at most once", () => {
  // A misbehaving peer re-sends overlapping 1000-byte segments at descending
  // offsets above a gap. Memory must stay bounded by the span received
  // (so by the stream window), not grow with the bytes the peer sends.
  const r = new RecvBuffer();
  const d = seq(0, 4000);
  for (let off = 2000; off >= 10; off--) r.insert(off, d.subarray(off, off + 1000));
  assertEquals(r.highest, 3000);
  assert(pendingBytes(r) <= 3000 - 10, `pending holds ${pendingBytes(r)} bytes for a 2990 span`);
  // Random overlapping segments over a window: stored bytes <= span, always.
  const rand = prng(8);
  const r2 = new RecvBuffer();
  const big = seq(0, 100_000);
  for (let i = 0; i < 3000; i++) {
    const s = 1 + Math.floor(rand() * 98_000);
    const e = Math.min(100_000, s + 1 + Math.floor(rand() * 1400));
    r2.insert(s, big.subarray(s, e));
    assert(pendingBytes(r2) <= r2.highest - r2.contiguous, `iteration ${i}`);
  }
  // And it still reassembles exactly once the gap at 0 fills.
  r2.insert(0, big.subarray(0, 100_000));
  assertEquals(readAll(r2, 4096), big);
  r.insert(0, d.subarray(0, 10));
  assertEquals(readAll(r), d.subarray(0, 3000));
});

Deno.test("RecvBuffer: finished and finalSize", () => {
  const r = new RecvBuffer();
  assertEquals(r.finalSize, -1);
  assert(!r.finished);
  // An empty stream (FIN at 0) is finished at once.
  r.finalSize = 0;
  assert(r.finished);
  const r2 = new RecvBuffer();
  r2.insert(0, seq(0, 10));
  r2.finalSize = 10;
  assert(!r2.finished, "not finished until everything was read");
  r2.read(new Uint8Array(4));
  assert(!r2.finished);
  r2.read(new Uint8Array(10));
  assert(r2.finished);
});

Deno.test("RecvBuffer: discard reports unread bytes for flow-control accounting", () => {
  const r = new RecvBuffer();
  r.insert(0, seq(0, 1000));
  r.insert(3000, seq(3000, 500)); // gap 1000..3000
  r.read(new Uint8Array(400));
  assertEquals(r.highest, 3500);
  // Unread = everything up to the highest offset not read: 3500 - 400.
  assertEquals(r.discard(), 3100);
  assertEquals(r.readable, 0);
  assertEquals(r.readOffset, 3500);
  assertEquals(r.contiguous, 3500);
  assertEquals(r.read(new Uint8Array(10)), 0);
  // Late data below the discard point is dropped and does not count.
  assertEquals(r.insert(1000, seq(1000, 2000)), 0);
  assertEquals(r.readable, 0);
  assertEquals(r.discard(), 0);
  // Data beyond it counts toward `highest` growth.
  assertEquals(r.insert(3500, seq(3500, 100)), 100);
});

Deno.test("RecvBuffer: many tiny reads and segments (ready queue compaction)", () => {
  const r = new RecvBuffer();
  const data = seq(0, 20_000);
  const one = new Uint8Array(1);
  const got: number[] = [];
  for (let off = 0; off < 20_000; off += 10) {
    r.insert(off, data.subarray(off, off + 10));
    // Read a bit less than arrives so the ready list both grows and drains.
    for (let k = 0; k < 9; k++) if (r.read(one) === 1) got.push(one[0]);
  }
  for (const b of readAll(r, 3)) got.push(b);
  assertEquals(Uint8Array.from(got), data);
});

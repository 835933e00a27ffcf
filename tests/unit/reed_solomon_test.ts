import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { ReedSolomon } from "../../shared/fec/reed_solomon.ts";
import { mul } from "../../shared/fec/gf256.ts";

/** Deterministic xorshift32 generator. */
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

function randomShards(n: number, len: number, rand: () => number): Uint8Array[] {
  return Array.from({ length: n }, () => {
    const s = new Uint8Array(len);
    for (let i = 0; i < len; i++) s[i] = (rand() * 256) | 0;
    return s;
  });
}

/** Encodes random data; returns all k+m shards. */
function codeword(rs: ReedSolomon, len: number, rand: () => number): Uint8Array[] {
  const data = randomShards(rs.data, len, rand);
  const parity = Array.from({ length: rs.parity }, () => new Uint8Array(len));
  rs.encode(data, parity, len);
  return [...data, ...parity];
}

/** Every subset of {0..n-1} of size ≤ max, as index arrays. */
function subsets(n: number, max: number): number[][] {
  const out: number[][] = [];
  const rec = (from: number, cur: number[]) => {
    out.push([...cur]);
    if (cur.length === max) return;
    for (let i = from; i < n; i++) rec(i + 1, [...cur, i]);
  };
  rec(0, []);
  return out;
}

function checkErasures(rs: ReedSolomon, full: Uint8Array[], erased: number[], len: number) {
  const shards: (Uint8Array | null)[] = full.map((s) => s.slice());
  for (const e of erased) shards[e] = null;
  assert(rs.reconstruct(shards, len), `reconstruct failed for [${erased}]`);
  for (let i = 0; i < full.length; i++) {
    assertEquals(shards[i], full[i], `shard ${i} after erasing [${erased}]`);
  }
}

Deno.test("reed-solomon: parity is the Cauchy combination of the data", () => {
  const rs = new ReedSolomon(3, 2);
  const data = [new Uint8Array([1, 0]), new Uint8Array([0, 1]), new Uint8Array([5, 7])];
  const parity = [new Uint8Array(2), new Uint8Array(2)];
  rs.encode(data, parity, 2);
  for (let i = 0; i < 2; i++) {
    for (let b = 0; b < 2; b++) {
      let want = 0;
      for (let j = 0; j < 3; j++) want ^= mul(rs.coefficient(i, j), data[j][b]);
      assertEquals(parity[i][b], want);
    }
    for (let j = 0; j < 3; j++) assert(rs.coefficient(i, j) !== 0);
  }
});

Deno.test("reed-solomon: every erasure pattern up to m for small codes", () => {
  const rand = rng(1);
  for (const [k, m] of [[1, 1], [1, 3], [2, 2], [3, 2], [4, 3], [5, 4], [6, 2], [8, 4]]) {
    const rs = new ReedSolomon(k, m);
    for (const len of [1, 7, 64]) {
      const full = codeword(rs, len, rand);
      for (const erased of subsets(k + m, m)) checkErasures(rs, full, erased, len);
    }
  }
});

Deno.test("reed-solomon: random erasure patterns for 10:3 and 20:10 at 1200 bytes", () => {
  const rand = rng(7);
  for (const [k, m] of [[10, 3], [20, 10]]) {
    const rs = new ReedSolomon(k, m);
    for (let trial = 0; trial < 60; trial++) {
      const full = codeword(rs, 1200, rand);
      const count = 1 + Math.floor(rand() * m);
      const erased = new Set<number>();
      while (erased.size < count) erased.add(Math.floor(rand() * (k + m)));
      checkErasures(rs, full, [...erased], 1200);
    }
    // All parity lost, and all data lost when m ≥ k would allow it: the first m data.
    checkErasures(rs, codeword(rs, 100, rand), Array.from({ length: m }, (_, i) => k + i), 100);
    checkErasures(rs, codeword(rs, 100, rand), Array.from({ length: m }, (_, i) => i), 100);
  }
});

Deno.test("reed-solomon: the largest code, 1:254 and 128:127", () => {
  const rand = rng(3);
  for (const [k, m] of [[1, 254], [128, 127]]) {
    const rs = new ReedSolomon(k, m);
    const full = codeword(rs, 16, rand);
    checkErasures(rs, full, Array.from({ length: m }, (_, i) => i * 2 % (k + m)), 16);
  }
});

Deno.test("reed-solomon: too many erasures → false and nothing changes", () => {
  const rand = rng(5);
  const rs = new ReedSolomon(4, 2);
  const full = codeword(rs, 32, rand);
  const shards: (Uint8Array | null)[] = full.map((s) => s.slice());
  shards[0] = shards[3] = shards[5] = null;
  assertEquals(rs.reconstruct(shards, 32), false);
  assertEquals(shards[0], null);
  assertEquals(shards[3], null);
  assertEquals(shards[1], full[1]);
  const bufs = full.map((s) => s.slice());
  assertEquals(rs.reconstructInto(bufs, [0, 0, 1, 1, 0, 1], 32), false);
  assertEquals(bufs, full);
});

Deno.test("reed-solomon: lengths — only the first length bytes, longer buffers, ragged shards", () => {
  const rand = rng(9);
  const rs = new ReedSolomon(3, 2);
  const data = randomShards(3, 40, rand);
  const parity = [new Uint8Array(40).fill(0xaa), new Uint8Array(40).fill(0xaa)];
  rs.encode(data, parity, 30);
  assertEquals(parity[0].subarray(30), new Uint8Array(10).fill(0xaa), "beyond length untouched");
  // Ragged: shard j read as zero beyond lengths[j].
  const lengths = [30, 5, 0];
  const padded = data.map((d, j) => {
    const p = new Uint8Array(30);
    p.set(d.subarray(0, lengths[j]));
    return p;
  });
  const p1 = [new Uint8Array(30), new Uint8Array(30)];
  const p2 = [new Uint8Array(30).fill(9), new Uint8Array(30).fill(9)];
  rs.encode(padded, p1, 30);
  rs.encode(data, p2, 30, lengths);
  assertEquals(p2, p1);
  // reconstructInto with dataOnly leaves missing parity buffers alone.
  const shards = [...padded.map((s) => s.slice()), ...p1.map((s) => s.slice())];
  shards[1].fill(0);
  shards[4].fill(0x77);
  assert(rs.reconstructInto(shards, [1, 0, 1, 1, 0], 30, true));
  assertEquals(shards[1], padded[1]);
  assertEquals(shards[4], new Uint8Array(30).fill(0x77));
  // Length 0 works.
  const z: (Uint8Array | null)[] = [new Uint8Array(0), null, new Uint8Array(0), null, null];
  assertEquals(rs.reconstruct(z, 0), false);
  z[3] = new Uint8Array(0);
  assert(rs.reconstruct(z, 0));
});

Deno.test("reed-solomon: the decode cache gives the same answers on repeats", () => {
  const rand = rng(11);
  const rs = new ReedSolomon(10, 3);
  for (let t = 0; t < 300; t++) {
    const full = codeword(rs, 24, rand);
    checkErasures(rs, full, [t % 13, (t * 7 + 1) % 13], 24);
  }
});

Deno.test("reed-solomon: misuse throws RangeError", () => {
  assertThrows(() => new ReedSolomon(0, 1), RangeError);
  assertThrows(() => new ReedSolomon(1, 0), RangeError);
  assertThrows(() => new ReedSolomon(200, 56), RangeError);
  assertThrows(() => new ReedSolomon(1.5, 1), RangeError);
  const rs = new ReedSolomon(2, 1);
  assertThrows(() => rs.encode([new Uint8Array(4)], [new Uint8Array(4)], 4), RangeError);
  assertThrows(
    () => rs.encode([new Uint8Array(4), new Uint8Array(3)], [new Uint8Array(4)], 4),
    RangeError,
  );
  assertThrows(() => rs.reconstruct([null, null], 4), RangeError);
  assertThrows(
    () => rs.reconstruct([new Uint8Array(2), null, new Uint8Array(4)], 4),
    RangeError,
  );
});

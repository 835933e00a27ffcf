import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import {
  div,
  EXP,
  inv,
  LOG,
  mul,
  MUL_TABLE,
  mulAddRow,
  mulRow,
  pow,
} from "../../shared/fec/gf256.ts";

/** Carry-less multiplication reduced by 0x11d, bit by bit: the oracle. */
function slowMul(a: number, b: number): number {
  let r = 0;
  for (let i = 0; i < 8; i++) {
    if (b & (1 << i)) r ^= a << i;
  }
  for (let bit = 15; bit >= 8; bit--) if (r & (1 << bit)) r ^= 0x11d << (bit - 8);
  return r;
}

Deno.test("gf256: exp/log tables form a cyclic group of order 255", () => {
  const seen = new Set<number>();
  for (let i = 0; i < 255; i++) seen.add(EXP[i]);
  assertEquals(seen.size, 255);
  assert(!seen.has(0));
  for (let a = 1; a < 256; a++) assertEquals(EXP[LOG[a]], a);
  assertEquals(EXP[255], 1);
  assertEquals(EXP[8], 0x1d); // 2^8 = x^4 + x^3 + x^2 + 1
});

Deno.test("gf256: mul, the table, div and inv agree with the bitwise oracle", () => {
  for (let a = 0; a < 256; a++) {
    for (let b = 0; b < 256; b++) {
      const p = slowMul(a, b);
      if (mul(a, b) !== p || MUL_TABLE[(a << 8) | b] !== p) {
        throw new Error(`mul(${a}, ${b}) wrong`);
      }
      if (b !== 0 && div(p, b) !== a) throw new Error(`div(${p}, ${b}) wrong`);
    }
    if (a !== 0) assertEquals(mul(a, inv(a)), 1);
  }
  assertThrows(() => div(1, 0), RangeError);
  assertThrows(() => inv(0), RangeError);
  assertEquals(pow(2, 8), 0x1d);
  assertEquals(pow(7, 0), 1);
  assertEquals(pow(0, 3), 0);
  assertEquals(pow(3, 255), 1);
});

Deno.test("gf256: mulAddRow and mulRow match bytewise mul at every alignment and range", () => {
  const buf = new ArrayBuffer(4096);
  for (const coef of [0, 1, 2, 0x53, 0x8e, 255]) {
    for (const dOff of [0, 1, 2, 3, 4]) {
      for (const sOff of [0, 1, 3, 4]) {
        for (const [start, end] of [[0, 0], [0, 3], [0, 17], [5, 64], [2, 1203], [0, 1200]]) {
          const src = new Uint8Array(buf, 2048 + sOff, 1210);
          for (let i = 0; i < src.length; i++) src[i] = (i * 37 + coef + 11) & 255;
          const dst = new Uint8Array(buf, dOff, 1210);
          for (let i = 0; i < dst.length; i++) dst[i] = (i * 101 + 7) & 255;
          const before = dst.slice();
          mulAddRow(dst, src, coef, start, end);
          for (let i = 0; i < dst.length; i++) {
            const want = i >= start && i < end ? before[i] ^ slowMul(coef, src[i]) : before[i];
            if (dst[i] !== want) throw new Error(`mulAddRow c=${coef} ${dOff}/${sOff} at ${i}`);
          }
          mulRow(dst, src, coef, start, end);
          for (let i = 0; i < dst.length; i++) {
            const want = i >= start && i < end ? slowMul(coef, src[i]) : before[i];
            if (dst[i] !== want) throw new Error(`mulRow c=${coef} ${dOff}/${sOff} at ${i}`);
          }
        }
      }
    }
  }
});

Deno.test("gf256: rows default to the shorter array and work in place", () => {
  const a = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
  const b = new Uint8Array(10).fill(3);
  mulAddRow(b, a, 2);
  assertEquals(b, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((x) => 3 ^ slowMul(2, x))));
  const c = a.slice();
  mulRow(c, c, 0x1d);
  assertEquals(c, a.map((x) => slowMul(0x1d, x)));
});

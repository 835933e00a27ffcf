import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { AdaptiveParity, binomialTail, parityFor } from "../../shared/fec/adaptive.ts";

/** P[X > m] by the direct sum of C(n, i) p^i (1-p)^(n-i), for small n. */
function slowTail(n: number, m: number, p: number): number {
  let sum = 0;
  for (let i = m + 1; i <= n; i++) {
    let c = 1;
    for (let j = 0; j < i; j++) c = (c * (n - j)) / (j + 1);
    sum += c * p ** i * (1 - p) ** (n - i);
  }
  return sum;
}

Deno.test("adaptive: binomialTail matches the direct sum", () => {
  for (const n of [1, 2, 5, 13, 30]) {
    for (let m = -1; m <= n; m++) {
      for (const p of [0, 1e-4, 0.01, 0.1, 0.5, 0.9, 1]) {
        const got = binomialTail(n, m, p);
        const want = m < 0 ? 1 : slowTail(n, m, p);
        assert(Math.abs(got - want) <= 1e-12 + want * 1e-9, `n=${n} m=${m} p=${p}: ${got} ${want}`);
      }
    }
  }
  assertEquals(binomialTail(3, 1, 0.5), 0.5);
  // Tiny tails are not lost to cancellation.
  const t = binomialTail(255, 3, 1e-4);
  assert(t > 1e-8 && t < 2e-8, String(t));
});

Deno.test("adaptive: parityFor is 0 on a clean path and the least m meeting the target", () => {
  assertEquals(parityFor(0, 10), 0);
  assertEquals(parityFor(0.0049, 10), 0);
  assertEquals(parityFor(NaN, 10), 0);
  for (const k of [1, 4, 10, 20]) {
    let last = 0;
    for (const p of [0.005, 0.01, 0.02, 0.05, 0.1, 0.15]) {
      const m = parityFor(p, k);
      assert(m >= last, "non-decreasing in the loss rate");
      last = m;
      const cap = Math.min(k, 32);
      if (m < cap) {
        assert(binomialTail(k + m, m, p) <= 1e-3, `k=${k} p=${p} m=${m} meets the target`);
        if (m > 1) assert(binomialTail(k + m - 1, m - 1, p) > 1e-3, `m=${m} is the least`);
      }
    }
  }
  assertEquals(parityFor(0.05, 10), 4);
  assertEquals(parityFor(0.1, 20), 9);
});

Deno.test("adaptive: caps — m ≤ k, ≤ maxParity, k + m ≤ 255", () => {
  assertEquals(parityFor(0.5, 10), 10);
  assertEquals(parityFor(0.9, 3), 3);
  assertEquals(parityFor(0.5, 40, 1e-3, 0.005, 8), 8);
  assertEquals(parityFor(0.5, 250, 1e-3, 0.005, 100), 5);
  assertEquals(parityFor(0.5, 10, 1e-3, 0.005, 0), 0);
});

Deno.test("adaptive: rises at once, falls only after a held, clear drop", () => {
  const a = new AdaptiveParity();
  assertEquals(a.parityFor(10), 0);
  a.update(0.05);
  assertEquals(a.parityFor(10), 4);
  // Wobbling within 1.5× never lowers it.
  for (const p of [0.04, 0.035, 0.045, 0.034, 0.04, 0.036]) {
    a.update(p);
    assertEquals(a.parityFor(10), 4);
  }
  // Two low measurements then one in the band: the count restarts.
  a.update(0.01);
  a.update(0.01);
  a.update(0.04);
  assertEquals(a.effectiveLoss, 0.05);
  // Three clear drops: falls to the highest of them.
  a.update(0.01);
  a.update(0.02);
  a.update(0.015);
  assertEquals(a.effectiveLoss, 0.02);
  assertEquals(a.parityFor(10), parityFor(0.02, 10));
  // A rise is taken at once.
  a.update(0.1);
  assertEquals(a.parityFor(10), parityFor(0.1, 10));
});

Deno.test("adaptive: no flapping around the clean threshold", () => {
  const a = new AdaptiveParity();
  a.update(0.006);
  assert(a.parityFor(10) > 0);
  const seen = new Set<number>();
  for (let i = 0; i < 50; i++) {
    a.update(i % 2 ? 0.0045 : 0.0055);
    seen.add(a.parityFor(10));
  }
  assertEquals([...seen], [parityFor(0.006, 10)], "stays on");
  for (let i = 0; i < 3; i++) a.update(0.001);
  assertEquals(a.parityFor(10), 0, "off after a clear drop");
  for (let i = 0; i < 10; i++) a.update(0.0045);
  assertEquals(a.parityFor(10), 0, "below the threshold stays off");
});

Deno.test("adaptive: bad measurements are clamped or ignored; bad options throw", () => {
  const a = new AdaptiveParity();
  a.update(NaN);
  assertEquals(a.effectiveLoss, 0);
  a.update(-1);
  assertEquals(a.effectiveLoss, 0);
  a.update(7);
  assertEquals(a.effectiveLoss, 1);
  assertEquals(a.parityFor(10), 10);
  assertThrows(() => new AdaptiveParity({ target: 0 }), RangeError);
  assertThrows(() => new AdaptiveParity({ holdUpdates: 0 }), RangeError);
  assertThrows(() => new AdaptiveParity({ fallFactor: 0.5 }), RangeError);
  assertThrows(() => new AdaptiveParity({ maxParity: -1 }), RangeError);
});

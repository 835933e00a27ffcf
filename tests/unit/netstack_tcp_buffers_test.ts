/** The TCP rings and range sets (shared/netstack/tcp/ring.ts, ranges.ts). */
import { assert, assertEquals } from "../support/assert.ts";
import { ByteRing } from "../../shared/netstack/tcp/ring.ts";
import { RangeSet } from "../../shared/netstack/tcp/ranges.ts";

Deno.test("ByteRing: append, wrap, out-of-order writes, reads", () => {
  const r = new ByteRing(8);
  assertEquals(r.append(new Uint8Array([1, 2, 3, 4, 5, 6])), 6);
  const o = new Uint8Array(4);
  assertEquals(r.read(o), 4);
  assertEquals([...o], [1, 2, 3, 4]);
  assertEquals(r.append(new Uint8Array([7, 8, 9, 10, 11, 12, 13])), 6, "bounded by free");
  assertEquals(r.free, 0);
  const all = new Uint8Array(8);
  r.copyOut(r.start, 8, all, 0);
  assertEquals([...all], [5, 6, 7, 8, 9, 10, 11, 12]);
  r.consumeTo(r.start + 5);
  r.writeAt(r.end + 2, new Uint8Array([99, 98]));
  const x = new Uint8Array(2);
  r.copyOut(r.end + 2, 2, x, 0);
  assertEquals([...x], [99, 98]);
});

Deno.test("RangeSet: merge, bound, trim, SACK 'last'", () => {
  const s = new RangeSet(3);
  assert(s.add(10, 20));
  assert(s.add(30, 40));
  assert(s.add(50, 60));
  assertEquals(s.last, 2);
  assert(!s.add(70, 80), "full");
  assert(s.add(20, 30), "merge fills");
  assertEquals(s.count, 2);
  assertEquals([s.start(0), s.end(0)], [10, 40]);
  assertEquals(s.last, 0);
  assertEquals(s.total, 40);
  assert(s.contains(39) && !s.contains(40));
  assertEquals(s.coveredIn(35, 55), 10);
  s.trimBelow(15);
  assertEquals([s.start(0), s.end(0)], [15, 40]);
  s.trimBelow(45);
  assertEquals(s.count, 1);
  assertEquals(s.firstEndingAfter(0), 0);
  assert(s.add(0, 100));
  assertEquals(s.count, 1);
});

/**
 * Figures for `PrefixTable` (shared/net/cidr.ts): build time, heap growth and
 * ns per longest-prefix lookup with 100,000 random prefixes (half IPv4, half
 * IPv6, lengths spread like real rule sets), against lookups that hit deep
 * prefixes and random addresses that mostly miss.
 *
 * Run: `deno run --allow-all --v8-flags=--expose-gc tests/bench/cidr_bench.ts [count]`
 * (`--expose-gc` makes the heap figure steadier; it runs without it too).
 * @module
 */

import { maskPrefix, type Prefix, PrefixTable } from "../../shared/net/cidr.ts";

const COUNT = Number(Deno.args[0] ?? 100_000);
const LOOKUPS = 1_000_000;

/** xorshift32, seeded: the same tables every run. */
function rng(seed: number): () => number {
  let s = seed | 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}
const rand = rng(0x5eed);

function randomAddress(v4: boolean): Uint8Array {
  const a = new Uint8Array(16);
  if (v4) {
    a[10] = 0xff;
    a[11] = 0xff;
    new DataView(a.buffer).setUint32(12, rand());
  } else {
    const dv = new DataView(a.buffer);
    dv.setUint32(0, 0x20000000 | (rand() & 0x1fffffff)); // 2000::/3, global unicast
    for (let i = 4; i < 16; i += 4) dv.setUint32(i, rand());
  }
  return a;
}

/** IPv4 lengths 8..32 weighted to /16../24; IPv6 /16../64 weighted to /32../48, some /128. */
function randomPrefix(v4: boolean): Prefix {
  const r = rand() % 100;
  const len = v4
    ? (r < 70 ? 16 + (rand() % 9) : r < 90 ? 8 + (rand() % 8) : 25 + (rand() % 8))
    : (r < 70 ? 32 + (rand() % 17) : r < 95 ? 16 + (rand() % 49) : 128);
  return maskPrefix(randomAddress(v4), v4 ? len + 96 : len);
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/** Best and median ns/lookup over 7 rounds (the best is the figure on a busy machine). */
function run(
  table: PrefixTable<number>,
  addrs: Uint8Array[],
): { best: number; median: number; found: number } {
  let found = 0;
  const mask = addrs.length - 1;
  for (let i = 0; i < 200_000; i++) if (table.lookup(addrs[i & mask]) !== undefined) found++;
  const rounds: number[] = [];
  for (let r = 0; r < 7; r++) {
    found = 0;
    const t = performance.now();
    for (let i = 0; i < LOOKUPS; i++) if (table.lookup(addrs[i & mask]) !== undefined) found++;
    rounds.push(((performance.now() - t) * 1e6) / LOOKUPS);
  }
  rounds.sort((a, b) => a - b);
  return { best: rounds[0], median: rounds[3], found };
}

const mib = (n: number) => (n / 1048576).toFixed(1);

/** Builds a table of COUNT prefixes (`v4Share` of them IPv4) and prints its figures. */
function measure(label: string, v4Share: number): void {
  const prefixes: Prefix[] = [];
  for (let i = 0; i < COUNT; i++) prefixes.push(randomPrefix(rand() % 100 < v4Share * 100));

  gc();
  const mem0 = Deno.memoryUsage();
  const t0 = performance.now();
  const table = new PrefixTable<number>();
  for (let i = 0; i < prefixes.length; i++) table.insert(prefixes[i], i);
  const insertMs = performance.now() - t0;
  table.lookup(prefixes[0].addr); // the deferred jump-table rebuild
  const buildMs = performance.now() - t0;
  gc();
  const mem1 = Deno.memoryUsage();

  // Hits: an address inside a stored prefix (random host bits); random: any address.
  const hits: Uint8Array[] = [];
  const randoms: Uint8Array[] = [];
  for (let i = 0; i < 4096; i++) {
    const p = prefixes[rand() % prefixes.length];
    const a = randomAddress(p.addr[10] === 0xff);
    for (let b = 0; b < p.bits; b++) {
      const byte = b >> 3;
      const m = 0x80 >> (b & 7);
      a[byte] = (a[byte] & ~m) | (p.addr[byte] & m);
    }
    hits.push(a);
    randoms.push(randomAddress(rand() % 100 < v4Share * 100));
  }
  const hit = run(table, hits);
  const miss = run(table, randoms);
  console.log(`PrefixTable, ${COUNT} prefixes (${label}), ${table.size} distinct`);
  console.log(
    `  build          ${buildMs.toFixed(1)} ms (inserts ${insertMs.toFixed(1)} ms, ` +
      `${((insertMs * 1e6) / COUNT).toFixed(0)} ns each, then the jump-table rebuild)`,
  );
  console.log(
    `  memory delta   ${mib(mem1.heapUsed - mem0.heapUsed)} MiB JS heap + ` +
      `${mib(mem1.external - mem0.external)} MiB typed arrays, garbage of growth included ` +
      `(live node array and jump table: ${mib(table.nodeBytes)} MiB)`,
  );
  for (const [name, r] of [["hit   ", hit], ["random", miss]] as const) {
    console.log(
      `  lookup ${name}  best ${r.best.toFixed(1)} ns, median ${r.median.toFixed(1)} ns ` +
        `(${((r.found / LOOKUPS) * 100).toFixed(0)}% matched)`,
    );
  }
}

measure("half IPv4, half IPv6", 0.5);
measure("IPv4 only", 1);

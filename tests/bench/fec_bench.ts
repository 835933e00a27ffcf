/**
 * Throughput of the forward error correction core (`shared/fec/`) at
 * 1,200-byte shards, 10:3 and 20:10:
 * - Reed-Solomon encode and reconstruct in pure TypeScript, in MB/s of data
 *   shards (reconstruct with `m` data shards lost, the worst case; once
 *   with one recurring loss pattern, whose inverse is cached, and once with
 *   a random pattern and a cold cache each time, matrix inversion included);
 * - the datagram codec: {@link FecEncoder} send and {@link FecDecoder} push
 *   with 10 % loss, in MB/s of payload;
 * - for comparison, two WebAssembly builds of the Rust `reed-solomon-erasure`
 *   crate from npm (`@subspace/reed-solomon-erasure.wasm` and
 *   `@digitaldefiance/reed-solomon-erasure.wasm`, pinned), when they can be
 *   loaded (they are fetched from the npm registry on first use).
 *
 * Run: `deno run -A --no-lock tests/bench/fec_bench.ts` (`--no-lock`
 * keeps the WASM package out of `deno.lock`).
 * @module
 */

import { ReedSolomon } from "../../shared/fec/reed_solomon.ts";
import { FecDecoder, FecEncoder } from "../../shared/fec/fec_codec.ts";

/**
 * The WASM packages, pinned; imported through a variable so `deno check`
 * does not fetch them. The second one's `fromCurrentDirectory` fetches a
 * relative URL, which fails in Deno, so its WASM file is read beside the
 * module `import.meta.resolve` finds.
 */
const WASM_PACKAGES = [
  "npm:@subspace/reed-solomon-erasure.wasm@0.2.5",
  "npm:@digitaldefiance/reed-solomon-erasure.wasm@1.0.2",
];
const SHARD = 1200;
const CODES: [number, number][] = [[10, 3], [20, 10]];
const SECONDS = Number(Deno.env.get("OSTP_BENCH_FEC_SECONDS") ?? 0.5);

/** Runs `fn` (which processes `bytes` bytes per call) for about SECONDS; MB/s. */
function measure(bytes: number, fn: () => void): number {
  for (let i = 0; i < 50; i++) fn(); // warm up
  let calls = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < SECONDS * 1000) {
    for (let i = 0; i < 20; i++) fn();
    calls += 20;
    t = performance.now();
  }
  return (calls * bytes) / ((t - t0) / 1000) / 1e6;
}

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
  return b;
}

/** Deterministic xorshift32 in [0, 1). */
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

interface Row {
  what: string;
  code: string;
  mbps: number;
}

function benchTypeScript(rows: Row[]): void {
  for (const [k, m] of CODES) {
    const code = `${k}:${m}`;
    const rs = new ReedSolomon(k, m);
    const data = Array.from({ length: k }, () => randomBytes(SHARD));
    const parity = Array.from({ length: m }, () => new Uint8Array(SHARD));
    rows.push({
      what: "TS encode",
      code,
      mbps: measure(k * SHARD, () => rs.encode(data, parity, SHARD)),
    });

    const shards = [...data.map((d) => d.slice()), ...parity.map((p) => p.slice())];
    const present = new Uint8Array(k + m).fill(1);
    for (let i = 0; i < m; i++) present[i] = 0; // lose the first m data shards
    rows.push({
      what: "TS reconstruct (cached)",
      code,
      mbps: measure(k * SHARD, () => {
        if (!rs.reconstructInto(shards, present, SHARD, true)) throw new Error("failed");
      }),
    });
    for (let i = 0; i < m; i++) {
      if (shards[i].some((b, j) => b !== data[i][j])) throw new Error("wrong reconstruction");
    }
    const rand = rng(k);
    rows.push({
      what: "TS reconstruct (uncached)",
      code,
      mbps: measure(k * SHARD, () => {
        present.fill(1);
        let lost = 0;
        while (lost < m) {
          const i = Math.floor(rand() * k);
          if (present[i]) {
            present[i] = 0;
            lost++;
          }
        }
        const fresh = new ReedSolomon(k, m); // a cold decode-matrix cache
        if (!fresh.reconstructInto(shards, present, SHARD, true)) throw new Error("failed");
      }),
    });
  }
}

function benchCodec(rows: Row[]): void {
  for (const [k, m] of CODES) {
    const code = `${k}:${m}`;
    const payload = randomBytes(SHARD);
    const enc = new FecEncoder({
      dataShards: k,
      parityShards: m,
      onDatagram: () => {},
    });
    rows.push({ what: "codec send", code, mbps: measure(SHARD, () => enc.send(payload, 0)) });

    // A recorded stream of 100 groups with 10 % loss, replayed into fresh decoders.
    const wires: Uint8Array[] = [];
    const rec = new FecEncoder({
      dataShards: k,
      parityShards: m,
      firstGroup: 0,
      onDatagram: (w) => wires.push(w.slice()),
    });
    for (let i = 0; i < 100 * k; i++) rec.send(payload, 0);
    const rand = rng(99);
    const kept = wires.filter(() => rand() >= 0.1);
    let delivered = 0;
    const mbps = measure(100 * k * SHARD, () => {
      const dec = new FecDecoder({ onData: () => delivered++ });
      for (const w of kept) dec.push(w, 0);
    });
    if (delivered === 0) throw new Error("nothing decoded");
    rows.push({ what: "codec receive, 10% loss", code, mbps });
  }
}

/** The WASM package's API as used here. */
interface WasmRs {
  encode(shards: Uint8Array, dataShards: number, parityShards: number): number;
  reconstruct(
    shards: Uint8Array,
    dataShards: number,
    parityShards: number,
    available: boolean[],
  ): number;
}

async function loadWasm(pkg: string): Promise<WasmRs> {
  const mod = await import(pkg);
  try {
    return await mod.ReedSolomonErasure.fromCurrentDirectory();
  } catch {
    const wasm = new URL("./reed_solomon_erasure_bg.wasm", import.meta.resolve(pkg));
    return mod.ReedSolomonErasure.fromBytes(await Deno.readFile(wasm));
  }
}

async function benchWasm(rows: Row[], pkg: string): Promise<string> {
  let rs: WasmRs;
  try {
    rs = await loadWasm(pkg);
  } catch (e) {
    return `${pkg} not loaded: ${(e as Error).message}`;
  }
  const label = pkg.includes("subspace") ? "WASM subspace" : "WASM digitaldefiance";
  for (const [k, m] of CODES) {
    const code = `${k}:${m}`;
    const buf = new Uint8Array((k + m) * SHARD);
    buf.set(randomBytes(k * SHARD));
    rows.push({
      what: `${label} encode`,
      code,
      mbps: measure(k * SHARD, () => {
        if (rs.encode(buf, k, m) !== 0) throw new Error("wasm encode failed");
      }),
    });
    const orig = buf.slice();
    const available = Array.from({ length: k + m }, (_, i) => i >= m);
    rows.push({
      what: `${label} reconstruct`,
      code,
      mbps: measure(k * SHARD, () => {
        if (rs.reconstruct(buf, k, m, available) !== 0) throw new Error("wasm reconstruct failed");
      }),
    });
    if (buf.some((b, i) => b !== orig[i])) throw new Error("wrong wasm reconstruction");
  }
  return `${label}: ${pkg} (copies the contiguous shard buffer into its memory per call)`;
}

/** Measures and prints the FEC figures (MB/s of data at 1,200-byte shards). */
export async function runFecCodecBench(): Promise<void> {
  const rows: Row[] = [];
  benchTypeScript(rows);
  benchCodec(rows);
  const notes: string[] = [];
  // The WASM packages are not in deno.lock (they lost: they are no dependency of ours), so
  // `deno task bench` measures them only when asked, run with --no-lock.
  if (import.meta.main || Deno.env.get("OSTP_BENCH_FEC_WASM") === "1") {
    for (const pkg of WASM_PACKAGES) notes.push(await benchWasm(rows, pkg));
  } else {
    notes.push(
      "WASM packages not measured here: deno run -A --no-lock tests/bench/fec_bench.ts " +
        "(README Performance has the last figures)",
    );
  }
  console.log(
    `\nFEC, ${SHARD}-byte shards, MB/s of data (${Deno.build.arch}, Deno ${Deno.version.deno})`,
  );
  for (const r of rows) {
    console.log(
      `  ${r.what.padEnd(34)} ${r.code.padStart(5)}  ${r.mbps.toFixed(0).padStart(6)} MB/s`,
    );
  }
  for (const n of notes) console.log(`  ${n}`);
}

if (import.meta.main) await runFecCodecBench();

/**
 * Router rule engine with large rule sets: 100,000 domain suffixes plus
 * 100,000 CIDRs (generated deterministically), behind the `exclude` block and
 * a few small rules. Reports the load time (config validation, then router
 * compilation), the heap and RSS the loaded router keeps, and nanoseconds per
 * `decide()` for domain and IP targets that hit the big sets and that miss.
 * Run alone with `deno run -A tests/bench/router.ts`, or from `deno task bench`.
 * Sizes: `OSTP_BENCH_ROUTER_DOMAINS`, `OSTP_BENCH_ROUTER_CIDRS` (default 100000).
 * @module
 */

import v8 from "node:v8";
import vm from "node:vm";
import { parseRoutingConfig } from "../../client/router/config.ts";
import type { FlowContext } from "../../client/router/flow.ts";
import { Router } from "../../client/router/rules.ts";

const DOMAINS = Number(Deno.env.get("OSTP_BENCH_ROUTER_DOMAINS") ?? 100_000);
const CIDRS = Number(Deno.env.get("OSTP_BENCH_ROUTER_CIDRS") ?? 100_000);
const SAMPLES = 8192; // flows per kind, cycled through
const CALLS = 2_000_000; // decide() calls timed per kind

/** xorshift32: the same sets on every run. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

const TLDS = ["com", "net", "org", "io", "cn", "ru", "de", "co.uk", "info", "xyz"];
const SYLLABLES = ["ka", "lo", "mi", "tra", "zen", "qu", "ex", "por", "vin", "da", "net", "go"];

function domainSuffixes(n: number, next: () => number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    let w = "";
    for (let k = 2 + (next() % 3); k > 0; k--) w += SYLLABLES[next() % SYLLABLES.length];
    // Some entries are subdomains of others' shapes: two or three labels.
    const sub = next() % 8 === 0 ? `cdn${next() % 100}.` : "";
    out.push(`${sub}${w}${i.toString(36)}.${TLDS[next() % TLDS.length]}`);
  }
  return out;
}

/** IPv4 /12../28 (90%) and IPv6 /32../64 (10%) prefixes, host bits clear, as text. */
function cidrs(n: number, next: () => number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    if (next() % 10 !== 0) {
      const len = 12 + (next() % 17);
      const a = (next() & (len === 32 ? -1 : ~(-1 >>> len))) >>> 0;
      out.push(`${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}/${len}`);
    } else {
      const len = 32 + (next() % 33);
      const g = [0x2001, next() & 0xffff, next() & 0xffff, next() & 0xffff];
      const keep = len - 16; // bits of g[1..3] kept
      for (let j = 1; j < 4; j++) {
        const bits = Math.max(0, Math.min(16, keep - 16 * (j - 1)));
        g[j] &= bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
      }
      out.push(`${g.map((x) => x.toString(16)).join(":")}::/${len}`);
    }
  }
  return out;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A flow to `host`, the host a flat string as an inbound's parser makes it (not a rope). */
function flow(host: string, port = 443): FlowContext {
  return {
    inbound: "proxy",
    network: "tcp",
    target: { host: decoder.decode(encoder.encode(host)), port },
  };
}

/** An address inside CIDR `c` (text), with random host bits. */
function inside(c: string, next: () => number): string {
  const [addr, lenText] = c.split("/");
  const len = Number(lenText);
  if (addr.includes(":")) {
    const groups = addr.replace("::", "").split(":").filter((x) => x !== "").map((x) =>
      parseInt(x, 16)
    );
    while (groups.length < 8) groups.push(0);
    groups[7] = next() & 0xffff; // below any /64
    return groups.map((x) => x.toString(16)).join(":");
  }
  const p = addr.split(".").map(Number);
  const base = ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
  const host = len >= 32 ? 0 : next() & (-1 >>> len);
  const a = (base | host) >>> 0;
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

function timeDecide(router: Router, flows: FlowContext[]): number {
  let sink = 0;
  const mask = flows.length - 1;
  for (let i = 0; i < 200_000; i++) sink += router.decide(flows[i & mask]).rule;
  const t0 = performance.now();
  for (let i = 0; i < CALLS; i++) sink += router.decide(flows[i & mask]).rule;
  const t1 = performance.now();
  if (sink === 0.5) console.log(sink); // keep the loop
  return ((t1 - t0) * 1e6) / CALLS;
}

function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

/** Builds the big rule set, prints load time, memory and ns per decide(). */
export async function benchRouter(): Promise<void> {
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  const next = rng(0x05792026);
  const suffixes = domainSuffixes(DOMAINS, next);
  const prefixes = cidrs(CIDRS, next);
  const raw = {
    exclude: {
      domains: ["trusted-site.com", "local.lan"],
      ips: ["192.168.1.0/24", "10.0.0.0/8"],
      processes: ["discord.exe", "steam.exe"],
    },
    rules: [
      { port: 25, outbound: "block" },
      { domainSuffix: suffixes, outbound: "direct" },
      { ip: prefixes, outbound: "direct" },
      { domain: ["ads.example"], network: "udp", outbound: "block" },
    ],
  };
  gc();
  await new Promise((r) => setTimeout(r, 0));
  gc();
  const m0 = Deno.memoryUsage();
  const t0 = performance.now();
  const cfg = parseRoutingConfig(raw);
  const t1 = performance.now();
  let router: Router | null = new Router(cfg);
  const t2 = performance.now();
  gc();
  const m1 = Deno.memoryUsage();

  const dHit: FlowContext[] = [];
  const dMiss: FlowContext[] = [];
  const ipHit: FlowContext[] = [];
  const ipMiss: FlowContext[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    dHit.push(flow(`www.${suffixes[next() % suffixes.length]}`));
    dMiss.push(flow(`host${i}.nomatch${next() % 1000}.example`));
    ipHit.push(flow(inside(prefixes[next() % prefixes.length], next)));
  }
  while (ipMiss.length < SAMPLES) {
    const a = next();
    const f = flow(`${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`);
    if (router.decide(f, false).rule === -1) ipMiss.push(f);
  }
  const check = (flows: FlowContext[], rule: number, what: string) => {
    for (const f of flows) {
      const d = router!.decide(f, false);
      if (d.rule !== rule && !(rule === 5 && d.rule === 3)) {
        throw new Error(`${what}: ${f.target.host} took rule ${d.rule}`);
      }
    }
  };
  // exclude: rules 0..2; port 25: 3; suffixes: 4; CIDRs: 5 (or exclude.ips: 1).
  check(dHit, 4, "domain hit");
  check(dMiss, -1, "domain miss");
  for (const f of ipHit) {
    const r = router.decide(f, false).rule;
    if (r !== 5 && r !== 1) throw new Error(`ip hit: ${f.target.host} took rule ${r}`);
  }

  const rows: [string, number][] = [
    ["domain target, suffix hit", timeDecide(router, dHit)],
    ["domain target, miss (default)", timeDecide(router, dMiss)],
    ["IP literal target, CIDR hit", timeDecide(router, ipHit)],
    ["IP literal target, miss (default)", timeDecide(router, ipMiss)],
  ];
  const { domains, prefixes: nPrefixes } = router.sizes;
  console.log(
    `router: ${DOMAINS} domain suffixes + ${CIDRS} CIDRs (${domains} domain entries, ` +
      `${nPrefixes} distinct prefixes)`,
  );
  console.log(
    `  load: validate ${(t1 - t0).toFixed(0)} ms + compile ${(t2 - t1).toFixed(0)} ms = ${
      (t2 - t0).toFixed(0)
    } ms`,
  );
  console.log(
    `  memory kept (config + router, after GC): heap +${mib(m1.heapUsed - m0.heapUsed)}, ` +
      `RSS +${mib(m1.rss - m0.rss)}`,
  );
  for (const [what, ns] of rows) {
    console.log(`  decide(): ${what.padEnd(34)} ${ns.toFixed(0).padStart(5)} ns/lookup`);
  }
  router = null;
}

if (import.meta.main) await benchRouter();

/**
 * The client router's rule engine: compiled rules and the {@link Router} that
 * picks an outbound for a flow. Pure and synchronous; no I/O, no clock.
 *
 * Rules are tried in order and the first that matches wins; when none does,
 * the flow takes the default outbound. A rule matches when every matcher kind
 * it has matches (AND); the values of one kind are alternatives (OR). The
 * domain kind is `domain` (exact names) and `domainSuffix` together.
 *
 * Large sets stay fast: every rule's names go into one {@link DomainSet} and
 * every rule's CIDRs into one {@link PrefixTable}, each entry mapped to the
 * sorted list of rules it belongs to (a prefix's list also holds the rules of
 * every shorter prefix that contains it, so one longest-prefix lookup finds
 * them all). `decide()` looks the name up once (O(labels)) and the address once
 * (O(prefix length)), marks the rules found, and then checks in index order
 * only those candidates and the rules that have neither kind, stopping at the
 * first full match. It allocates nothing.
 *
 * Resolution: a rule with IP matchers matches only a flow whose address is
 * known (a literal target or {@link FlowContext.ip}); it never matches an
 * unresolved host name. When such a rule was passed over and resolving could
 * change the answer, the decision says `needsIp` (docs/routing.md).
 * @module
 */

import { DomainSet } from "./domain_set.ts";
import type { FlowContext, Network, RouteDecision } from "./flow.ts";
import { parseIpInto, type Prefix, PrefixTable } from "../../shared/net/cidr.ts";

/** An inclusive range of ports; a single port has `from === to`. */
export interface PortRange {
  /** First port, 1..65535. */
  from: number;
  /** Last port, `from`..65535. */
  to: number;
}

/** The matchers of one rule; absent kinds match anything, at least one is present. */
export interface RuleMatch {
  /** Exact domain names, normalized (lowercase ASCII, no trailing dot). */
  domain?: string[];
  /** Domain suffixes on label boundaries, normalized. */
  domainSuffix?: string[];
  /** Prefixes of the destination address (`shared/net/cidr.ts`). */
  ip?: Prefix[];
  /** Destination ports and port ranges. */
  port?: PortRange[];
  /** Only this transport. */
  network?: Network;
  /** Names of the inbounds the flow may come from. */
  inbound?: string[];
  /** Process names as configured; both sides are compared through {@link normalizeProcessName}. */
  process?: string[];
}

/** One compiled rule. */
export interface Rule {
  /** Where it came from, for messages and stats: `exclude.domains`, `rules[3]`. */
  label: string;
  /** What the flow must look like. */
  match: RuleMatch;
  /** Name of the outbound a matching flow takes. */
  outbound: string;
}

/** How the client treats host names when IP rules exist (docs/routing.md, "Resolution"). */
export type ResolveMode = "never" | "onDemand";

/** What a {@link Router} is built from (a `RoutingConfig` from `config.ts` fits). */
export interface RouterSpec {
  /** The rules in order, the `exclude` rules first. */
  rules: readonly Rule[];
  /** Outbound of flows no rule matches. */
  defaultOutbound: string;
  /**
   * `never` (default): decisions are final, host names are never resolved for
   * routing. `onDemand`: a decision with `needsIp` is provisional; the caller
   * resolves the name and calls {@link Router.decide} again.
   */
  resolve?: ResolveMode;
}

/** Hit count of one rule, for the stats. */
export interface RuleHits {
  /** Rule index; -1 for the default outbound. */
  rule: number;
  /** The rule's label, `default` for the default outbound. */
  label: string;
  /** Its outbound. */
  outbound: string;
  /** Flows it decided since the router was built. */
  hits: number;
}

/**
 * Normalizes a process name for matching: the file name after the last `/`
 * or `\`, ASCII lowercase, one trailing `.exe` removed — so `Discord.exe`,
 * `discord.exe` and `discord` are the same name, and `curl` in a rule matches
 * `curl.exe` on Windows.
 */
export function normalizeProcessName(name: string): string {
  const cut = Math.max(name.lastIndexOf("/"), name.lastIndexOf("\\"));
  let s = (cut >= 0 ? name.substring(cut + 1) : name).toLowerCase();
  if (s.length > 4 && s.endsWith(".exe")) s = s.substring(0, s.length - 4);
  return s;
}

const K_DOMAIN = 1;
const K_IP = 2;
const K_PORT = 4;
const K_NETWORK = 8;
const K_INBOUND = 16;
const K_PROCESS = 32;

const NET_TCP = 1;
const NET_UDP = 2;

/** Sorted unique rule indexes, shared between entries with the same list. */
type RuleList = Int32Array;

/** Interns rule lists so that 100,000 entries of one rule share one array. */
class ListInterner {
  #lists = new Map<string, RuleList>();
  #ones: RuleList[] = [];
  /** The list holding only rule `r`. */
  one(r: number): RuleList {
    return this.#ones[r] ??= Int32Array.of(r);
  }
  /** The list holding `rules` (sorted, unique). */
  get(rules: readonly number[]): RuleList {
    if (rules.length === 1) return this.one(rules[0]);
    const key = rules.join(",");
    let l = this.#lists.get(key);
    if (!l) {
      l = Int32Array.from(rules);
      this.#lists.set(key, l);
    }
    return l;
  }
}

/** Sorted union of two sorted unique lists. */
function union(a: readonly number[], b: ArrayLike<number>): number[] {
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = i < a.length ? a[i] : Infinity;
    const y = j < b.length ? b[j] : Infinity;
    if (x <= y) {
      out.push(x);
      i++;
      if (x === y) j++;
    } else {
      out.push(y);
      j++;
    }
  }
  return out;
}

/** Merged, sorted port ranges as pairs `[from0, to0, from1, to1, ...]`. */
function compilePorts(ranges: readonly PortRange[]): Int32Array {
  const s = [...ranges].sort((a, b) => a.from - b.from);
  const out: number[] = [];
  for (const r of s) {
    const n = out.length;
    if (n > 0 && r.from <= out[n - 1] + 1) out[n - 1] = Math.max(out[n - 1], r.to);
    else out.push(r.from, r.to);
  }
  return Int32Array.from(out);
}

/** Whether `port` lies in one of the merged ranges (binary search). */
function inRanges(r: Int32Array, port: number): boolean {
  let lo = 0;
  let hi = (r.length >> 1) - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (port < r[2 * mid]) hi = mid - 1;
    else if (port > r[2 * mid + 1]) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Every (prefix, rule) pair of the rules' IP matchers, in rule order. */
class PrefixRules {
  prefixes: Prefix[] = [];
  rules: number[] = [];

  /** Records that rule `rule` lists `prefix`. */
  add(prefix: Prefix, rule: number): void {
    this.prefixes.push(prefix);
    this.rules.push(rule);
  }
}

/**
 * One longest-prefix table for every rule's prefixes. Each prefix maps to the
 * rules of every stored prefix that contains it (itself included), so one
 * lookup finds all the rules whose IP matchers match an address. Computed in
 * address order (shorter prefix first on ties) with a stack of nested
 * prefixes, then inserted: no lookups while building.
 */
function buildPrefixTable(pairs: PrefixRules, lists: ListInterner): PrefixTable<RuleList> {
  const n = pairs.prefixes.length;
  const words = new Uint32Array(4 * n);
  const bits = new Uint8Array(n);
  const rules = Int32Array.from(pairs.rules);
  for (let i = 0; i < n; i++) {
    const p = pairs.prefixes[i];
    const a = p.addr;
    for (let w = 0; w < 4; w++) {
      const j = 4 * w;
      words[4 * i + w] = (a[j] << 24) | (a[j + 1] << 16) | (a[j + 2] << 8) | a[j + 3];
    }
    bits[i] = p.bits;
  }
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((x, y) => {
    for (let w = 0; w < 4; w++) {
      const d = words[4 * x + w] - words[4 * y + w];
      if (d !== 0) return d;
    }
    return bits[x] - bits[y] || rules[x] - rules[y];
  });
  const same = (x: number, y: number) =>
    bits[x] === bits[y] && words[4 * x] === words[4 * y] &&
    words[4 * x + 1] === words[4 * y + 1] && words[4 * x + 2] === words[4 * y + 2] &&
    words[4 * x + 3] === words[4 * y + 3];
  /** Whether prefix `outer` contains prefix `inner`. */
  const contains = (outer: number, inner: number) => {
    let b = bits[outer];
    if (bits[inner] < b) return false;
    for (let w = 0; w < 4 && b > 0; w++, b -= 32) {
      const mask = b >= 32 ? 0xffffffff : ~(0xffffffff >>> b);
      if (((words[4 * outer + w] ^ words[4 * inner + w]) & mask) !== 0) return false;
    }
    return true;
  };
  const table = new PrefixTable<RuleList>(Math.max(64, 2 * n));
  const stack: number[] = []; // indexes of nested prefixes
  const stackLists: RuleList[] = [];
  const own: number[] = [];
  for (let k = 0; k < n;) {
    const cur = order[k];
    own.length = 0;
    for (; k < n && same(order[k], cur); k++) {
      const r = rules[order[k]];
      if (own[own.length - 1] !== r) own.push(r);
    }
    while (stack.length > 0 && !contains(stack[stack.length - 1], cur)) {
      stack.pop();
      stackLists.pop();
    }
    const outer = stackLists.length > 0 ? stackLists[stackLists.length - 1] : undefined;
    const list = lists.get(outer === undefined ? own : union(own, outer));
    table.insert(pairs.prefixes[cur], list);
    stack.push(cur);
    stackLists.push(list);
  }
  return table;
}

/**
 * Picks an outbound for each flow from an ordered rule list. Build a new one
 * on reload (that also resets the hit counters).
 */
export class Router {
  /** The rules, in evaluation order. */
  readonly rules: readonly Rule[];
  /** Outbound of flows no rule matches. */
  readonly defaultOutbound: string;
  /** Whether `needsIp` decisions are provisional (see {@link RouterSpec.resolve}). */
  readonly resolve: ResolveMode;
  /** Flows decided per rule, by rule index. */
  readonly hits: Float64Array;
  /** Flows that took the default outbound. */
  defaultHits = 0;

  readonly #kinds: Uint8Array;
  readonly #nets: Uint8Array;
  readonly #ports: (Int32Array | null)[];
  readonly #inbounds: (Set<string> | null)[];
  readonly #processes: (Set<string> | null)[];
  /** Rules with neither domain nor IP matchers, in order. */
  readonly #plain: Int32Array;
  /** Rules with IP matchers, in order. */
  readonly #ipRules: Int32Array;
  readonly #domains: DomainSet<RuleList>;
  readonly #prefixes: PrefixTable<RuleList>;
  /** Per rule, the epoch in which its domain (resp. IP) matcher matched. */
  readonly #domainMark: Uint32Array;
  readonly #ipMark: Uint32Array;
  #epoch = 0;
  /** Scratch for {@link DomainSet.collect}. */
  readonly #found: RuleList[] = [];
  /** Scratch for a parsed literal address. */
  readonly #addr = new Uint8Array(16);
  /** Scratch for a 4-byte IPv4 `ctx.ip`, mapped (bytes 10 and 11 are 0xff). */
  readonly #mapped = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0);
  /** Decisions by rule index + 1 (0: the default), final and with `needsIp`. */
  readonly #final: RouteDecision[];
  readonly #provisional: RouteDecision[];
  /** Last process name seen and its normalized form. */
  #procRaw = "";
  #procKey = "";

  /** Compiles `spec`; its rules must be valid (as `config.ts` produces them). */
  constructor(spec: RouterSpec) {
    const rules = spec.rules;
    const n = rules.length;
    this.rules = rules;
    this.defaultOutbound = spec.defaultOutbound;
    this.resolve = spec.resolve ?? "never";
    this.hits = new Float64Array(n);
    this.#kinds = new Uint8Array(n);
    this.#nets = new Uint8Array(n);
    this.#ports = new Array(n).fill(null);
    this.#inbounds = new Array(n).fill(null);
    this.#processes = new Array(n).fill(null);
    this.#domainMark = new Uint32Array(n);
    this.#ipMark = new Uint32Array(n);
    const plain: number[] = [];
    const ipRules: number[] = [];
    const lists = new ListInterner();
    const domains = new DomainSet<RuleList>();
    const pairs = new PrefixRules();
    const addDomain = (name: string, mode: "exact" | "suffix", r: number) => {
      const had = domains.get(name, mode);
      if (had === undefined) domains.add(name, mode, lists.one(r));
      else if (had[had.length - 1] !== r) domains.add(name, mode, lists.get([...had, r]));
    };
    for (let r = 0; r < n; r++) {
      const m = rules[r].match;
      let k = 0;
      if (m.domain?.length || m.domainSuffix?.length) {
        k |= K_DOMAIN;
        for (const d of m.domain ?? []) addDomain(d, "exact", r);
        for (const d of m.domainSuffix ?? []) addDomain(d, "suffix", r);
      }
      if (m.ip?.length) {
        k |= K_IP;
        ipRules.push(r);
        for (const prefix of m.ip) pairs.add(prefix, r);
      }
      if (m.port?.length) {
        k |= K_PORT;
        this.#ports[r] = compilePorts(m.port);
      }
      if (m.network) {
        k |= K_NETWORK;
        this.#nets[r] = m.network === "tcp" ? NET_TCP : NET_UDP;
      }
      if (m.inbound?.length) {
        k |= K_INBOUND;
        this.#inbounds[r] = new Set(m.inbound);
      }
      if (m.process?.length) {
        k |= K_PROCESS;
        this.#processes[r] = new Set(m.process.map(normalizeProcessName));
      }
      if ((k & (K_DOMAIN | K_IP)) === 0) plain.push(r);
      this.#kinds[r] = k;
    }
    this.#plain = Int32Array.from(plain);
    this.#ipRules = Int32Array.from(ipRules);
    this.#domains = domains;
    this.#prefixes = buildPrefixTable(pairs, lists);
    const decision = (rule: number, needsIp: boolean): RouteDecision =>
      Object.freeze({
        rule,
        outbound: rule < 0 ? spec.defaultOutbound : rules[rule].outbound,
        needsIp,
      });
    this.#final = Array.from({ length: n + 1 }, (_, i) => decision(i - 1, false));
    this.#provisional = Array.from({ length: n + 1 }, (_, i) => decision(i - 1, true));
  }

  /** Number of distinct domain entries and of distinct prefixes compiled. */
  get sizes(): { domains: number; prefixes: number } {
    return { domains: this.#domains.size, prefixes: this.#prefixes.size };
  }

  /**
   * Decides where the flow goes. The returned object is shared and frozen.
   * Counts a hit for the rule (or the default) unless `record` is false or
   * the decision is provisional (`needsIp` with `resolve: "onDemand"`: the
   * caller resolves the name, sets `ctx.ip` and asks again).
   */
  decide(ctx: FlowContext, record = true): RouteDecision {
    const n = this.rules.length;
    let epoch = this.#epoch + 1;
    if (epoch > 0xfffffff0) {
      this.#domainMark.fill(0);
      this.#ipMark.fill(0);
      epoch = 1;
    }
    this.#epoch = epoch;
    const host = ctx.target.host;
    let ip: Uint8Array | undefined = ctx.ip;
    if (ip !== undefined && ip.length === 4) {
      const m = this.#mapped; // IPv4 as 4 bytes: as ::ffff:a.b.c.d
      m[12] = ip[0];
      m[13] = ip[1];
      m[14] = ip[2];
      m[15] = ip[3];
      ip = m;
    } else if (ip !== undefined && ip.length !== 16) ip = undefined;
    let isName = true;
    if (looksLikeIp(host) && parseIpInto(host, this.#addr) !== 0) {
      isName = false;
      if (ip === undefined) ip = this.#addr;
    }
    // A flow that arrived as an address may be known by a name (DNS answers, sniffing).
    const domain = ctx.domain ?? (isName ? host : undefined);
    // Mark the rules whose domain or IP matchers match, then check candidates.
    const found = this.#found;
    const count = domain !== undefined && this.#domains.size > 0
      ? this.#domains.collect(domain, found)
      : 0;
    for (let i = 0; i < count; i++) {
      const list = found[i];
      for (let j = 0; j < list.length; j++) this.#domainMark[list[j]] = epoch;
    }
    const ipList = ip !== undefined && this.#ipRules.length > 0
      ? this.#prefixes.lookup(ip)
      : undefined;
    if (ipList !== undefined) {
      for (let j = 0; j < ipList.length; j++) this.#ipMark[ipList[j]] = epoch;
    }
    let best = n;
    for (let i = 0; i < count; i++) best = this.#firstMatch(found[i], best, ctx, ip, epoch);
    if (ipList !== undefined) best = this.#firstMatch(ipList, best, ctx, ip, epoch);
    best = this.#firstMatch(this.#plain, best, ctx, ip, epoch);
    let needsIp = false;
    if (ip === undefined) {
      const outbound = best < n ? this.rules[best].outbound : this.defaultOutbound;
      const ipRules = this.#ipRules;
      for (let i = 0; i < ipRules.length && ipRules[i] < best; i++) {
        const r = ipRules[i];
        if (this.rules[r].outbound !== outbound && this.#passes(r, ctx, undefined, epoch, true)) {
          needsIp = true;
          break;
        }
      }
    }
    const slot = best === n ? 0 : best + 1;
    const d = needsIp ? this.#provisional[slot] : this.#final[slot];
    if (record && (!needsIp || this.resolve === "never")) {
      if (best === n) this.defaultHits++;
      else this.hits[best]++;
    }
    return d;
  }

  /** The hit counters: every rule in order, then the default (`rule: -1`). */
  stats(): RuleHits[] {
    const out: RuleHits[] = this.rules.map((r, i) => ({
      rule: i,
      label: r.label,
      outbound: r.outbound,
      hits: this.hits[i],
    }));
    out.push({
      rule: -1,
      label: "default",
      outbound: this.defaultOutbound,
      hits: this.defaultHits,
    });
    return out;
  }

  /** Label of rule `rule` (`default` for -1). */
  label(rule: number): string {
    return rule < 0 ? "default" : this.rules[rule]?.label ?? "default";
  }

  /** Lowest rule of the sorted `list` below `best` that passes, else `best`. */
  #firstMatch(
    list: RuleList,
    best: number,
    ctx: FlowContext,
    ip: Uint8Array | undefined,
    epoch: number,
  ): number {
    for (let j = 0; j < list.length; j++) {
      const r = list[j];
      if (r >= best) return best;
      if (this.#passes(r, ctx, ip, epoch, false)) return r;
    }
    return best;
  }

  /** Whether rule `r` matches; with `ignoreIp`, its IP matchers are taken as matching. */
  #passes(
    r: number,
    ctx: FlowContext,
    ip: Uint8Array | undefined,
    epoch: number,
    ignoreIp: boolean,
  ): boolean {
    const k = this.#kinds[r];
    if ((k & K_DOMAIN) !== 0 && this.#domainMark[r] !== epoch) return false;
    if ((k & K_IP) !== 0 && !ignoreIp && (ip === undefined || this.#ipMark[r] !== epoch)) {
      return false;
    }
    if ((k & K_NETWORK) !== 0) {
      if (this.#nets[r] !== (ctx.network === "udp" ? NET_UDP : NET_TCP)) return false;
    }
    if ((k & K_PORT) !== 0 && !inRanges(this.#ports[r]!, ctx.target.port)) return false;
    if ((k & K_INBOUND) !== 0 && !this.#inbounds[r]!.has(ctx.inbound)) return false;
    if ((k & K_PROCESS) !== 0) {
      const p = ctx.process;
      if (p === undefined || p.length === 0) return false;
      if (p !== this.#procRaw) {
        this.#procRaw = p;
        this.#procKey = normalizeProcessName(p);
      }
      if (!this.#processes[r]!.has(this.#procKey)) return false;
    }
    return true;
  }
}

/** Cheap pre-check: could `host` be an IP literal (has `:`, or ends in a digit)? */
function looksLikeIp(host: string): boolean {
  const n = host.length;
  if (n < 2 || n > 47) return false;
  const last = host.charCodeAt(n - 1);
  if (last >= 48 && last <= 57) return true;
  for (let i = 0; i < n; i++) if (host.charCodeAt(i) === 58) return true;
  return false;
}

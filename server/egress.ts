/**
 * The server's egress policy: which addresses and ports the relays (TCP and
 * UDP alike) may connect to on a client's behalf (docs/egress.md).
 *
 * By default every non-global range is refused — loopback, private, link-local
 * (cloud metadata), CGNAT, unspecified, multicast, reserved, documentation,
 * IPv6 ULA / link-local / site-local / multicast — together with their
 * IPv4-mapped (`::ffff:a.b.c.d`, one space with IPv4 in shared/net/cidr.ts),
 * NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) forms, and the server's own
 * addresses. `egress.allow` opens exceptions, `egress.deny` adds ranges.
 *
 * Precedence: the most specific matching entry decides — a longer prefix
 * first; at the same prefix, an entry with ports beats one without, and a
 * narrower port range beats a wider one; at equal specificity `deny` beats
 * `allow`, which beats the default list. No matching entry: allowed.
 *
 * Names are checked on every address they resolve to, at connect time
 * ({@link resolveAllowed}): one forbidden address refuses the name (DNS
 * rebinding), and the caller connects to the returned address literal.
 * @module
 */

import { lookup as dnsLookup } from "node:dns/promises";
import {
  formatIp,
  isMapped,
  parseIpInto,
  parsePrefix,
  type Prefix,
  PrefixTable,
} from "../shared/net/cidr.ts";
import type { EgressEntry, PortRange } from "../shared/config/egress.ts";

// The entry syntax and the config section's validator live in shared/ (the config module both
// CLIs load validates them); re-exported here so the policy's users need one import.
export {
  type EgressConfig,
  type EgressEntry,
  type EgressEntryParse,
  formatEgressEntry,
  parseEgressEntry,
  type PortRange,
  readEgressConfig,
} from "../shared/config/egress.ts";

/** A range of the built-in deny list and why it is refused (completes "… is "). */
export interface DefaultDenyRange {
  /** The range, as CIDR text. */
  readonly cidr: string;
  /** Why, as the end of "not allowed: 10.0.0.1 is …". */
  readonly why: string;
}

/** What the policy says about one address and port. */
export type EgressDecision =
  | { readonly allowed: true }
  | {
    readonly allowed: false;
    /**
     * For the client (sent as the open failure): `not allowed: 127.0.0.1 is
     * loopback` for a literal; for a name only `not allowed: db.internal
     * resolves to a non-public address` — the client learns neither the
     * address nor its category (no DNS oracle into the server's network).
     */
    readonly reason: string;
    /** For the operator's log: the full reason, with the address a name resolved to. */
    readonly detail: string;
    /** For the operator's log: which entry decided (`default 127.0.0.0/8`, `egress.deny[2]`). */
    readonly rule: string;
  };

/** IPv4 ranges refused by default; their IPv4-mapped forms match through the shared space. */
const DEFAULT_V4: readonly DefaultDenyRange[] = [
  { cidr: "0.0.0.0/8", why: "unspecified or 'this network' (0.0.0.0 reaches the server itself)" },
  { cidr: "10.0.0.0/8", why: "private (RFC 1918)" },
  { cidr: "100.64.0.0/10", why: "shared address space (RFC 6598, carrier-grade NAT)" },
  { cidr: "127.0.0.0/8", why: "loopback" },
  { cidr: "169.254.0.0/16", why: "link-local (where cloud metadata services live)" },
  { cidr: "172.16.0.0/12", why: "private (RFC 1918)" },
  { cidr: "192.0.0.0/24", why: "reserved for IETF protocol assignments" },
  { cidr: "192.0.2.0/24", why: "reserved for documentation" },
  { cidr: "192.168.0.0/16", why: "private (RFC 1918)" },
  { cidr: "198.18.0.0/15", why: "reserved for benchmarking" },
  { cidr: "198.51.100.0/24", why: "reserved for documentation" },
  { cidr: "203.0.113.0/24", why: "reserved for documentation" },
  { cidr: "224.0.0.0/4", why: "multicast" },
  { cidr: "240.0.0.0/4", why: "reserved" },
  { cidr: "255.255.255.255/32", why: "broadcast" },
];

/** IPv6 ranges refused by default. */
const DEFAULT_V6: readonly DefaultDenyRange[] = [
  { cidr: "::/128", why: "unspecified (reaches the server itself)" },
  { cidr: "::1/128", why: "loopback" },
  { cidr: "::/96", why: "IPv4-compatible (deprecated)" },
  // SIIT's IPv4-translated form ::ffff:0:a.b.c.d (RFC 2765). Not ::ffff:0:0/96: that is the
  // IPv4-mapped space, where every IPv4 address lives here (shared/net/cidr.ts).
  { cidr: "::ffff:0:0:0/96", why: "IPv4-translated (SIIT, RFC 2765)" },
  { cidr: "64:ff9b:1::/48", why: "local-use NAT64" },
  { cidr: "100::/64", why: "discard-only" },
  { cidr: "2001:db8::/32", why: "reserved for documentation" },
  { cidr: "3fff::/20", why: "reserved for documentation" },
  { cidr: "fc00::/7", why: "unique local (fc00::/7)" },
  { cidr: "fe80::/10", why: "link-local" },
  { cidr: "fec0::/10", why: "site-local (deprecated)" },
  { cidr: "ff00::/8", why: "multicast" },
];

/** The NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) forms of an IPv4 range (CIDR text). */
function embeddedForms(r: DefaultDenyRange): DefaultDenyRange[] {
  const slash = r.cidr.indexOf("/");
  const v4 = r.cidr.slice(0, slash);
  const len = Number(r.cidr.slice(slash + 1));
  const [a, b, c, d] = v4.split(".").map(Number);
  const hex = (x: number, y: number) => ((x << 8) | y).toString(16);
  return [
    { cidr: `64:ff9b::${v4}/${96 + len}`, why: `the NAT64 form of an address that is ${r.why}` },
    {
      cidr: `2002:${hex(a, b)}:${hex(c, d)}::/${16 + len}`,
      why: `the 6to4 form of an address that is ${r.why}`,
    },
  ];
}

/**
 * The built-in deny list, every entry with its reason: the IPv4 ranges (which
 * also cover their IPv4-mapped IPv6 forms), the IPv6 ranges, and the NAT64 and
 * 6to4 forms of the IPv4 ranges. The server's own addresses come on top.
 */
export const DEFAULT_DENY: readonly DefaultDenyRange[] = [
  ...DEFAULT_V4,
  ...DEFAULT_V6,
  ...DEFAULT_V4.flatMap(embeddedForms),
];

/** Entry kinds, in the order they win at equal specificity. */
const DEFAULT = 0;
const ALLOW = 1;
const DENY = 2;

interface Rule {
  readonly kind: number;
  readonly lo: number;
  readonly hi: number;
  /** Why, completing "… is " (deny rules). */
  readonly why: string;
  /** Which entry (for the log). */
  readonly rule: string;
}

/** The entries of one prefix. */
class Group {
  any: Rule | null = null;
  readonly ported: Rule[] = [];

  add(r: Rule, ported: boolean): void {
    if (ported) this.ported.push(r);
    else if (this.any === null || r.kind > this.any.kind) this.any = r;
  }

  /** The rule that decides `port` at this prefix, if any. */
  pick(port: number): Rule | null {
    let best: Rule | null = null;
    for (let i = 0; i < this.ported.length; i++) {
      const r = this.ported[i];
      if (port < r.lo || port > r.hi) continue;
      if (
        best === null || r.hi - r.lo < best.hi - best.lo ||
        (r.hi - r.lo === best.hi - best.lo && r.kind > best.kind)
      ) best = r;
    }
    return best ?? this.any;
  }
}

/** Options of an {@link EgressPolicy}. */
export interface EgressPolicyOptions {
  /** Exceptions to the default list (`egress.allow`). */
  allow?: readonly EgressEntry[];
  /** Additions to the default list (`egress.deny`). */
  deny?: readonly EgressEntry[];
  /**
   * The server's own addresses (IP literals or 16-byte addresses), refused
   * like the default list: {@link localAddresses}, plus a public address the
   * interfaces do not show (behind NAT). A string that is not an IP literal
   * throws a `RangeError`.
   */
  self?: Iterable<string | Uint8Array>;
  /** Prefix of entry names in `rule` (default `egress`). */
  path?: string;
}

const ALLOWED: EgressDecision = Object.freeze({ allowed: true });

/** The compiled policy: a longest-prefix table of rule groups; checks allocate nothing when allowed. */
export class EgressPolicy {
  readonly #table = new PrefixTable<Group>();
  readonly #scratch: Group[] = [];
  readonly #addr = new Uint8Array(16);

  /** Compiles the default list, the server's own addresses, and the configured entries. */
  constructor(opts: EgressPolicyOptions = {}) {
    const path = opts.path ?? "egress";
    for (const r of DEFAULT_DENY) {
      const p = parsePrefix(r.cidr);
      if (!p.ok) throw new Error(`bad built-in range ${r.cidr}: ${p.error}`);
      this.#add(p.prefix, null, DEFAULT, r.why, `default ${r.cidr}`);
    }
    for (const s of opts.self ?? []) {
      const addr = typeof s === "string" ? new Uint8Array(16) : s;
      if (typeof s === "string" && parseIpInto(s.split("%")[0], addr) === 0) {
        throw new RangeError("a server address is not an IP literal");
      }
      if (addr.length !== 16) throw new RangeError("a server address must be 16 bytes");
      const own = "one of this server's own addresses";
      const text = formatIp(addr);
      this.#add({ addr: addr.slice(), bits: 128 }, null, DEFAULT, own, `self ${text}`);
      // An IPv4 address is reachable through its NAT64 and 6to4 forms too (a NAT64
      // gateway or 6to4 relay on the path turns them back into it).
      if (isMapped(addr)) {
        for (const f of embeddedForms({ cidr: `${text}/32`, why: own })) {
          const p = parsePrefix(f.cidr);
          if (!p.ok) throw new Error(`bad own-address form ${f.cidr}: ${p.error}`);
          this.#add(p.prefix, null, DEFAULT, f.why, `self ${f.cidr}`);
        }
      }
    }
    (opts.allow ?? []).forEach((e, i) =>
      this.#add(e.prefix, e.ports, ALLOW, "", `${path}.allow[${i}]`)
    );
    (opts.deny ?? []).forEach((e, i) =>
      this.#add(
        e.prefix,
        e.ports,
        DENY,
        "refused by this server's egress policy",
        `${path}.deny[${i}]`,
      )
    );
  }

  #add(prefix: Prefix, ports: PortRange | null, kind: number, why: string, rule: string): void {
    let g = this.#table.get(prefix);
    if (!g) {
      g = new Group();
      this.#table.insert(prefix, g);
    }
    g.add({ kind, lo: ports?.lo ?? 0, hi: ports?.hi ?? 65535, why, rule }, ports !== null);
  }

  /** The rule deciding (`addr`, `port`), or null when no entry matches. */
  #decide(addr: Uint8Array, port: number): Rule | null {
    const n = this.#table.collect(addr, this.#scratch);
    let decided: Rule | null = null;
    for (let i = 0; i < n; i++) {
      const r = this.#scratch[i].pick(port);
      if (r !== null) decided = r;
    }
    return decided;
  }

  /**
   * Decides for a 16-byte address (IPv4 as `::ffff:a.b.c.d`) and a port. When
   * `name` is given (the host name that resolved to `addr`), the refusal's
   * `reason` names only the name (`… resolves to a non-public address`); the
   * address and why it is refused are in `detail`, for the server's log.
   */
  check(addr: Uint8Array, port: number, name?: string): EgressDecision {
    if (addr.length !== 16) throw new RangeError("address must be 16 bytes");
    const r = this.#decide(addr, port);
    if (r === null || r.kind === ALLOW) return ALLOWED;
    // A port-restricted rule (lo ≥ 1) decided: say which port.
    const what = r.lo > 0 ? `${formatIp(addr)} port ${port}` : formatIp(addr);
    if (name === undefined) {
      const reason = `not allowed: ${what} is ${r.why}`;
      return { allowed: false, reason, detail: reason, rule: r.rule };
    }
    return {
      allowed: false,
      reason: `not allowed: ${name} resolves to a non-public address`,
      detail: `not allowed: ${name} resolves to ${what}, which is ${r.why}`,
      rule: r.rule,
    };
  }

  /** {@link check} for an IP literal (IPv4, IPv6, bracketed IPv6); a non-literal is refused. */
  checkText(ip: string, port: number): EgressDecision {
    if (parseIpInto(ip, this.#addr) === 0) {
      const reason = "not allowed: not an IP address";
      return { allowed: false, reason, detail: reason, rule: "malformed" };
    }
    return this.check(this.#addr, port);
  }
}

/**
 * The addresses of this host's interfaces (zone suffixes removed), for
 * {@link EgressPolicyOptions.self}; by default from `Deno.networkInterfaces()`
 * (needs `--allow-sys`).
 */
export function localAddresses(
  interfaces: readonly { address: string }[] = Deno.networkInterfaces(),
): string[] {
  const seen = new Set<string>();
  const probe = new Uint8Array(16);
  for (const i of interfaces) {
    const a = i.address.split("%")[0];
    if (parseIpInto(a, probe) !== 0) seen.add(formatIp(probe));
  }
  return [...seen];
}

/** A name resolver: every address `host` has, as node's `lookup(host, { all: true })` gives them. */
export type Resolver = (host: string) => Promise<readonly { address: string; family: number }[]>;

/** The system resolver (`node:dns/promises` `lookup` with `all: true`). */
export const systemResolver: Resolver = (host) => dnsLookup(host, { all: true });

/** Where a target may be reached, or why not. */
export type EgressResolution =
  | {
    readonly allowed: true;
    /** The address to connect to (an IP literal, no brackets): the first allowed one. */
    readonly address: string;
    /** Every address the name has, all allowed, in the resolver's order (for fallbacks). */
    readonly addresses: readonly string[];
  }
  | {
    readonly allowed: false;
    /** `denied` (the policy) or `dns` (the name did not resolve): `DialFailure` names. */
    readonly failure: "denied" | "dns";
    /** For the client (for a refused name: without the address, see {@link EgressDecision}). */
    readonly reason: string;
    /** For the operator's log, when the policy refused: the full reason, with the address. */
    readonly detail?: string;
    /** For the operator's log: the deciding entry, when the policy refused. */
    readonly rule?: string;
  };

/**
 * Resolves `host` and checks every address it has against `policy` for
 * `port`. An IP literal is checked as is, without DNS. A name is refused
 * when ANY of its addresses is forbidden — a public name that also resolves
 * to 127.0.0.1 is refused (DNS rebinding), rather than connecting to its other
 * addresses. Connect to the returned literal, never to the name again: a
 * second resolution could answer differently.
 */
export async function resolveAllowed(
  host: string,
  port: number,
  policy: EgressPolicy,
  lookup: Resolver = systemResolver,
): Promise<EgressResolution> {
  const addr = new Uint8Array(16);
  if (parseIpInto(host, addr) !== 0) {
    const d = policy.check(addr, port);
    if (!d.allowed) return denied(d);
    const literal = formatIp(addr);
    return { allowed: true, address: literal, addresses: [literal] };
  }
  let answers: readonly { address: string; family: number }[];
  try {
    answers = await lookup(host);
  } catch {
    return { allowed: false, failure: "dns", reason: `cannot resolve ${host}` };
  }
  const addresses: string[] = [];
  for (const a of answers) {
    const text = typeof a?.address === "string" ? a.address : "";
    if (parseIpInto(text.split("%")[0], addr) === 0) {
      return { allowed: false, failure: "dns", reason: `${host} resolved to a malformed address` };
    }
    const d = policy.check(addr, port, host);
    if (!d.allowed) return denied(d);
    if (!addresses.includes(text)) addresses.push(text);
  }
  if (addresses.length === 0) {
    return { allowed: false, failure: "dns", reason: `${host} has no addresses` };
  }
  return { allowed: true, address: addresses[0], addresses };
}

function denied(d: EgressDecision & { allowed: false }): EgressResolution {
  return { allowed: false, failure: "denied", reason: d.reason, detail: d.detail, rule: d.rule };
}

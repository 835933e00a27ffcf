/**
 * Validation of the client config's routing fields — `exclude`, `rules`,
 * `outbounds`, `defaultOutbound`, `resolve` — into the compiled form the
 * {@link Router} is built from. Pure: no I/O.
 *
 * Like every validator here (shared/config/types.ts), it collects every
 * problem with the path of the field (`rules[3].ip[2]`), never throws on junk
 * and never repeats a value from the file in a message: not a domain, not a
 * process name, and above all not an HTTP proxy URL, whose password would
 * otherwise end up in a terminal or a log. The format is in docs/routing.md.
 * @module
 */

import {
  ConfigError,
  type ConfigIssue,
  type HostPort,
  isDomainName,
  isIPv4,
  isIPv6,
  isPlainObject,
  ObjectReader,
  type ProxyAuth,
  typeName,
} from "../../shared/config/types.ts";
import { parsePrefix, type Prefix } from "../../shared/net/cidr.ts";
import { normalizeDomain } from "./domain_set.ts";
import type { Network } from "./flow.ts";
import type { PortRange, ResolveMode, RouterSpec, Rule, RuleMatch } from "./rules.ts";

/** The outbounds every client has, whatever its config says. */
export const BUILTIN_OUTBOUNDS = ["ostp", "direct", "block"] as const;
/** Types an entry of `outbounds` may have. */
export const OUTBOUND_TYPES = ["ostp", "direct", "block", "http"] as const;
/** A type of outbound. */
export type OutboundType = (typeof OUTBOUND_TYPES)[number];
/** The top-level client config fields this module reads (add them to the client's field list). */
export const ROUTING_FIELDS = [
  "exclude",
  "rules",
  "outbounds",
  "defaultOutbound",
  "resolve",
] as const;
/** Fields of the `exclude` object. */
export const EXCLUDE_FIELDS = ["domains", "ips", "processes"] as const;
/** Fields of one entry of `rules`. */
export const RULE_FIELDS = [
  "domain",
  "domainSuffix",
  "ip",
  "port",
  "network",
  "inbound",
  "process",
  "outbound",
] as const;
/** Default of `defaultOutbound`. */
export const DEFAULT_OUTBOUND = "ostp";
/** Values of `resolve`. */
export const RESOLVE_MODES: readonly ResolveMode[] = ["never", "onDemand"];
/** Most issues reported for one list; the rest are counted in one more issue. */
export const MAX_ISSUES_PER_LIST = 10;

/** A validated outbound. `http` sends TCP flows through an HTTP CONNECT proxy. */
export type OutboundConfig =
  | {
    /** Name rules refer to. */
    name: string;
    /** Built-in behaviour: the tunnel, a direct connection, or refusal. */
    type: "ostp" | "direct" | "block";
  }
  | {
    /** Name rules refer to. */
    name: string;
    /** An HTTP proxy (CONNECT). */
    type: "http";
    /** The proxy's address. */
    proxy: HostPort;
    /** Credentials from the URL, if any (a secret: never logged). */
    auth?: ProxyAuth;
  };

/** The validated routing part of the client config; a {@link RouterSpec}. */
export interface RoutingConfig extends RouterSpec {
  /** `exclude` rules (outbound `direct`) first, then `rules` in order. */
  rules: Rule[];
  /** The built-in outbounds, then the declared ones in order. */
  outbounds: OutboundConfig[];
  /** Outbound of flows no rule matches; default `ostp`. */
  defaultOutbound: string;
  /** Whether host names are resolved for IP rules; default `never`. */
  resolve: ResolveMode;
}

/** What the validator may check names against. */
export interface RoutingOptions {
  /** Names of the configured inbounds; when given, `inbound` values must be among them. */
  inbounds?: readonly string[];
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Records the issues of one list, at most {@link MAX_ISSUES_PER_LIST}, then a count. */
class ListIssues {
  #count = 0;
  constructor(readonly issues: ConfigIssue[], readonly path: string) {}
  add(path: string, message: string): void {
    if (this.#count++ < MAX_ISSUES_PER_LIST) this.issues.push({ path, message });
  }
  finish(): void {
    const more = this.#count - MAX_ISSUES_PER_LIST;
    if (more > 0) {
      this.issues.push({
        path: this.path,
        message: `${more} more invalid ${more === 1 ? "entry" : "entries"} not listed`,
      });
    }
  }
}

/**
 * Reads `field` of `r` as a list: one value or a non-empty array of values.
 * `item` returns the parsed value or an error message; items that fail are
 * reported and skipped. Returns `undefined` when the field is absent or bad.
 */
function readList<T>(
  r: ObjectReader,
  field: string,
  what: string,
  item: (v: unknown) => T | string,
): T[] | undefined {
  const raw = r.get(field);
  if (raw === undefined) return undefined;
  const path = r.at(field);
  if (!Array.isArray(raw)) {
    const one = item(raw);
    if (typeof one === "string") {
      r.add(path, one);
      return undefined;
    }
    return [one];
  }
  if (raw.length === 0) {
    r.add(path, `must not be empty (give one or more ${what}, or leave the field out)`);
    return undefined;
  }
  const out: T[] = [];
  const issues = new ListIssues(r.issues, path);
  for (let i = 0; i < raw.length; i++) {
    const v = item(raw[i]);
    if (typeof v === "string") issues.add(`${path}[${i}]`, v);
    else out.push(v);
  }
  issues.finish();
  return out.length === raw.length ? out : undefined;
}

/** Why `v` is not a domain for a list of `exact` names or of suffixes, or its normalized form. */
function domainItem(v: unknown, exact: boolean): string | { name: string } {
  if (typeof v !== "string") return `expected a domain name string, got ${typeName(v)}`;
  const name = normalizeDomain(v);
  if (name !== null) return { name };
  if (v.startsWith("*.") || v.includes("*")) {
    return exact
      ? 'wildcards are not supported; use "domainSuffix" to match a domain and its subdomains'
      : "wildcards are not supported: a suffix already matches every subdomain";
  }
  if (v.startsWith(".")) return "must not start with a dot";
  if (/[^\x21-\x7e]/.test(v)) {
    return "must be an ASCII name without spaces (write an internationalized name in punycode, xn--…)";
  }
  if (isIPv4(v) || isIPv6(v)) return "is an IP address; IP addresses and CIDRs go in the IP list";
  return "not a valid domain name";
}

function exactDomainItem(v: unknown): string | { name: string } {
  return domainItem(v, true);
}

function suffixDomainItem(v: unknown): string | { name: string } {
  return domainItem(v, false);
}

/** A CIDR (or a bare address: a host prefix), or why not. */
function ipItem(v: unknown): Prefix | string {
  if (typeof v !== "string") return `expected a CIDR string, got ${typeName(v)}`;
  const p = parsePrefix(v.trim());
  return p.ok ? p.prefix : p.error;
}

const PORT_TEXT_RE = /^(\d{1,5})(?:-(\d{1,5}))?$/;
const PORT_HELP = 'expected a port from 1 to 65535 or a range "from-to"';

/** A port or port range, or why not. */
function portItem(v: unknown): PortRange | string {
  if (typeof v === "number") {
    if (!Number.isInteger(v) || v < 1 || v > 65535) return PORT_HELP;
    return { from: v, to: v };
  }
  if (typeof v !== "string") return `${PORT_HELP}, got ${typeName(v)}`;
  const m = PORT_TEXT_RE.exec(v.trim());
  if (!m) return PORT_HELP;
  const from = Number(m[1]);
  const to = m[2] === undefined ? from : Number(m[2]);
  if (from < 1 || from > 65535 || to < 1 || to > 65535) return PORT_HELP;
  if (from > to) return "the range starts after it ends";
  return { from, to };
}

/** A process file name, or why not. */
function processItem(v: unknown): string | { name: string } {
  if (typeof v !== "string") return `expected a process name string, got ${typeName(v)}`;
  const s = v.trim();
  if (s.length === 0 || s.length > 255) return "must be 1 to 255 characters";
  if (/[/\\]/.test(s)) {
    return 'give the executable\'s file name ("curl", "steam.exe"), no directory';
  }
  if (/\p{Cc}/u.test(s)) return "must not contain control characters";
  return { name: s };
}

/** An inbound name, or why not. */
function inboundItem(
  v: unknown,
  known: readonly string[] | undefined,
): string | { name: string } {
  if (typeof v !== "string") return `expected an inbound name string, got ${typeName(v)}`;
  if (!NAME_RE.test(v)) return "not a valid inbound name (letters, digits, . _ -; up to 64)";
  if (known && !known.includes(v)) return "no inbound has this name";
  return { name: v };
}

function names(list: { name: string }[] | undefined): string[] | undefined {
  return list?.map((x) => x.name);
}

/** Reads the `exclude` object into up to three `direct` rules. */
function readExclude(root: ObjectReader): Rule[] {
  if (!root.has("exclude")) return [];
  const r = root.object("exclude", EXCLUDE_FIELDS);
  const out: Rule[] = [];
  const domains = names(readList(r, "domains", "domain names", suffixDomainItem));
  if (domains) {
    out.push({ label: "exclude.domains", match: { domainSuffix: domains }, outbound: "direct" });
  }
  const ips = readList(r, "ips", "CIDRs", ipItem);
  if (ips) out.push({ label: "exclude.ips", match: { ip: ips }, outbound: "direct" });
  const processes = names(readList(r, "processes", "process names", processItem));
  if (processes) {
    out.push({ label: "exclude.processes", match: { process: processes }, outbound: "direct" });
  }
  return out;
}

/** Reads the `outbounds` array; returns the built-ins followed by the declared ones. */
function readOutbounds(root: ObjectReader): OutboundConfig[] {
  const out: OutboundConfig[] = BUILTIN_OUTBOUNDS.map((name) => ({ name, type: name }));
  const raw = root.get("outbounds");
  if (raw === undefined) return out;
  if (!Array.isArray(raw)) {
    root.add("outbounds", `expected an array of outbounds, got ${typeName(raw)}`);
    return out;
  }
  const seen = new Set<string>(BUILTIN_OUTBOUNDS);
  raw.forEach((entry, i) => {
    const path = `${root.at("outbounds")}[${i}]`;
    const o = new ObjectReader(entry, path, root.issues, ["name", "type", "url"]);
    if (!isPlainObject(entry)) return;
    let name: string | undefined;
    if (o.require("name")) {
      const n = o.string("name");
      if (n !== undefined) {
        if (!NAME_RE.test(n)) {
          o.add(
            o.at("name"),
            "must be 1 to 64 of letters, digits, . _ - (starting with a letter or digit)",
          );
        } else if ((BUILTIN_OUTBOUNDS as readonly string[]).includes(n)) {
          o.add(o.at("name"), "is the name of a built-in outbound; choose another");
        } else if (seen.has(n)) {
          o.add(o.at("name"), "another outbound has the same name");
        } else name = n;
      }
    }
    let type: OutboundType | undefined;
    if (o.require("type")) {
      const t = o.get("type");
      if (typeof t === "string" && (OUTBOUND_TYPES as readonly string[]).includes(t)) {
        type = t as OutboundType;
      } else {
        o.add(o.at("type"), `expected one of ${OUTBOUND_TYPES.map((x) => `"${x}"`).join(", ")}`);
      }
    }
    let http: { proxy: HostPort; auth?: ProxyAuth } | undefined;
    if (type === "http") {
      if (o.require("url")) http = readProxyUrl(o);
    } else if (type !== undefined && o.has("url")) {
      o.add(o.at("url"), `only an outbound of type "http" has a url`);
    }
    if (name !== undefined) seen.add(name);
    if (name === undefined || type === undefined) return;
    if (type === "http") {
      if (http) out.push({ name, type, ...http });
    } else out.push({ name, type });
  });
  return out;
}

/** Reads `url` of an `http` outbound: `http://[user[:password]@]host[:port]`. */
function readProxyUrl(o: ObjectReader): { proxy: HostPort; auth?: ProxyAuth } | undefined {
  const v = o.get("url");
  const path = o.at("url");
  const shape = 'expected "http://[user:password@]host:port"';
  if (typeof v !== "string") {
    o.add(path, `${shape}, got ${typeName(v)}`);
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(v.trim());
  } catch {
    o.add(path, `not a URL; ${shape}`);
    return undefined;
  }
  if (url.protocol !== "http:") {
    o.add(path, 'the scheme must be "http" (a proxy spoken to in plain HTTP CONNECT)');
    return undefined;
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.hash !== "") {
    o.add(path, `must not have a path, query or fragment; ${shape}`);
    return undefined;
  }
  let host = url.hostname;
  if (host.startsWith("[") && host.endsWith("]")) host = host.substring(1, host.length - 1);
  if (!(isIPv4(host) || isIPv6(host) || isDomainName(host))) {
    o.add(path, "the proxy host is not a valid name or address");
    return undefined;
  }
  const port = url.port === "" ? 80 : Number(url.port);
  if (port < 1 || port > 65535) {
    o.add(path, "the proxy port must be from 1 to 65535");
    return undefined;
  }
  const out: { proxy: HostPort; auth?: ProxyAuth } = { proxy: { host, port } };
  if (url.username !== "" || url.password !== "") {
    let username: string;
    let password: string;
    try {
      username = decodeURIComponent(url.username);
      password = decodeURIComponent(url.password);
    } catch {
      o.add(path, "the user name or password has a malformed %-escape");
      return undefined;
    }
    if (username === "") {
      o.add(path, "a password needs a user name");
      return undefined;
    }
    out.auth = { username, password };
  }
  return out;
}

/** Reads an outbound reference at `field` of `r`; `undefined` (with an issue) if unknown. */
function readOutboundRef(
  r: ObjectReader,
  field: string,
  known: ReadonlySet<string>,
  undeclared: ReadonlySet<string>,
): string | undefined {
  const v = r.string(field);
  if (v === undefined) return undefined;
  if (known.has(v)) return v;
  r.add(
    r.at(field),
    undeclared.has(v)
      ? "names an outbound whose declaration is invalid"
      : 'unknown outbound (not one of "ostp", "direct", "block" nor declared in "outbounds")',
  );
  return undefined;
}

/** Names declared in `outbounds`, valid or not (to tell "unknown" from "declared badly"). */
function declaredNames(root: ObjectReader): Set<string> {
  const out = new Set<string>();
  const raw = root.get("outbounds");
  if (!Array.isArray(raw)) return out;
  for (const e of raw) {
    if (isPlainObject(e) && typeof e.name === "string") out.add(e.name);
  }
  return out;
}

const MATCHER_FIELDS = RULE_FIELDS.filter((f) => f !== "outbound");

/** Reads the `rules` array; labels are `rules[i]`. */
function readRules(
  root: ObjectReader,
  known: ReadonlySet<string>,
  undeclared: ReadonlySet<string>,
  options: RoutingOptions,
): Rule[] {
  const raw = root.get("rules");
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    root.add("rules", `expected an array of rules, got ${typeName(raw)}`);
    return [];
  }
  const out: Rule[] = [];
  raw.forEach((entry, i) => {
    const label = `${root.at("rules")}[${i}]`;
    const before = root.issues.length;
    const r = new ObjectReader(entry, label, root.issues, RULE_FIELDS);
    if (!isPlainObject(entry)) return;
    const match: RuleMatch = {};
    const domain = names(readList(r, "domain", "domain names", exactDomainItem));
    if (domain) match.domain = domain;
    const domainSuffix = names(readList(r, "domainSuffix", "domain suffixes", suffixDomainItem));
    if (domainSuffix) match.domainSuffix = domainSuffix;
    const ip = readList(r, "ip", "CIDRs", ipItem);
    if (ip) match.ip = ip;
    const port = readList(r, "port", "ports or ranges", portItem);
    if (port) match.port = port;
    if (r.has("network")) {
      const net = r.get("network");
      if (net === "tcp" || net === "udp") match.network = net as Network;
      else r.add(r.at("network"), 'expected "tcp" or "udp"');
    }
    const inbound = names(
      readList(r, "inbound", "inbound names", (v) => inboundItem(v, options.inbounds)),
    );
    if (inbound) match.inbound = inbound;
    const proc = names(readList(r, "process", "process names", processItem));
    if (proc) match.process = proc;
    if (!MATCHER_FIELDS.some((f) => r.has(f))) {
      r.add(
        label,
        `a rule needs at least one matcher (${
          MATCHER_FIELDS.join(", ")
        }); for every other flow use "defaultOutbound"`,
      );
    }
    const outbound = r.require("outbound")
      ? readOutboundRef(r, "outbound", known, undeclared)
      : undefined;
    if (root.issues.length === before && outbound !== undefined) {
      out.push({ label, match, outbound });
    }
  });
  return out;
}

/**
 * Reads the routing fields from the client config's root object reader
 * (which must allow {@link ROUTING_FIELDS}), recording problems in its issue
 * list. Returns the compiled form; when issues were recorded, the result is
 * partial and must not be used (the caller throws its {@link ConfigError}).
 */
export function readRoutingConfig(root: ObjectReader, options: RoutingOptions = {}): RoutingConfig {
  const excludeRules = readExclude(root);
  const outbounds = readOutbounds(root);
  const known = new Set(outbounds.map((o) => o.name));
  const undeclared = declaredNames(root);
  const rules = readRules(root, known, undeclared, options);
  const defaultOutbound = root.has("defaultOutbound")
    ? readOutboundRef(root, "defaultOutbound", known, undeclared) ?? DEFAULT_OUTBOUND
    : DEFAULT_OUTBOUND;
  const resolve = root.oneOf<ResolveMode>("resolve", "never", RESOLVE_MODES);
  return { rules: [...excludeRules, ...rules], outbounds, defaultOutbound, resolve };
}

/**
 * Validates an object holding only routing fields (a fragment of the client
 * config: `{ "exclude": …, "rules": […], "outbounds": […] }`).
 * @throws {ConfigError} listing every problem; no message contains a value from the input.
 */
export function parseRoutingConfig(
  raw: unknown,
  options: RoutingOptions = {},
  source?: string,
): RoutingConfig {
  const issues: ConfigIssue[] = [];
  const cfg = readRoutingConfig(new ObjectReader(raw, "", issues, ROUTING_FIELDS), options);
  if (issues.length > 0) throw new ConfigError(issues, source);
  return cfg;
}

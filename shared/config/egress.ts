/**
 * The `egress` section of the server config (docs/egress.md): the syntax of
 * `egress.allow` / `egress.deny` entries (a CIDR or an address, optionally
 * with a port or a port range) and the section's validator. The policy that
 * applies them is `server/egress.ts`; this half lives in `shared/` because
 * the config module both CLIs load validates it.
 * @module
 */

import type { ConfigIssue } from "./types.ts";
import { formatPrefix, parsePrefix, type Prefix } from "../net/cidr.ts";

/** An inclusive port range, 1..65535; a single port has `lo === hi`. */
export interface PortRange {
  /** First port. */
  readonly lo: number;
  /** Last port (≥ `lo`). */
  readonly hi: number;
}

/** One `egress.allow` / `egress.deny` entry: a prefix and, optionally, ports. */
export interface EgressEntry {
  /** The addresses (a host prefix for a bare address). */
  readonly prefix: Prefix;
  /** The ports it applies to; `null`: every port. */
  readonly ports: PortRange | null;
}

/** Result of {@link parseEgressEntry}. */
export type EgressEntryParse =
  | { ok: true; entry: EgressEntry }
  | { ok: false; error: string };

/** The validated `egress` section of the server config. */
export interface EgressConfig {
  /** Exceptions to the default deny list. */
  allow: EgressEntry[];
  /** Ranges refused in addition to the default list. */
  deny: EgressEntry[];
}

const PORT_RE = /^([0-9]{1,5})(?:-([0-9]{1,5}))?$/;

/** Parses `lo` or `lo-hi`. */
function parsePorts(text: string): PortRange | string {
  const m = PORT_RE.exec(text);
  if (!m) return "expected a port or a port range (lo-hi) after ':'";
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < 1 || lo > 65535 || hi < 1 || hi > 65535) return "ports must be 1..65535";
  if (lo > hi) return "a port range must be lo-hi with lo ≤ hi";
  return { lo, hi };
}

/**
 * Parses one entry: a CIDR or an address (`10.91.2.0/24`, `127.0.0.1`,
 * `2001:db8::/32`), optionally with `:port` or `:lo-hi`; IPv6 takes brackets
 * when a port follows (`[::1]:8000-8100`, `[2001:db8::]/32:443`, or
 * `[2001:db8::/32]:443`). Host bits set past the length are an error. Error
 * messages never repeat the entry (the caller names it by its path).
 */
export function parseEgressEntry(text: string): EgressEntryParse {
  if (text.length === 0) return { ok: false, error: "empty entry" };
  if (text.length > 100) return { ok: false, error: "entry too long" };
  let cidrText: string;
  let portText: string | null = null;
  if (text.charCodeAt(0) === 91) {
    const close = text.indexOf("]");
    if (close === -1) return { ok: false, error: "'[' without ']'" };
    const inner = text.slice(1, close);
    let rest = text.slice(close + 1);
    let lenText = "";
    if (rest.startsWith("/")) {
      const colon = rest.indexOf(":");
      lenText = colon === -1 ? rest : rest.slice(0, colon);
      rest = colon === -1 ? "" : rest.slice(colon);
      if (inner.includes("/")) return { ok: false, error: "two prefix lengths" };
    }
    if (rest !== "") {
      if (!rest.startsWith(":")) return { ok: false, error: "unexpected text after ']'" };
      portText = rest.slice(1);
    }
    const slash = inner.indexOf("/");
    const addrText = slash === -1 ? inner : inner.slice(0, slash);
    if (!addrText.includes(":")) {
      return { ok: false, error: "brackets are for IPv6 addresses only" };
    }
    cidrText = inner + lenText;
  } else {
    const first = text.indexOf(":");
    if (first !== -1 && text.indexOf(":", first + 1) === -1) {
      // One colon: IPv4 (or an IPv4 CIDR) with ports.
      cidrText = text.slice(0, first);
      portText = text.slice(first + 1);
    } else {
      // No colon (IPv4) or several (IPv6, which needs brackets to take a port).
      cidrText = text;
    }
  }
  const p = parsePrefix(cidrText);
  if (!p.ok) {
    const hint = !text.startsWith("[") && text.split(":").length > 2 &&
        /:[0-9]+-[0-9]+$/.test(text)
      ? " (an IPv6 address with a port needs brackets: [addr]:port)"
      : "";
    return { ok: false, error: p.error + hint };
  }
  let ports: PortRange | null = null;
  if (portText !== null) {
    const r = parsePorts(portText);
    if (typeof r === "string") return { ok: false, error: r };
    ports = r;
  }
  return { ok: true, entry: { prefix: p.prefix, ports } };
}

/** Formats an entry back to config syntax (`10.0.0.0/8:443`, `[::1/128]:8000-8100`). */
export function formatEgressEntry(e: EgressEntry): string {
  const p = formatPrefix(e.prefix);
  if (!e.ports) return p;
  const ports = e.ports.lo === e.ports.hi ? `${e.ports.lo}` : `${e.ports.lo}-${e.ports.hi}`;
  return p.includes(":") ? `[${p}]:${ports}` : `${p}:${ports}`;
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

/**
 * Validates the `egress` section (`{ "allow": [...], "deny": [...] }`, both
 * optional; absent: both empty), recording problems in `issues` under `path`
 * (`egress.allow[2]: host bits are set past /8 …`) in the config validators'
 * style; never echoes an entry. Invalid entries are left out of the result.
 */
export function readEgressConfig(raw: unknown, path: string, issues: ConfigIssue[]): EgressConfig {
  const out: EgressConfig = { allow: [], deny: [] };
  if (raw === undefined) return out;
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    issues.push({ path, message: `expected an object, got ${typeName(raw)}` });
    return out;
  }
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (key !== "allow" && key !== "deny") {
      issues.push({
        path: `${path}.${key}`,
        message: 'unknown field (expected "allow" or "deny")',
      });
    }
  }
  for (const list of ["allow", "deny"] as const) {
    const v = obj[list];
    if (v === undefined) continue;
    const at = `${path}.${list}`;
    if (!Array.isArray(v)) {
      issues.push({ path: at, message: `expected an array of strings, got ${typeName(v)}` });
      continue;
    }
    v.forEach((item, i) => {
      if (typeof item !== "string") {
        issues.push({ path: `${at}[${i}]`, message: `expected a string, got ${typeName(item)}` });
        return;
      }
      const r = parseEgressEntry(item);
      if (r.ok) out[list].push(r.entry);
      else issues.push({ path: `${at}[${i}]`, message: r.error });
    });
  }
  return out;
}

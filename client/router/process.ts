/**
 * Which local program owns a connection or datagram the client accepted, for the router's
 * process rules (`steam.exe` direct, a renamed curl direct while plain curl takes the tunnel).
 *
 * `ProcessResolver.lookup` takes both ends of the flow as our side saw them and answers with
 * the owning process, or `null` when nobody (that we may see) owns it. The platform
 * implementations are `LinuxProcessResolver` (`process_linux.ts`, `/proc`) and
 * `WindowsProcessResolver` (below, over `ffi/process_windows.ts`, iphlpapi);
 * `createProcessResolver` picks one. `FakeProcessResolver` serves tests. The
 * address matching both platforms share (`prepareQuery`, `socketMatchScore`) is here.
 * @module
 */

import { formatIPv6, parseIPv4, parseIPv6 } from "../../shared/net/ip.ts";
import {
  type OwnerRow,
  processImagePath,
  readTcpTable,
  readUdpTable,
  WIN_AF_INET,
  WIN_AF_INET6,
} from "../../ffi/process_windows.ts";

/** An IP address (text, IPv4, IPv6 or IPv4-mapped IPv6, brackets and zone allowed) and port. */
export interface Endpoint {
  host: string;
  port: number;
}

/** One flow to attribute to a local program. */
export interface ProcessQuery {
  network: "tcp" | "udp";
  /** The client program's end: the remote address of our accepted socket (or datagram source). */
  local: Endpoint;
  /** Our end: the local address of the accepted socket (or of our UDP socket). */
  remote: Endpoint;
}

/** The program that owns a socket. */
export interface ProcessInfo {
  pid: number;
  /** Executable base name, e.g. `curl`, `steam.exe`. */
  name: string;
  /** Full executable path, when the platform lets us read it. */
  path?: string;
}

/** Finds the local program behind a flow. */
export interface ProcessResolver {
  /** The owner of the client program's socket, or `null` (not found, gone, not visible, timeout). */
  lookup(q: ProcessQuery): Promise<ProcessInfo | null>;
}

/** Options every platform resolver takes. */
export interface ProcessResolverOptions {
  /** Give up (answer `null`) after this many milliseconds. Default 500. */
  timeoutMs?: number;
  /** Keep answers for the same flow this long (ms); 0 disables. Default 1000. */
  cacheTtlMs?: number;
}

/** Default `timeoutMs`. */
export const DEFAULT_LOOKUP_TIMEOUT_MS = 500;
/** Default `cacheTtlMs`. */
export const DEFAULT_CACHE_TTL_MS = 1000;

/** `Deno.NetAddr` pair → query: `peer` is the accepted socket's remote end, `ours` its local. */
export function queryFromAddrs(
  network: "tcp" | "udp",
  peer: Deno.NetAddr,
  ours: Deno.NetAddr,
): ProcessQuery {
  return {
    network,
    local: { host: peer.hostname, port: peer.port },
    remote: { host: ours.hostname, port: ours.port },
  };
}

/**
 * Canonical text of an IP address for comparisons: IPv4 dotted quad, IPv4-mapped IPv6 as the
 * IPv4 address, other IPv6 in RFC 5952 form. Brackets and a `%zone` are dropped. `null` if
 * `host` is not an IP literal.
 */
export function canonicalHost(host: string): string | null {
  let h = host;
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  const pct = h.indexOf("%");
  if (pct !== -1) h = h.slice(0, pct);
  const v4 = parseIPv4(h);
  if (v4) return `${v4[0]}.${v4[1]}.${v4[2]}.${v4[3]}`;
  const v6 = parseIPv6(h);
  if (!v6) return null;
  return canonicalIPv6Bytes(v6);
}

/** Canonical text (see `canonicalHost`) of 16 IPv6 address bytes. */
export function canonicalIPv6Bytes(b: Uint8Array): string {
  const s = formatIPv6(b);
  return s.startsWith("::ffff:") && s.includes(".") ? s.slice(7) : s;
}

/** Whether a canonical host is the unspecified address (`0.0.0.0` or `::`). */
export function isWildcardHost(canonical: string): boolean {
  return canonical === "0.0.0.0" || canonical === "::";
}

/** A query with canonical hosts, ready for `socketMatchScore`. */
export interface PreparedQuery {
  network: "tcp" | "udp";
  localHost: string;
  localPort: number;
  remoteHost: string;
  remotePort: number;
  /** Whether the client end is IPv4 (or IPv4-mapped). */
  v4: boolean;
}

/** Canonicalizes a query; `null` if a host is not an IP literal or a port is out of range. */
export function prepareQuery(q: ProcessQuery): PreparedQuery | null {
  const localHost = canonicalHost(q.local.host);
  const remoteHost = canonicalHost(q.remote.host);
  if (localHost === null || remoteHost === null) return null;
  if (!validPort(q.local.port) || q.local.port === 0 || !validPort(q.remote.port)) return null;
  return {
    network: q.network,
    localHost,
    localPort: q.local.port,
    remoteHost,
    remotePort: q.remote.port,
    v4: !localHost.includes(":"),
  };
}

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 0 && p <= 65535;
}

/** The best possible `socketMatchScore`: both ends equal. */
export const EXACT_MATCH = 6;
/** Scores at or above this have the client's exact local address (no wildcard). */
export const EXACT_LOCAL = 4;

/**
 * How well a socket of the table (its local and remote end, canonical hosts) is the client
 * program's socket for `q`: 0 = it is not; higher is better, `EXACT_MATCH` at most.
 * - the socket's local port must be the client's port, and its local address the client's
 *   address (for UDP an unspecified local address also matches, lower; `::` accepts IPv4
 *   clients too, as a dual-stack socket would);
 * - a TCP socket must be connected to our end; a connected UDP socket must be connected to
 *   our end, an unconnected one matches any. A wildcard host or port 0 in our end (a caller
 *   that only knows the listening address) matches any host or port.
 */
export function socketMatchScore(
  q: PreparedQuery,
  localHost: string,
  localPort: number,
  remoteHost: string,
  remotePort: number,
): number {
  if (localPort !== q.localPort) return 0;
  let score: number;
  if (localHost === q.localHost) score = EXACT_LOCAL;
  else if (q.network === "udp" && (localHost === "::" || (localHost === "0.0.0.0" && q.v4))) {
    score = 1;
  } else return 0;
  const connected = remotePort !== 0 || !isWildcardHost(remoteHost);
  if (!connected) return q.network === "tcp" ? 0 : score;
  if (q.remotePort !== 0 && remotePort !== q.remotePort) return 0;
  if (!isWildcardHost(q.remoteHost) && remoteHost !== q.remoteHost) return 0;
  return score + 2;
}

/** `a/b/c` or `C:\a\b.exe` → its last component. */
export function baseName(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i === -1 ? path : path.slice(i + 1);
}

/** Cache key of a prepared query. */
export function queryKey(q: PreparedQuery): string {
  return `${q.network}|${q.localHost}|${q.localPort}|${q.remoteHost}|${q.remotePort}`;
}

/** Answers by flow with a time to live, bounded in size (the oldest go first). */
export class LookupCache {
  readonly #map = new Map<string, { info: ProcessInfo; expires: number }>();

  /** `ttlMs` 0 stores nothing. */
  constructor(readonly ttlMs: number, readonly maxEntries = 4096) {}

  /** The fresh answer for `key`, or `undefined`. */
  get(key: string, now: number): ProcessInfo | undefined {
    const e = this.#map.get(key);
    if (!e) return undefined;
    if (e.expires <= now) {
      this.#map.delete(key);
      return undefined;
    }
    return e.info;
  }

  /** Stores an answer. */
  set(key: string, info: ProcessInfo, now: number): void {
    if (this.ttlMs <= 0) return;
    this.#map.delete(key);
    if (this.#map.size >= this.maxEntries) {
      const oldest = this.#map.keys().next();
      if (!oldest.done) this.#map.delete(oldest.value);
    }
    this.#map.set(key, { info, expires: now + this.ttlMs });
  }

  /** Entries held (fresh or not yet swept). */
  get size(): number {
    return this.#map.size;
  }
}

/**
 * In-memory resolver for tests: answers what was `set` for a network and client end (the
 * remote end is ignored), records every query.
 */
export class FakeProcessResolver implements ProcessResolver {
  /** Every query, in order. */
  readonly queries: ProcessQuery[] = [];
  readonly #entries = new Map<string, ProcessInfo>();

  /** Makes `lookup` answer `info` (or `null` to forget) for this network and client end. */
  set(network: "tcp" | "udp", local: Endpoint, info: ProcessInfo | null): this {
    const key = `${network}|${canonicalHost(local.host) ?? local.host}|${local.port}`;
    if (info) this.#entries.set(key, info);
    else this.#entries.delete(key);
    return this;
  }

  /** The `set` answer for this flow's client end, or `null`. */
  lookup(q: ProcessQuery): Promise<ProcessInfo | null> {
    this.queries.push(q);
    const key = `${q.network}|${canonicalHost(q.local.host) ?? q.local.host}|${q.local.port}`;
    return Promise.resolve(this.#entries.get(key) ?? null);
  }
}

/** Picks the row (with an owner) that best fits the client's socket for `q`, or `null`. */
export function bestOwnerRow(q: PreparedQuery, rows: readonly OwnerRow[]): OwnerRow | null {
  let best: OwnerRow | null = null;
  let bestScore = 0;
  for (const r of rows) {
    if (r.pid === 0) continue; // TIME_WAIT and other ownerless rows
    const lh = canonicalHost(r.local.host);
    const rh = canonicalHost(r.remote.host);
    if (lh === null || rh === null) continue;
    const s = socketMatchScore(q, lh, r.local.port, rh, r.remote.port);
    if (s > bestScore) {
      best = r;
      bestScore = s;
      if (s === EXACT_MATCH) break;
    }
  }
  return best;
}

/**
 * Windows: the owner PID from `GetExtendedTcpTable`/`GetExtendedUdpTable` (the IPv4 table first
 * for IPv4 clients, then the IPv6 one), the name from `QueryFullProcessImageNameW`.
 */
export class WindowsProcessResolver implements ProcessResolver {
  readonly #timeoutMs: number;
  readonly #cache: LookupCache;

  /** Nothing is loaded until the first lookup. */
  constructor(options: ProcessResolverOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS;
    this.#cache = new LookupCache(options.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS);
  }

  /** See `ProcessResolver.lookup`. */
  async lookup(q: ProcessQuery): Promise<ProcessInfo | null> {
    const p = prepareQuery(q);
    if (!p) return null;
    const key = queryKey(p);
    const hit = this.#cache.get(key, performance.now());
    if (hit) return hit;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((r) => timer = setTimeout(() => r(null), this.#timeoutMs));
    try {
      const info = await Promise.race([this.#find(p), timeout]);
      if (info) this.#cache.set(key, info, performance.now());
      return info;
    } finally {
      clearTimeout(timer);
    }
  }

  async #find(p: PreparedQuery): Promise<ProcessInfo | null> {
    const families = p.v4 ? [WIN_AF_INET, WIN_AF_INET6] : [WIN_AF_INET6];
    for (const af of families) {
      const rows = p.network === "tcp" ? await readTcpTable(af) : await readUdpTable(af);
      const row = bestOwnerRow(p, rows);
      if (!row) continue;
      if (row.pid === 4) return { pid: 4, name: "System" };
      const path = processImagePath(row.pid);
      return path === null ? null : { pid: row.pid, name: baseName(path), path };
    }
    return null;
  }
}

/**
 * The resolver for this platform: `/proc` on Linux, iphlpapi on Windows; `null` elsewhere.
 * Needs `--allow-ffi` when used: on Linux `/proc` is then read through libc (`selectProcFs`),
 * as Deno's file API wants `--allow-all` there (see `ProcAccessError`), which also suffices.
 */
export async function createProcessResolver(
  options: ProcessResolverOptions = {},
  os: typeof Deno.build.os = Deno.build.os,
): Promise<ProcessResolver | null> {
  if (os === "linux") {
    const { LinuxProcessResolver, selectProcFs } = await import("./process_linux.ts");
    return new LinuxProcessResolver({ ...options, fs: await selectProcFs() });
  }
  if (os === "windows") return new WindowsProcessResolver(options);
  return null;
}

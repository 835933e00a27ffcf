/**
 * Configuration types shared by both daemons, the {@link ConfigError} every
 * validator throws, `host:port` parsing, a JSONC reader and the small field
 * readers the server and client validators are built from.
 *
 * Config files are untrusted input (DESIGN.md principle 5): every problem is
 * collected with the path of the field it concerns and reported at once, and
 * no message ever contains a value from the file (a misplaced key or password
 * must not end up in a terminal or a log).
 * @module
 */

import type { ClientCarriersConfig, ServerCarriersConfig } from "./carrier_config.ts";
import type { ClientNatConfig } from "./nat_config.ts";
import type { Mapping } from "./mapping_config.ts";
import type { TunConfig } from "./tun_config.ts";
import type { ClientL3Config } from "./client_l3_config.ts";
import type { ServerL3Config } from "./server_l3_config.ts";
import { parseAccessKey } from "../crypto/keys.ts";
import type { EgressConfig } from "./egress.ts";
import type { RoutingConfig } from "../../client/router/config.ts";

/** Log levels, from the most verbose to the least. */
export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error"] as const;
/** A log level name. */
export type LogLevelName = (typeof LOG_LEVELS)[number];
/** Log output formats: `text` for people, `json` (JSON lines) for machines. */
export const LOG_FORMATS = ["text", "json"] as const;
/** A log output format. */
export type LogFormat = (typeof LOG_FORMATS)[number];

/** Logging settings of either daemon. */
export interface LogConfig {
  /** Least severe level that is written. */
  level: LogLevelName;
  /** `text` for people, `json` (one object per line) for machines. */
  format: LogFormat;
  /**
   * Levels for categories under "ostp", most specific first wins, e.g.
   * `{ "server.dispatcher": "debug", "client": "warning" }`.
   */
  categories?: Record<string, LogLevelName>;
}

/** A host and a port; `host` is a domain name, IPv4, or IPv6 WITHOUT brackets. */
export interface HostPort {
  /** Domain name, dotted IPv4, or IPv6 without brackets. */
  host: string;
  /** Port, 0..65535 (0 only makes sense for listening). */
  port: number;
}

/** The management API listener (docs/api.md). */
export interface ApiConfig {
  /** Address to listen on; default `127.0.0.1:9090`. */
  listen: HostPort;
  /** Bearer token, at least 16 characters; never logged. */
  token: string;
}

/** The validated configuration of `ostp-server`; durations are in seconds. */
export interface ServerConfig {
  /** Addresses to listen on; default `0.0.0.0:8443`. */
  listen: HostPort[];
  /** Access keys (32 bytes each); at least one, no duplicates. */
  keys: Uint8Array[];
  /** Address share links advertise, when the listen address is not reachable as is. */
  publicAddress?: HostPort;
  /** Most concurrent sessions; default 1024. */
  maxSessions: number;
  /** Handshakes per second the token bucket refills; default 200. */
  handshakeRate: number;
  /** Token bucket size for handshakes; default 400. */
  handshakeBurst: number;
  /** Seconds without traffic after which a session is dropped; default 600. */
  idleTimeout: number;
  /** Accepted handshake clock skew, ± seconds; default 300. */
  replayWindow: number;
  /** Handshakes remembered for replay detection; default 65536. */
  replayCacheSize: number;
  /** Seconds allowed for an outbound TCP connect; default 10. */
  connectTimeout: number;
  /** Most concurrent streams per session; default 8192. */
  maxStreamsPerSession: number;
  /** Largest datagram sent, bytes, 576..65000; default 1350. */
  mtu: number;
  /** Logging; default `{ level: "info", format: "text" }`. */
  log: LogConfig;
  /** Named users with their own keys and limits; default none. */
  users: UserConfig[];
  /** SQLite file for the per-user counters; `null` (default): kept in memory only. */
  stateFile: string | null;
  /** Management API listener and its bearer token; off when absent. */
  api?: ApiConfig;
  /** Seconds between writes of changed counters to `stateFile`; default 5. */
  statsFlushInterval: number;
  /** Control socket path; `false`: none; absent: the default path (`shared/control/path.ts`). */
  control?: string | false;
  /**
   * Egress policy exceptions and additions (docs/egress.md); default both empty: the built-in
   * list of non-global ranges and the server's own addresses is refused.
   */
  egress: EgressConfig;
  /**
   * Worker threads that run the sessions (docs/workers.md), 1..{@link MAX_SERVER_WORKERS};
   * absent: `ostp-server` runs one per core ({@link defaultServerWorkers}), an embedding
   * program one (in-process) unless `ServerOptions.workers` says otherwise.
   */
  workers?: number;
  /** The layer-3 hub (docs/l3.md), when configured. */
  l3?: ServerL3Config;
  /** Carriers besides UDP (docs/carriers.md): fake-TCP, UDP-over-TCP, TLS. */
  carriers?: ServerCarriersConfig;
  /** Where an OUT TCP mapping to `ANY` goes (`--tcp-upstream`); none when absent. */
  tcpUpstream?: HostPort;
  /** Where an OUT UDP mapping to `ANY` goes (`--udp-upstream`, an address); none when absent. */
  udpUpstream?: HostPort;
  /**
   * Ports IN mappings of every key may open on the server, as merged
   * inclusive ranges (`"allowInPorts": [18080, "20000-20100"]`); default none.
   */
  allowInPorts: [number, number][];
}

/** Most worker threads a server runs. */
export const MAX_SERVER_WORKERS = 64;

/** The default worker count of `ostp-server`: one per core, at most 16. */
export function defaultServerWorkers(): number {
  const cores = Math.floor(navigator.hardwareConcurrency || 1);
  return Math.max(1, Math.min(16, cores));
}

/** A named user of the server (`users[]` in the config file). */
export interface UserConfig {
  /** 1..64 characters of `A-Z a-z 0-9 . _ -`, unique. */
  name: string;
  /** Its access key (32 bytes), unique across `keys` and `users`. */
  key: Uint8Array;
  /** Traffic allowance, bytes up + down. */
  limitBytes?: number;
  /** Expiry, ms since the epoch (from an ISO-8601 date or date-time). */
  expires?: number;
  /** False turns the user away; default true. */
  enabled: boolean;
  /** Fixed layer-3 address (IPv4) inside the `l3` subnet. */
  address?: string;
  /** Ports this user's IN mappings may open besides the server-wide `allowInPorts`. */
  allowInPorts?: [number, number][];
}

/** SOCKS5 / HTTP proxy credentials the client's inbound asks for. */
export interface ProxyAuth {
  /** User name, 1..255 bytes of UTF-8. */
  username: string;
  /** Password, 1..255 bytes of UTF-8. */
  password: string;
}

/** Reconnect backoff of the client, in seconds. */
export interface ReconnectConfig {
  /** First delay after a failure; default 0.5. */
  initialDelay: number;
  /** Ceiling of the exponential backoff; default 30. */
  maxDelay: number;
}

/** The validated configuration of `ostp-client`; durations are in seconds. */
export interface ClientConfig {
  /** The server to connect to. */
  server: HostPort;
  /** The access key (32 bytes). */
  key: Uint8Array;
  /** Local SOCKS5 + HTTP proxy address; default `127.0.0.1:1088`. */
  listen: HostPort;
  /** Credentials the local proxy requires, if any. */
  auth?: ProxyAuth;
  /** Parallel sessions to the server, 1..16; default 1. */
  mux: number;
  /** Largest datagram sent, bytes, 576..65000; default 1350. */
  mtu: number;
  /** Seconds between keepalives (heartbeats) when idle; default 10; 0: none. */
  keepalive: number;
  /** Seconds without anything from the server before the session is closed; default 30; 0: never. */
  idleTimeout: number;
  /** Seconds allowed for a handshake or a stream open; default 10. */
  connectTimeout: number;
  /** Reconnect backoff. */
  reconnect: ReconnectConfig;
  /** Logging. */
  log: LogConfig;
  /** Control socket path; `false`: none; absent: the default path (`shared/control/path.ts`). */
  control?: string | false;
  /**
   * Routing: `exclude`, `rules`, `outbounds`, `defaultOutbound` and `resolve`,
   * validated and compiled (`client/router/config.ts`, docs/routing.md).
   */
  routing: RoutingConfig;
  /** System-wide capture through a TUN device (`shared/config/tun_config.ts`); absent: off. */
  tun?: TunConfig;
  /** Layer 3: a TUN with the address the server assigns (`"l3": true` or a block). */
  l3?: ClientL3Config;
  /** The carrier (or fallback order) to reach the server on (docs/carriers.md); absent: UDP. */
  carriers?: ClientCarriersConfig;
  /** STUN servers and a TURN relay (`stun`, `stunInterval`, `turn`; docs/nat.md); absent: none. */
  nat?: ClientNatConfig;
  /** Port mappings (`mappings`, `--tcp-mappings`, `--udp-mappings`; docs/mappings.md). */
  mappings: Mapping[];
  /** Whether the local SOCKS5 + HTTP proxy runs (`"proxy": false`, `--no-proxy`); default true. */
  proxy: boolean;
  /** Seconds between socket hops (`hopInterval`, `--hop-interval`); 0: none. */
  hopInterval: number;
  /**
   * Point the Windows system proxy at the local proxy while running
   * (`systemProxy`, `--system-proxy`; docs/windows.md); default false.
   */
  systemProxy: boolean;
}

/** One problem found in a configuration. */
export interface ConfigIssue {
  /** Where: `listen[1]`, `log.level`, `--mux`; empty for the file as a whole. */
  path: string;
  /** What is wrong, without the offending value. */
  message: string;
}

/** Thrown when a configuration (file, flags or share link) is invalid; lists every problem. */
export class ConfigError extends Error {
  /** Every problem found, in the order found. */
  readonly issues: ConfigIssue[];
  /** Where the configuration came from (a file path), if known. */
  readonly source?: string;

  /** Builds the error and its message, one `path: message` line per issue. */
  constructor(issues: ConfigIssue[], source?: string) {
    const head = source ? `invalid configuration in ${source}:` : "invalid configuration:";
    const lines = issues.map((i) => `  ${i.path ? `${i.path}: ` : ""}${i.message}`);
    super([head, ...lines].join("\n"));
    this.name = "ConfigError";
    this.issues = issues;
    this.source = source;
  }
}

// ---------------------------------------------------------------------------
// host:port

/** Thrown by {@link parseHostPort}; the message never contains the input. */
export class HostPortError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "HostPortError";
  }
}

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const LABEL_RE = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/** True if `s` is a dotted-quad IPv4 address (no leading zeros). */
export function isIPv4(s: string): boolean {
  const m = IPV4_RE.exec(s);
  if (!m) return false;
  for (let i = 1; i <= 4; i++) {
    if (m[i].length > 1 && m[i][0] === "0") return false;
    if (Number(m[i]) > 255) return false;
  }
  return true;
}

/** True if `s` is an IPv6 address without brackets (no zone index). */
export function isIPv6(s: string): boolean {
  if (!/^[0-9A-Fa-f:.]{2,45}$/.test(s) || !s.includes(":")) return false;
  try {
    new URL(`http://[${s}]/`);
    return true;
  } catch {
    return false;
  }
}

/** True if `s` is an ASCII domain name (labels of letters, digits, `-`, `_`). */
export function isDomainName(s: string): boolean {
  if (s.length === 0 || s.length > 253) return false;
  if (/^[\d.]+$/.test(s)) return false; // looks like an IPv4 address: must be one
  return s.split(".").every((label) => LABEL_RE.test(label));
}

function checkHost(host: string): void {
  if (host.length === 0) throw new HostPortError('expected "host:port" (the host is missing)');
  if (isIPv4(host) || isDomainName(host)) return;
  if (/^[\d.]+$/.test(host)) throw new HostPortError("invalid IPv4 address");
  if (/[^\x21-\x7e]/.test(host)) {
    throw new HostPortError("host must be ASCII without spaces (use punycode for IDN)");
  }
  throw new HostPortError("invalid host name");
}

function parsePort(s: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) > 65535) {
    throw new HostPortError("port must be a number from 0 to 65535");
  }
  return Number(s);
}

/**
 * Parses `host:port`, `[ipv6]:port`, or (with `defaultPort`) a bare `host` or
 * `[ipv6]`. The returned host never has brackets. Port 0 is accepted; callers
 * that need a destination reject it.
 * @throws {HostPortError} with a message that does not repeat the input.
 */
export function parseHostPort(s: string, defaultPort?: number): HostPort {
  const text = s.trim();
  if (text.length === 0) throw new HostPortError('expected "host:port", got an empty string');
  if (text.length > 300) throw new HostPortError('expected "host:port" (too long)');
  let host: string;
  let portText: string | undefined;
  if (text[0] === "[") {
    const end = text.indexOf("]");
    if (end < 0) throw new HostPortError('expected "[IPv6]:port" (missing "]")');
    host = text.substring(1, end);
    const rest = text.substring(end + 1);
    if (rest.length > 0) {
      if (rest[0] !== ":") throw new HostPortError('expected "[IPv6]:port"');
      portText = rest.substring(1);
    }
    if (!isIPv6(host)) throw new HostPortError("invalid IPv6 address");
    host = host.toLowerCase();
  } else {
    const colons = text.split(":").length - 1;
    if (colons > 1) {
      throw new HostPortError('an IPv6 address needs brackets, as in "[::1]:8443"');
    }
    if (colons === 1) {
      const i = text.indexOf(":");
      host = text.substring(0, i);
      portText = text.substring(i + 1);
    } else {
      host = text;
    }
    checkHost(host);
  }
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) throw new HostPortError('expected "host:port" (port missing)');
    port = defaultPort;
  } else {
    port = parsePort(portText);
  }
  return { host, port };
}

/** Formats a {@link HostPort} as `host:port`, with brackets around an IPv6 host. */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** True for the wildcard addresses `0.0.0.0` and `::`, which clients cannot connect to. */
export function isUnspecifiedHost(host: string): boolean {
  return host === "0.0.0.0" || (/^[0:]+$/.test(host) && isIPv6(host));
}

// ---------------------------------------------------------------------------
// JSONC

/** Deepest nesting a config file may use (guards the recursive parser). */
const MAX_DEPTH = 64;
/** Largest config file read, in bytes. */
export const MAX_CONFIG_BYTES = 1 << 20;

/**
 * Parses JSON with comments (`//`, `/* *\/`) and trailing commas, as config
 * files are written. Duplicate keys are an error (the later one would silently
 * win in `JSON.parse`). Objects are built so that a `__proto__` key is an
 * ordinary own property.
 * @throws {ConfigError} with one issue `line L, column C: ...`; never quotes the input.
 */
export function parseJsonc(text: string, source?: string): unknown {
  return new JsoncParser(text, source).parseDocument();
}

class JsoncParser {
  #pos = 0;
  readonly #text: string;
  readonly #source?: string;

  constructor(text: string, source?: string) {
    this.#text = text.charCodeAt(0) === 0xfeff ? text.substring(1) : text;
    this.#source = source;
  }

  parseDocument(): unknown {
    this.#skip();
    if (this.#pos >= this.#text.length) this.#fail("the file is empty; expected a JSON object");
    const v = this.#value(0);
    this.#skip();
    if (this.#pos < this.#text.length) this.#fail("unexpected text after the end of the document");
    return v;
  }

  #fail(message: string, at = this.#pos): never {
    let line = 1;
    let col = 1;
    for (let i = 0; i < at && i < this.#text.length; i++) {
      if (this.#text.charCodeAt(i) === 10) {
        line++;
        col = 1;
      } else col++;
    }
    throw new ConfigError(
      [{ path: "", message: `line ${line}, column ${col}: ${message}` }],
      this.#source,
    );
  }

  /** Skips whitespace and comments. */
  #skip(): void {
    const t = this.#text;
    while (this.#pos < t.length) {
      const c = t.charCodeAt(this.#pos);
      if (c === 32 || c === 9 || c === 10 || c === 13) {
        this.#pos++;
      } else if (c === 47 && t.charCodeAt(this.#pos + 1) === 47) { // "//"
        const nl = t.indexOf("\n", this.#pos);
        this.#pos = nl < 0 ? t.length : nl + 1;
      } else if (c === 47 && t.charCodeAt(this.#pos + 1) === 42) { // "/*"
        const end = t.indexOf("*/", this.#pos + 2);
        if (end < 0) this.#fail("unterminated /* comment");
        this.#pos = end + 2;
      } else {
        return;
      }
    }
  }

  #value(depth: number): unknown {
    if (depth > MAX_DEPTH) this.#fail("nested too deeply");
    const t = this.#text;
    const c = t[this.#pos];
    if (c === "{") return this.#object(depth);
    if (c === "[") return this.#array(depth);
    if (c === '"') return this.#string();
    if (c === "-" || (c >= "0" && c <= "9")) return this.#number();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (
        t.startsWith(word, this.#pos) && !/[A-Za-z0-9_$]/.test(t[this.#pos + word.length] ?? "")
      ) {
        this.#pos += word.length;
        return v;
      }
    }
    if (c === "'") this.#fail("strings must use double quotes");
    if (c === undefined) this.#fail("unexpected end of file; expected a value");
    this.#fail("expected a value (object, array, string, number, true, false or null)");
  }

  #object(depth: number): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    this.#pos++; // "{"
    this.#skip();
    if (this.#text[this.#pos] === "}") {
      this.#pos++;
      return obj;
    }
    for (;;) {
      if (this.#text[this.#pos] !== '"') {
        this.#fail(
          this.#pos >= this.#text.length
            ? "unexpected end of file inside an object"
            : 'expected a field name in double quotes or "}"',
        );
      }
      const at = this.#pos;
      const key = this.#string();
      if (Object.hasOwn(obj, key)) this.#fail(`duplicate field ${showField(key)}`, at);
      this.#skip();
      if (this.#text[this.#pos] !== ":") this.#fail('expected ":" after the field name');
      this.#pos++;
      this.#skip();
      const v = this.#value(depth + 1);
      Object.defineProperty(obj, key, {
        value: v,
        enumerable: true,
        writable: true,
        configurable: true,
      });
      this.#skip();
      const sep = this.#text[this.#pos];
      if (sep === ",") {
        this.#pos++;
        this.#skip();
        if (this.#text[this.#pos] === "}") { // trailing comma
          this.#pos++;
          return obj;
        }
      } else if (sep === "}") {
        this.#pos++;
        return obj;
      } else {
        this.#fail(
          sep === undefined ? "unexpected end of file inside an object" : 'expected "," or "}"',
        );
      }
    }
  }

  #array(depth: number): unknown[] {
    const arr: unknown[] = [];
    this.#pos++; // "["
    this.#skip();
    if (this.#text[this.#pos] === "]") {
      this.#pos++;
      return arr;
    }
    for (;;) {
      arr.push(this.#value(depth + 1));
      this.#skip();
      const sep = this.#text[this.#pos];
      if (sep === ",") {
        this.#pos++;
        this.#skip();
        if (this.#text[this.#pos] === "]") { // trailing comma
          this.#pos++;
          return arr;
        }
      } else if (sep === "]") {
        this.#pos++;
        return arr;
      } else {
        this.#fail(
          sep === undefined ? "unexpected end of file inside an array" : 'expected "," or "]"',
        );
      }
    }
  }

  #string(): string {
    const t = this.#text;
    const start = this.#pos;
    this.#pos++; // opening quote
    let out = "";
    let run = this.#pos;
    while (this.#pos < t.length) {
      const c = t.charCodeAt(this.#pos);
      if (c === 34) { // closing quote
        out += t.substring(run, this.#pos);
        this.#pos++;
        return out;
      }
      if (c < 0x20) this.#fail("control character (such as a newline) inside a string");
      if (c === 92) { // backslash
        out += t.substring(run, this.#pos);
        const e = t[this.#pos + 1];
        const simple: Record<string, string> = {
          '"': '"',
          "\\": "\\",
          "/": "/",
          b: "\b",
          f: "\f",
          n: "\n",
          r: "\r",
          t: "\t",
        };
        if (e !== undefined && Object.hasOwn(simple, e)) {
          out += simple[e];
          this.#pos += 2;
        } else if (e === "u" && /^[0-9A-Fa-f]{4}$/.test(t.substr(this.#pos + 2, 4))) {
          out += String.fromCharCode(parseInt(t.substr(this.#pos + 2, 4), 16));
          this.#pos += 6;
        } else {
          this.#fail("invalid escape sequence in a string");
        }
        run = this.#pos;
        continue;
      }
      this.#pos++;
    }
    this.#fail("unterminated string", start);
  }

  #number(): number {
    const re = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
    re.lastIndex = this.#pos;
    const m = re.exec(this.#text);
    if (!m || /[A-Za-z0-9_.]/.test(this.#text[this.#pos + m[0].length] ?? "")) {
      this.#fail("invalid number");
    }
    this.#pos += m[0].length;
    return Number(m[0]);
  }
}

/** Why reading a file failed, in a few words ("file not found", "permission denied", ...). */
export function readErrorReason(e: unknown): string {
  return e instanceof Deno.errors.NotFound
    ? "file not found"
    : e instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : e instanceof Deno.errors.NotCapable
    ? "not allowed to read files (Deno's --allow-read)"
    : e instanceof Deno.errors.IsADirectory
    ? "is a directory"
    : `cannot read the file (${(e as Error).name})`;
}

/**
 * Reads a JSONC config file (at most {@link MAX_CONFIG_BYTES}).
 * @throws {ConfigError} if the file cannot be read or is not valid JSONC.
 */
export async function readJsoncFile(path: string): Promise<unknown> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new ConfigError([{ path: "", message: readErrorReason(e) }], path);
  }
  if (bytes.length > MAX_CONFIG_BYTES) {
    throw new ConfigError(
      [{ path: "", message: `file is larger than ${MAX_CONFIG_BYTES} bytes` }],
      path,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ConfigError([{ path: "", message: "file is not valid UTF-8" }], path);
  }
  return parseJsonc(text, path);
}

// ---------------------------------------------------------------------------
// Field readers used by the validators

/**
 * A field name made safe to show: long names are cut, unprintable characters
 * replaced, and a name that is itself an access key (pasted in the wrong
 * place) is not shown at all.
 */
export function displayName(name: string): string {
  try {
    parseAccessKey(name);
    return "<redacted>";
  } catch {
    // not a key
  }
  const s = name.length > 40 ? name.substring(0, 40) + "…" : name;
  return s.replace(/\p{Cc}/gu, "?");
}

/** {@link displayName} in double quotes. */
export function showField(name: string): string {
  return `"${displayName(name)}"`;
}

/** Name of a JSON value's type for messages (`null`, `array`, `object`, `string`, ...). */
export function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

/** True for a non-null, non-array object. */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** Joins a parent path and a field name (`log` + `level` → `log.level`). */
export function joinPath(parent: string, field: string): string {
  return parent ? `${parent}.${field}` : field;
}

/** Levenshtein distance, for "did you mean" hints on unknown fields. */
function distance(a: string, b: string): number {
  const d: number[] = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length];
}

function formatRange(min: number, max: number, unit = ""): string {
  return `from ${min} to ${max}${unit}`;
}

/**
 * Reads the fields of one JSON object, recording an issue (and returning the
 * default) for every field that is missing, of the wrong type or out of range.
 * `null` counts as absent. Unknown fields are issues, with a hint for typos.
 * Messages never include the values read.
 */
export class ObjectReader {
  readonly #obj: Record<string, unknown>;
  /** Path of this object (empty for the root). */
  readonly path: string;
  /** The list issues are added to. */
  readonly issues: ConfigIssue[];

  /**
   * Opens `raw` as an object with the given fields. A non-object records an
   * issue and reads as `{}` (so every field takes its default).
   */
  constructor(raw: unknown, path: string, issues: ConfigIssue[], fields: readonly string[]) {
    this.path = path;
    this.issues = issues;
    if (isPlainObject(raw)) {
      this.#obj = raw;
      for (const name of Object.keys(raw)) {
        if (fields.includes(name)) continue;
        const near = fields.find((f) => distance(f.toLowerCase(), name.toLowerCase()) <= 2);
        this.add(
          joinPath(path, displayName(name)),
          `unknown field${near ? ` (did you mean "${near}"?)` : ""}`,
        );
      }
    } else {
      this.#obj = {};
      this.add(path, `expected an object, got ${typeName(raw)}`);
    }
  }

  /** Records an issue at `path`. */
  add(path: string, message: string): void {
    this.issues.push({ path, message });
  }

  /** The path of `field` in this object. */
  at(field: string): string {
    return joinPath(this.path, field);
  }

  /** The raw value of `field`, or `undefined` if absent or `null`. */
  get(field: string): unknown {
    const v = Object.hasOwn(this.#obj, field) ? this.#obj[field] : undefined;
    return v === null ? undefined : v;
  }

  /** True if `field` is present and not `null`. */
  has(field: string): boolean {
    return this.get(field) !== undefined;
  }

  /** Records "required" for `field` when it is absent; returns whether it is present. */
  require(field: string): boolean {
    if (this.has(field)) return true;
    this.add(this.at(field), "required");
    return false;
  }

  /** A number in `[min, max]`, integral if `integer`. */
  number(field: string, def: number, min: number, max: number, integer = false, unit = ""): number {
    const v = this.get(field);
    if (v === undefined) return def;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      this.add(
        this.at(field),
        `expected ${integer ? "an integer" : "a number"}, got ${typeName(v)}`,
      );
      return def;
    }
    if (integer && !Number.isInteger(v)) {
      this.add(this.at(field), "expected an integer");
      return def;
    }
    if (v < min || v > max) {
      this.add(this.at(field), `must be ${formatRange(min, max, unit)}`);
      return def;
    }
    return v;
  }

  /** An integer in `[min, max]`. */
  integer(field: string, def: number, min: number, max: number): number {
    return this.number(field, def, min, max, true);
  }

  /** A duration in seconds (fractions allowed) in `[min, max]`. */
  seconds(field: string, def: number, min: number, max: number): number {
    return this.number(field, def, min, max, false, " seconds");
  }

  /** A string; `undefined` (no issue) if absent, `undefined` with an issue if not a string. */
  string(field: string): string | undefined {
    const v = this.get(field);
    if (v === undefined) return undefined;
    if (typeof v !== "string") {
      this.add(this.at(field), `expected a string, got ${typeName(v)}`);
      return undefined;
    }
    return v;
  }

  /** One of `values`. */
  oneOf<T extends string>(field: string, def: T, values: readonly T[]): T {
    const v = this.get(field);
    if (v === undefined) return def;
    if (typeof v === "string" && (values as readonly string[]).includes(v)) return v as T;
    this.add(this.at(field), `expected one of ${values.map((x) => `"${x}"`).join(", ")}`);
    return def;
  }

  /** A `"host:port"` string; port 0 only if `allowPortZero`. */
  hostPort(field: string, def: HostPort | undefined, allowPortZero: boolean): HostPort | undefined {
    const v = this.get(field);
    if (v === undefined) return def;
    return readHostPortValue(v, this.at(field), this.issues, allowPortZero) ?? def;
  }

  /** A nested object, read with its own field list. */
  object(field: string, fields: readonly string[]): ObjectReader {
    return new ObjectReader(this.get(field) ?? {}, this.at(field), this.issues, fields);
  }
}

/** Validates one `"host:port"` value found at `path`. */
export function readHostPortValue(
  v: unknown,
  path: string,
  issues: ConfigIssue[],
  allowPortZero: boolean,
): HostPort | undefined {
  if (typeof v !== "string") {
    issues.push({ path, message: `expected "host:port", got ${typeName(v)}` });
    return undefined;
  }
  try {
    const hp = parseHostPort(v);
    if (hp.port === 0 && !allowPortZero) {
      issues.push({ path, message: "port must be from 1 to 65535" });
      return undefined;
    }
    return hp;
  } catch (e) {
    if (!(e instanceof HostPortError)) throw e;
    issues.push({ path, message: e.message });
    return undefined;
  }
}

/** Default logging settings. */
export const DEFAULT_LOG: Readonly<LogConfig> = Object.freeze({ level: "info", format: "text" });

/** Reads the `log` object of either daemon's config. */
export function readLogConfig(parent: ObjectReader): LogConfig {
  const r = parent.object("log", ["level", "format", "categories"]);
  const out: LogConfig = {
    level: r.oneOf("level", DEFAULT_LOG.level, LOG_LEVELS),
    format: r.oneOf("format", DEFAULT_LOG.format, LOG_FORMATS),
  };
  const raw = r.get("categories");
  if (raw !== undefined && raw !== null) {
    const path = r.at("categories");
    if (!isPlainObject(raw)) {
      r.add(path, `expected an object of "category": "level", got ${typeName(raw)}`);
    } else {
      const categories: Record<string, LogLevelName> = {};
      for (const [name, level] of Object.entries(raw)) {
        if (!/^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/.test(name)) {
          r.add(joinPath(path, name), 'expected a category such as "server.dispatcher"');
        } else if (
          typeof level !== "string" || !(LOG_LEVELS as readonly string[]).includes(level)
        ) {
          r.add(joinPath(path, name), `expected one of ${LOG_LEVELS.join(", ")}`);
        } else categories[name] = level as LogLevelName;
      }
      out.categories = categories;
    }
  }
  return out;
}

/** Reads an access key string at `path`; the message never includes the key. */
export function readKeyValue(
  v: unknown,
  path: string,
  issues: ConfigIssue[],
): Uint8Array | undefined {
  if (typeof v !== "string") {
    issues.push({
      path,
      message: `expected an access key string (hex or base64url), got ${typeName(v)}`,
    });
    return undefined;
  }
  try {
    return parseAccessKey(v);
  } catch (e) {
    issues.push({ path, message: (e as Error).message });
    return undefined;
  }
}

/**
 * The server's configuration: defaults, validation, loading and the
 * commented template `ostp-server init` writes.
 * @module
 */

import { readServerCarriers, SERVER_CARRIER_FIELDS } from "./carrier_config.ts";
import { readServerL3Config } from "./server_l3_config.ts";
import {
  formatAccessKey,
  generateAccessKey,
  KeyFormatError,
  parseAccessKey,
} from "../crypto/keys.ts";
import {
  ConfigError,
  type ConfigIssue,
  DEFAULT_LOG,
  formatHostPort,
  type HostPort,
  isIPv4,
  isIPv6,
  isUnspecifiedHost,
  MAX_SERVER_WORKERS,
  ObjectReader,
  readHostPortValue,
  readJsoncFile,
  readKeyValue,
  readLogConfig,
  type ServerConfig,
  typeName,
  type UserConfig,
} from "./types.ts";
import { readConfigSecretFiles, secretFileAt, type SecretFiles, secretLines } from "./secrets.ts";
import { readControlSetting } from "./control.ts";
import { readEgressConfig } from "./egress.ts";
import { parsePortSet } from "./port_set.ts";

export type { ServerConfig } from "./types.ts";

/** Default values of every server field that has one (everything but `keys`). */
export const SERVER_DEFAULTS: Readonly<Omit<ServerConfig, "keys" | "publicAddress">> = Object
  .freeze({
    users: [],
    stateFile: null,
    statsFlushInterval: 5,
    listen: [{ host: "0.0.0.0", port: 8443 }],
    maxSessions: 1024,
    handshakeRate: 200,
    handshakeBurst: 400,
    idleTimeout: 600,
    replayWindow: 300,
    replayCacheSize: 131072,
    connectTimeout: 10,
    maxStreamsPerSession: 8192,
    mtu: 1350,
    log: DEFAULT_LOG,
    egress: Object.freeze({ allow: [], deny: [] }),
    allowInPorts: [],
  });

/** The fields a server config file may contain. */
export const SERVER_FIELDS = [
  "listen",
  "keys",
  "keyFiles",
  "publicAddress",
  "maxSessions",
  "handshakeRate",
  "handshakeBurst",
  "idleTimeout",
  "replayWindow",
  "replayCacheSize",
  "connectTimeout",
  "maxStreamsPerSession",
  "mtu",
  "log",
  "users",
  "stateFile",
  "statsFlushInterval",
  "api",
  "control",
  "egress",
  "workers",
  "l3",
  "tcpUpstream",
  "udpUpstream",
  "allowInPorts",
  ...SERVER_CARRIER_FIELDS,
] as const;

/** The fields of one `users[]` entry. */
export const USER_FIELDS = [
  "name",
  "key",
  "limitBytes",
  "expires",
  "enabled",
  "address",
  "allowInPorts",
] as const;

const USER_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
const ISO_DATE_RE =
  /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

function readListen(r: ObjectReader): HostPort[] {
  const v = r.get("listen");
  if (v === undefined) return SERVER_DEFAULTS.listen.map((hp) => ({ ...hp }));
  if (!Array.isArray(v)) {
    r.add("listen", `expected an array of "host:port" strings, got ${typeName(v)}`);
    return [];
  }
  if (v.length === 0) r.add("listen", "needs at least one address");
  const out: HostPort[] = [];
  const seen = new Map<string, number>();
  v.forEach((item, i) => {
    const hp = readHostPortValue(item, `listen[${i}]`, r.issues, true);
    if (!hp) return;
    const k = formatHostPort(hp).toLowerCase();
    const prev = seen.get(k);
    if (prev !== undefined && hp.port !== 0) {
      r.add(`listen[${i}]`, `duplicate of listen[${prev}]`);
      return;
    }
    seen.set(k, i);
    out.push(hp);
  });
  return out;
}

/** Reads `keys`, then the keys in the files of `keyFiles`; every key unique. */
function readKeys(
  r: ObjectReader,
  haveUsers: boolean,
  seen: Map<string, string>,
  files: SecretFiles | undefined,
): Uint8Array[] {
  const out: Uint8Array[] = [];
  // `label` names the key in later duplicate messages; `where` prefixes this one's message.
  const take = (key: Uint8Array, path: string, label: string, where = ""): void => {
    const hex = formatAccessKey(key, "hex");
    const prev = seen.get(hex);
    if (prev !== undefined) {
      r.add(path, `${where}duplicate of ${prev}`);
      return;
    }
    seen.set(hex, label);
    out.push(key);
  };
  const kf = r.get("keyFiles");
  // Keys may come from elsewhere: users, or keyFiles (a value of the wrong type is reported below).
  const otherwise = haveUsers || (kf !== undefined && !(Array.isArray(kf) && kf.length === 0));
  if (!r.has("keys")) {
    if (!otherwise) r.add("keys", "required (or keyFiles, or users)");
  } else {
    const v = r.get("keys");
    if (!Array.isArray(v)) {
      r.add("keys", `expected an array of access keys, got ${typeName(v)}`);
    } else if (v.length === 0) {
      if (!otherwise) {
        r.add("keys", "needs at least one access key (generate one with --generate-key)");
      }
    } else {
      v.forEach((item, i) => {
        const key = readKeyValue(item, `keys[${i}]`, r.issues);
        if (key) take(key, `keys[${i}]`, `keys[${i}]`);
      });
    }
  }
  if (kf === undefined) return out;
  if (!Array.isArray(kf)) {
    r.add("keyFiles", `expected an array of file paths, got ${typeName(kf)}`);
    return out;
  }
  kf.forEach((item, i) => {
    const path = `keyFiles[${i}]`;
    const f = secretFileAt(item, path, r.issues, files);
    if (!f) return;
    const lines = secretLines(f.text);
    if (lines.length === 0) r.add(path, `${f.path} holds no access key`);
    for (const l of lines) {
      const where = `${f.path} line ${l.line}`;
      try {
        take(parseAccessKey(l.text), path, where, `${where}: `);
      } catch (e) {
        if (!(e instanceof KeyFormatError)) throw e;
        r.add(path, `${where}: ${e.message}`);
      }
    }
  });
  return out;
}

/** True if the config has a non-empty `users` array (then `keys` may be absent). */
function hasUsers(r: ObjectReader): boolean {
  const v = r.get("users");
  return Array.isArray(v) && v.length > 0;
}

function readUsers(r: ObjectReader, seenKeys: Map<string, string>): UserConfig[] {
  const v = r.get("users");
  if (v === undefined) return [];
  if (!Array.isArray(v)) {
    r.add("users", `expected an array of users, got ${typeName(v)}`);
    return [];
  }
  const out: UserConfig[] = [];
  const names = new Map<string, number>();
  v.forEach((item, i) => {
    const path = `users[${i}]`;
    const u = new ObjectReader(item, path, r.issues, USER_FIELDS);
    const before = r.issues.length;
    let name = "";
    if (u.require("name")) {
      name = u.string("name") ?? "";
      if (typeof u.get("name") === "string") {
        if (!USER_NAME_RE.test(name)) {
          u.add(u.at("name"), "expected 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'");
        } else if (/^key-\d+$/.test(name)) {
          u.add(u.at("name"), 'names "key-N" are reserved for the entries of keys');
        } else if (names.has(name)) {
          u.add(u.at("name"), `duplicate of users[${names.get(name)}].name`);
        } else names.set(name, i);
      }
    }
    let key: Uint8Array | undefined;
    if (u.require("key")) {
      key = readKeyValue(u.get("key"), u.at("key"), r.issues);
      if (key) {
        const hex = formatAccessKey(key, "hex");
        const prev = seenKeys.get(hex);
        if (prev !== undefined) u.add(u.at("key"), `duplicate of ${prev}`);
        else seenKeys.set(hex, u.at("key"));
      }
    }
    const user: UserConfig = { name, key: key ?? new Uint8Array(32), enabled: true };
    if (u.has("limitBytes")) {
      user.limitBytes = u.integer("limitBytes", 1, 1, Number.MAX_SAFE_INTEGER);
    }
    const exp = u.get("expires");
    if (exp !== undefined) {
      const t = typeof exp === "string" && ISO_DATE_RE.test(exp) ? Date.parse(exp) : NaN;
      if (Number.isNaN(t)) {
        u.add(u.at("expires"), 'expected an ISO-8601 date or date-time ("2030-01-31T00:00:00Z")');
      } else user.expires = t;
    }
    const en = u.get("enabled");
    if (en !== undefined) {
      if (typeof en !== "boolean") {
        u.add(u.at("enabled"), `expected true or false, got ${typeName(en)}`);
      } else user.enabled = en;
    }
    if (u.has("address")) {
      const a = u.string("address");
      if (a !== undefined && !/^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a)) {
        u.add(u.at("address"), "expected the user's fixed layer-3 IPv4 address (see l3)");
      } else if (a !== undefined) user.address = a;
    }
    if (u.has("allowInPorts")) {
      user.allowInPorts = [
        ...parsePortSet(u.get("allowInPorts"), u.at("allowInPorts"), r.issues)
          .ranges,
      ].map(([lo, hi]) => [lo, hi]);
    }
    if (r.issues.length === before) out.push(user);
  });
  return out;
}

/**
 * Validates a raw server configuration (parsed JSON) and fills in defaults.
 * The keys of `keyFiles` follow those of `keys` in {@link ServerConfig.keys}.
 * @param source where the config came from, for the error message.
 * @param files the files `keyFiles` names, read ahead ({@link readConfigSecretFiles});
 *   {@link loadServerConfig} does it.
 * @throws {ConfigError} listing every problem; no message contains a key.
 */
export function parseServerConfig(
  raw: unknown,
  source?: string,
  files?: SecretFiles,
): ServerConfig {
  const issues: ConfigIssue[] = [];
  const r = new ObjectReader(raw, "", issues, SERVER_FIELDS);
  const d = SERVER_DEFAULTS;
  const listen = readListen(r);
  const seenKeys = new Map<string, string>();
  const keys = readKeys(r, hasUsers(r), seenKeys, files);
  const users = readUsers(r, seenKeys);
  let stateFile: string | null = d.stateFile;
  if (r.has("stateFile")) {
    const f = r.string("stateFile");
    if (f !== undefined && (f.length === 0 || f.includes("\0"))) {
      r.add("stateFile", "expected a file path");
    } else if (f !== undefined) stateFile = f;
  }
  const publicAddress = r.hostPort("publicAddress", undefined, false);
  if (publicAddress && isUnspecifiedHost(publicAddress.host)) {
    r.add("publicAddress", "must be an address clients can reach, not a wildcard address");
  }
  const cfg: ServerConfig = {
    listen,
    keys,
    maxSessions: r.integer("maxSessions", d.maxSessions, 1, 1_000_000),
    handshakeRate: r.number("handshakeRate", d.handshakeRate, 1, 1_000_000),
    handshakeBurst: r.integer("handshakeBurst", d.handshakeBurst, 1, 1_000_000),
    idleTimeout: r.seconds("idleTimeout", d.idleTimeout, 1, 604_800),
    replayWindow: r.seconds("replayWindow", d.replayWindow, 1, 3600),
    replayCacheSize: r.integer("replayCacheSize", d.replayCacheSize, 1024, 16_777_216),
    connectTimeout: r.seconds("connectTimeout", d.connectTimeout, 0.1, 300),
    maxStreamsPerSession: r.integer("maxStreamsPerSession", d.maxStreamsPerSession, 1, 1_048_576),
    mtu: r.integer("mtu", d.mtu, 576, 65000),
    log: readLogConfig(r),
    users,
    stateFile,
    statsFlushInterval: r.seconds("statsFlushInterval", d.statsFlushInterval, 0.1, 3600),
    egress: readEgressConfig(r.get("egress"), "egress", issues),
    allowInPorts: r.has("allowInPorts")
      ? [...parsePortSet(r.get("allowInPorts"), "allowInPorts", issues).ranges].map((
        [lo, hi],
      ) => [lo, hi])
      : [],
  };
  if (publicAddress) cfg.publicAddress = publicAddress;
  const tcpUp = r.hostPort("tcpUpstream", undefined, false);
  if (tcpUp) cfg.tcpUpstream = tcpUp;
  const udpUp = r.hostPort("udpUpstream", undefined, false);
  if (udpUp) {
    if (!isIPv4(udpUp.host) && !isIPv6(udpUp.host)) {
      r.add("udpUpstream", "must be an IP address and port (it is not resolved)");
    } else cfg.udpUpstream = udpUp;
  }
  if (r.has("workers") && r.get("workers") !== null) {
    cfg.workers = r.integer("workers", 1, 1, MAX_SERVER_WORKERS);
  }
  const fixed = users.flatMap((u) => (u.address ? [u.address] : []));
  const l3 = readServerL3Config(r, fixed);
  if (l3) {
    cfg.l3 = l3;
    // IPv6 needs 1280 bytes on every link (RFC 8200): the kernel refuses an IPv6 address on a
    // smaller TUN. 97 bytes of a datagram go to the packet and frame (docs/l3.md).
    const inner = l3.mtu ?? cfg.mtu - 97;
    if (l3.subnet6 !== undefined && inner < 1280) {
      r.add(
        "l3",
        `subnet6 needs an inner MTU of at least 1280 (IPv6's minimum); it is ${inner}: ` +
          "set mtu to at least 1377",
      );
    }
  } else if (fixed.length > 0) r.add("users", "a user's address needs the l3 block");
  const carriers = readServerCarriers(r);
  if (Object.keys(carriers).length > 0) cfg.carriers = carriers;
  const control = readControlSetting(r);
  if (control !== undefined) cfg.control = control;
  if (r.has("api") && r.get("api") !== null) {
    const a = r.object("api", ["listen", "token"]);
    const listenApi = a.hostPort("listen", { host: "127.0.0.1", port: 9090 }, true)!;
    const token = a.string("token");
    if (token === undefined) {
      a.add(a.at("token"), "required: a bearer token of at least 16 characters");
    } else if (token.length < 16 || token.length > 512 || /\s/.test(token)) {
      a.add(a.at("token"), "expected 16..512 characters without spaces");
    } else cfg.api = { listen: listenApi, token };
  }
  if (issues.length > 0) throw new ConfigError(issues, source);
  return cfg;
}

/**
 * Reads, parses (JSONC) and validates a server config file, with the key
 * files its `keyFiles` names (relative to its directory).
 * @throws {ConfigError} naming the file and every problem.
 */
export async function loadServerConfig(path: string): Promise<ServerConfig> {
  const raw = await readJsoncFile(path);
  return parseServerConfig(raw, path, await readConfigSecretFiles(raw, "server", path));
}

/**
 * A complete, commented server config file (JSONC) with every field at its
 * default. `keys` holds the given keys, or a freshly generated one so the
 * result is valid as is.
 */
export function serverConfigTemplate(options: { keys?: Uint8Array[] } = {}): string {
  const d = SERVER_DEFAULTS;
  const keys = options.keys ?? [generateAccessKey()];
  const keyLines = keys.map((k) => `    "${formatAccessKey(k, "hex")}",`).join("\n");
  const listen = d.listen.map((hp) => `"${formatHostPort(hp)}"`).join(", ");
  return `// ostp-server configuration (JSON with comments). Durations are in seconds.
{
  // Addresses to listen on (UDP): "host:port", "[ipv6]:port".
  "listen": [${listen}],
  // Access keys (64 hex or 43 base64url characters); clients need one. Keep them secret.
  // Each is an anonymous user without limits, named "key-1", "key-2", ... in order.
  "keys": [
${keyLines}
  ],
  // Files of more keys, one per line ("#" comments and blank lines ignored), relative to this
  // file; re-read on reload (SIGHUP). Keep them private (chmod 600).
  // "keyFiles": ["keys.txt"],
  // Named users with their own keys (unique across keys and users) and optional limits:
  // limitBytes (traffic up + down), expires (ISO-8601 date or date-time), enabled.
  // Sessions of a user who is over the limit, expired or disabled are closed with the reason.
  // "users": [
  //   { "name": "alice", "key": "<64 hex>", "limitBytes": 10737418240,
  //     "expires": "2030-01-31T00:00:00Z", "enabled": true },
  // ],
  // SQLite file keeping the per-user counters across restarts (relative to the working
  // directory); absent or null: counters are kept in memory only.
  // "stateFile": "ostp-server.db",
  // Seconds between writes of changed counters to stateFile (a crash loses at most this much).
  "statsFlushInterval": ${d.statsFlushInterval},
  // Local control socket for "ostp-server status" (Unix socket, mode 0600; false: none).
  // Default: $XDG_RUNTIME_DIR/ostp/server.sock, /run/ostp/server.sock as root, else
  // <temp dir>/ostp-<uid>/server.sock.
  // "control": "/run/ostp/server.sock",
  // Management API (docs/api.md), off unless set; keep it on loopback.
  // "api": { "listen": "127.0.0.1:9090", "token": "a long random secret" },
  // Egress policy (docs/egress.md): the server refuses to connect, for its clients, to loopback,
  // private (RFC 1918), link-local (cloud metadata), CGNAT, multicast and other non-global
  // ranges, IPv6 ULA/link-local, the IPv4-mapped forms of all of them, and its own addresses.
  // "allow" opens exceptions, "deny" refuses more; each entry is a CIDR or an address,
  // optionally with ":port" or ":lo-hi" (IPv6 in brackets then); the most specific entry wins.
  // "egress": { "allow": ["10.91.2.0/24", "127.0.0.1:8080"], "deny": ["0.0.0.0/0:25"] },
  // Address that share links advertise, if clients reach the server under another address.
  // "publicAddress": "vpn.example.com:8443",
  // Worker threads running the sessions (docs/workers.md); absent: one per core (at most 16).
  // 1 runs everything on the main thread. Each worker applies handshakeRate on its own.
  // "workers": 2,
  // Most concurrent sessions.
  "maxSessions": ${d.maxSessions},
  // Handshakes per second accepted on average (token bucket refill rate).
  "handshakeRate": ${d.handshakeRate},
  // Handshakes accepted in a burst (token bucket size).
  "handshakeBurst": ${d.handshakeBurst},
  // Seconds without traffic after which a session is closed.
  "idleTimeout": ${d.idleTimeout},
  // Handshake timestamps older or newer than this many seconds are rejected.
  "replayWindow": ${d.replayWindow},
  // Handshakes remembered to detect replays.
  "replayCacheSize": ${d.replayCacheSize},
  // Seconds allowed for an outbound TCP connect.
  "connectTimeout": ${d.connectTimeout},
  // Most concurrent streams per session.
  "maxStreamsPerSession": ${d.maxStreamsPerSession},
  // Largest datagram sent, in bytes (576..65000).
  "mtu": ${d.mtu},
  // Logging: level trace|debug|info|warning|error, format text|json (to stderr).
  // Levels per category may override it, most specific first:
  //   "categories": { "server.dispatcher": "debug", "client": "warning" }
  "log": { "level": "${d.log.level}", "format": "${d.log.format}" },
  // Port mappings (docs/mappings.md): where clients' OUT mappings to ANY go, and the ports
  // their IN mappings may open here (none by default; users[].allowInPorts adds per user).
  // "tcpUpstream": "127.0.0.1:5432",
  // "udpUpstream": "10.0.0.53:53",
  // "allowInPorts": [18080, "20000-20100"],
}
`;
}

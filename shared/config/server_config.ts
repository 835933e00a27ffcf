/**
 * The server's configuration: defaults, validation, loading and the
 * commented template `ostp-server init` writes.
 * @module
 */

import { formatAccessKey, generateAccessKey } from "../crypto/keys.ts";
import {
  ConfigError,
  type ConfigIssue,
  DEFAULT_LOG,
  formatHostPort,
  type HostPort,
  isUnspecifiedHost,
  ObjectReader,
  readHostPortValue,
  readJsoncFile,
  readKeyValue,
  readLogConfig,
  type ServerConfig,
  typeName,
} from "./types.ts";

export type { ServerConfig } from "./types.ts";

/** Default values of every server field that has one (everything but `keys`). */
export const SERVER_DEFAULTS: Readonly<Omit<ServerConfig, "keys" | "publicAddress">> = Object
  .freeze({
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
  });

/** The fields a server config file may contain. */
export const SERVER_FIELDS = [
  "listen",
  "keys",
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
] as const;

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

function readKeys(r: ObjectReader): Uint8Array[] {
  if (!r.require("keys")) return [];
  const v = r.get("keys");
  if (!Array.isArray(v)) {
    r.add("keys", `expected an array of access keys, got ${typeName(v)}`);
    return [];
  }
  if (v.length === 0) {
    r.add("keys", "needs at least one access key (generate one with --generate-key)");
    return [];
  }
  const out: Uint8Array[] = [];
  const seen = new Map<string, number>();
  v.forEach((item, i) => {
    const key = readKeyValue(item, `keys[${i}]`, r.issues);
    if (!key) return;
    const hex = formatAccessKey(key, "hex");
    const prev = seen.get(hex);
    if (prev !== undefined) {
      r.add(`keys[${i}]`, `duplicate of keys[${prev}]`);
      return;
    }
    seen.set(hex, i);
    out.push(key);
  });
  return out;
}

/**
 * Validates a raw server configuration (parsed JSON) and fills in defaults.
 * @param source where the config came from, for the error message.
 * @throws {ConfigError} listing every problem; no message contains a key.
 */
export function parseServerConfig(raw: unknown, source?: string): ServerConfig {
  const issues: ConfigIssue[] = [];
  const r = new ObjectReader(raw, "", issues, SERVER_FIELDS);
  const d = SERVER_DEFAULTS;
  const listen = readListen(r);
  const keys = readKeys(r);
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
  };
  if (publicAddress) cfg.publicAddress = publicAddress;
  if (issues.length > 0) throw new ConfigError(issues, source);
  return cfg;
}

/**
 * Reads, parses (JSONC) and validates a server config file.
 * @throws {ConfigError} naming the file and every problem.
 */
export async function loadServerConfig(path: string): Promise<ServerConfig> {
  return parseServerConfig(await readJsoncFile(path), path);
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
  "keys": [
${keyLines}
  ],
  // Address that share links advertise, if clients reach the server under another address.
  // "publicAddress": "vpn.example.com:8443",
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
}
`;
}

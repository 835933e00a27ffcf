/**
 * The client's configuration: defaults, validation, loading and the
 * commented template `ostp-client init` writes.
 * @module
 */

import { formatAccessKey, generateAccessKey } from "../crypto/keys.ts";
import {
  type ClientConfig,
  ConfigError,
  type ConfigIssue,
  DEFAULT_LOG,
  formatHostPort,
  type HostPort,
  isUnspecifiedHost,
  ObjectReader,
  type ProxyAuth,
  readJsoncFile,
  readKeyValue,
  readLogConfig,
} from "./types.ts";
import {
  passwordFromFile,
  readConfigSecretFiles,
  secretFileField,
  type SecretFiles,
  singleSecretLine,
} from "./secrets.ts";
import { readControlSetting } from "./control.ts";
import { readRoutingConfig, ROUTING_FIELDS } from "../../client/router/config.ts";
import { readTunConfig } from "./tun_config.ts";
import { readClientL3Config } from "./client_l3_config.ts";
import { CLIENT_CARRIER_FIELDS, readClientCarriers } from "./carrier_config.ts";
import { CLIENT_NAT_FIELDS, readClientNat } from "./nat_config.ts";
import { type Mapping, MappingError, parseMapping } from "./mapping_config.ts";

export type { ClientConfig } from "./types.ts";

/** Default values of every client field that has one (everything but `server` and `key`). */
export const CLIENT_DEFAULTS: Readonly<
  Omit<ClientConfig, "server" | "key" | "auth" | "routing">
> = Object
  .freeze({
    listen: { host: "127.0.0.1", port: 1088 },
    mux: 1,
    mtu: 1350,
    keepalive: 10,
    idleTimeout: 30,
    connectTimeout: 10,
    reconnect: { initialDelay: 0.5, maxDelay: 30 },
    log: DEFAULT_LOG,
    mappings: [],
    proxy: true,
    hopInterval: 0,
    systemProxy: false,
  });

/** The fields a client config file may contain. */
export const CLIENT_FIELDS = [
  "server",
  "key",
  "keyFile",
  "listen",
  "auth",
  "mux",
  "mtu",
  "keepalive",
  "idleTimeout",
  "connectTimeout",
  "reconnect",
  "log",
  "control",
  "tun",
  "l3",
  ...CLIENT_CARRIER_FIELDS,
  ...CLIENT_NAT_FIELDS,
  "mappings",
  "proxy",
  "hopInterval",
  "systemProxy",
  "heartbeatInterval",
  "heartbeatTimeout",
  ...ROUTING_FIELDS,
] as const;

/** Names of the client's inbounds, which `rules[].inbound` may name. */
export const CLIENT_INBOUNDS = ["proxy", "tun", "mapping"] as const;

/** Smallest and largest MTU either side accepts. */
export const MTU_RANGE = { min: 576, max: 65000 } as const;
/** Smallest and largest number of parallel client sessions. */
export const MUX_RANGE = { min: 1, max: 16 } as const;

const encoder = new TextEncoder();

/** Reads one of the auth strings (1..255 bytes); never echoes it. */
function readCredential(r: ObjectReader, field: "username" | "password"): string | undefined {
  if (!r.require(field)) return undefined;
  const v = r.string(field);
  if (v === undefined) return undefined;
  const n = encoder.encode(v).length;
  if (n < 1 || n > 255) {
    r.add(r.at(field), `must be 1 to 255 bytes of UTF-8 (got ${n})`);
    return undefined;
  }
  return v;
}

/** Checks a password read from `auth.passwordFile` as {@link readCredential} checks `password`. */
function passwordFileCredential(
  a: ObjectReader,
  files: SecretFiles | undefined,
): string | undefined {
  const f = secretFileField(a, "passwordFile", files);
  if (!f) return undefined;
  const p = passwordFromFile(f);
  if ("error" in p) {
    a.add(a.at("passwordFile"), p.error);
    return undefined;
  }
  const n = encoder.encode(p.text).length;
  if (n > 255) {
    a.add(a.at("passwordFile"), `the password must be 1 to 255 bytes of UTF-8 (got ${n})`);
    return undefined;
  }
  return p.text;
}

function readAuth(r: ObjectReader, files: SecretFiles | undefined): ProxyAuth | undefined {
  if (!r.has("auth")) return undefined;
  const a = r.object("auth", ["username", "password", "passwordFile"]);
  const username = readCredential(a, "username");
  let password: string | undefined;
  if (a.has("passwordFile")) {
    if (a.has("password")) a.add(a.at("passwordFile"), "give password or passwordFile, not both");
    else password = passwordFileCredential(a, files);
  } else password = readCredential(a, "password");
  return username !== undefined && password !== undefined ? { username, password } : undefined;
}

/** Reads `key`, or the one key of the file `keyFile` names; never both. */
function readClientKey(r: ObjectReader, files: SecretFiles | undefined): Uint8Array | undefined {
  if (!r.has("keyFile")) {
    return r.require("key") ? readKeyValue(r.get("key"), "key", r.issues) : undefined;
  }
  if (r.has("key")) {
    r.add("keyFile", "give key or keyFile, not both");
    return undefined;
  }
  const f = secretFileField(r, "keyFile", files);
  if (!f) return undefined;
  const line = singleSecretLine(f, "access key");
  if ("error" in line) {
    r.add("keyFile", line.error);
    return undefined;
  }
  return readKeyValue(line.text, "keyFile", r.issues);
}

/**
 * Validates a raw client configuration (parsed JSON) and fills in defaults.
 * @param source where the config came from, for the error message.
 * @param files the files `keyFile` and `auth.passwordFile` name, read ahead
 *   ({@link readConfigSecretFiles}); {@link loadClientConfig} does it.
 * @throws {ConfigError} listing every problem; no message contains the key or password.
 */
export function parseClientConfig(
  raw: unknown,
  source?: string,
  files?: SecretFiles,
): ClientConfig {
  const issues: ConfigIssue[] = [];
  const r = new ObjectReader(raw, "", issues, CLIENT_FIELDS);
  const d = CLIENT_DEFAULTS;
  let server: HostPort | undefined;
  if (r.require("server")) {
    server = r.hostPort("server", undefined, false);
    if (server && isUnspecifiedHost(server.host)) {
      r.add("server", "must be an address to connect to, not a wildcard address");
    }
  }
  const key = readClientKey(r, files);
  const listen = r.hostPort("listen", { ...d.listen }, true)!;
  const auth = readAuth(r, files);
  const before = issues.length;
  // Heartbeats (docs/mappings.md) are the keepalive and idle timeout under the names rstun's users
  // know; 0 turns each off.
  const hbInterval = r.has("heartbeatInterval")
    ? r.seconds("heartbeatInterval", d.keepalive, 0, 3600)
    : undefined;
  const hbTimeout = r.has("heartbeatTimeout")
    ? r.seconds("heartbeatTimeout", d.idleTimeout, 0, 86400)
    : undefined;
  if (hbInterval !== undefined && r.has("keepalive")) {
    r.add("heartbeatInterval", "give keepalive or heartbeatInterval, not both");
  }
  if (hbTimeout !== undefined && r.has("idleTimeout")) {
    r.add("heartbeatTimeout", "give idleTimeout or heartbeatTimeout, not both");
  }
  const keepalive = hbInterval ?? r.seconds("keepalive", d.keepalive, 0, 3600);
  const idleTimeout = hbTimeout ?? r.seconds("idleTimeout", d.idleTimeout, 0, 86400);
  if (keepalive > 0 && keepalive < 0.5) {
    r.add("keepalive", "must be 0 (off) or at least 0.5 seconds");
  }
  if (idleTimeout > 0 && idleTimeout < 1) {
    r.add("idleTimeout", "must be 0 (never) or at least 1 second");
  }
  if (issues.length === before && idleTimeout > 0 && keepalive > 0 && idleTimeout <= keepalive) {
    if (r.has("idleTimeout") || r.has("heartbeatTimeout")) {
      r.add(
        r.has("idleTimeout") ? "idleTimeout" : "heartbeatTimeout",
        "must be greater than keepalive",
      );
    } else r.add("keepalive", "must be less than idleTimeout");
  }
  const rr = r.object("reconnect", ["initialDelay", "maxDelay"]);
  const beforeReconnect = issues.length;
  const reconnect = {
    initialDelay: rr.seconds("initialDelay", d.reconnect.initialDelay, 0.01, 3600),
    maxDelay: rr.seconds("maxDelay", d.reconnect.maxDelay, 0.01, 86400),
  };
  if (issues.length === beforeReconnect && reconnect.maxDelay < reconnect.initialDelay) {
    rr.add(rr.at("maxDelay"), "must not be less than initialDelay");
  }
  const cfg = {
    server,
    key,
    listen,
    mux: r.integer("mux", d.mux, MUX_RANGE.min, MUX_RANGE.max),
    mtu: r.integer("mtu", d.mtu, MTU_RANGE.min, MTU_RANGE.max),
    keepalive,
    idleTimeout,
    connectTimeout: r.seconds("connectTimeout", d.connectTimeout, 0.1, 300),
    reconnect,
    log: readLogConfig(r),
    mappings: readMappings(r),
    proxy: r.get("proxy") === undefined ? true : r.get("proxy") === true,
    hopInterval: r.seconds("hopInterval", 0, 0, 86400),
    systemProxy: r.get("systemProxy") === true,
  };
  if (r.has("systemProxy") && typeof r.get("systemProxy") !== "boolean") {
    r.add("systemProxy", "expected true or false");
  }
  if (cfg.systemProxy && !cfg.proxy) r.add("systemProxy", "needs the proxy (proxy: true)");
  if (r.has("proxy") && typeof r.get("proxy") !== "boolean") {
    r.add("proxy", "expected true or false");
  }
  if (cfg.hopInterval > 0 && cfg.hopInterval < 5) {
    r.add("hopInterval", "must be 0 (off) or at least 5 seconds");
  }
  if (!cfg.proxy && cfg.mappings.length === 0 && r.has("proxy")) {
    r.add("proxy", "with the proxy off, give at least one mapping (mappings.tcp or mappings.udp)");
  }
  const control = readControlSetting(r);
  const routing = readRoutingConfig(r, { inbounds: CLIENT_INBOUNDS });
  const tun = readTunConfig(r);
  const l3 = readClientL3Config(r);
  const nat = readClientNat(r, files);
  const carriers = readClientCarriers(r, nat?.turn !== undefined);
  if (tun && l3) r.add("l3", "give tun or l3, not both (each routes through its own TUN)");
  if (issues.length > 0 || !server || !key) throw new ConfigError(issues, source);
  const out: ClientConfig = { ...cfg, server, key, routing };
  if (tun) out.tun = tun;
  if (l3) out.l3 = l3;
  if (CLIENT_CARRIER_FIELDS.some((f) => r.has(f)) || nat?.turn) out.carriers = carriers;
  if (nat) out.nat = nat;
  if (auth) out.auth = auth;
  if (control !== undefined) out.control = control;
  return out;
}

/** Reads `"mappings": {"tcp": [...], "udp": [...]}` (each entry `MODE^a^b`). */
function readMappings(r: ObjectReader): Mapping[] {
  if (!r.has("mappings")) return [];
  const m = r.object("mappings", ["tcp", "udp"]);
  const out: Mapping[] = [];
  for (const proto of ["tcp", "udp"] as const) {
    const v = m.get(proto);
    if (v === undefined) continue;
    const list = typeof v === "string" ? v.split(",") : v;
    if (!Array.isArray(list) || list.some((x) => typeof x !== "string")) {
      m.add(m.at(proto), 'expected an array of "MODE^[ip:]port^[ip:]port" strings');
      continue;
    }
    list.forEach((spec: string, i) => {
      if (spec.trim() === "") return;
      try {
        out.push(parseMapping(spec, proto, out.length + 1));
      } catch (e) {
        if (!(e instanceof MappingError)) throw e;
        m.add(`${m.at(proto)}[${i}]`, e.message);
      }
    });
  }
  return out;
}

/**
 * Reads, parses (JSONC) and validates a client config file, with the files
 * its `keyFile` and `auth.passwordFile` name (relative to its directory).
 * @throws {ConfigError} naming the file and every problem.
 */
export async function loadClientConfig(path: string): Promise<ClientConfig> {
  const raw = await readJsoncFile(path);
  return parseClientConfig(raw, path, await readConfigSecretFiles(raw, "client", path));
}

/**
 * A complete, commented client config file (JSONC) with every field at its
 * default. Without `server` and `key`, placeholders are used (a fresh random
 * key, which must be replaced by the server's) so the result parses as is.
 */
export function clientConfigTemplate(
  options: { server?: HostPort; key?: Uint8Array } = {},
): string {
  const d = CLIENT_DEFAULTS;
  const server = formatHostPort(options.server ?? { host: "vpn.example.com", port: 8443 });
  const key = formatAccessKey(options.key ?? generateAccessKey(), "hex");
  return `// ostp-client configuration (JSON with comments). Durations are in seconds.
{
  // The server, "host:port" or "[ipv6]:port".
  "server": "${server}",
  // The access key the server gave you (64 hex or 43 base64url characters). Keep it secret.
  "key": "${key}",
  // Or, instead of "key": a file holding the key (relative to this file; "#" starts a comment).
  // "keyFile": "client.key",
  // Local SOCKS5 + HTTP proxy address.
  "listen": "${formatHostPort(d.listen)}",
  // Credentials the local proxy asks for (1..255 bytes each); omit for none.
  // "passwordFile" (a file holding the password) may replace "password".
  // "auth": { "username": "me", "password": "change me" },
  // Parallel sessions to the server (1..16).
  "mux": ${d.mux},
  // Largest datagram sent, in bytes (576..65000).
  "mtu": ${d.mtu},
  // Seconds between keepalives while idle.
  "keepalive": ${d.keepalive},
  // Seconds without anything from the server before the session is closed (unanswered
  // packets start a new handshake beside it after about a second).
  "idleTimeout": ${d.idleTimeout},
  // Seconds allowed for a handshake or for opening a stream.
  "connectTimeout": ${d.connectTimeout},
  // Reconnect backoff: first delay and ceiling, in seconds.
  "reconnect": { "initialDelay": ${d.reconnect.initialDelay}, "maxDelay": ${d.reconnect.maxDelay} },
  // Logging: level trace|debug|info|warning|error, format text|json (to stderr).
  // Levels per category may override it, most specific first:
  //   "categories": { "server.dispatcher": "debug", "client": "warning" }
  "log": { "level": "${d.log.level}", "format": "${d.log.format}" },
  // Local control socket for "ostp-client status" (Unix socket, mode 0600; false: none).
  // Default: $XDG_RUNTIME_DIR/ostp/client.sock, /run/ostp/client.sock as root, else
  // <temp dir>/ostp-<uid>/client.sock.
  // "control": "/run/user/1000/ostp/client.sock",

  // Routing (docs/routing.md): which outbound carries each flow. The built-in outbounds
  // are "ostp" (the tunnel), "direct" (from this host) and "block" (refused).
  // Always direct, before the rules: domain suffixes, CIDRs, program file names.
  // "exclude": {
  //   "domains": ["trusted-site.com", "local.lan"],
  //   "ips": ["192.168.1.0/24", "10.0.0.0/8"],
  //   "processes": ["discord.exe", "steam.exe"]
  // },
  // Tried in order, first match wins; every matcher of a rule must match. Matchers:
  // domain, domainSuffix, ip, port (443 or "8000-8100"), network ("tcp"|"udp"),
  // inbound ("proxy"), process.
  // "rules": [
  //   { "port": 25, "outbound": "block" },
  //   { "domainSuffix": ["corp.example"], "outbound": "corp" }
  // ],
  // More outbounds: "http" sends TCP through an HTTP CONNECT proxy (it cannot carry UDP).
  // "outbounds": [
  //   { "name": "corp", "type": "http", "url": "http://user:pass@proxy.corp.example:3128" }
  // ],
  // Outbound of flows no rule matches.
  // "defaultOutbound": "ostp",
  // Host names and "ip" rules: with never, a name is resolved where the flow leaves (the
  // server for "ostp"); with onDemand, here when an "ip" rule could change the decision.
  // "resolve": "never",

  // Port mappings (docs/mappings.md), MODE^[ip:]port^[ip:]port: OUT^local^target|ANY forwards a
  // local port to a target reached from the server; IN^local-target^server-listen publishes one.
  // "mappings": { "tcp": ["OUT^5432^db.internal:5432"], "udp": ["IN^51820^20000"] },
  // false: no local proxy (mappings only).
  // "proxy": true,
  // Seconds between socket hops (a new source port, same session); 0: none, else at least 5.
  // "hopInterval": 0,
  // Windows: point the system proxy at "listen" while running (restored on exit).
  // "systemProxy": false,
  // NAT traversal (docs/nat.md): STUN servers for the public address of the session's socket,
  // and a TURN relay to reach the server through (a turn block makes "turn" the carrier).
  // "stun": ["stun.example.net:3478"],
  // ("passwordFile": a file holding it, or OSTP_TURN_PASSWORD, instead of "password")
  // "turn": { "server": "turn.example.net:3478", "username": "me", "password": "change me" },
}
`;
}

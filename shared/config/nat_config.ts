/**
 * The client's NAT-traversal settings (docs/nat.md): `stun` (servers the
 * session's UDP socket asks for its public mapping), `stunInterval`, and
 * `turn` (a relay the session reaches the server through):
 *
 * ```jsonc
 * "stun": ["stun.example.net:3478"],
 * "stunInterval": 60,
 * "turn": { "server": "turn.example.net:3478", "username": "u",
 *           "passwordFile": "turn.pw", "transport": "udp" }   // or "tcp", "tls"
 * ```
 * The password comes from `password`, `passwordFile` or the environment's
 * `OSTP_TURN_PASSWORD` (the CLI's job); it is never logged.
 * @module
 */

import {
  type ConfigIssue,
  type HostPort,
  HostPortError,
  type ObjectReader,
  parseHostPort,
  typeName,
} from "./types.ts";
import { secretFileField, type SecretFiles } from "./secrets.ts";

/** The STUN and TURN port when a name comes without one (RFC 8489, RFC 8656). */
export const STUN_DEFAULT_PORT = 3478;

/** Transports a TURN server is reached over. */
export const TURN_TRANSPORTS = ["udp", "tcp", "tls"] as const;

/** The TURN-over-TLS port when a name comes without one (RFC 8656 "turns"). */
export const TURNS_DEFAULT_PORT = 5349;

/** A TURN relay and its account. */
export interface TurnServerConfig {
  /** Where the TURN server listens. */
  server: HostPort;
  /** Long-term credential username. */
  username: string;
  /** Its password. */
  password: string;
  /** How the TURN server is reached. */
  transport: (typeof TURN_TRANSPORTS)[number];
  /** TLS: the name the TURN server's certificate must carry (default: the server's host). */
  serverName?: string;
  /** TLS: a CA certificate file (PEM) trusted besides the system's. */
  ca?: string;
  /** Allocation lifetime to ask for, s (absent: the server's default). */
  lifetime?: number;
}

/** What the client's NAT fields say. */
export interface ClientNatConfig {
  /** STUN servers for the mapping of the session's socket (may be empty). */
  stun: HostPort[];
  /** Seconds between two mapping checks on one socket; 0: only when a socket opens. */
  stunInterval: number;
  /** The relay, if any. */
  turn?: TurnServerConfig;
}

/** The top-level fields this module reads. */
export const CLIENT_NAT_FIELDS = ["stun", "stunInterval", "turn"] as const;

/** Default seconds between mapping checks (NATs forget idle UDP after 30 s to a few minutes). */
export const DEFAULT_STUN_INTERVAL = 60;

/** Parses a STUN/TURN server as a person wrote it (`host`, `host:port`, `stun:host:port`). */
export function parseStunServer(s: string, defaultPort = STUN_DEFAULT_PORT): HostPort {
  const t = s.trim().replace(/^(stun|turns?):/i, "");
  return parseHostPort(t, defaultPort);
}

function hostPortAt(
  v: unknown,
  path: string,
  issues: ConfigIssue[],
  defaultPort = STUN_DEFAULT_PORT,
): HostPort | undefined {
  if (typeof v !== "string") {
    issues.push({ path, message: `expected "host:port", got ${typeName(v)}` });
    return undefined;
  }
  try {
    const hp = parseStunServer(v, defaultPort);
    if (hp.port === 0) throw new HostPortError("port must be from 1 to 65535");
    return hp;
  } catch (e) {
    if (!(e instanceof HostPortError)) throw e;
    issues.push({ path, message: e.message });
    return undefined;
  }
}

/** Reads `stun`, `stunInterval` and `turn`; undefined when none is given. */
export function readClientNat(r: ObjectReader, files?: SecretFiles): ClientNatConfig | undefined {
  if (!CLIENT_NAT_FIELDS.some((f) => r.has(f))) return undefined;
  const out: ClientNatConfig = {
    stun: [],
    stunInterval: r.seconds("stunInterval", DEFAULT_STUN_INTERVAL, 0, 86400),
  };
  if (out.stunInterval > 0 && out.stunInterval < 5) {
    r.add(r.at("stunInterval"), "must be 0 (off) or at least 5 seconds");
  }
  const s = r.get("stun");
  if (s !== undefined) {
    const list = typeof s === "string" ? [s] : s;
    if (!Array.isArray(list)) {
      r.add(r.at("stun"), `expected an array of "host:port", got ${typeName(s)}`);
    } else {
      list.forEach((x, i) => {
        const hp = hostPortAt(x, `${r.at("stun")}[${i}]`, r.issues);
        if (hp) out.stun.push(hp);
      });
    }
  }
  if (r.has("turn")) {
    const t = r.object("turn", [
      "server",
      "username",
      "password",
      "passwordFile",
      "transport",
      "serverName",
      "ca",
      "lifetime",
    ]);
    const transport = t.oneOf("transport", "udp", TURN_TRANSPORTS);
    const server = t.require("server")
      ? hostPortAt(
        t.get("server"),
        t.at("server"),
        r.issues,
        transport === "tls" ? TURNS_DEFAULT_PORT : STUN_DEFAULT_PORT,
      )
      : undefined;
    const serverName = t.string("serverName");
    const ca = t.string("ca");
    if (transport !== "tls" && (serverName !== undefined || ca !== undefined)) {
      t.add(t.at(serverName !== undefined ? "serverName" : "ca"), 'only with "transport": "tls"');
    }
    const username = t.require("username") ? t.string("username") : undefined;
    let password = t.string("password");
    if (t.has("password") && t.has("passwordFile")) {
      t.add(t.at("passwordFile"), "give password or passwordFile, not both");
    } else if (t.has("passwordFile")) {
      password = secretFileField(t, "passwordFile", files)?.text;
    } else if (password === undefined) {
      t.add(
        t.at("password"),
        "required (password, passwordFile, OSTP_TURN_PASSWORD or --turn-password-file)",
      );
    }
    const lifetime = t.has("lifetime") ? t.integer("lifetime", 600, 10, 86400) : undefined;
    if (server && username !== undefined && password !== undefined) {
      if (username.length === 0) t.add(t.at("username"), "must not be empty");
      out.turn = { server, username, password, transport };
      if (lifetime !== undefined) out.turn.lifetime = lifetime;
      if (serverName !== undefined) out.turn.serverName = serverName;
      if (ca !== undefined) out.turn.ca = ca;
    }
  }
  return out;
}

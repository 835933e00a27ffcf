/**
 * Share links: everything a client needs in one line,
 * `ostp://<key as base64url>@<host>:<port>?mtu=1350&mux=1#<url-encoded name>`
 * (an IPv6 host in brackets). Links arrive from chats and QR codes, so
 * parsing is strict and errors say what is wrong without echoing the key.
 * Unknown query parameters are ignored so newer links still work here.
 * @module
 */

import { type CarrierChoice, parseCarrierChoice } from "./config/carrier_config.ts";
import {
  ACCESS_KEY_LENGTH,
  formatAccessKey,
  KeyFormatError,
  parseAccessKey,
} from "./crypto/keys.ts";
import {
  CLIENT_DEFAULTS,
  MTU_RANGE,
  MUX_RANGE,
  parseClientConfig,
} from "./config/client_config.ts";
import {
  type ClientConfig,
  formatHostPort,
  type HostPort,
  HostPortError,
  isUnspecifiedHost,
  parseHostPort,
} from "./config/types.ts";

/** What a share link carries. */
export interface ShareLink {
  /** The 32-byte access key. */
  key: Uint8Array;
  /** The server's address. */
  server: HostPort;
  /** A display name for the server, if any. */
  name?: string;
  /** The MTU the server suggests, if any. */
  mtu?: number;
  /** The number of parallel sessions the server suggests, if any. */
  mux?: number;
  /** The carrier to use (`carrier=`: udp, faketcp, uot, tls or auto), if any. */
  carrier?: CarrierChoice;
  /** The server's ports for carriers other than UDP (`faketcp=`, `uot=`, `tls=`, `fecport=`). */
  ports?: { faketcp?: number; uot?: number; tls?: number; fecport?: number };
  /** The name the server's TLS certificate carries (`sni=`), when not the server's host. */
  sni?: string;
  /**
   * A TURN relay to reach the server through (`turn=host:port`,
   * `turnuser=`); a link never carries the relay's password.
   */
  turn?: { server: HostPort; username?: string };
}

const PORT_RANGE = { min: 1, max: 65535 };
const CARRIER_PORT_KEYS = ["faketcp", "uot", "tls", "fecport"] as const;
const SNI_RE = /^[A-Za-z0-9.-]{1,253}$/;

/**
 * Thrown for a malformed share link (or, when encoding, invalid fields); the
 * message reads `invalid share link: <reason>` and never contains the key.
 */
export class LinkError extends Error {
  /** What is wrong, without the `invalid share link: ` prefix. */
  readonly reason: string;

  /** Creates the error from the reason. */
  constructor(reason: string) {
    super(`invalid share link: ${reason}`);
    this.name = "LinkError";
    this.reason = reason;
  }
}

/** URL scheme of share links. */
export const LINK_SCHEME = "ostp";
/** Longest share link accepted. */
export const MAX_LINK_LENGTH = 4096;
/** Longest server name accepted, in characters. */
export const MAX_NAME_LENGTH = 256;

function checkInt(v: number, what: string, range: { min: number; max: number }): void {
  if (!Number.isInteger(v) || v < range.min || v > range.max) {
    throw new LinkError(`${what} must be an integer from ${range.min} to ${range.max}`);
  }
}

/**
 * Encodes a share link. The key is written as base64url, the name
 * percent-encoded; `mtu` and `mux` only when set.
 * @throws {LinkError} if a field is out of range.
 */
export function encodeShareLink(l: ShareLink): string {
  if (!(l.key instanceof Uint8Array) || l.key.length !== ACCESS_KEY_LENGTH) {
    throw new LinkError(`key must be ${ACCESS_KEY_LENGTH} bytes`);
  }
  if (!Number.isInteger(l.server.port) || l.server.port < 1 || l.server.port > 65535) {
    throw new LinkError("server port must be from 1 to 65535");
  }
  try {
    parseHostPort(formatHostPort(l.server));
  } catch (e) {
    throw new LinkError(`server: ${(e as Error).message}`);
  }
  let s = `${LINK_SCHEME}://${formatAccessKey(l.key, "base64url")}@${formatHostPort(l.server)}`;
  const q: string[] = [];
  if (l.mtu !== undefined) {
    checkInt(l.mtu, "mtu", MTU_RANGE);
    q.push(`mtu=${l.mtu}`);
  }
  if (l.mux !== undefined) {
    checkInt(l.mux, "mux", MUX_RANGE);
    q.push(`mux=${l.mux}`);
  }
  if (l.carrier !== undefined) {
    if (parseCarrierChoice(l.carrier) !== l.carrier) throw new LinkError("unknown carrier");
    q.push(`carrier=${l.carrier}`);
  }
  for (const k of CARRIER_PORT_KEYS) {
    const port = l.ports?.[k];
    if (port === undefined) continue;
    checkInt(port, `${k} port`, PORT_RANGE);
    q.push(`${k}=${port}`);
  }
  if (l.sni !== undefined) {
    if (!SNI_RE.test(l.sni)) throw new LinkError("sni must be a host name");
    q.push(`sni=${l.sni}`);
  }
  if (l.turn !== undefined) {
    try {
      parseHostPort(formatHostPort(l.turn.server));
    } catch (e) {
      throw new LinkError(`turn: ${(e as Error).message}`);
    }
    q.push(`turn=${encodeURIComponent(formatHostPort(l.turn.server))}`);
    if (l.turn.username !== undefined) q.push(`turnuser=${encodeURIComponent(l.turn.username)}`);
  }
  if (q.length > 0) s += `?${q.join("&")}`;
  if (l.name !== undefined && l.name !== "") s += `#${encodeURIComponent(l.name)}`;
  return s;
}

function decodeComponent(s: string, what: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new LinkError(`${what} is not valid percent-encoding`);
  }
}

function parseQueryInt(value: string, what: string, range: { min: number; max: number }): number {
  if (!/^\d{1,6}$/.test(value)) {
    throw new LinkError(`${what} must be an integer from ${range.min} to ${range.max}`);
  }
  const n = Number(value);
  checkInt(n, what, range);
  return n;
}

/**
 * Decodes and validates a share link. Surrounding whitespace is ignored, the
 * scheme is case-insensitive, a single `/` after the port is tolerated, and
 * unknown query parameters are ignored.
 * @throws {LinkError} saying what is wrong; never includes the key.
 */
export function decodeShareLink(s: string): ShareLink {
  if (typeof s !== "string") throw new LinkError("not a string");
  let rest = s.trim();
  if (rest.length === 0) throw new LinkError("empty");
  if (rest.length > MAX_LINK_LENGTH) {
    throw new LinkError(`longer than ${MAX_LINK_LENGTH} characters`);
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]{0,15}):/.exec(rest);
  if (!scheme || scheme[1].toLowerCase() !== LINK_SCHEME) {
    const got = scheme ? ` (got "${scheme[1]}:")` : "";
    throw new LinkError(`must start with ${LINK_SCHEME}://${got}`);
  }
  rest = rest.substring(scheme[0].length);
  if (!rest.startsWith("//")) throw new LinkError(`must start with ${LINK_SCHEME}://`);
  rest = rest.substring(2);
  let name: string | undefined;
  const hash = rest.indexOf("#");
  if (hash >= 0) {
    const raw = rest.substring(hash + 1);
    rest = rest.substring(0, hash);
    if (raw.length > 0) {
      name = decodeComponent(raw, "name");
      if (/\p{Cc}/u.test(name)) throw new LinkError("name contains control characters");
      if (name.length > MAX_NAME_LENGTH) {
        throw new LinkError(`name is longer than ${MAX_NAME_LENGTH} characters`);
      }
    }
  }
  if (/[\s\p{Cc}]/u.test(rest)) {
    throw new LinkError("contains spaces or control characters before the name");
  }
  let query = "";
  const qm = rest.indexOf("?");
  if (qm >= 0) {
    query = rest.substring(qm + 1);
    rest = rest.substring(0, qm);
  }
  if (rest.endsWith("/")) rest = rest.substring(0, rest.length - 1);
  if (rest.includes("/")) throw new LinkError("unexpected path after host:port");

  const at = rest.indexOf("@");
  if (at < 0) {
    throw new LinkError(`no key (expected ${LINK_SCHEME}://KEY@host:port)`);
  }
  const keyText = rest.substring(0, at);
  const hostText = rest.substring(at + 1);
  if (keyText.length === 0) throw new LinkError("the key is empty");
  if (hostText.includes("@")) throw new LinkError('more than one "@"');
  let key: Uint8Array;
  try {
    key = parseAccessKey(decodeComponent(keyText, "key"));
  } catch (e) {
    if (e instanceof KeyFormatError) throw new LinkError(`invalid key: ${e.message}`);
    throw e;
  }

  let server: HostPort;
  try {
    server = parseHostPort(hostText);
  } catch (e) {
    if (e instanceof HostPortError) throw new LinkError(`invalid server address: ${e.message}`);
    throw e;
  }
  if (server.port === 0) {
    throw new LinkError("invalid server address: port must be from 1 to 65535");
  }
  if (isUnspecifiedHost(server.host)) {
    throw new LinkError("invalid server address: a wildcard address cannot be connected to");
  }

  const link: ShareLink = { key, server };
  if (name !== undefined) link.name = name;
  const seen = new Set<string>();
  for (const part of query.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const k = decodeComponent(eq < 0 ? part : part.substring(0, eq), "query parameter");
    const v = decodeComponent(eq < 0 ? "" : part.substring(eq + 1), "query parameter");
    if (seen.has(k)) throw new LinkError(`query parameter ${k} is given twice`);
    if (k === "mtu" || k === "mux") {
      link[k] = parseQueryInt(v, k, k === "mtu" ? MTU_RANGE : MUX_RANGE);
    } else if (k === "carrier") {
      const c = parseCarrierChoice(v);
      if (c === null) throw new LinkError("carrier must be udp, faketcp, uot, tls or auto");
      link.carrier = c;
    } else if (k === "faketcp" || k === "uot" || k === "tls" || k === "fecport") {
      (link.ports ??= {})[k] = parseQueryInt(v, `${k} port`, PORT_RANGE);
    } else if (k === "sni") {
      if (!SNI_RE.test(v)) throw new LinkError("sni must be a host name");
      link.sni = v;
    } else if (k === "turn") {
      let server: HostPort;
      try {
        server = parseHostPort(v, 3478);
      } catch (e) {
        throw new LinkError(`turn: ${(e as Error).message}`);
      }
      link.turn = { ...link.turn, server };
    } else if (k === "turnuser") {
      if (v.length === 0 || v.length > 256) {
        throw new LinkError("turnuser must be 1 to 256 characters");
      }
      link.turn = { ...(link.turn ?? { server: { host: "", port: 0 } }), username: v };
    } else continue; // forward compatibility
    seen.add(k);
  }
  if (link.turn && link.turn.server.port === 0) throw new LinkError("turnuser needs turn=");
  return link;
}

/**
 * A client configuration that connects to the link's server with its key
 * (and its `mtu` and `mux`, if given); every other field takes its default,
 * then `overrides` (shallow: a nested object given replaces the default one).
 * A link's TURN relay is left out: without its password it cannot be used
 * (the CLI takes it with `--turn-password-file` or `OSTP_TURN_PASSWORD`).
 */
export function clientConfigFromLink(
  l: ShareLink,
  overrides: Partial<ClientConfig> = {},
): ClientConfig {
  const raw: Record<string, unknown> = {
    server: formatHostPort(l.server),
    key: formatAccessKey(l.key, "hex"),
    mtu: l.mtu ?? CLIENT_DEFAULTS.mtu,
    mux: l.mux ?? CLIENT_DEFAULTS.mux,
  };
  if (l.carrier !== undefined) raw.carrier = l.carrier;
  if (l.ports?.faketcp !== undefined) raw.faketcp = { port: l.ports.faketcp };
  if (l.ports?.uot !== undefined) raw.uot = { port: l.ports.uot };
  if (l.ports?.fecport !== undefined) raw.fecPort = l.ports.fecport;
  if (l.ports?.tls !== undefined || l.sni !== undefined) {
    raw.tls = {
      ...(l.ports?.tls !== undefined ? { port: l.ports.tls } : {}),
      ...(l.sni !== undefined ? { serverName: l.sni } : {}),
    };
  }
  return { ...parseClientConfig(raw, "share link"), ...overrides };
}

/**
 * The "http" outbound: TCP flows through an upstream HTTP proxy, one
 * `CONNECT host:port HTTP/1.1` per flow (RFC 9110 §9.3.6), with optional
 * Basic authentication (RFC 7617). The proxy is given as
 * `http://[user[:password]@]host[:port]` (default port 80, the scheme's) or
 * `https://…` (TLS to the proxy, default port 443). The upstream-proxy VPN
 * mode uses it. UDP cannot be carried: `openUdp` rejects.
 *
 * The proxy's answer head is read with a bound ({@link MAX_CONNECT_HEAD_BYTES}
 * by default); on a 2xx the connection becomes the flow's stream, with any
 * bytes that arrived after the head delivered first. Other answers map to
 * DialError reasons: 407 and 403 → "denied", 502 → "unreachable",
 * 503 → "refused", 504 → "timeout" (refined by squid's `X-Squid-Error`
 * header when present), anything else → "general". The password never
 * appears in an error message or a log line.
 * @module
 */

import { DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import { HostPortError, parseHostPort } from "../../shared/config/types.ts";
import { toDialError } from "../../shared/net/direct.ts";
import { parseIPv6 } from "../../shared/net/ip.ts";
import { BufferedReader, closeQuietly, encodeLatin1, writeAll } from "../../shared/pipe.ts";
import { TimeoutLink, TimeoutQueue } from "../../shared/timeout_queue.ts";
import { type Header, HttpError, readResponseHead } from "../inbound/http.ts";
import {
  type FlowContext,
  formatTarget,
  type Outbound,
  type UdpFlow,
  type UdpReplyHandler,
} from "./outbound.ts";

/** A parsed upstream proxy address. */
export interface HttpProxyUrl {
  /** True for `https://` (TLS to the proxy). */
  secure: boolean;
  /** Host name or IP literal (IPv6 without brackets). */
  host: string;
  /** TCP port, 1–65535. */
  port: number;
  /** Basic credentials, percent-decoded, when the URL has a user. */
  credentials?: { username: string; password: string };
}

/** A malformed proxy URL; the message never contains the URL or its password. */
export class ProxyUrlError extends Error {
  /** What is wrong, without the `invalid proxy URL: ` prefix. */
  readonly reason: string;
  /** Creates the error from the reason. */
  constructor(reason: string) {
    super(`invalid proxy URL: ${reason}`);
    this.name = "ProxyUrlError";
    this.reason = reason;
  }
}

/** Longest proxy URL accepted. */
export const MAX_PROXY_URL_LENGTH = 2048;
/** Default bound of the proxy's answer head (status line and headers). */
export const MAX_CONNECT_HEAD_BYTES = 16 * 1024;
/** Interim (1xx) answers skipped before the final one at most. */
const MAX_INTERIM = 4;

const SCHEME_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
/** RFC 3986 userinfo characters (unreserved, pct-encoded, sub-delims, ":"). */
const USERINFO_RE = /^[A-Za-z0-9\-._~!$&'()*+,;=%:]*$/;
// deno-lint-ignore no-control-regex
const CTL_RE = /[\x00-\x1f\x7f]/;
const HOST_CHARS_RE = /^[A-Za-z0-9_.-]+$/;

function decodeCredential(s: string, what: string): string {
  let out: string;
  try {
    out = decodeURIComponent(s);
  } catch {
    throw new ProxyUrlError(`the ${what} is not valid percent-encoding`);
  }
  if (CTL_RE.test(out)) throw new ProxyUrlError(`the ${what} contains control characters`);
  return out;
}

/**
 * Parses `http://[user[:password]@]host[:port][/]` or the same with
 * `https://`. User and password are percent-decoded (`%40` for "@", `%3A`
 * for ":" in a password); the user may not contain ":" (RFC 7617). The
 * default port is 80 for http and 443 for https. No path, query or fragment.
 * @throws {ProxyUrlError} with a message that repeats no part of the input.
 */
export function parseProxyUrl(text: string): HttpProxyUrl {
  if (typeof text !== "string" || text.length === 0) throw new ProxyUrlError("empty");
  if (text.length > MAX_PROXY_URL_LENGTH) throw new ProxyUrlError("too long");
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x20\x7f-\uffff]/.test(text)) {
    throw new ProxyUrlError("spaces, control and non-ASCII characters must be percent-encoded");
  }
  const m = SCHEME_RE.exec(text);
  if (!m) throw new ProxyUrlError('expected "http://[user:password@]host[:port]"');
  const scheme = m[1].toLowerCase();
  if (scheme !== "http" && scheme !== "https") {
    throw new ProxyUrlError("the scheme must be http:// or https://");
  }
  const secure = scheme === "https";
  let rest = text.slice(m[0].length);
  const end = rest.search(/[/?#]/);
  if (end >= 0) {
    if (rest.slice(end) !== "/") {
      throw new ProxyUrlError("a proxy URL has no path, query or fragment");
    }
    rest = rest.slice(0, end);
  }
  let credentials: HttpProxyUrl["credentials"];
  const at = rest.indexOf("@");
  if (at >= 0) {
    if (rest.indexOf("@", at + 1) >= 0) {
      throw new ProxyUrlError('an "@" in the user name or password must be written %40');
    }
    const info = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (!USERINFO_RE.test(info)) {
      throw new ProxyUrlError("the user name or password has characters to percent-encode");
    }
    const colon = info.indexOf(":");
    const user = decodeCredential(colon >= 0 ? info.slice(0, colon) : info, "user name");
    const pass = colon >= 0 ? decodeCredential(info.slice(colon + 1), "password") : "";
    if (user.length === 0) throw new ProxyUrlError("the user name is empty");
    if (user.includes(":")) throw new ProxyUrlError('the user name may not contain ":"');
    credentials = { username: user, password: pass };
  }
  if (rest.length === 0) throw new ProxyUrlError("the host is missing");
  let hp;
  try {
    hp = parseHostPort(rest, secure ? 443 : 80);
  } catch (e) {
    if (e instanceof HostPortError) throw new ProxyUrlError(e.message);
    throw e;
  }
  if (hp.port === 0) throw new ProxyUrlError("the port must be from 1 to 65535");
  const out: HttpProxyUrl = { secure, host: hp.host, port: hp.port };
  if (credentials) out.credentials = credentials;
  return out;
}

/** The proxy's address for logs and messages: scheme, user name, host and port, never the password. */
export function describeProxy(p: HttpProxyUrl): string {
  const user = p.credentials ? `${encodeURIComponent(p.credentials.username)}@` : "";
  return `${p.secure ? "https" : "http"}://${user}${formatTarget(p)}`;
}

/** `Basic <base64(user:password)>` with UTF-8 bytes (RFC 7617 §2.1 charset UTF-8). */
export function basicAuthorization(username: string, password: string): string {
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

/**
 * `host:port` for a CONNECT request line (IPv6 in brackets).
 * @throws {DialError} "general" for a host that is neither a name nor an IP literal, or a bad port.
 */
export function connectAuthority(t: Target): string {
  if (!Number.isInteger(t.port) || t.port < 1 || t.port > 65535) {
    throw new DialError("general", "invalid target port");
  }
  const h = t.host;
  if (h.includes(":")) {
    if (!parseIPv6(h)) throw new DialError("general", "invalid target host");
    return `[${h}]:${t.port}`;
  }
  if (h.length === 0 || h.length > 253 || !HOST_CHARS_RE.test(h)) {
    throw new DialError("general", "invalid target host");
  }
  return `${h}:${t.port}`;
}

/**
 * The CONNECT request: request line, `Host`, and `Proxy-Authorization` when
 * `authorization` (a full header value) is given.
 * @throws {DialError} "general" for an invalid target.
 */
export function encodeConnectRequest(target: Target, authorization?: string): Uint8Array {
  const authority = connectAuthority(target);
  let s = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
  if (authorization !== undefined) s += `Proxy-Authorization: ${authorization}\r\n`;
  return encodeLatin1(s + "\r\n");
}

function headerValue(headers: Header[], name: string): string | undefined {
  for (const [n, v] of headers) if (n.toLowerCase() === name) return v;
  return undefined;
}

/**
 * The DialError for a proxy's non-2xx answer to CONNECT. `X-Squid-Error`
 * (`ERR_DNS_FAIL`, `ERR_CONNECT_FAIL <errno>`) refines 5xx answers.
 * @param authSent whether the request carried credentials (for the 407 message).
 */
export function dialErrorForStatus(
  status: number,
  headers: Header[],
  authSent: boolean,
): DialError {
  if (status === 407) {
    return new DialError(
      "denied",
      authSent
        ? "proxy authentication failed"
        : "proxy authentication required (the proxy URL has no credentials)",
    );
  }
  if (status === 403) {
    return new DialError("denied", "the upstream proxy refused the CONNECT (403)");
  }
  const base = `the upstream proxy answered ${status}`;
  if (status >= 500 && status < 600) {
    const squid = headerValue(headers, "x-squid-error")?.trim().split(/\s+/);
    if (squid?.[0] === "ERR_DNS_FAIL") return new DialError("dns", `${base} (name not resolved)`);
    if (squid?.[0] === "ERR_CONNECT_FAIL") {
      const errno = Number(squid[1]);
      if (errno === 111) return new DialError("refused", `${base} (connection refused)`);
      if (errno === 110) return new DialError("timeout", `${base} (connect timed out)`);
      if (errno === 101 || errno === 113) {
        return new DialError("unreachable", `${base} (target unreachable)`);
      }
    }
  }
  if (status === 502) return new DialError("unreachable", base);
  if (status === 503) return new DialError("refused", base);
  if (status === 504) return new DialError("timeout", base);
  return new DialError("general", base);
}

/**
 * Reads the proxy's answer to a CONNECT from `conn` (at most `maxHeadBytes`
 * per head; up to a few 1xx interim answers are skipped). On 2xx resolves to
 * the tunnel: `conn` itself, or a reader over it that returns the bytes that
 * came after the head first. Otherwise rejects with a DialError (see
 * {@link dialErrorForStatus}; malformed or oversized answers and an early end
 * of stream are "general"); `conn` is left open for the caller to close.
 */
export async function readConnectResponse(
  conn: Duplex,
  authSent: boolean,
  maxHeadBytes: number = MAX_CONNECT_HEAD_BYTES,
): Promise<Duplex> {
  const reader = new BufferedReader(conn, Math.min(4096, maxHeadBytes + 2));
  for (let interim = 0;; interim++) {
    let head;
    try {
      head = await readResponseHead(reader, maxHeadBytes);
    } catch (e) {
      if (e instanceof HttpError) {
        throw new DialError("general", `bad answer from the upstream proxy: ${e.message}`);
      }
      if (e instanceof Deno.errors.UnexpectedEof) {
        throw new DialError("general", "the upstream proxy closed the connection mid-answer");
      }
      throw e;
    }
    if (head === null) {
      throw new DialError("general", "the upstream proxy closed the connection without an answer");
    }
    const status = head.status;
    if (status < 100) throw new DialError("general", "bad answer from the upstream proxy");
    if (status >= 200 && status < 300) return reader.buffered > 0 ? reader : conn;
    if (status >= 200 || status === 101) throw dialErrorForStatus(status, head.headers, authSent);
    if (interim >= MAX_INTERIM) {
      throw new DialError("general", "too many interim answers from the upstream proxy");
    }
  }
}

/** Opens the TCP (or TLS) connection to the proxy. */
export type ProxyConnector = (proxy: HttpProxyUrl, signal: AbortSignal) => Promise<Duplex>;

/** Options of {@link HttpConnectOutbound}. */
export interface HttpConnectOptions {
  /** The proxy: a URL (see {@link parseProxyUrl}) or its parsed form. */
  proxy: string | HttpProxyUrl;
  /** The outbound's name (default `"http"`). */
  name?: string;
  /**
   * Limit for reaching the proxy and getting its answer, ms (default 10 000):
   * DialError "timeout" after it.
   */
  connectTimeoutMs?: number;
  /** Bound of the answer head, bytes (default {@link MAX_CONNECT_HEAD_BYTES}). */
  maxHeadBytes?: number;
  /** Extra root certificates (PEM) for an https:// proxy. */
  caCerts?: string[];
  /** Set TCP_NODELAY on connections to the proxy (default true). */
  noDelay?: boolean;
  /** Opens the connection to the proxy; default: TCP with `Deno.connect`, then TLS for https. */
  connect?: ProxyConnector;
}

/** One CONNECT in progress: ended by its timeout or the caller's abort. */
class PendingConnect extends TimeoutLink {
  readonly ctl = new AbortController();
  /** Why the dial was cut short, once it was. */
  failure: DialError | null = null;
  /** The proxy connection, once open (closed on timeout or abort). */
  conn: Duplex | null = null;

  onTimeout(): void {
    this.#end(new DialError("timeout", "the upstream proxy did not answer in time"));
  }

  /** Forwards the caller's abort. */
  readonly onAbort = (): void => this.#end(new DialError("general", "dial aborted"));

  #end(e: DialError): void {
    if (this.failure) return;
    this.failure = e;
    this.ctl.abort(e);
    closeQuietly(this.conn);
  }
}

function defaultConnector(caCerts: string[] | undefined, noDelay: boolean): ProxyConnector {
  return async (proxy, signal) => {
    const tcp = await Deno.connect({ hostname: proxy.host, port: proxy.port, signal });
    if (noDelay) {
      try {
        tcp.setNoDelay(true);
      } catch { /* not fatal */ }
    }
    if (!proxy.secure) return tcp;
    let tls: Deno.TlsConn;
    try {
      tls = await Deno.startTls(tcp, { hostname: proxy.host, caCerts });
    } catch (e) {
      closeQuietly(tcp);
      throw e;
    }
    // Handshake now, so a certificate problem reads as "cannot reach the proxy".
    if (signal.aborted) {
      closeQuietly(tls);
      throw signal.reason;
    }
    const onAbort = () => closeQuietly(tls);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await tls.handshake();
    } catch (e) {
      closeQuietly(tls);
      throw signal.aborted ? signal.reason : e;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    return tls;
  };
}

/** Carries TCP flows through an upstream HTTP proxy with CONNECT. */
export class HttpConnectOutbound implements Outbound {
  /** The outbound's name. */
  readonly name: string;
  /** The proxy flows go through (credentials included: do not log it; see {@link describeProxy}). */
  readonly #proxy: HttpProxyUrl;
  /** The `Proxy-Authorization` value, when the URL has credentials. */
  readonly #authorization: string | undefined;
  readonly #timeouts: TimeoutQueue;
  readonly #maxHead: number;
  readonly #connect: ProxyConnector;

  /**
   * Creates the outbound; nothing is opened until a flow asks.
   * @throws {ProxyUrlError} for a malformed proxy URL.
   */
  constructor(opts: HttpConnectOptions) {
    this.#proxy = typeof opts.proxy === "string" ? parseProxyUrl(opts.proxy) : opts.proxy;
    this.name = opts.name ?? "http";
    const c = this.#proxy.credentials;
    this.#authorization = c ? basicAuthorization(c.username, c.password) : undefined;
    this.#timeouts = new TimeoutQueue(opts.connectTimeoutMs ?? 10_000);
    this.#maxHead = opts.maxHeadBytes ?? MAX_CONNECT_HEAD_BYTES;
    this.#connect = opts.connect ?? defaultConnector(opts.caCerts, opts.noDelay ?? true);
  }

  /** The proxy, for logs: `http://user@host:port`, never the password. */
  get proxy(): string {
    return describeProxy(this.#proxy);
  }

  /**
   * Connects to the proxy, sends `CONNECT`, and resolves to the tunnel once
   * the proxy answers 2xx.
   * @throws {DialError} "unavailable" when the proxy cannot be reached,
   *   "timeout" when it did not answer in time, or the answer's mapping.
   */
  async dial(ctx: FlowContext, signal?: AbortSignal): Promise<Duplex> {
    const request = encodeConnectRequest(ctx.target, this.#authorization);
    if (signal?.aborted) throw new DialError("general", "dial aborted");
    const p = new PendingConnect();
    signal?.addEventListener("abort", p.onAbort, { once: true });
    this.#timeouts.arm(p);
    let conn: Duplex | null = null;
    try {
      try {
        conn = await this.#connect(this.#proxy, p.ctl.signal);
      } catch (e) {
        if (p.failure) throw p.failure;
        const d = toDialError(e);
        throw new DialError(
          d.reason === "timeout" ? "timeout" : "unavailable",
          `cannot reach the upstream proxy ${formatTarget(this.#proxy)}: ${d.message}`,
        );
      }
      if (p.failure) throw p.failure;
      p.conn = conn;
      await writeAll(conn, request);
      const tunnel = await readConnectResponse(
        conn,
        this.#authorization !== undefined,
        this.#maxHead,
      );
      if (p.failure) throw p.failure;
      return tunnel;
    } catch (e) {
      closeQuietly(conn);
      if (p.failure) throw p.failure;
      if (e instanceof DialError) throw e;
      const d = toDialError(e);
      throw new DialError(d.reason, `upstream proxy: ${d.message}`);
    } finally {
      p.disarm();
      signal?.removeEventListener("abort", p.onAbort);
    }
  }

  /** Always rejects: CONNECT carries TCP only. */
  openUdp(_ctx: FlowContext, _onReply: UdpReplyHandler): Promise<UdpFlow> {
    return Promise.reject(new DialError("general", "the http outbound cannot carry UDP"));
  }
}

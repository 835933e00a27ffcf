/**
 * HTTP/1.1 forward proxy (RFC 9110, RFC 9112): `CONNECT` tunnels and
 * absolute-form requests (`GET http://host/path HTTP/1.1`, any method)
 * forwarded in origin-form over a dialed stream, with keep-alive toward the
 * client and reuse of the upstream stream while requests stay on one host:port.
 *
 * Bodies are streamed, never buffered whole: request bodies by Content-Length
 * or chunked framing, responses by Content-Length, chunked, or close-delimited
 * framing (1xx, 204, 304 and responses to HEAD have none). Chunked bodies are
 * forwarded byte for byte (trailers included), except toward an HTTP/1.0
 * client, which gets them de-chunked and close-delimited. An HTTP/1.0 client
 * that sends `Connection: keep-alive` keeps its connection for responses of
 * known length (Content-Length, or none) and is told so with
 * `Connection: keep-alive`.
 *
 * Header sections (request line or status line included) are limited to
 * {@link MAX_HEADER_BYTES}: a larger request gets 431, a larger response 502
 * (docs/proxy.md).
 *
 * No `Via` header is added: this inbound belongs to a privacy tunnel.
 * @module
 */

import { DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import type { FlowOrigin, Outbound } from "../outbound/outbound.ts";
import {
  BufferedReader,
  closeQuietly,
  encodeLatin1,
  giveBuffer,
  isExpectedDisconnect,
  LineTooLongError,
  relay,
  takeBuffer,
  writeAll,
} from "../../shared/pipe.ts";
import { formatIPv6, parseIPv6 } from "../../shared/net/ip.ts";
import type { ProxyCredentials } from "./socks5.ts";

export type { ProxyCredentials };

/** Default limit for a request's or response's header section, request line included. */
export const MAX_HEADER_BYTES = 64 * 1024;
const CHUNK_LINE_MAX = 4096;
const LINGER_MS = 1000;
const LINGER_MAX_BYTES = 256 * 1024;

/** A header field as received: original name case and order are kept. */
export type Header = [name: string, value: string];

/** A parsed request line and header section. */
export interface RequestHead {
  /** The method token, case preserved (`GET`, `CONNECT`, ...). */
  method: string;
  /** The request-target as sent (absolute-form or authority-form for a proxy). */
  target: string;
  /** HTTP/1.x minor version: 0 or 1. */
  minorVersion: number;
  headers: Header[];
}

/** A parsed status line and header section. */
export interface ResponseHead {
  /** HTTP/1.x minor version of the sender. */
  minorVersion: number;
  status: number;
  reason: string;
  headers: Header[];
}

/** A request that must be answered with `status` and a close. */
export class HttpError extends Error {
  /** The HTTP status code to answer with. */
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "HttpError";
    this.status = status;
  }
}

/** Body framing of one message (RFC 9112 §6.3). */
export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// deno-lint-ignore no-control-regex
const BAD_VALUE_RE = /[\x00-\x08\x0a-\x1f\x7f]/;
const REQUEST_LINE_RE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^ ]+) HTTP\/(\d)\.(\d)$/;
const STATUS_LINE_RE = /^HTTP\/1\.(\d) (\d{3})(?: (.*))?$/;
const HOSTNAME_RE = /^[A-Za-z0-9_.-]+$/;
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/** Header names always removed when forwarding (RFC 9110 §7.6.1, plus the brief's list). */
const HOP_BY_HOP = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "upgrade",
]);
/** Never removed even if named in Connection: they frame the message. */
const FRAMING = new Set(["transfer-encoding", "content-length", "host"]);

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  403: "Forbidden",
  407: "Proxy Authentication Required",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** All values of header `name` (case-insensitive), in order. */
export function headerValues(headers: Header[], name: string): string[] {
  const lower = name.toLowerCase();
  const out: string[] = [];
  for (const [n, v] of headers) if (n.toLowerCase() === lower) out.push(v);
  return out;
}

/** The comma-separated list elements of header `name`, trimmed and lowercased. */
export function headerTokens(headers: Header[], name: string): string[] {
  const out: string[] = [];
  for (const v of headerValues(headers, name)) {
    for (const t of v.split(",")) {
      const s = t.trim().toLowerCase();
      if (s) out.push(s);
    }
  }
  return out;
}

/**
 * Removes hop-by-hop fields: Connection and every field it names,
 * Proxy-Connection, Keep-Alive, Proxy-Authorization, Proxy-Authenticate, TE,
 * Trailer and Upgrade. Transfer-Encoding, Content-Length and Host are kept
 * (body framing is forwarded as received).
 */
export function stripHopByHop(headers: Header[]): Header[] {
  const named = new Set(headerTokens(headers, "connection"));
  return headers.filter(([n]) => {
    const l = n.toLowerCase();
    if (HOP_BY_HOP.has(l)) return false;
    return FRAMING.has(l) || !named.has(l);
  });
}

/**
 * Parses a Content-Length field set: `null` when absent, the length when all
 * values agree (`5, 5` is 5), `undefined` when invalid.
 */
export function parseContentLength(headers: Header[]): number | null | undefined {
  const values = headerValues(headers, "content-length");
  if (values.length === 0) return null;
  let length: number | undefined;
  for (const v of values) {
    for (const part of v.split(",")) {
      const t = part.trim();
      if (!/^\d{1,15}$/.test(t)) return undefined;
      const n = Number(t);
      if (length !== undefined && n !== length) return undefined;
      length = n;
    }
  }
  return length;
}

/**
 * Framing of a request body (RFC 9112 §6.3): chunked when Transfer-Encoding's
 * final coding is chunked, else Content-Length, else none.
 * @throws {HttpError} 400 for both fields, an unknown final coding, a
 * Transfer-Encoding in HTTP/1.0, or an invalid Content-Length.
 */
export function requestFraming(head: RequestHead): BodyFraming {
  const te = headerTokens(head.headers, "transfer-encoding");
  const hasTe = headerValues(head.headers, "transfer-encoding").length > 0;
  const cl = parseContentLength(head.headers);
  if (hasTe) {
    if (head.minorVersion === 0) throw new HttpError(400, "Transfer-Encoding in HTTP/1.0");
    if (cl !== null) throw new HttpError(400, "both Transfer-Encoding and Content-Length");
    if (te.length === 0 || te[te.length - 1] !== "chunked") {
      throw new HttpError(400, "request body not chunked");
    }
    if (te.indexOf("chunked") !== te.length - 1) throw new HttpError(400, "chunked applied twice");
    return { kind: "chunked" };
  }
  if (cl === undefined) throw new HttpError(400, "invalid Content-Length");
  if (cl === null || cl === 0) return { kind: "none" };
  return { kind: "length", length: cl };
}

/**
 * Framing of a response body (RFC 9112 §6.3) to a request with `method`.
 * @throws {HttpError} 502 for an invalid Content-Length.
 */
export function responseFraming(method: string, head: ResponseHead): BodyFraming {
  const s = head.status;
  if (method === "HEAD" || (s >= 100 && s < 200) || s === 204 || s === 304) {
    return { kind: "none" };
  }
  if (headerValues(head.headers, "transfer-encoding").length > 0) {
    const te = headerTokens(head.headers, "transfer-encoding");
    return te[te.length - 1] === "chunked" ? { kind: "chunked" } : { kind: "close" };
  }
  const cl = parseContentLength(head.headers);
  if (cl === undefined) throw new HttpError(502, "invalid Content-Length from upstream");
  if (cl === null) return { kind: "close" };
  return cl === 0 ? { kind: "none" } : { kind: "length", length: cl };
}

/**
 * Parses `host:port` (IPv6 in brackets; IPv6 comes back canonical, without
 * brackets). With `defaultPort`, the port may be omitted. Returns `null` when
 * invalid (no zone IDs, no userinfo, port 1–65535).
 */
export function parseAuthority(s: string, defaultPort?: number): Target | null {
  let host: string;
  let portText: string | undefined;
  if (s.startsWith("[")) {
    const close = s.indexOf("]");
    if (close < 0) return null;
    const v6 = parseIPv6(s.slice(1, close));
    if (!v6) return null;
    host = formatIPv6(v6);
    const rest = s.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return null;
      portText = rest.slice(1);
    }
  } else {
    const colon = s.indexOf(":");
    if (colon !== s.lastIndexOf(":")) return null;
    host = colon < 0 ? s : s.slice(0, colon);
    if (colon >= 0) portText = s.slice(colon + 1);
    if (!HOSTNAME_RE.test(host)) return null;
  }
  let port: number;
  if (portText === undefined || portText === "") {
    if (defaultPort === undefined) return null;
    port = defaultPort;
  } else {
    if (!/^\d{1,5}$/.test(portText)) return null;
    port = Number(portText);
  }
  if (port < 1 || port > 65535) return null;
  return { host, port };
}

/** An absolute-form `http://` request-target, split for forwarding. */
export interface AbsoluteTarget {
  /** Where to dial. */
  target: Target;
  /** The Host header value to send (the URI's authority without userinfo). */
  authority: string;
  /** origin-form: absolute path and query (`/` when the URI had no path). */
  path: string;
}

/**
 * Splits an absolute-form request-target (`http://host[:port]/path?query`).
 * @throws {HttpError} 400 if malformed or not absolute-form, 501 for a scheme other than http.
 */
export function parseAbsoluteTarget(s: string): AbsoluteTarget {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)(?:#.*)?$/.exec(s);
  if (!m) throw new HttpError(400, "request-target is not absolute-form");
  if (m[1].toLowerCase() !== "http") throw new HttpError(501, `scheme ${m[1]} not supported`);
  let authority = m[2];
  const at = authority.lastIndexOf("@");
  if (at >= 0) authority = authority.slice(at + 1);
  const target = parseAuthority(authority, 80);
  if (!target) throw new HttpError(400, "invalid host in request-target");
  let path = m[3];
  if (path === "") path = "/";
  else if (path.startsWith("?")) path = "/" + path;
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x20\x7f]/.test(path)) throw new HttpError(400, "invalid path");
  return { target, authority, path };
}

/** Maps a dial failure to an HTTP status: timeout → 504, denied → 403, anything else → 502. */
export function httpStatusForDialError(e: unknown): number {
  if (e instanceof DialError) {
    if (e.reason === "timeout") return 504;
    if (e.reason === "denied") return 403;
  }
  return 502;
}

const utf8 = new TextEncoder();

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** True when `headers` carry `Proxy-Authorization: Basic` with exactly these credentials (RFC 7617, UTF-8). */
export function checkProxyAuthorization(headers: Header[], auth: ProxyCredentials): boolean {
  const values = headerValues(headers, "proxy-authorization");
  if (values.length !== 1) return false;
  const m = /^basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i.exec(values[0]);
  if (!m) return false;
  let raw: string;
  try {
    raw = atob(m[1]);
  } catch {
    return false;
  }
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  const colon = bytes.indexOf(0x3a);
  if (colon < 0) return false;
  const okUser = equalBytes(bytes.subarray(0, colon), utf8.encode(auth.username));
  const okPass = equalBytes(bytes.subarray(colon + 1), utf8.encode(auth.password));
  return okUser && okPass;
}

/** Reads header lines up to the empty line; `budget` is what remains of the section limit. */
async function readHeaders(
  r: BufferedReader,
  budget: number,
  tooLong: number,
  foldOk: boolean,
): Promise<Header[]> {
  const headers: Header[] = [];
  while (true) {
    let line: string | null;
    try {
      line = await r.readLine(Math.max(0, budget));
    } catch (e) {
      if (e instanceof LineTooLongError) throw new HttpError(tooLong, "header section too large");
      throw e;
    }
    if (line === null) throw new Deno.errors.UnexpectedEof("end of stream in header section");
    budget -= line.length + 2;
    if (budget < 0) throw new HttpError(tooLong, "header section too large");
    if (line === "") return headers;
    const bad = tooLong === 431 ? 400 : 502;
    if (line[0] === " " || line[0] === "\t") {
      // obs-fold: a proxy must reject it in requests or replace it with SP (RFC 9112 §5.2).
      if (!foldOk || headers.length === 0) throw new HttpError(bad, "obsolete line folding");
      headers[headers.length - 1][1] += " " + line.trim();
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw new HttpError(bad, "malformed header line");
    const name = line.slice(0, colon);
    if (!TOKEN_RE.test(name)) throw new HttpError(bad, "invalid header name");
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (BAD_VALUE_RE.test(value) || value.includes("\r")) {
      throw new HttpError(bad, "invalid character in header value");
    }
    headers.push([name, value]);
  }
}

/**
 * Reads a request line and header section (empty lines before the request
 * line are skipped).
 * @returns `null` at a clean end of stream before any byte of a request.
 * @throws {HttpError} 400 malformed, 431 beyond `maxBytes`, 505 for a major version other than 1.
 * @throws {Deno.errors.UnexpectedEof} when the stream ends inside the head.
 */
export async function readRequestHead(
  r: BufferedReader,
  maxBytes: number = MAX_HEADER_BYTES,
): Promise<RequestHead | null> {
  let budget = maxBytes;
  let line: string | null;
  do {
    try {
      line = await r.readLine(Math.max(0, budget));
    } catch (e) {
      if (e instanceof LineTooLongError) throw new HttpError(431, "request head too large");
      throw e;
    }
    if (line === null) return null;
    budget -= line.length + 2;
    if (budget < 0) throw new HttpError(431, "request head too large");
  } while (line === "");
  const m = REQUEST_LINE_RE.exec(line);
  if (!m) throw new HttpError(400, "malformed request line");
  if (m[3] !== "1") throw new HttpError(505, `HTTP/${m[3]}.${m[4]} not supported`);
  const headers = await readHeaders(r, budget, 431, false);
  return { method: m[1], target: m[2], minorVersion: Number(m[4]), headers };
}

/**
 * Reads a status line and header section from an upstream (obs-fold is
 * replaced with a space).
 * @returns `null` at a clean end of stream before any byte.
 * @throws {HttpError} 502 when malformed or larger than `maxBytes`.
 */
export async function readResponseHead(
  r: BufferedReader,
  maxBytes: number = MAX_HEADER_BYTES,
): Promise<ResponseHead | null> {
  let line: string | null;
  try {
    line = await r.readLine(maxBytes);
  } catch (e) {
    if (e instanceof LineTooLongError) throw new HttpError(502, "response head too large");
    throw e;
  }
  if (line === null) return null;
  const m = STATUS_LINE_RE.exec(line);
  if (!m) throw new HttpError(502, "malformed status line");
  const headers = await readHeaders(r, maxBytes - line.length - 2, 502, true);
  return { minorVersion: Number(m[1]), status: Number(m[2]), reason: m[3] ?? "", headers };
}

function encodeHead(startLine: string, headers: Header[]): Uint8Array {
  let s = startLine + "\r\n";
  for (const [n, v] of headers) s += `${n}: ${v}\r\n`;
  return encodeLatin1(s + "\r\n");
}

/** Encodes a short `text/plain` response with `Connection: close`. */
export function errorResponse(status: number, extra: Header[] = []): Uint8Array {
  const reason = REASONS[status] ?? "Error";
  const body = utf8.encode(`${status} ${reason}\n`);
  const head = encodeHead(`HTTP/1.1 ${status} ${reason}`, [
    ["Content-Type", "text/plain; charset=utf-8"],
    ["Content-Length", String(body.length)],
    ["Connection", "close"],
    ...extra,
  ]);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

async function copyLength(
  src: BufferedReader,
  dst: Duplex,
  length: number,
  buf: Uint8Array,
): Promise<void> {
  let left = length;
  while (left > 0) {
    const n = await src.read(left < buf.length ? buf.subarray(0, left) : buf);
    if (n === null) throw new Deno.errors.UnexpectedEof("end of stream inside body");
    await writeAll(dst, buf.subarray(0, n));
    left -= n;
  }
}

const CRLF = Uint8Array.of(13, 10);

async function copyChunked(
  src: BufferedReader,
  dst: Duplex,
  buf: Uint8Array,
  decode: boolean,
): Promise<void> {
  const eof = () => new Deno.errors.UnexpectedEof("end of stream inside chunked body");
  const readLine = async (max: number): Promise<string> => {
    try {
      const line = await src.readLine(max);
      if (line === null) throw eof();
      return line;
    } catch (e) {
      if (e instanceof LineTooLongError) throw new HttpError(400, "malformed chunked body");
      throw e;
    }
  };
  while (true) {
    const line = await readLine(CHUNK_LINE_MAX);
    const m = /^([0-9A-Fa-f]{1,13})[ \t]*(;.*)?$/.exec(line);
    if (!m) throw new HttpError(400, "malformed chunk size");
    const size = parseInt(m[1], 16);
    if (!decode) await writeAll(dst, encodeLatin1(line + "\r\n"));
    if (size === 0) break;
    await copyLength(src, dst, size, buf);
    if ((await readLine(0)) !== "") throw new HttpError(400, "missing CRLF after chunk");
    if (!decode) await writeAll(dst, CRLF);
  }
  // Trailer section, up to the empty line.
  let budget = MAX_HEADER_BYTES;
  while (true) {
    const line = await readLine(Math.max(0, budget));
    budget -= line.length + 2;
    if (budget < 0) throw new HttpError(400, "trailer section too large");
    if (!decode) await writeAll(dst, encodeLatin1(line + "\r\n"));
    if (line === "") return;
  }
}

/** Copies one message body from `src` to `dst` per `framing`; `decode` strips chunked framing. */
async function copyBody(
  src: BufferedReader,
  dst: Duplex,
  framing: BodyFraming,
  buf: Uint8Array,
  decode = false,
): Promise<void> {
  switch (framing.kind) {
    case "none":
      return;
    case "length":
      return await copyLength(src, dst, framing.length, buf);
    case "chunked":
      return await copyChunked(src, dst, buf, decode);
    case "close":
      while (true) {
        const n = await src.read(buf);
        if (n === null) return;
        await writeAll(dst, buf.subarray(0, n));
      }
  }
}

/** The flow origin when the caller gives none. */
const PROXY_ORIGIN: FlowOrigin = Object.freeze({ inbound: "proxy" });

/** What {@link handleHttpProxy} needs. */
export interface HttpProxyOptions {
  /** Opens streams to origins and CONNECT targets (given each request's flow context). */
  outbound: Outbound;
  /** The connection's part of every flow's context; default inbound `proxy`, nothing else known. */
  flow?: FlowOrigin;
  /** When set, every request needs `Proxy-Authorization: Basic` with these (else 407). */
  auth?: ProxyCredentials;
  /** Aborting ends the connection: closes the client and upstream streams. */
  signal?: AbortSignal;
  /** Called when a request head has been read, before dialing (stops a handshake timer). */
  onHandshakeDone?: (target: Target) => void;
  /** Called when a kept-alive connection starts waiting for its next request. */
  onIdle?: () => void;
  /** Called when the first byte of a next request arrives on a kept-alive connection. */
  onRequestStart?: () => void;
  /** Receives unexpected errors (expected disconnects are not reported). */
  onError?: (e: unknown) => void;
  /** Header section limit in bytes; default {@link MAX_HEADER_BYTES}. */
  maxHeaderBytes?: number;
  /** Realm in `Proxy-Authenticate`; default "ostp". */
  realm?: string;
}

/**
 * Whether a request asks to keep its connection (RFC 9112 §9.3): HTTP/1.1
 * unless `Connection` (or the legacy `Proxy-Connection`) says `close`;
 * HTTP/1.0 only when one of them says `keep-alive` (RFC 2068 §19.7.1) and
 * none says `close`.
 */
export function clientWantsKeepAlive(head: RequestHead): boolean {
  const conn = headerTokens(head.headers, "connection");
  const proxyConn = headerTokens(head.headers, "proxy-connection");
  if (conn.includes("close") || proxyConn.includes("close")) return false;
  if (head.minorVersion >= 1) return true;
  return conn.includes("keep-alive") || proxyConn.includes("keep-alive");
}

/** Upstream went away before sending any byte of a response (e.g. an idle keep-alive closed). */
class StaleUpstream extends Error {}

interface Upstream {
  key: string;
  conn: Duplex;
  reader: BufferedReader;
}

interface Exchange {
  responseStarted: boolean;
  gotResponse: boolean;
}

class HttpProxyConnection {
  readonly #conn: Duplex;
  readonly #client: BufferedReader;
  readonly #opts: HttpProxyOptions;
  readonly #maxHeader: number;
  #upstream: Upstream | undefined;
  #upBuf: Uint8Array | undefined;
  #downBuf: Uint8Array | undefined;

  constructor(conn: Duplex, opts: HttpProxyOptions, reader: BufferedReader) {
    this.#conn = conn;
    this.#client = reader;
    this.#opts = opts;
    this.#maxHeader = opts.maxHeaderBytes ?? MAX_HEADER_BYTES;
  }

  #onAbort = () => {
    this.#dropUpstream();
    closeQuietly(this.#conn);
  };

  async run(): Promise<void> {
    const signal = this.#opts.signal;
    signal?.addEventListener("abort", this.#onAbort, { once: true });
    try {
      let first = true;
      while (!signal?.aborted) {
        if (!first) {
          this.#opts.onIdle?.();
          if ((await this.#client.peekByte()) === null) return;
          this.#opts.onRequestStart?.();
        }
        first = false;
        let head: RequestHead | null;
        try {
          head = await readRequestHead(this.#client, this.#maxHeader);
        } catch (e) {
          if (e instanceof HttpError) return await this.#fail(e.status);
          throw e;
        }
        if (head === null) return;
        if (!(await this.#serve(head))) return;
      }
    } catch (e) {
      if (!isExpectedDisconnect(e)) this.#opts.onError?.(e);
    } finally {
      signal?.removeEventListener("abort", this.#onAbort);
      this.#dropUpstream();
      closeQuietly(this.#conn);
      // Every body copy has settled by now (each exchange awaits its upload).
      if (this.#upBuf) giveBuffer(this.#upBuf);
      if (this.#downBuf) giveBuffer(this.#downBuf);
      this.#upBuf = this.#downBuf = undefined;
    }
  }

  #dropUpstream(): void {
    closeQuietly(this.#upstream?.conn);
    this.#upstream = undefined;
  }

  /** Answers with an error, half-closes, and drains the client briefly so the answer is not lost to a reset. */
  async #fail(status: number, extra: Header[] = [], linger = true): Promise<void> {
    try {
      await writeAll(this.#conn, errorResponse(status, extra));
      if (!linger) return;
      await this.#conn.closeWrite();
      const timer = setTimeout(() => closeQuietly(this.#conn), LINGER_MS);
      try {
        const scratch = new Uint8Array(16 * 1024);
        let drained = 0;
        while (drained < LINGER_MAX_BYTES) {
          const n = await this.#client.read(scratch);
          if (n === null) break;
          drained += n;
        }
      } finally {
        clearTimeout(timer);
      }
    } catch {
      // The client is gone; nothing more to tell it.
    }
  }

  async #dial(target: Target): Promise<Duplex | number> {
    try {
      const d = await this.#opts.outbound.dial(
        { ...(this.#opts.flow ?? PROXY_ORIGIN), network: "tcp", target },
        this.#opts.signal,
      );
      if (this.#opts.signal?.aborted) {
        closeQuietly(d);
        throw new Deno.errors.Interrupted("proxy closing");
      }
      return d;
    } catch (e) {
      if (e instanceof Deno.errors.Interrupted) throw e;
      if (!(e instanceof DialError)) this.#opts.onError?.(e);
      return httpStatusForDialError(e);
    }
  }

  /** Serves one request; resolves to whether the client connection may carry another. */
  async #serve(head: RequestHead): Promise<boolean> {
    const auth = this.#opts.auth;
    if (auth && !checkProxyAuthorization(head.headers, auth)) {
      const realm = this.#opts.realm ?? "ostp";
      await this.#fail(407, [["Proxy-Authenticate", `Basic realm="${realm}", charset="UTF-8"`]]);
      return false;
    }
    if (head.method === "CONNECT") return await this.#tunnel(head);
    let uri: AbsoluteTarget;
    let framing: BodyFraming;
    try {
      uri = parseAbsoluteTarget(head.target);
      framing = requestFraming(head);
    } catch (e) {
      if (e instanceof HttpError) {
        await this.#fail(e.status);
        return false;
      }
      throw e;
    }
    return await this.#forward(head, uri, framing);
  }

  async #tunnel(head: RequestHead): Promise<boolean> {
    const target = parseAuthority(head.target);
    if (!target) {
      await this.#fail(400);
      return false;
    }
    this.#opts.onHandshakeDone?.(target);
    this.#dropUpstream();
    const up = await this.#dial(target);
    if (typeof up === "number") {
      await this.#fail(up);
      return false;
    }
    try {
      await writeAll(this.#conn, encodeLatin1("HTTP/1.1 200 Connection established\r\n\r\n"));
    } catch (e) {
      closeQuietly(up);
      throw e;
    }
    await relay(this.#client, up, { signal: this.#opts.signal });
    return false;
  }

  async #forward(head: RequestHead, uri: AbsoluteTarget, framing: BodyFraming): Promise<boolean> {
    const clientWantsKeep = clientWantsKeepAlive(head);
    const headers: Header[] = [["Host", uri.authority]];
    for (const h of stripHopByHop(head.headers)) {
      if (h[0].toLowerCase() !== "host") headers.push(h);
    }
    const headBytes = encodeHead(`${head.method} ${uri.path} HTTP/1.1`, headers);
    const key = `${uri.target.host.toLowerCase()}:${uri.target.port}`;
    const retryable = framing.kind === "none" && IDEMPOTENT.has(head.method);
    this.#opts.onHandshakeDone?.(uri.target);

    for (let attempt = 0;; attempt++) {
      const reused = this.#upstream !== undefined && this.#upstream.key === key;
      if (!reused) {
        this.#dropUpstream();
        const conn = await this.#dial(uri.target);
        if (typeof conn === "number") {
          await this.#fail(conn);
          return false;
        }
        // Bodies bypass this buffer (reads into the copy buffer go straight to
        // the stream once it is empty); it only needs room for a head, and grows.
        this.#upstream = { key, conn, reader: new BufferedReader(conn, 4096) };
      }
      const ex: Exchange = { responseStarted: false, gotResponse: false };
      try {
        return await this.#exchange(this.#upstream!, head, headBytes, framing, clientWantsKeep, ex);
      } catch (e) {
        this.#dropUpstream();
        if (e instanceof StaleUpstream && reused && retryable && attempt === 0) continue;
        const peerFault = e instanceof HttpError || e instanceof StaleUpstream ||
          e instanceof UploadPending || e instanceof ClientGone || isExpectedDisconnect(e);
        if (!peerFault) this.#opts.onError?.(e);
        // Nothing more can be said to a client that already has (part of) an answer or is gone.
        if (ex.responseStarted || e instanceof UploadPending || e instanceof ClientGone) {
          return false;
        }
        if (this.#opts.signal?.aborted) return false;
        await this.#fail(e instanceof HttpError ? e.status : 502);
        return false;
      }
    }
  }

  async #exchange(
    up: Upstream,
    head: RequestHead,
    headBytes: Uint8Array,
    framing: BodyFraming,
    clientWantsKeep: boolean,
    ex: Exchange,
  ): Promise<boolean> {
    try {
      await writeAll(up.conn, headBytes);
    } catch (e) {
      if (isExpectedDisconnect(e)) throw new StaleUpstream("upstream closed");
      throw e;
    }
    if (framing.kind === "none") {
      const res = await this.#forwardResponse(up, head, clientWantsKeep, ex, () => true);
      if (!res.upstreamKeep) this.#dropUpstream();
      return res.clientKeep;
    }

    // Stream the request body while waiting for the response: the origin may
    // answer early (or send 100 Continue first).
    let uploadDone = false;
    let uploadError: unknown = undefined;
    const upBuf = this.#upBuf ??= takeBuffer();
    const upload = copyBody(this.#client, up.conn, framing, upBuf).then(
      () => {
        uploadDone = true;
      },
      (e) => {
        uploadError = e;
        closeQuietly(up.conn);
      },
    );
    let res: { clientKeep: boolean; upstreamKeep: boolean };
    try {
      res = await this.#forwardResponse(up, head, clientWantsKeep, ex, () => uploadDone);
    } catch (e) {
      closeQuietly(up.conn);
      if (uploadError === undefined && !uploadDone) {
        // The upload is still reading the client: answer, then close it to stop the upload.
        if (!ex.responseStarted) {
          const status = e instanceof HttpError ? e.status : 502;
          await writeAll(this.#conn, errorResponse(status)).catch(() => {});
          ex.responseStarted = true;
        }
        closeQuietly(this.#conn);
        await upload;
        throw new UploadPending("upload interrupted", { cause: e });
      }
      await upload;
      if (uploadError instanceof HttpError) throw uploadError;
      if (uploadError !== undefined && isExpectedDisconnect(uploadError)) {
        throw new ClientGone("client went away", { cause: uploadError });
      }
      throw e;
    }
    if (!uploadDone && uploadError === undefined) {
      // Answered before the body was complete: stop forwarding and close the
      // client after giving it a moment to read the answer.
      this.#dropUpstream();
      await this.#conn.closeWrite().catch(() => {});
      const timer = setTimeout(() => closeQuietly(this.#conn), LINGER_MS);
      await upload;
      clearTimeout(timer);
      return false;
    }
    await upload;
    if (!res.upstreamKeep || !uploadDone) this.#dropUpstream();
    return res.clientKeep && uploadDone;
  }

  async #forwardResponse(
    up: Upstream,
    req: RequestHead,
    clientWantsKeep: boolean,
    ex: Exchange,
    uploadDone: () => boolean,
  ): Promise<{ clientKeep: boolean; upstreamKeep: boolean }> {
    let head: ResponseHead;
    while (true) {
      let h: ResponseHead | null;
      try {
        h = await readResponseHead(up.reader, this.#maxHeader);
      } catch (e) {
        if (!ex.gotResponse && isExpectedDisconnect(e)) throw new StaleUpstream("upstream closed");
        throw e;
      }
      if (h === null) {
        if (!ex.gotResponse) throw new StaleUpstream("upstream closed");
        throw new Deno.errors.UnexpectedEof("upstream closed between 1xx and response");
      }
      ex.gotResponse = true;
      if (h.status >= 200) {
        head = h;
        break;
      }
      if (h.status === 101) throw new HttpError(502, "unrequested protocol switch");
      // Interim responses go to HTTP/1.1 clients only (RFC 9110 §15.2).
      if (req.minorVersion >= 1) {
        await writeAll(
          this.#conn,
          encodeHead(`HTTP/1.1 ${h.status} ${h.reason}`, stripHopByHop(h.headers)),
        );
      }
    }

    const framing = responseFraming(req.method, head);
    const decode = framing.kind === "chunked" && req.minorVersion === 0;
    // An HTTP/1.0 client can only find the end of a body by its length or the
    // close: a de-chunked body is close-delimited.
    const clientKeep = clientWantsKeep && framing.kind !== "close" && !decode;
    const conn = headerTokens(head.headers, "connection");
    const upstreamKeep = framing.kind !== "close" &&
      (head.minorVersion >= 1 ? !conn.includes("close") : conn.includes("keep-alive"));
    const hasTe = headerValues(head.headers, "transfer-encoding").length > 0;
    const out: Header[] = [];
    for (const h of stripHopByHop(head.headers)) {
      const l = h[0].toLowerCase();
      if (l === "content-length" && hasTe && framing.kind !== "none") continue;
      if (l === "transfer-encoding" && decode) continue;
      out.push(h);
    }
    if (!clientKeep || !uploadDone()) out.push(["Connection", "close"]);
    else if (req.minorVersion === 0) out.push(["Connection", "keep-alive"]);
    ex.responseStarted = true;
    await writeAll(this.#conn, encodeHead(`HTTP/1.1 ${head.status} ${head.reason}`, out));
    const downBuf = this.#downBuf ??= takeBuffer();
    await copyBody(up.reader, this.#conn, framing, downBuf, decode);
    return { clientKeep, upstreamKeep };
  }
}

/** The client closed while its request body was being forwarded. */
class ClientGone extends Error {}
/** The exchange failed while the upload was still reading the client; the client is already answered and closed. */
class UploadPending extends Error {}

/**
 * Serves one HTTP proxy client connection until it closes or an error ends
 * it: CONNECT tunnels, absolute-form forwarding with keep-alive, 407 without
 * valid credentials, 400/431/501/505 for bad requests, 502/504/403 for dial
 * failures. Always closes `conn` and any upstream before resolving; never rejects.
 * @param reader a reader already wrapping `conn` (e.g. after sniffing its first byte).
 */
export async function handleHttpProxy(
  conn: Duplex,
  opts: HttpProxyOptions,
  reader: BufferedReader = new BufferedReader(conn, 4096),
): Promise<void> {
  await new HttpProxyConnection(conn, opts, reader).run();
}

/**
 * Port mappings on the wire (docs/protocol.md, "Port mappings"):
 *
 * - The control stream: a client with IN mappings (or OUT mappings to `ANY`)
 *   opens a stream to the reserved target {@link MAP_CONTROL_TARGET} and
 *   writes one JSON line naming its IN mappings; the server answers one line:
 *   which it opened (or why not) and whether it has default upstreams. The
 *   stream stays open: its end, or the session's, removes the listeners.
 * - `ANY`: a stream opened to {@link UPSTREAM_TARGET}, or a UDP datagram
 *   addressed to it, goes to the server's `--tcp-upstream` / `--udp-upstream`.
 * - IN TCP: for each connection its listener accepts, the server opens a
 *   stream and writes {@link encodeInStreamHeader} first (mapping id and the
 *   connection's source), then the bytes.
 * - IN UDP: DATAGRAM frames of kind 3 — kind, u32 mapping id, u32 flow id,
 *   payload — both ways; a flow is one source address at the server's
 *   listener.
 *
 * Every parser takes untrusted bytes and returns a typed error string or
 * null, never throws.
 * @module
 */

import type { Target } from "../duplex.ts";
import { formatIPv6, parseIPv4, parseIPv6 } from "../net/ip.ts";

/** The stream target of the control exchange (`.invalid` never resolves: RFC 6761). */
export const MAP_CONTROL_TARGET: Readonly<Target> = Object.freeze({
  host: "map.ostp.invalid",
  port: 1,
});

/** The target meaning "the server's default upstream" (an OUT mapping to ANY). */
export const UPSTREAM_TARGET: Readonly<Target> = Object.freeze({
  host: "upstream.ostp.invalid",
  port: 1,
});

/** True when `t` is {@link UPSTREAM_TARGET}. */
export function isUpstreamTarget(t: Target): boolean {
  return t.port === UPSTREAM_TARGET.port && t.host.toLowerCase() === UPSTREAM_TARGET.host;
}

/** True when `t` is {@link MAP_CONTROL_TARGET}. */
export function isMapControlTarget(t: Target): boolean {
  return t.port === MAP_CONTROL_TARGET.port && t.host.toLowerCase() === MAP_CONTROL_TARGET.host;
}

/** Longest control line, bytes. */
export const MAP_LINE_MAX = 16384;
/** Most IN mappings one client may ask for. */
export const MAX_IN_MAPPINGS = 64;

/** One IN mapping as the client asks for it. */
export interface InRequest {
  /** The client's mapping id (1..2^31). */
  id: number;
  proto: "tcp" | "udp";
  /** Where the server should listen ("127.0.0.1:18080", "[::]:53"). */
  listen: string;
}

/** The server's answer for one IN mapping. */
export type InAnswer =
  | { id: number; ok: true; bound: string }
  | { id: number; ok: false; reason: string };

/** The server's answer line. */
export interface MapResponse {
  /** Whether the server has a default upstream per transport (for OUT mappings to ANY). */
  upstream: { tcp: boolean; udp: boolean };
  /** One answer per IN mapping asked for. */
  in: InAnswer[];
}

const enc = new TextEncoder();

/** The request line (newline included). */
export function encodeMapRequest(inMappings: readonly InRequest[]): Uint8Array {
  return enc.encode(`${JSON.stringify({ v: 1, in: inMappings })}\n`);
}

function isId(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 0x7fffffff;
}

/** A JSON object line with `"v": 1`, or what is wrong with it. */
function parseV1(line: string, what: string): Record<string, unknown> | string {
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    return "not JSON";
  }
  if (typeof o !== "object" || o === null || (o as { v?: unknown }).v !== 1) {
    return `not a version 1 ${what}`;
  }
  return o as Record<string, unknown>;
}

/** Parses a request line; a string says what is wrong. */
export function parseMapRequest(line: string): InRequest[] | string {
  const o = parseV1(line, "request");
  if (typeof o === "string") return o;
  const list = o.in;
  if (!Array.isArray(list)) return '"in" must be an array';
  if (list.length > MAX_IN_MAPPINGS) return `at most ${MAX_IN_MAPPINGS} IN mappings`;
  const out: InRequest[] = [];
  const seen = new Set<number>();
  for (const m of list) {
    if (typeof m !== "object" || m === null) return "an IN mapping must be an object";
    const { id, proto, listen } = m as Record<string, unknown>;
    if (!isId(id) || seen.has(id)) return "bad or repeated mapping id";
    if (proto !== "tcp" && proto !== "udp") return 'proto must be "tcp" or "udp"';
    if (typeof listen !== "string" || listen.length === 0 || listen.length > 300) {
      return "listen must be host:port";
    }
    seen.add(id);
    out.push({ id, proto, listen });
  }
  return out;
}

/** The response line (newline included). */
export function encodeMapResponse(r: MapResponse): Uint8Array {
  return enc.encode(`${JSON.stringify({ v: 1, ...r })}\n`);
}

/** Parses a response line; a string says what is wrong. */
export function parseMapResponse(line: string): MapResponse | string {
  const r = parseV1(line, "response");
  if (typeof r === "string") return r;
  const up = r.upstream as Record<string, unknown> | undefined;
  if (typeof up !== "object" || up === null) return "upstream missing";
  if (!Array.isArray(r.in)) return '"in" must be an array';
  const answers: InAnswer[] = [];
  for (const a of r.in) {
    if (typeof a !== "object" || a === null) return "bad answer";
    const { id, ok, bound, reason } = a as Record<string, unknown>;
    if (!isId(id)) return "bad answer id";
    if (ok === true && typeof bound === "string") answers.push({ id, ok: true, bound });
    else if (ok === false && typeof reason === "string") {
      answers.push({ id, ok: false, reason: reason.slice(0, 500) });
    } else return "bad answer";
  }
  return { upstream: { tcp: up.tcp === true, udp: up.udp === true }, in: answers };
}

/** First byte of an IN stream's header. */
export const IN_STREAM_KIND = 0x01;

/** The header the server writes first on a stream it opens for an IN TCP mapping. */
export function encodeInStreamHeader(id: number, source: Target): Uint8Array {
  const v4 = parseIPv4(source.host);
  const ip = v4 ?? parseIPv6(source.host) ?? new Uint8Array(4);
  const out = new Uint8Array(1 + 4 + 1 + ip.length + 2);
  const dv = new DataView(out.buffer);
  out[0] = IN_STREAM_KIND;
  dv.setUint32(1, id);
  out[5] = ip.length === 4 ? 1 : 4;
  out.set(ip, 6);
  dv.setUint16(6 + ip.length, source.port);
  return out;
}

/**
 * Reads the header of an IN stream with `read` (exactly what it needs);
 * the mapping id and the source, or a string saying what is wrong.
 */
export async function readInStreamHeader(
  readExact: (n: number) => Promise<Uint8Array | null>,
): Promise<{ id: number; source: Target } | string> {
  const head = await readExact(6);
  if (!head) return "stream ended before its header";
  if (head[0] !== IN_STREAM_KIND) return `unknown stream kind ${head[0]}`;
  const id = new DataView(head.buffer, head.byteOffset).getUint32(1);
  const len = head[5] === 1 ? 4 : head[5] === 4 ? 16 : 0;
  if (len === 0) return "bad address type";
  const rest = await readExact(len + 2);
  if (!rest) return "stream ended before its header";
  const ip = rest.subarray(0, len);
  const host = len === 4 ? ip.join(".") : formatIPv6(ip);
  const port = (rest[len] << 8) | rest[len + 1];
  return { id, source: { host, port } };
}

/** DATAGRAM kind of IN UDP mapping datagrams. */
export const MAP_DATAGRAM_KIND = 0x03;
/** Bytes before the payload of a mapping datagram. */
export const MAP_DATAGRAM_HEADER = 1 + 4 + 4;

/** Writes a mapping datagram (header + payload) into a fresh buffer. */
export function encodeMapDatagram(id: number, flow: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(MAP_DATAGRAM_HEADER + payload.length);
  const dv = new DataView(out.buffer);
  out[0] = MAP_DATAGRAM_KIND;
  dv.setUint32(1, id);
  dv.setUint32(5, flow);
  out.set(payload, MAP_DATAGRAM_HEADER);
  return out;
}

/** The mapping id, flow id and payload (a view) of a mapping datagram, or null. */
export function parseMapDatagram(
  b: Uint8Array,
): { id: number; flow: number; payload: Uint8Array } | null {
  if (b.length < MAP_DATAGRAM_HEADER || b[0] !== MAP_DATAGRAM_KIND) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { id: dv.getUint32(1), flow: dv.getUint32(5), payload: b.subarray(MAP_DATAGRAM_HEADER) };
}

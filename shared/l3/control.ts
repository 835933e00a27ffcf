/**
 * The layer-3 control exchange (docs/protocol.md, "Layer 3"): a client that
 * wants layer 3 opens a stream to the reserved target
 * {@link L3_CONTROL_TARGET} and writes one request line; the server answers
 * with one line — the addresses it assigned, the MTU and the routes, or a
 * refusal with a reason the client logs. The stream then stays open: its end
 * (either side, or the session's) ends the lease. Packets ride DATAGRAM
 * frames of kind 2 (`datagram_demux.ts`), never a stream.
 *
 * Lines are JSON, at most {@link L3_LINE_MAX} bytes; both parsers take
 * untrusted input and return a typed error string, never throw.
 * @module
 */

import { parseIp, parsePrefix } from "../net/cidr.ts";
import type { Target } from "../duplex.ts";

/** The stream target that means "layer 3" (`.invalid` is never a real name: RFC 6761). */
export const L3_CONTROL_TARGET: Readonly<Target> = Object.freeze({
  host: "l3.ostp.invalid",
  port: 1,
});

/** Longest control line, bytes (newline excluded). */
export const L3_LINE_MAX = 4096;

/** What a client asks for. */
export interface L3Request {
  /** The client process's random instance id (hex, 16..64 digits): reconnection keeps the address. */
  instance: string;
  /** Whether it wants an IPv6 address too. */
  ipv6: boolean;
}

/** What the server assigned. */
export interface L3Grant {
  ok: true;
  /** The client's IPv4 address with the subnet's prefix, e.g. "10.77.0.2/24". */
  address: string;
  /** The client's IPv6 address and prefix, when the server has an IPv6 subnet. */
  address6?: string;
  /** The server's own addresses (the hub's TUN). */
  server: string;
  server6?: string;
  /** Largest IP packet the tunnel carries (the client's TUN MTU). */
  mtu: number;
  /** Prefixes the client routes into its TUN (the subnets; more with NAT on the server). */
  routes: string[];
}

/** A refusal, with the reason for the client's log. */
export interface L3Refusal {
  ok: false;
  reason: string;
}

/** The server's answer. */
export type L3Response = L3Grant | L3Refusal;

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

function line(obj: unknown): Uint8Array {
  const b = enc.encode(JSON.stringify(obj) + "\n");
  if (b.length - 1 > L3_LINE_MAX) throw new RangeError("l3 control line too long");
  return b;
}

function json(bytes: Uint8Array): Record<string, unknown> | string {
  if (bytes.length > L3_LINE_MAX) return "line too long";
  let v: unknown;
  try {
    v = JSON.parse(dec.decode(bytes));
  } catch {
    return "not JSON";
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "not an object";
  const o = v as Record<string, unknown>;
  if (o.v !== 1) return "unknown version";
  return o;
}

/** The request line. */
export function encodeL3Request(r: L3Request): Uint8Array {
  return line({ v: 1, instance: r.instance, ipv6: r.ipv6 });
}

/** Parses a request line (without its newline); a string says what is wrong. */
export function parseL3Request(bytes: Uint8Array): L3Request | string {
  const o = json(bytes);
  if (typeof o === "string") return o;
  if (typeof o.instance !== "string" || !/^[0-9a-f]{16,64}$/.test(o.instance)) {
    return "instance: 16..64 lowercase hex digits expected";
  }
  if (typeof o.ipv6 !== "boolean") return "ipv6: true or false expected";
  return { instance: o.instance, ipv6: o.ipv6 };
}

/** The response line. */
export function encodeL3Response(r: L3Response): Uint8Array {
  return line({ v: 1, ...r });
}

function hostPrefix(v: unknown, family: 4 | 6): boolean {
  if (typeof v !== "string") return false;
  const slash = v.lastIndexOf("/");
  if (slash < 0) return false;
  const ip = parseIp(v.slice(0, slash));
  const len = Number(v.slice(slash + 1));
  if (!ip || !/^\d{1,3}$/.test(v.slice(slash + 1))) return false;
  const isV4 = !v.includes(":");
  return (family === 4) === isV4 && len >= 1 && len <= (isV4 ? 30 : 126);
}

function address(v: unknown, family: 4 | 6): boolean {
  return typeof v === "string" && parseIp(v) !== null && (family === 4) === !v.includes(":");
}

/** Parses a response line (without its newline); a string says what is wrong. */
export function parseL3Response(bytes: Uint8Array): L3Response | string {
  const o = json(bytes);
  if (typeof o === "string") return o;
  if (o.ok === false) {
    if (typeof o.reason !== "string" || o.reason.length > 256) {
      return "reason: a short text expected";
    }
    return { ok: false, reason: o.reason };
  }
  if (o.ok !== true) return "ok: true or false expected";
  if (!hostPrefix(o.address, 4)) return "address: an IPv4 address/prefix expected";
  if (!address(o.server, 4)) return "server: an IPv4 address expected";
  if (o.address6 !== undefined && !hostPrefix(o.address6, 6)) {
    return "address6: an IPv6 address/prefix expected";
  }
  if (o.server6 !== undefined && !address(o.server6, 6)) return "server6: an IPv6 address expected";
  if (typeof o.mtu !== "number" || !Number.isInteger(o.mtu) || o.mtu < 576 || o.mtu > 65535) {
    return "mtu: 576..65535 expected";
  }
  if (!Array.isArray(o.routes) || o.routes.length > 64) {
    return "routes: at most 64 prefixes expected";
  }
  for (const r of o.routes) {
    if (typeof r !== "string" || !parsePrefix(r).ok) return "routes: prefixes expected";
  }
  const g: L3Grant = {
    ok: true,
    address: o.address as string,
    server: o.server as string,
    mtu: o.mtu,
    routes: o.routes as string[],
  };
  if (o.address6 !== undefined) g.address6 = o.address6 as string;
  if (o.server6 !== undefined) g.server6 = o.server6 as string;
  return g;
}

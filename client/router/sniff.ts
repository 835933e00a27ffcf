/**
 * The name a TCP flow is for, read from its first bytes when DNS did not
 * tell (the application resolved elsewhere, or connected to a cached
 * address): the server name of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066
 * §3) or the `Host` header of an HTTP/1 request. Pure functions over bytes;
 * they never throw.
 * @module
 */

/** What the first bytes say: a name, "need more bytes", or nothing to learn. */
export type SniffResult = { name: string; protocol: "tls" | "http" } | "more" | "none";

/** Longest prefix worth waiting for (a ClientHello with post-quantum key shares is ~2 KB). */
export const SNIFF_LIMIT = 8192;

const METHODS = ["GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT "];

/** Looks at the first `data` bytes of a client's stream. */
export function sniff(data: Uint8Array): SniffResult {
  if (data.length === 0) return "more";
  if (data[0] === 0x16) return sniffTls(data);
  if (data[0] >= 0x41 && data[0] <= 0x5a) return sniffHttp(data);
  return "none";
}

function sniffTls(d: Uint8Array): SniffResult {
  if (d.length < 5) return "more";
  if (d[1] !== 3) return "none";
  const recLen = (d[3] << 8) | d[4];
  // The ClientHello may span records; reading the first record's worth is what matters here.
  if (d.length < 9) return d.length >= SNIFF_LIMIT ? "none" : "more";
  if (d[5] !== 1) return "none"; // not a ClientHello
  const hsLen = (d[6] << 16) | (d[7] << 8) | d[8];
  const end = 9 + hsLen;
  if (recLen < 4) return "none";
  if (d.length < Math.min(end, 5 + recLen)) return d.length >= SNIFF_LIMIT ? "none" : "more";
  const lim = Math.min(d.length, end);
  let p = 9 + 2 + 32; // version, random
  if (p >= lim) return "none";
  p += 1 + d[p]; // session id
  if (p + 2 > lim) return "none";
  p += 2 + ((d[p] << 8) | d[p + 1]); // cipher suites
  if (p + 1 > lim) return "none";
  p += 1 + d[p]; // compression methods
  if (p + 2 > lim) return "none";
  const extEnd = Math.min(lim, p + 2 + ((d[p] << 8) | d[p + 1]));
  p += 2;
  while (p + 4 <= extEnd) {
    const type = (d[p] << 8) | d[p + 1];
    const len = (d[p + 2] << 8) | d[p + 3];
    p += 4;
    if (p + len > extEnd) return "none";
    if (type === 0) return serverName(d.subarray(p, p + len));
    p += len;
  }
  return "none";
}

function serverName(e: Uint8Array): SniffResult {
  if (e.length < 2) return "none";
  const listEnd = Math.min(e.length, 2 + ((e[0] << 8) | e[1]));
  let p = 2;
  while (p + 3 <= listEnd) {
    const type = e[p];
    const len = (e[p + 1] << 8) | e[p + 2];
    p += 3;
    if (p + len > listEnd) return "none";
    if (type === 0) {
      const name = hostname(e.subarray(p, p + len));
      return name ? { name, protocol: "tls" } : "none";
    }
    p += len;
  }
  return "none";
}

function sniffHttp(d: Uint8Array): SniffResult {
  const head = ascii(d.subarray(0, Math.min(d.length, SNIFF_LIMIT)));
  const m = METHODS.find((m) => head.startsWith(m) || m.startsWith(head));
  if (!m) return "none";
  if (head.length < m.length) return "more";
  const endOfHead = head.indexOf("\r\n\r\n");
  const lines = (endOfHead >= 0 ? head.slice(0, endOfHead) : head).split("\r\n");
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === "host") {
      let v = line.slice(colon + 1).trim();
      if (v.startsWith("[")) return "none"; // an IPv6 literal: nothing to learn
      const port = v.lastIndexOf(":");
      if (port >= 0) v = v.slice(0, port);
      const name = hostname(new TextEncoder().encode(v));
      return name ? { name, protocol: "http" } : "none";
    }
  }
  if (endOfHead >= 0 || d.length >= SNIFF_LIMIT) return "none";
  return "more";
}

/** A DNS host name (letters, digits, '-', '_', '.'), lowercased; null for anything else or an IP. */
function hostname(b: Uint8Array): string | null {
  if (b.length === 0 || b.length > 253) return null;
  let s = "";
  let digitsAndDots = true;
  for (const c of b) {
    const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) ||
      c === 0x2d || c === 0x2e || c === 0x5f;
    if (!ok) return null;
    if (!((c >= 0x30 && c <= 0x39) || c === 0x2e)) digitsAndDots = false;
    s += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 32 : c);
  }
  if (digitsAndDots) return null; // an IPv4 literal
  return s.replace(/\.$/, "");
}

function ascii(b: Uint8Array): string {
  let s = "";
  for (const c of b) s += String.fromCharCode(c);
  return s;
}

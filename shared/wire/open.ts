/**
 * The stream-open exchange carried at the start of every stream: the client
 * writes the target, the server answers with a status and, on failure, a
 * reason. Encoding (docs/protocol.md): request `atyp(1) addr port(u16be)` with
 * atyp 1 = IPv4 (4 bytes), 3 = domain (u8 length + bytes), 4 = IPv6 (16 bytes);
 * reply `status(1)`, and when status != 0, `len(1) reason(utf-8)`.
 * @module
 */

import { DialError, type DialFailure, type Target } from "../duplex.ts";
import { formatIPv6, parseIPv4, parseIPv6 } from "../net/ip.ts";

/** Reply status codes, index = code. */
export const OPEN_STATUS: readonly ("ok" | DialFailure)[] = [
  "ok",
  "refused",
  "unreachable",
  "timeout",
  "dns",
  "denied",
  "unavailable",
  "general",
];

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Encodes an open request for `target`; throws DialError("general") for bad names. */
export function encodeOpenRequest(target: Target): Uint8Array {
  const { host, port } = target;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new DialError("general", "bad port");
  }
  const v4 = parseIPv4(host);
  const v6 = v4 ? null : parseIPv6(host);
  let out: Uint8Array;
  if (v4) {
    out = new Uint8Array(7);
    out[0] = 1;
    out.set(v4, 1);
  } else if (v6) {
    out = new Uint8Array(19);
    out[0] = 4;
    out.set(v6, 1);
  } else {
    const name = enc.encode(host);
    if (name.length === 0 || name.length > 255) throw new DialError("general", "bad host name");
    out = new Uint8Array(4 + name.length);
    out[0] = 3;
    out[1] = name.length;
    out.set(name, 2);
  }
  out[out.length - 2] = port >> 8;
  out[out.length - 1] = port & 0xff;
  return out;
}

/** Reads exactly `n` bytes using `read`; null on end of stream before that. */
export async function readExact(
  read: (p: Uint8Array) => Promise<number | null>,
  n: number,
): Promise<Uint8Array | null> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await read(out.subarray(got));
    if (r === null) return null;
    got += r;
  }
  return out;
}

/** Thrown when an open request or reply is malformed. */
export class OpenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OpenError";
  }
}

/** Reads an open request from a stream (no over-read). */
export async function readOpenRequest(
  read: (p: Uint8Array) => Promise<number | null>,
): Promise<Target> {
  const head = await readExact(read, 2);
  if (!head) throw new OpenError("stream ended before the request");
  let host: string;
  if (head[0] === 1) {
    const rest = await readExact(read, 3);
    if (!rest) throw new OpenError("truncated request");
    host = `${head[1]}.${rest[0]}.${rest[1]}.${rest[2]}`;
  } else if (head[0] === 4) {
    const rest = await readExact(read, 15);
    if (!rest) throw new OpenError("truncated request");
    const b = new Uint8Array(16);
    b[0] = head[1];
    b.set(rest, 1);
    host = formatIPv6(b);
  } else if (head[0] === 3) {
    if (head[1] === 0) throw new OpenError("empty host name");
    const rest = await readExact(read, head[1]);
    if (!rest) throw new OpenError("truncated request");
    host = dec.decode(rest);
  } else {
    throw new OpenError(`unknown address type ${head[0]}`);
  }
  const p = await readExact(read, 2);
  if (!p) throw new OpenError("truncated request");
  return { host, port: (p[0] << 8) | p[1] };
}

/** Encodes an open reply: success, or a failure with its reason. */
export function encodeOpenReply(failure?: DialFailure, reason = ""): Uint8Array {
  if (!failure) return new Uint8Array([0]);
  const code = OPEN_STATUS.indexOf(failure);
  const text = enc.encode(reason).subarray(0, 255);
  const out = new Uint8Array(2 + text.length);
  out[0] = code > 0 ? code : OPEN_STATUS.length - 1;
  out[1] = text.length;
  out.set(text, 2);
  return out;
}

/** Reads an open reply; resolves on success, rejects with DialError on failure. */
export async function readOpenReply(
  read: (p: Uint8Array) => Promise<number | null>,
): Promise<void> {
  const s = await readExact(read, 1);
  if (!s) throw new DialError("unavailable", "stream closed before the reply");
  if (s[0] === 0) return;
  const failure = OPEN_STATUS[s[0]];
  const len = await readExact(read, 1);
  const text = len && len[0] > 0 ? await readExact(read, len[0]) : new Uint8Array(0);
  const reason = text ? dec.decode(text) : "";
  throw new DialError(
    failure && failure !== "ok" ? failure : "general",
    reason || (failure as string) || "general",
  );
}

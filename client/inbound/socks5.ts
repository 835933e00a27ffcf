/**
 * SOCKS5 server side (RFC 1928) with username/password authentication
 * (RFC 1929). CONNECT is supported, and UDP ASSOCIATE when the caller
 * provides {@link Socks5Options.udpAssociate} (see `socks5_udp.ts`); BIND
 * gets "command not supported".
 *
 * {@link socks5Handshake} parses a client's greeting and request from raw
 * bytes; {@link handleSocks5} runs a whole connection: handshake, dial through
 * the injected {@link Outbound} (the router) with the flow's context, reply,
 * relay.
 * @module
 */

import { DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import type { FlowOrigin, Outbound } from "../outbound/outbound.ts";
import { formatIPv6, parseIPv4, parseIPv6 } from "../../shared/net/ip.ts";
import type { UdpAssociation } from "./socks5_udp.ts";
import {
  BufferedReader,
  closeQuietly,
  isExpectedDisconnect,
  relay,
  writeAll,
} from "../../shared/pipe.ts";

/** Username and password a proxy client must present. */
export interface ProxyCredentials {
  username: string;
  password: string;
}

/** SOCKS5 reply codes (RFC 1928 §6). */
export const Socks5Reply = {
  Succeeded: 0x00,
  GeneralFailure: 0x01,
  NotAllowed: 0x02,
  NetworkUnreachable: 0x03,
  HostUnreachable: 0x04,
  ConnectionRefused: 0x05,
  TtlExpired: 0x06,
  CommandNotSupported: 0x07,
  AddressTypeNotSupported: 0x08,
} as const;

/** SOCKS5 authentication methods (RFC 1928 §3). */
export const Socks5Method = {
  NoAuth: 0x00,
  UserPass: 0x02,
  NoAcceptable: 0xff,
} as const;

/** SOCKS5 commands (RFC 1928 §4). */
export const Socks5Command = { Connect: 0x01, Bind: 0x02, UdpAssociate: 0x03 } as const;

/** SOCKS5 address types (RFC 1928 §5). */
export const Socks5AddressType = { IPv4: 0x01, Domain: 0x03, IPv6: 0x04 } as const;

/**
 * A failed SOCKS5 negotiation. `reply` is the code to send in a request reply
 * before closing, or `null` when the connection is closed without one (the
 * failure happened before the request phase, or its reply was already sent).
 */
export class Socks5Error extends Error {
  /** Reply code to send, or `null` to just close. */
  readonly reply: number | null;
  constructor(reply: number | null, message: string) {
    super(message);
    this.name = "Socks5Error";
    this.reply = reply;
  }
}

/** A parsed SOCKS5 request. */
export interface Socks5Request extends Target {
  /** The command byte (Connect, or UdpAssociate when allowed). */
  command: number;
  /** The address type the client used. */
  addressType: number;
}

/**
 * Maps a dial failure to a SOCKS5 reply code:
 * refused → 0x05, unreachable → 0x03, dns → 0x04, timeout → 0x04, denied → 0x02,
 * unavailable/general/anything else → 0x01.
 *
 * A connect timeout maps to "host unreachable" (0x04), not 0x06: RFC 1928's
 * "TTL expired" is the IP time-to-live running out in transit (ICMP time
 * exceeded), while a connect timeout means the host never answered.
 */
export function socks5ReplyForError(e: unknown): number {
  if (!(e instanceof DialError)) return Socks5Reply.GeneralFailure;
  switch (e.reason) {
    case "refused":
      return Socks5Reply.ConnectionRefused;
    case "unreachable":
      return Socks5Reply.NetworkUnreachable;
    case "dns":
    case "timeout":
      return Socks5Reply.HostUnreachable;
    case "denied":
      return Socks5Reply.NotAllowed;
    default:
      return Socks5Reply.GeneralFailure;
  }
}

/**
 * Encodes a request reply: `VER REP RSV ATYP BND.ADDR BND.PORT`. The bound
 * address defaults to 0.0.0.0:0; an IPv6 `bound.host` is encoded as ATYP 4,
 * dotted IPv4 as ATYP 1, anything else as a domain.
 */
export function encodeSocks5Reply(reply: number, bound?: Target): Uint8Array {
  const host = bound?.host ?? "0.0.0.0";
  const port = bound?.port ?? 0;
  const v4 = parseIPv4(host);
  const v6 = v4 ? null : parseIPv6(host);
  let addr: Uint8Array;
  let atyp: number;
  if (v4) {
    atyp = Socks5AddressType.IPv4;
    addr = v4;
  } else if (v6) {
    atyp = Socks5AddressType.IPv6;
    addr = v6;
  } else {
    const name = new TextEncoder().encode(host).subarray(0, 255);
    atyp = Socks5AddressType.Domain;
    addr = new Uint8Array(1 + name.length);
    addr[0] = name.length;
    addr.set(name, 1);
  }
  const out = new Uint8Array(4 + addr.length + 2);
  out[0] = 5;
  out[1] = reply;
  out[2] = 0;
  out[3] = atyp;
  out.set(addr, 4);
  out[out.length - 2] = (port >> 8) & 0xff;
  out[out.length - 1] = port & 0xff;
  return out;
}

/** Compares two byte strings in time that depends only on their lengths. */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

const utf8 = new TextEncoder();
const utf8Fatal = new TextDecoder("utf-8", { fatal: true });

/** Turns the DST.ADDR of an ATYP 3 request into a host, or `null` if unusable. */
function domainHost(raw: Uint8Array): string | null {
  if (raw.length === 0) return null;
  let name: string;
  try {
    name = utf8Fatal.decode(raw);
  } catch {
    return null;
  }
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x20\x7f/\\@]/.test(name)) return null;
  if (name.startsWith("[") && name.endsWith("]")) name = name.slice(1, -1);
  const v6 = name.includes(":") ? parseIPv6(name) : null;
  if (v6) return formatIPv6(v6);
  if (name.includes(":") || name.includes("[") || name.includes("]")) return null;
  return name;
}

const NO_ACCEPTABLE = Uint8Array.of(5, Socks5Method.NoAcceptable);
const CHOSE_NO_AUTH = Uint8Array.of(5, Socks5Method.NoAuth);
const CHOSE_USER_PASS = Uint8Array.of(5, Socks5Method.UserPass);

/**
 * Waits until at least `n` bytes are buffered in `io` and returns the buffered
 * bytes (a view, valid until the next read or skip).
 * @throws {Deno.errors.UnexpectedEof} if the stream ends first.
 */
async function need(io: BufferedReader, n: number): Promise<Uint8Array> {
  while (io.buffered < n) {
    if (!(await io.fill(Math.max(n, 512)))) {
      throw new Deno.errors.UnexpectedEof("unexpected end of stream");
    }
  }
  return io.peek();
}

/**
 * Runs the server side of a SOCKS5 negotiation on `io`: reads the greeting,
 * selects a method (0x02 user/password when `auth` is set — then a client
 * offering only no-auth gets 0xFF —, else 0x00), checks RFC 1929 credentials,
 * and reads the request. Replies for the greeting and authentication are
 * written here; the request reply is left to the caller.
 *
 * @param allowUdp accept UDP ASSOCIATE (its DST.PORT may then be 0).
 * @returns the request (a CONNECT with a valid address, or a UDP ASSOCIATE).
 * @throws {Socks5Error} on a protocol violation; its `reply` tells what to send.
 * @throws {Deno.errors.UnexpectedEof} when the client stops mid-message.
 */
export async function socks5Handshake(
  io: BufferedReader,
  auth?: ProxyCredentials,
  allowUdp = false,
): Promise<Socks5Request> {
  // Greeting: VER NMETHODS METHODS... (parsed in the buffer: one wait per message, not per byte)
  let b = await need(io, 1);
  const ver = b[0];
  if (ver !== 5) throw new Socks5Error(null, `not SOCKS5 (version ${ver})`);
  b = await need(io, 2);
  const nMethods = b[1];
  b = await need(io, 2 + nMethods);
  const wanted = auth ? Socks5Method.UserPass : Socks5Method.NoAuth;
  const acceptable = b.subarray(2, 2 + nMethods).includes(wanted);
  io.skip(2 + nMethods);
  if (!acceptable) {
    await writeAll(io, NO_ACCEPTABLE);
    throw new Socks5Error(null, "no acceptable authentication method");
  }
  await writeAll(io, wanted === Socks5Method.NoAuth ? CHOSE_NO_AUTH : CHOSE_USER_PASS);

  if (auth) {
    // RFC 1929: VER(1) ULEN UNAME PLEN PASSWD
    const subVer = await io.readByte();
    if (subVer !== 1) {
      await writeAll(io, Uint8Array.of(1, 1));
      throw new Socks5Error(null, `bad user/password version ${subVer}`);
    }
    const user = await io.readExact(await io.readByte());
    const pass = await io.readExact(await io.readByte());
    const okUser = equalBytes(user, utf8.encode(auth.username));
    const okPass = equalBytes(pass, utf8.encode(auth.password));
    if (!(okUser && okPass)) {
      await writeAll(io, Uint8Array.of(1, 1));
      throw new Socks5Error(null, "authentication failed");
    }
    await writeAll(io, Uint8Array.of(1, 0));
  }

  // Request: VER CMD RSV ATYP DST.ADDR DST.PORT
  b = await need(io, 1);
  const rver = b[0];
  if (rver !== 5) throw new Socks5Error(Socks5Reply.GeneralFailure, `bad request version ${rver}`);
  b = await need(io, 4);
  const command = b[1];
  // b[2] is RSV: ignored, as most servers do.
  const addressType = b[3];
  let host: string | null;
  let at: number; // where DST.PORT starts
  switch (addressType) {
    case Socks5AddressType.IPv4:
      b = await need(io, 4 + 4 + 2);
      host = `${b[4]}.${b[5]}.${b[6]}.${b[7]}`;
      at = 8;
      break;
    case Socks5AddressType.IPv6:
      b = await need(io, 4 + 16 + 2);
      host = formatIPv6(b.subarray(4, 20));
      at = 20;
      break;
    case Socks5AddressType.Domain: {
      b = await need(io, 5);
      const len = b[4];
      b = await need(io, 5 + len + 2);
      host = domainHost(b.subarray(5, 5 + len));
      at = 5 + len;
      break;
    }
    default:
      throw new Socks5Error(
        Socks5Reply.AddressTypeNotSupported,
        `address type ${addressType} not supported`,
      );
  }
  const port = (b[at] << 8) | b[at + 1];
  io.skip(at + 2);
  const udp = allowUdp && command === Socks5Command.UdpAssociate;
  if (command !== Socks5Command.Connect && !udp) {
    throw new Socks5Error(Socks5Reply.CommandNotSupported, `command ${command} not supported`);
  }
  if (host === null) throw new Socks5Error(Socks5Reply.GeneralFailure, "invalid domain name");
  // UDP ASSOCIATE: DST is only a hint of where the client will send from; 0 means unknown.
  if (port === 0 && !udp) throw new Socks5Error(Socks5Reply.GeneralFailure, "port 0");
  return { host, port, command, addressType };
}

/** The flow origin when the caller gives none. */
const PROXY_ORIGIN: FlowOrigin = Object.freeze({ inbound: "proxy" });

/** The success reply to a CONNECT (bound address 0.0.0.0:0), encoded once. */
const SUCCEEDED = encodeSocks5Reply(Socks5Reply.Succeeded);

/** What {@link handleSocks5} needs. */
export interface Socks5Options {
  /** Opens the stream to the requested target (given the flow's context). */
  outbound: Outbound;
  /** The connection's part of every flow's context; default inbound `proxy`, nothing else known. */
  flow?: FlowOrigin;
  /** When set, clients must authenticate with these (method 0x02). */
  auth?: ProxyCredentials;
  /** Aborting ends the connection (passed to the outbound and the relay). */
  signal?: AbortSignal;
  /** Called once the request has been read, before dialing (stops a handshake timer). */
  onHandshakeDone?: (target: Target) => void;
  /** Receives unexpected errors (expected disconnects are not reported). */
  onError?: (e: unknown) => void;
  /**
   * When set, UDP ASSOCIATE is accepted: called with the request's DST (where
   * the client says it will send from; often 0.0.0.0:0) to open the
   * association. A rejection becomes the reply its DialError maps to (0x01
   * for anything else); success replies with the association's bound address
   * and serves it until the control connection closes.
   */
  udpAssociate?: (hint: Target) => Promise<UdpAssociation>;
}

/**
 * Serves one SOCKS5 connection: handshake, dial, reply, relay. Always closes
 * `conn` (and the dialed stream) before resolving; never rejects.
 * @param reader a reader already wrapping `conn` (e.g. after sniffing its first byte).
 */
export async function handleSocks5(
  conn: Duplex,
  opts: Socks5Options,
  reader: BufferedReader = new BufferedReader(conn, 512),
): Promise<void> {
  let upstream: Duplex | undefined;
  try {
    let req: Socks5Request;
    try {
      req = await socks5Handshake(reader, opts.auth, opts.udpAssociate !== undefined);
    } catch (e) {
      if (e instanceof Socks5Error) {
        if (e.reply !== null) await writeAll(conn, encodeSocks5Reply(e.reply));
        return;
      }
      throw e;
    }
    const target: Target = { host: req.host, port: req.port };
    opts.onHandshakeDone?.(target);
    if (req.command === Socks5Command.UdpAssociate && opts.udpAssociate) {
      let assoc: UdpAssociation;
      try {
        assoc = await opts.udpAssociate(target);
      } catch (e) {
        if (!(e instanceof DialError)) opts.onError?.(e);
        await writeAll(conn, encodeSocks5Reply(socks5ReplyForError(e)));
        return;
      }
      try {
        if (opts.signal?.aborted) return;
        const a = assoc.addr;
        await writeAll(
          conn,
          encodeSocks5Reply(Socks5Reply.Succeeded, { host: a.hostname, port: a.port }),
        );
        await assoc.run(conn);
      } finally {
        assoc.close();
      }
      return;
    }
    try {
      upstream = await opts.outbound.dial(
        { ...(opts.flow ?? PROXY_ORIGIN), network: "tcp", target },
        opts.signal,
      );
    } catch (e) {
      if (!(e instanceof DialError)) opts.onError?.(e);
      await writeAll(conn, encodeSocks5Reply(socks5ReplyForError(e)));
      return;
    }
    if (opts.signal?.aborted) return;
    await writeAll(conn, SUCCEEDED);
    const dialed = upstream;
    upstream = undefined; // relay owns and closes both from here
    await relay(reader, dialed, { signal: opts.signal });
  } catch (e) {
    if (!isExpectedDisconnect(e)) opts.onError?.(e);
  } finally {
    closeQuietly(upstream);
    closeQuietly(conn);
  }
}

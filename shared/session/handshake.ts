/**
 * The OSTP handshake as pure functions (PROTOCOL.md A2): build and read the
 * client's and the server's hello datagrams, with the parameters each side
 * announces. No sockets, no clock: callers pass the time.
 * @module
 */

import type { KeySecrets, Masker } from "../crypto/keys.ts";
import {
  NoiseInitiator,
  NoiseResponder,
  OSTP_PROLOGUE,
  type TransportKeys,
} from "../crypto/noise.ts";
import {
  decodeHandshakeDatagram,
  encodeHandshakeDatagram,
  type HandshakeDatagram,
} from "../wire/handshake.ts";
import { Reader, varintSize, writeVarint } from "../wire/varint.ts";
import type { TransportParams } from "./session.ts";

/** Version of the parameter encoding inside the handshake payloads. */
export const HELLO_VERSION = 1;

/** What each side announces: its receive limits and largest datagram. */
export interface HelloParams extends TransportParams {
  /** Largest datagram this side accepts, bytes. */
  maxDatagramSize: number;
}

/** Largest parameter value accepted from a peer (keeps arithmetic safe). */
const PARAM_LIMIT = 2 ** 40;

function encodeParams(p: HelloParams, prefix: number): Uint8Array {
  const fields = [p.maxData, p.maxStreamData, p.maxStreams, p.maxDatagramSize];
  const size = prefix + 1 + fields.reduce((a, v) => a + varintSize(v), 0);
  const out = new Uint8Array(size);
  out[prefix] = HELLO_VERSION;
  let pos = prefix + 1;
  for (const v of fields) pos = writeVarint(out, pos, v);
  return out;
}

function decodeParams(r: Reader): HelloParams | null {
  if (r.u8() !== HELLO_VERSION) return null;
  const maxData = r.varint();
  const maxStreamData = r.varint();
  const maxStreams = r.varint();
  const maxDatagramSize = r.varint();
  if ([maxData, maxStreamData, maxStreams, maxDatagramSize].some((v) => v > PARAM_LIMIT)) {
    return null;
  }
  if (maxDatagramSize < 576 || maxStreamData < 1024 || maxData < 1024) return null;
  return { maxData, maxStreamData, maxStreams, maxDatagramSize };
}

/** A client hello ready to send, and the state needed to read the answer. */
export interface ClientHello {
  /** The wire datagram (resend it unchanged if no answer comes). */
  datagram: Uint8Array;
  /** Random session id the client chose. */
  sessionId: number;
  /** Noise state awaiting message 2. */
  initiator: NoiseInitiator;
}

/** Builds the client's first datagram with its parameters and the wall-clock time. */
export function buildClientHello(
  secrets: KeySecrets,
  masker: Masker,
  params: HelloParams,
  unixMs: number,
): ClientHello {
  const initiator = new NoiseInitiator({ psk: secrets.psk, prologue: OSTP_PROLOGUE });
  const payload = encodeParams(params, 8);
  new DataView(payload.buffer).setBigUint64(0, BigInt(Math.floor(unixMs)));
  const sid = new Uint32Array(1);
  crypto.getRandomValues(sid);
  const msg = initiator.writeMessage1(payload);
  return {
    datagram: encodeHandshakeDatagram(secrets, masker, sid[0], msg),
    sessionId: sid[0],
    initiator,
  };
}

/** A client hello the server authenticated. */
export interface AcceptedHello {
  sessionId: number;
  /** Client's clock at sending, unix ms. */
  timestamp: number;
  /** Client ephemeral public key (replay cache key). */
  ephemeral: Uint8Array;
  params: HelloParams;
  responder: NoiseResponder;
}

/**
 * Tries to read a client hello with one key. Returns null for anything that is
 * not an authentic hello under that key; never throws.
 */
export function readClientHello(
  secrets: KeySecrets,
  masker: Masker,
  datagram: Uint8Array,
): AcceptedHello | null {
  const dec = decodeHandshakeDatagram(masker, datagram);
  return dec ? readClientHelloFrom(secrets, dec) : null;
}

/**
 * The Noise part of {@link readClientHello}, for a datagram already unmasked
 * with the same key (so a server trying many keys unmasks each only once).
 */
export function readClientHelloFrom(
  secrets: KeySecrets,
  dec: HandshakeDatagram,
): AcceptedHello | null {
  const responder = new NoiseResponder({ psk: secrets.psk, prologue: OSTP_PROLOGUE });
  try {
    const { payload, remoteEphemeral } = responder.readMessage1(dec.noiseMsg);
    if (payload.length < 9) return null;
    const timestamp = Number(new DataView(payload.buffer, payload.byteOffset).getBigUint64(0));
    const params = decodeParams(new Reader(payload.subarray(8)));
    if (!params) return null;
    return { sessionId: dec.sessionId, timestamp, ephemeral: remoteEphemeral, params, responder };
  } catch {
    return null;
  }
}

/** Builds the server's answer; returns the datagram and the transport keys. */
export function buildServerHello(
  secrets: KeySecrets,
  masker: Masker,
  hello: AcceptedHello,
  params: HelloParams,
): { datagram: Uint8Array; keys: TransportKeys } {
  const { message, split } = hello.responder.writeMessage2(encodeParams(params, 0));
  return {
    datagram: encodeHandshakeDatagram(secrets, masker, hello.sessionId, message),
    keys: split,
  };
}

/** Reads the server's answer to `hello`; null if it is not one. Never throws. */
export function readServerHello(
  hello: ClientHello,
  masker: Masker,
  datagram: Uint8Array,
): { keys: TransportKeys; params: HelloParams } | null {
  const dec = decodeHandshakeDatagram(masker, datagram);
  if (!dec || dec.sessionId !== hello.sessionId) return null;
  try {
    const { payload, split } = hello.initiator.readMessage2(dec.noiseMsg);
    const params = decodeParams(new Reader(payload));
    if (!params) return null;
    return { keys: split, params };
  } catch {
    return null;
  }
}

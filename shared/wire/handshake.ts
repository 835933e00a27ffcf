/**
 * The handshake datagram (PROTOCOL.md A2) and the server's handshake replay cache.
 *
 * ```
 * datagram = session_id(4) || noise_len(u16be) || noise_msg || padding
 * datagram[0..6] ^= HMAC-SHA256(obfs_key, noise_msg[0..32])[0..6]
 * ```
 * Padding is random and its length uniform in `[pad_min, pad_max]`. Handshakes
 * are rare, so this code allocates freely; decoding still never throws,
 * because its input comes from the network.
 * @module
 */

import { type KeySecrets, type Masker, toHex } from "../crypto/keys.ts";
import { NOISE_MAX_MESSAGE_LENGTH, NOISE_MIN_MESSAGE_LENGTH } from "../crypto/noise.ts";

/** Bytes before the Noise message: session_id(4) || noise_len(2). */
export const HANDSHAKE_HEADER_LENGTH = 6;
/** Smallest datagram {@link decodeHandshakeDatagram} can accept. */
export const HANDSHAKE_MIN_DATAGRAM_LENGTH = HANDSHAKE_HEADER_LENGTH + NOISE_MIN_MESSAGE_LENGTH;

/** Uniform random integer in [0, n) for 1 <= n <= 2^32, by rejection sampling. */
function randomBelow(n: number): number {
  const limit = Math.floor(0x1_0000_0000 / n) * n;
  const buf = new Uint32Array(1);
  for (;;) {
    crypto.getRandomValues(buf);
    if (buf[0] < limit) return buf[0] % n;
  }
}

/**
 * Builds a handshake datagram around a Noise message: random padding of
 * uniform length in `[secrets.padMin, secrets.padMax]`, first 6 bytes masked.
 * @throws {RangeError} if `noiseMsg` is shorter than 48 or longer than 65535
 * bytes, or `sessionId` is not a u32.
 */
export function encodeHandshakeDatagram(
  secrets: KeySecrets,
  masker: Masker,
  sessionId: number,
  noiseMsg: Uint8Array,
): Uint8Array {
  if (!Number.isInteger(sessionId) || sessionId < 0 || sessionId > 0xffff_ffff) {
    throw new RangeError("session id must be a u32");
  }
  if (noiseMsg.length < NOISE_MIN_MESSAGE_LENGTH || noiseMsg.length > NOISE_MAX_MESSAGE_LENGTH) {
    throw new RangeError(`noise message length ${noiseMsg.length} out of range`);
  }
  const padLen = secrets.padMin + randomBelow(secrets.padMax - secrets.padMin + 1);
  const out = new Uint8Array(HANDSHAKE_HEADER_LENGTH + noiseMsg.length + padLen);
  const view = new DataView(out.buffer);
  view.setUint32(0, sessionId);
  view.setUint16(4, noiseMsg.length);
  out.set(noiseMsg, HANDSHAKE_HEADER_LENGTH);
  if (padLen > 0) crypto.getRandomValues(out.subarray(HANDSHAKE_HEADER_LENGTH + noiseMsg.length));
  const mask = new Uint8Array(HANDSHAKE_HEADER_LENGTH);
  masker.mask(noiseMsg, mask);
  for (let i = 0; i < HANDSHAKE_HEADER_LENGTH; i++) out[i] ^= mask[i];
  return out;
}

/** A decoded handshake datagram. */
export interface HandshakeDatagram {
  /** The session id chosen by the client. */
  sessionId: number;
  /** The Noise message: a view into the datagram (copy it to keep it past the buffer's reuse). */
  noiseMsg: Uint8Array;
}

/**
 * Unmasks and parses a handshake datagram. Returns null if it is too short or
 * `noise_len` is below 48 or runs past the end. Never throws. A non-null
 * result does not mean the datagram is genuine: only the Noise read can tell.
 */
export function decodeHandshakeDatagram(
  masker: Masker,
  datagram: Uint8Array,
): HandshakeDatagram | null {
  if (datagram.length < HANDSHAKE_MIN_DATAGRAM_LENGTH) return null;
  const mask = new Uint8Array(HANDSHAKE_HEADER_LENGTH);
  // noise_msg[0..32] is not masked, so the mask can be computed first.
  masker.mask(datagram, mask, HANDSHAKE_HEADER_LENGTH);
  const sessionId = (((datagram[0] ^ mask[0]) << 24) | ((datagram[1] ^ mask[1]) << 16) |
    ((datagram[2] ^ mask[2]) << 8) | (datagram[3] ^ mask[3])) >>> 0;
  const noiseLen = ((datagram[4] ^ mask[4]) << 8) | (datagram[5] ^ mask[5]);
  if (noiseLen < NOISE_MIN_MESSAGE_LENGTH) return null;
  if (noiseLen > datagram.length - HANDSHAKE_HEADER_LENGTH) return null;
  return {
    sessionId,
    noiseMsg: datagram.subarray(HANDSHAKE_HEADER_LENGTH, HANDSHAKE_HEADER_LENGTH + noiseLen),
  };
}

/** Options of a {@link ReplayCache}. */
export interface ReplayCacheOptions {
  /** Most entries kept; the oldest is evicted first when full. */
  capacity: number;
  /** How long an entry is kept, in ms (cover the whole timestamp window, e.g. 600 000). */
  windowMs: number;
}

interface ReplayEntry {
  expires: number;
  reply: Uint8Array | undefined;
}

/**
 * Remembers the client ephemerals of accepted handshake messages 1 (PROTOCOL.md
 * A2), so a replayed message 1 starts no new session, and a retransmitted one
 * gets the same reply. Bounded: at most `capacity` entries, oldest evicted
 * first (FIFO), each kept for `windowMs`. Never reads the clock: every call
 * takes `now` in ms, which should not go backwards (use a monotonic clock).
 */
export class ReplayCache {
  readonly #capacity: number;
  readonly #windowMs: number;
  /** Insertion-ordered, so the first entry is always the oldest. */
  readonly #entries = new Map<string, ReplayEntry>();

  /** Creates an empty cache. */
  constructor(opts: ReplayCacheOptions) {
    if (!Number.isInteger(opts.capacity) || opts.capacity < 1) {
      throw new RangeError("replay cache capacity must be a positive integer");
    }
    if (!(opts.windowMs > 0)) throw new RangeError("replay cache window must be positive");
    this.#capacity = opts.capacity;
    this.#windowMs = opts.windowMs;
  }

  /** Number of entries held (expired ones may linger until the next {@link prune} or add). */
  get size(): number {
    return this.#entries.size;
  }

  /** True if `ephemeral` was added and has not expired at `now`. */
  has(ephemeral: Uint8Array, now: number): boolean {
    return this.#live(toHex(ephemeral), now) !== undefined;
  }

  /** The reply stored with `ephemeral`, if it is present, unexpired and has one. */
  get(ephemeral: Uint8Array, now: number): Uint8Array | undefined {
    return this.#live(toHex(ephemeral), now)?.reply;
  }

  /**
   * Records `ephemeral` at `now`, with the reply (e.g. the message 2 datagram)
   * to send again if the same message 1 arrives again. Adding a present key
   * replaces its reply and keeps its original expiry.
   */
  add(ephemeral: Uint8Array, now: number, reply?: Uint8Array): void {
    const key = toHex(ephemeral);
    this.prune(now);
    const existing = this.#entries.get(key);
    if (existing !== undefined) {
      existing.reply = reply;
      return;
    }
    while (this.#entries.size >= this.#capacity) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
    this.#entries.set(key, { expires: now + this.#windowMs, reply });
  }

  /** Drops the entries that have expired at `now`. */
  prune(now: number): void {
    for (const [key, entry] of this.#entries) {
      if (entry.expires > now) break;
      this.#entries.delete(key);
    }
  }

  #live(key: string, now: number): ReplayEntry | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.expires <= now) return undefined;
    return entry;
  }
}

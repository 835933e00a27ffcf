/**
 * The data datagram (PROTOCOL.md A3) and the receiver's anti-replay window.
 *
 * ```
 * header     = session_id(4) || packet_number(u64be)       # 12 bytes
 * nonce      = 0x00000000 || u64le(packet_number)
 * ciphertext = ChaCha20-Poly1305(direction_key, nonce, aad = header, plaintext)
 * mask       = HMAC-SHA256(obfs_key, ciphertext[0..32])[0..12]
 * wire       = (header XOR mask) || ciphertext
 * ```
 * {@link PacketCodec.seal} and {@link PacketCodec.open} run once per packet:
 * they write into caller buffers and reuse their own scratch buffers.
 * @module
 */

import { type Aead, type AeadImpl, createAead, TAG_LENGTH } from "../crypto/aead.ts";
import type { Masker } from "../crypto/keys.ts";

/** Length of the (masked) header: session_id(4) || packet_number(8). */
export const PACKET_HEADER_LENGTH = 12;
/** Smallest plaintext: the mask samples 32 bytes of ciphertext, which includes the 16-byte tag. */
export const MIN_PLAINTEXT_LENGTH = 16;
/** Smallest valid data datagram: header, 16 bytes of ciphertext, tag. */
export const MIN_PACKET_LENGTH = PACKET_HEADER_LENGTH + MIN_PLAINTEXT_LENGTH + TAG_LENGTH;
/** Bytes a sealed packet adds to its plaintext. */
export const PACKET_OVERHEAD = PACKET_HEADER_LENGTH + TAG_LENGTH;
/** Largest packet number this implementation sends or accepts (JS safe integers). */
export const MAX_PACKET_NUMBER = Number.MAX_SAFE_INTEGER;

const TWO_32 = 0x1_0000_0000;
/** High 32-bit word of the largest safe integer; a larger word means pn >= 2^53. */
const MAX_PN_HIGH = 0x1f_ffff;

/** Scratch for {@link unmaskSessionId}; safe because JavaScript runs it to completion. */
const SESSION_MASK = new Uint8Array(4);

/**
 * Reads the session id from a data datagram's masked header, so a server can
 * find the session (and its keys) before authenticating. Returns -1 if the
 * datagram is shorter than {@link MIN_PACKET_LENGTH}. Never throws.
 */
export function unmaskSessionId(masker: Masker, wire: Uint8Array): number {
  if (wire.length < MIN_PACKET_LENGTH) return -1;
  const m = SESSION_MASK;
  masker.mask(wire, m, PACKET_HEADER_LENGTH);
  return (((wire[0] ^ m[0]) << 24) | ((wire[1] ^ m[1]) << 16) | ((wire[2] ^ m[2]) << 8) |
    (wire[3] ^ m[3])) >>> 0;
}

/** Options of a {@link PacketCodec}. */
export interface PacketCodecOptions {
  /** The session's id (u32). */
  sessionId: number;
  /** 32-byte key for packets this side sends (from Noise `Split()`). */
  sendKey: Uint8Array;
  /** 32-byte key for packets this side receives. */
  recvKey: Uint8Array;
  /** Header masker of the session's access key. */
  masker: Masker;
  /** ChaCha20-Poly1305 implementation; the measured-faster default if omitted. */
  aead?: AeadImpl;
}

/**
 * Seals and opens one session's data datagrams. Replay protection is not
 * done here: feed {@link PacketCodec.lastPn} to a {@link ReplayWindow} after
 * a successful {@link PacketCodec.open}.
 */
export class PacketCodec {
  /** The session id this codec seals with and accepts. */
  readonly sessionId: number;
  /** Packet number of the last packet {@link open} authenticated; -1 before the first. */
  lastPn = -1;

  readonly #send: Aead;
  readonly #recv: Aead;
  readonly #masker: Masker;
  readonly #header = new Uint8Array(PACKET_HEADER_LENGTH);
  readonly #headerView = new DataView(this.#header.buffer);
  readonly #nonce = new Uint8Array(12);
  readonly #nonceView = new DataView(this.#nonce.buffer);
  readonly #mask = new Uint8Array(PACKET_HEADER_LENGTH);

  /** Creates a codec for one session and direction pair. */
  constructor(opts: PacketCodecOptions) {
    if (!Number.isInteger(opts.sessionId) || opts.sessionId < 0 || opts.sessionId > 0xffff_ffff) {
      throw new RangeError("session id must be a u32");
    }
    this.sessionId = opts.sessionId;
    this.#send = createAead(opts.sendKey, opts.aead);
    this.#recv = createAead(opts.recvKey, opts.aead);
    this.#masker = opts.masker;
  }

  /** The AEAD implementation in use. */
  get aeadImpl(): AeadImpl {
    return this.#send.impl;
  }

  /** Writes the nonce for `pn` (4 zero bytes, then u64le). */
  #setNonce(hi: number, lo: number): void {
    this.#nonceView.setUint32(4, lo, true);
    this.#nonceView.setUint32(8, hi, true);
  }

  /**
   * Seals `plaintext` as packet number `pn` and writes the datagram
   * (masked header || ciphertext || tag) into `out`; returns its length,
   * `plaintext.length + 28`. `plaintext` may already sit in `out` at offset 12.
   * The caller must never reuse a packet number.
   * @throws {RangeError} if `pn` is not a safe non-negative integer, the
   * plaintext is shorter than 16 bytes, or `out` is too small.
   */
  seal(pn: number, plaintext: Uint8Array, out: Uint8Array): number {
    if (!Number.isSafeInteger(pn) || pn < 0) {
      throw new RangeError("packet number must be a non-negative safe integer");
    }
    if (plaintext.length < MIN_PLAINTEXT_LENGTH) {
      throw new RangeError(`plaintext must be at least ${MIN_PLAINTEXT_LENGTH} bytes`);
    }
    const total = plaintext.length + PACKET_OVERHEAD;
    if (out.length < total) {
      throw new RangeError(`output buffer too small: need ${total}, have ${out.length}`);
    }
    const hi = Math.floor(pn / TWO_32);
    const lo = pn >>> 0;
    const hv = this.#headerView;
    hv.setUint32(0, this.sessionId);
    hv.setUint32(4, hi);
    hv.setUint32(8, lo);
    this.#setNonce(hi, lo);
    this.#send.seal(
      this.#nonce,
      this.#header,
      plaintext,
      out.subarray(PACKET_HEADER_LENGTH, total),
    );
    const m = this.#mask;
    this.#masker.mask(out, m, PACKET_HEADER_LENGTH);
    const h = this.#header;
    for (let i = 0; i < PACKET_HEADER_LENGTH; i++) out[i] = h[i] ^ m[i];
    return total;
  }

  /**
   * Authenticates and decrypts a datagram into `out`. Returns the plaintext
   * length (`wire.length - 28`), or -1 if the datagram is too short, too
   * long for `out`, carries another session id or a packet number of 2^53
   * or more, or fails authentication. On success {@link lastPn} holds its
   * packet number. Never throws on any `wire`; changes no state on failure.
   */
  open(wire: Uint8Array, out: Uint8Array): number {
    if (wire.length < MIN_PACKET_LENGTH) return -1;
    const ptLen = wire.length - PACKET_OVERHEAD;
    if (out.length < ptLen) return -1;
    const m = this.#mask;
    this.#masker.mask(wire, m, PACKET_HEADER_LENGTH);
    const h = this.#header;
    for (let i = 0; i < PACKET_HEADER_LENGTH; i++) h[i] = wire[i] ^ m[i];
    const hv = this.#headerView;
    if (hv.getUint32(0) !== this.sessionId) return -1;
    const hi = hv.getUint32(4);
    if (hi > MAX_PN_HIGH) return -1;
    const lo = hv.getUint32(8);
    this.#setNonce(hi, lo);
    const n = this.#recv.open(this.#nonce, h, wire.subarray(PACKET_HEADER_LENGTH), out);
    if (n < 0) return -1;
    this.lastPn = hi * TWO_32 + lo;
    return n;
  }
}

/** Packets a {@link ReplayWindow} remembers behind the highest one. */
export const REPLAY_WINDOW_SIZE = 2048;
/** Ring of 32-bit words; a power of two at least window/32 + 1 so a word is cleared before reuse. */
const RING_WORDS = 128;
const RING_MASK = RING_WORDS - 1;

/**
 * Sliding-window anti-replay filter over packet numbers (as WireGuard's,
 * RFC 6479): accepts each packet number once, and nothing 2048 or more
 * below the highest accepted. Use it only after authentication, so forged
 * packets cannot move the window.
 */
export class ReplayWindow {
  readonly #ring = new Uint32Array(RING_WORDS);
  #top = -1;

  /** The highest packet number accepted so far, or -1. */
  get highest(): number {
    return this.#top;
  }

  /** True if `pn` would be accepted now (new and not too old); records nothing. */
  check(pn: number): boolean {
    if (!Number.isSafeInteger(pn) || pn < 0) return false;
    if (pn > this.#top) return true;
    if (this.#top - pn >= REPLAY_WINDOW_SIZE) return false;
    return (this.#ring[Math.floor(pn / 32) & RING_MASK] & (1 << (pn & 31))) === 0;
  }

  /** Accepts and records `pn`; false (and no change) if it is a duplicate or too old. */
  update(pn: number): boolean {
    if (!this.check(pn)) return false;
    const word = Math.floor(pn / 32);
    if (pn > this.#top) {
      const topWord = Math.floor(this.#top / 32);
      let advance = word - topWord;
      if (advance > RING_WORDS) advance = RING_WORDS;
      for (let i = 1; i <= advance; i++) this.#ring[(topWord + i) & RING_MASK] = 0;
      this.#top = pn;
    }
    this.#ring[word & RING_MASK] |= 1 << (pn & 31);
    return true;
  }
}

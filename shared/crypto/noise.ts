/**
 * The OSTP handshake: `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` (PROTOCOL.md A2).
 *
 * Only this one pattern is implemented:
 * ```
 * NNpsk0:
 *   -> psk, e
 *   <- e, ee
 * ```
 * following the Noise Protocol Framework (rev. 34): CipherState,
 * SymmetricState and HandshakeState with HASH = BLAKE2s, HKDF over
 * HMAC-BLAKE2s, DH = X25519 and the ChaChaPoly nonce `0^32 || u64le(n)`.
 * The handshake runs once per session, so this code favours clarity over
 * speed. Transport messages use `shared/crypto/aead.ts` with the split keys.
 * @module
 */

import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { blake2s } from "@noble/hashes/blake2.js";
import { hmac } from "@noble/hashes/hmac.js";
import { x25519 } from "@noble/curves/ed25519.js";

/** The Noise protocol name; its BLAKE2s hash initialises the handshake. */
export const NOISE_PROTOCOL_NAME = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

/** The OSTP prologue, ASCII `ostp/1`, mixed into every handshake. */
export const OSTP_PROLOGUE: Uint8Array = new TextEncoder().encode("ostp/1");

/** Length of a hash, a key, a DH public key and a PSK. */
const LEN = 32;
/** Length of the Poly1305 tag. */
const TAG = 16;
/** Smallest valid handshake message: an ephemeral key and an encrypted empty payload. */
export const NOISE_MIN_MESSAGE_LENGTH = LEN + TAG;
/** Largest Noise message (the framework's limit). */
export const NOISE_MAX_MESSAGE_LENGTH = 65535;

/** Thrown when a handshake message fails to authenticate or is malformed, or on misuse. */
export class NoiseError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "NoiseError";
  }
}

/** The result of `Split()`: one key per direction, and the handshake hash for channel binding. */
export interface TransportKeys {
  /** 32-byte key for messages from the initiator (client) to the responder (server). */
  readonly initiatorToResponder: Uint8Array;
  /** 32-byte key for messages from the responder (server) to the initiator (client). */
  readonly responderToInitiator: Uint8Array;
  /** The final handshake hash `h`. */
  readonly handshakeHash: Uint8Array;
}

/** Options shared by both handshake roles. */
export interface NoiseOptions {
  /** The 32-byte pre-shared key (`psk` of PROTOCOL.md A1). */
  psk: Uint8Array;
  /** The prologue; OSTP uses {@link OSTP_PROLOGUE}. */
  prologue: Uint8Array;
  /** A fixed ephemeral private key, for test vectors only; random otherwise. */
  ephemeralPrivate?: Uint8Array;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Noise `HKDF(chaining_key, input_key_material, n)` with HMAC-BLAKE2s; returns n outputs. */
function hkdf(ck: Uint8Array, ikm: Uint8Array, n: 2 | 3): Uint8Array[] {
  const tempKey = hmac(blake2s, ck, ikm);
  const out1 = hmac(blake2s, tempKey, Uint8Array.of(0x01));
  const out2 = hmac(blake2s, tempKey, concat(out1, Uint8Array.of(0x02)));
  if (n === 2) {
    tempKey.fill(0);
    return [out1, out2];
  }
  const out3 = hmac(blake2s, tempKey, concat(out2, Uint8Array.of(0x03)));
  tempKey.fill(0);
  return [out1, out2, out3];
}

/** ChaChaPoly nonce: 4 zero bytes, then the counter as u64 little-endian. */
function nonceBytes(n: number): Uint8Array {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, BigInt(n), true);
  return nonce;
}

/** A saved {@link SymmetricState}. */
interface Snapshot {
  ck: Uint8Array;
  h: Uint8Array;
  k: Uint8Array | null;
  n: number;
}

/** Noise SymmetricState with its embedded CipherState. */
class SymmetricState {
  ck: Uint8Array;
  h: Uint8Array;
  /** CipherState key, or null before the first MixKey. */
  k: Uint8Array | null = null;
  /** CipherState nonce counter. */
  n = 0;

  constructor() {
    const name = new TextEncoder().encode(NOISE_PROTOCOL_NAME);
    // The name is longer than HASHLEN, so h = HASH(name).
    this.h = name.length <= LEN ? concat(name, new Uint8Array(LEN - name.length)) : blake2s(name);
    this.ck = this.h.slice();
  }

  mixHash(data: Uint8Array): void {
    this.h = blake2s.create().update(this.h).update(data).digest();
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, k] = hkdf(this.ck, ikm, 2);
    this.ck = ck;
    this.k = k;
    this.n = 0;
  }

  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, tempH, k] = hkdf(this.ck, ikm, 3);
    this.ck = ck;
    this.mixHash(tempH);
    this.k = k;
    this.n = 0;
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    let ct: Uint8Array;
    if (this.k === null) {
      ct = plaintext.slice();
    } else {
      ct = chacha20poly1305(this.k, nonceBytes(this.n), this.h).encrypt(plaintext);
      this.n++;
    }
    this.mixHash(ct);
    return ct;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    let pt: Uint8Array;
    if (this.k === null) {
      pt = ciphertext.slice();
    } else {
      if (ciphertext.length < TAG) throw new NoiseError("handshake message too short");
      try {
        pt = chacha20poly1305(this.k, nonceBytes(this.n), this.h).decrypt(ciphertext);
      } catch {
        throw new NoiseError("handshake message failed authentication");
      }
      this.n++;
    }
    this.mixHash(ciphertext);
    return pt;
  }

  /** Captures the state, so a failed read can be undone with {@link restore}. */
  snapshot(): Snapshot {
    return { ck: this.ck, h: this.h, k: this.k, n: this.n };
  }

  /** Returns to a {@link snapshot} (every mix replaces arrays, never mutates them). */
  restore(s: Snapshot): void {
    this.ck = s.ck;
    this.h = s.h;
    this.k = s.k;
    this.n = s.n;
  }

  split(): TransportKeys {
    const [k1, k2] = hkdf(this.ck, new Uint8Array(0), 2);
    const keys = { initiatorToResponder: k1, responderToInitiator: k2, handshakeHash: this.h };
    this.ck.fill(0);
    this.k?.fill(0);
    this.k = null;
    return keys;
  }
}

/** Validates options and builds the initial HandshakeState (Initialize + MixHash(prologue)). */
function initialize(opts: NoiseOptions): { ss: SymmetricState; ePriv: Uint8Array } {
  if (opts.psk.length !== LEN) throw new NoiseError("psk must be 32 bytes");
  const ePriv = opts.ephemeralPrivate ?? x25519.utils.randomSecretKey();
  if (ePriv.length !== LEN) throw new NoiseError("ephemeral private key must be 32 bytes");
  const ss = new SymmetricState();
  ss.mixHash(opts.prologue);
  return { ss, ePriv: ePriv.slice() };
}

/** X25519 with errors mapped to {@link NoiseError} (e.g. a low-order public key). */
function dh(priv: Uint8Array, pub: Uint8Array): Uint8Array {
  try {
    return x25519.getSharedSecret(priv, pub);
  } catch {
    throw new NoiseError("invalid remote ephemeral key");
  }
}

function checkLength(msg: Uint8Array): void {
  if (msg.length < NOISE_MIN_MESSAGE_LENGTH) throw new NoiseError("handshake message too short");
  if (msg.length > NOISE_MAX_MESSAGE_LENGTH) throw new NoiseError("handshake message too long");
}

/** The client side: writes message 1, reads message 2. Single use. */
export class NoiseInitiator {
  #ss: SymmetricState;
  #ePriv: Uint8Array;
  #psk: Uint8Array;
  #step = 0;

  /** Starts a handshake. @throws {NoiseError} on a bad psk or ephemeral length. */
  constructor(opts: NoiseOptions) {
    const { ss, ePriv } = initialize(opts);
    this.#ss = ss;
    this.#ePriv = ePriv;
    this.#psk = opts.psk.slice();
  }

  /** The initiator's ephemeral public key (what the responder's replay cache is keyed by). */
  get ephemeralPublic(): Uint8Array {
    return x25519.getPublicKey(this.#ePriv);
  }

  /** Writes message 1 (`-> psk, e`) carrying `payload` encrypted. */
  writeMessage1(payload: Uint8Array): Uint8Array {
    if (this.#step !== 0) throw new NoiseError("writeMessage1 called out of order");
    this.#step = 1;
    const ss = this.#ss;
    ss.mixKeyAndHash(this.#psk);
    this.#psk.fill(0);
    const ePub = x25519.getPublicKey(this.#ePriv);
    ss.mixHash(ePub);
    ss.mixKey(ePub); // psk handshakes mix e into the key too
    const ct = ss.encryptAndHash(payload);
    const msg = concat(ePub, ct);
    if (msg.length > NOISE_MAX_MESSAGE_LENGTH) throw new NoiseError("payload too long");
    return msg;
  }

  /**
   * Reads message 2 (`<- e, ee`), returns its payload and the transport keys.
   * A message that fails leaves the state unchanged, so a later genuine
   * message 2 can still be read.
   * @throws {NoiseError} if the message is malformed or fails authentication.
   */
  readMessage2(msg: Uint8Array): { payload: Uint8Array; split: TransportKeys } {
    if (this.#step !== 1) throw new NoiseError("readMessage2 called out of order");
    checkLength(msg);
    const ss = this.#ss;
    const saved = ss.snapshot();
    let payload: Uint8Array;
    try {
      const re = msg.slice(0, LEN);
      ss.mixHash(re);
      ss.mixKey(re);
      ss.mixKey(dh(this.#ePriv, re));
      payload = ss.decryptAndHash(msg.subarray(LEN));
    } catch (e) {
      ss.restore(saved);
      throw e;
    }
    this.#step = 2;
    this.#ePriv.fill(0);
    return { payload, split: ss.split() };
  }
}

/** The server side: reads message 1, writes message 2. Single use. */
export class NoiseResponder {
  #ss: SymmetricState;
  #ePriv: Uint8Array;
  #psk: Uint8Array;
  #re: Uint8Array | null = null;
  #step = 0;

  /** Prepares to answer a handshake. @throws {NoiseError} on a bad psk or ephemeral length. */
  constructor(opts: NoiseOptions) {
    const { ss, ePriv } = initialize(opts);
    this.#ss = ss;
    this.#ePriv = ePriv;
    this.#psk = opts.psk.slice();
  }

  /**
   * Reads message 1 (`-> psk, e`); returns its payload and the initiator's
   * ephemeral public key (32 bytes, a copy).
   * @throws {NoiseError} if the message is malformed or fails authentication
   * (which is what a wrong psk looks like). A message that fails leaves the
   * state unchanged.
   */
  readMessage1(msg: Uint8Array): { payload: Uint8Array; remoteEphemeral: Uint8Array } {
    if (this.#step !== 0) throw new NoiseError("readMessage1 called out of order");
    checkLength(msg);
    const ss = this.#ss;
    const saved = ss.snapshot();
    const re = msg.slice(0, LEN);
    let payload: Uint8Array;
    try {
      ss.mixKeyAndHash(this.#psk);
      ss.mixHash(re);
      ss.mixKey(re);
      payload = ss.decryptAndHash(msg.subarray(LEN));
    } catch (e) {
      ss.restore(saved);
      throw e;
    }
    this.#step = 1;
    this.#psk.fill(0);
    this.#re = re;
    return { payload, remoteEphemeral: re.slice() };
  }

  /** Writes message 2 (`<- e, ee`) carrying `payload`; returns it and the transport keys. */
  writeMessage2(payload: Uint8Array): { message: Uint8Array; split: TransportKeys } {
    if (this.#step !== 1 || this.#re === null) {
      throw new NoiseError("writeMessage2 called out of order");
    }
    this.#step = 2;
    const ss = this.#ss;
    const ePub = x25519.getPublicKey(this.#ePriv);
    ss.mixHash(ePub);
    ss.mixKey(ePub);
    ss.mixKey(dh(this.#ePriv, this.#re));
    const ct = ss.encryptAndHash(payload);
    this.#ePriv.fill(0);
    const message = concat(ePub, ct);
    if (message.length > NOISE_MAX_MESSAGE_LENGTH) throw new NoiseError("payload too long");
    return { message, split: ss.split() };
  }
}

/**
 * The access key and the secrets derived from it (PROTOCOL.md A1).
 *
 * An access key is 32 random bytes that users see as 64 hex characters or as
 * base64url. Everything else a peer needs (the header obfuscation key, the
 * Noise PSK, the handshake padding range, the junk schedule) is derived from
 * it with HKDF-SHA256, once per key; callers cache the {@link KeySecrets}.
 *
 * {@link Masker} computes header masks, `HMAC-SHA256(obfs_key, sample)`, on
 * the per-packet hot path without allocating: OpenSSL's or libsodium's
 * SHA-256 through FFI where one loads, else `@noble/hashes`, each from
 * precomputed keyed states.
 * @module
 */

import { sha256 } from "@noble/hashes/sha2.js";
import { expand, extract } from "@noble/hashes/hkdf.js";
import { _HMAC } from "@noble/hashes/hmac.js";
import { loadSodium, type Sodium } from "../../ffi/sodium.ts";
import { type Libcrypto, loadLibcrypto, SHA256_CTX_SIZE } from "../../ffi/libcrypto.ts";

/** Length in bytes of an access key. */
export const ACCESS_KEY_LENGTH = 32;

/** Thrown when an access key's text is not 64 hex characters or base64url of 32 bytes. */
export class KeyFormatError extends Error {
  /** Creates the error; `message` must never contain the key text. */
  constructor(message: string) {
    super(message);
    this.name = "KeyFormatError";
  }
}

const HEX_RE = /^[0-9a-fA-F]{64}$/;
const B64URL_RE = /^[A-Za-z0-9_-]{43}=?$/;
const B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/**
 * Parses an access key from 64 hex characters or base64url (padded or not) of
 * 32 bytes. Surrounding whitespace is ignored.
 * @throws {KeyFormatError} if the text is neither; the message never includes the text.
 */
export function parseAccessKey(text: string): Uint8Array {
  const s = text.trim();
  if (HEX_RE.test(s)) {
    const key = new Uint8Array(ACCESS_KEY_LENGTH);
    for (let i = 0; i < ACCESS_KEY_LENGTH; i++) {
      key[i] = parseInt(s.substring(2 * i, 2 * i + 2), 16);
    }
    return key;
  }
  if (B64URL_RE.test(s)) {
    return decodeBase64Url32(s.substring(0, 43));
  }
  if (s.length === 0) {
    throw new KeyFormatError("access key is empty");
  }
  if (/[+/]/.test(s)) {
    throw new KeyFormatError(
      "access key uses standard base64 ('+' or '/'); expected base64url ('-' and '_') or hex",
    );
  }
  throw new KeyFormatError(
    `access key must be 64 hex characters or 43 base64url characters (32 bytes); ` +
      `got ${s.length} characters`,
  );
}

/** Decodes exactly 43 base64url characters (already checked) into 32 bytes. */
function decodeBase64Url32(s: string): Uint8Array {
  const key = new Uint8Array(ACCESS_KEY_LENGTH);
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    acc = (acc << 6) | B64URL_ALPHABET.indexOf(s[i]);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      key[o++] = (acc >>> bits) & 0xff;
    }
    acc &= (1 << bits) - 1;
  }
  // 43 characters carry 258 bits: the 2 unused trailing bits must be zero.
  if (acc !== 0) {
    throw new KeyFormatError("access key is not canonical base64url (trailing bits set)");
  }
  return key;
}

/** Formats an access key as lowercase hex or unpadded base64url. */
export function formatAccessKey(key: Uint8Array, form: "hex" | "base64url"): string {
  if (key.length !== ACCESS_KEY_LENGTH) {
    throw new RangeError(`access key must be ${ACCESS_KEY_LENGTH} bytes, got ${key.length}`);
  }
  if (form === "hex") return toHex(key);
  let out = "";
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < key.length; i++) {
    acc = (acc << 8) | key[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += B64URL_ALPHABET[(acc >>> bits) & 63];
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += B64URL_ALPHABET[(acc << (6 - bits)) & 63];
  return out;
}

/** Generates a fresh random access key (32 bytes from `crypto.getRandomValues`). */
export function generateAccessKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(ACCESS_KEY_LENGTH));
}

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += bytes[i].toString(16).padStart(2, "0");
  return s;
}

/** Everything derived from one access key (PROTOCOL.md A1). Derive once and cache. */
export interface KeySecrets {
  /** 32-byte key for the header masks, `HMAC-SHA256(obfs_key, sample)`. */
  readonly obfsKey: Uint8Array;
  /** 32-byte Noise pre-shared key. */
  readonly psk: Uint8Array;
  /** Smallest handshake padding length, in [0, 63]. */
  readonly padMin: number;
  /** Largest handshake padding length, in [padMin + 32, padMin + 255]. */
  readonly padMax: number;
  /** The 4 junk bytes for time window `window` (`floor(unix_seconds / 60)`). */
  junk(window: number): Uint8Array;
  /** 8 hex characters identifying the key; safe for logs (does not reveal the key). */
  readonly fingerprint: string;
}

/** Implementation of {@link KeySecrets}; keeps the PRK private for {@link KeySecrets.junk}. */
class DerivedSecrets implements KeySecrets {
  readonly obfsKey: Uint8Array;
  readonly psk: Uint8Array;
  readonly padMin: number;
  readonly padMax: number;
  readonly fingerprint: string;
  readonly #prk: Uint8Array;
  readonly #info: Uint8Array;

  constructor(accessKey: Uint8Array) {
    const keyHash = sha256(accessKey);
    const salt = keyHash.subarray(0, 16);
    this.#info = keyHash.slice(16, 32);
    const ikm = new Uint8Array(accessKey.length + 1);
    ikm.set(accessKey);
    ikm[accessKey.length] = 0x05; // wire version, never sent
    this.#prk = extract(sha256, ikm, salt);
    ikm.fill(0);
    this.obfsKey = this.#expand(0x01, 32);
    this.psk = this.#expand(0x02, 32);
    const pad = this.#expand(0x03, 2);
    this.padMin = pad[0] % 64;
    this.padMax = this.padMin + 32 + (pad[1] % 224);
    this.fingerprint = toHex(sha256(keyHash).subarray(0, 4));
  }

  /** HKDF-Expand(PRK, info || label, length). */
  #expand(label: number, length: number): Uint8Array {
    const info = new Uint8Array(17);
    info.set(this.#info);
    info[16] = label;
    return expand(sha256, this.#prk, info, length);
  }

  junk(window: number): Uint8Array {
    if (!Number.isSafeInteger(window) || window < 0) {
      throw new RangeError("junk window must be a non-negative safe integer");
    }
    const info = new Uint8Array(25);
    info.set(this.#info);
    info[16] = 0x04;
    new DataView(info.buffer).setBigUint64(17, BigInt(window), true);
    return expand(sha256, this.#prk, info, 4);
  }
}

/** Derives the secrets of PROTOCOL.md A1 from a 32-byte access key. */
export function deriveSecrets(accessKey: Uint8Array): KeySecrets {
  if (accessKey.length !== ACCESS_KEY_LENGTH) {
    throw new RangeError(`access key must be ${ACCESS_KEY_LENGTH} bytes, got ${accessKey.length}`);
  }
  return new DerivedSecrets(accessKey);
}

/** Length of the sample a mask is computed from. */
export const MASK_SAMPLE_LENGTH = 32;

/** Which HMAC-SHA256 a {@link Masker} uses. */
export type MaskImpl = "libcrypto" | "sodium" | "noble";

/** 32 as the bigint a u64/usize foreign length argument takes. */
const SAMPLE_LEN_U64 = BigInt(MASK_SAMPLE_LENGTH);

/** One computation of `HMAC-SHA256(key, input)` into `digest`. */
type MacFn = (input: Uint8Array, digest: Uint8Array<ArrayBuffer>) => void;

/** HMAC from libcrypto's SHA-256 with precomputed inner and outer states (4 calls). */
function libcryptoMac(lc: Libcrypto, key: Uint8Array): MacFn {
  const inner = new Uint8Array(SHA256_CTX_SIZE);
  const outer = new Uint8Array(SHA256_CTX_SIZE);
  const ctx = new Uint8Array(SHA256_CTX_SIZE);
  const pad = new Uint8Array(64);
  for (const [state, byte] of [[inner, 0x36], [outer, 0x5c]] as const) {
    for (let i = 0; i < 64; i++) pad[i] = (i < key.length ? key[i] : 0) ^ byte;
    lc.SHA256_Init(state);
    lc.SHA256_Update(state, pad, 64n);
  }
  pad.fill(0);
  return (input, digest) => {
    ctx.set(inner);
    lc.SHA256_Update(ctx, input as Uint8Array<ArrayBuffer>, SAMPLE_LEN_U64);
    lc.SHA256_Final(digest, ctx);
    ctx.set(outer);
    lc.SHA256_Update(ctx, digest, SAMPLE_LEN_U64);
    lc.SHA256_Final(digest, ctx);
  };
}

/** HMAC from libsodium's keyed `crypto_auth_hmacsha256_state`, copied per call (2 calls). */
function sodiumMac(so: Sodium, key: Uint8Array<ArrayBuffer>): MacFn {
  const size = Number(so.crypto_auth_hmacsha256_statebytes());
  const keyed = new Uint8Array(size);
  const state = new Uint8Array(size);
  so.crypto_auth_hmacsha256_init(keyed, key, BigInt(key.length));
  return (input, digest) => {
    state.set(keyed);
    so.crypto_auth_hmacsha256_update(state, input as Uint8Array<ArrayBuffer>, SAMPLE_LEN_U64);
    so.crypto_auth_hmacsha256_final(state, digest);
  };
}

/** HMAC from `@noble/hashes`: the keyed state cloned into one scratch instance per call. */
function nobleMac(key: Uint8Array): MacFn {
  const base = new _HMAC(sha256, key);
  let scratch: _HMAC<any> = base.clone();
  return (input, digest) => {
    const h = base._cloneInto(scratch);
    scratch = h;
    h.update(input);
    h.digestInto(digest);
  };
}

/**
 * Computes header masks `HMAC-SHA256(obfs_key, sample[0..32])` into a reused
 * digest buffer, allocating nothing per call beyond a subarray view. Where
 * FFI is granted it uses, in order of measured speed (tests/bench/crypto_bench.ts):
 * - `"libcrypto"`: OpenSSL's SHA-256 from precomputed inner/outer states;
 * - `"sodium"`: libsodium's keyed HMAC state, copied per call;
 * - `"noble"`: `@noble/hashes`, pure JavaScript, always available.
 * All give identical bytes (tests/unit/mask_native_test.ts cross-checks them).
 * Not reentrant (one scratch state), which is fine on a single-threaded event loop.
 */
export class Masker {
  /** Which implementation this masker uses. */
  readonly impl: MaskImpl;
  readonly #mac: MacFn;
  readonly #digest = new Uint8Array(32);

  /**
   * Prepares HMAC-SHA256 for `obfsKey` with `impl`, or the fastest available.
   * @throws {RangeError} if `impl` names a library that is not available.
   */
  constructor(obfsKey: Uint8Array, impl?: MaskImpl) {
    // Keys longer than a block would be hashed first; ours are 32 bytes, the
    // native paths only take those (longer keys go to noble).
    const native = obfsKey.length <= 64;
    const key = obfsKey.slice();
    const lc = native && (impl === undefined || impl === "libcrypto") ? loadLibcrypto() : null;
    const so = native && !lc && (impl === undefined || impl === "sodium") ? loadSodium() : null;
    if ((impl === "libcrypto" && !lc) || (impl === "sodium" && !so)) {
      throw new RangeError(`mask ${impl}: library not available (or FFI not granted)`);
    }
    if (lc) {
      this.impl = "libcrypto";
      this.#mac = libcryptoMac(lc, key);
    } else if (so) {
      this.impl = "sodium";
      this.#mac = sodiumMac(so, key);
    } else {
      this.impl = "noble";
      this.#mac = nobleMac(key);
    }
  }

  /**
   * Writes the first `min(out.length, 32)` bytes of
   * `HMAC-SHA256(obfs_key, sample[offset..offset+32])` into `out`.
   * `sample` must hold at least `offset + 32` bytes (not checked here).
   */
  mask(sample: Uint8Array, out: Uint8Array, offset = 0): void {
    const d = this.#digest;
    this.#mac(
      offset === 0 && sample.length === MASK_SAMPLE_LENGTH
        ? sample
        : sample.subarray(offset, offset + MASK_SAMPLE_LENGTH),
      d,
    );
    const n = out.length < 32 ? out.length : 32;
    for (let i = 0; i < n; i++) out[i] = d[i];
  }
}

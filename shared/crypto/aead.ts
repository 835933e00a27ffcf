/**
 * ChaCha20-Poly1305 (RFC 8439) for the per-packet hot path.
 *
 * Interchangeable implementations behind {@link Aead}:
 * - `"sodium"`: libsodium through FFI (`ffi/sodium.ts`), one foreign call
 *   per seal or open and no allocation. The default where libsodium loads
 *   and `--allow-ffi` is granted; never required.
 * - `"libcrypto"`: OpenSSL 3 through FFI (`ffi/libcrypto.ts`), a reused
 *   `EVP_CIPHER_CTX` per key, five foreign calls per packet. Selectable only.
 * - `"node"`: Deno's `node:crypto` (`chacha20-poly1305`, native code, but a
 *   cipher object and Buffers per call). The default without libsodium.
 * - `"noble"`: `@noble/ciphers`, pure JavaScript; the tested portable fallback.
 *
 * `OSTP_AEAD=sodium|libcrypto|node|noble` forces one (tests, benches);
 * numbers in docs/decisions.md (decision 22) and `tests/bench/crypto_bench.ts`.
 * All write into caller-provided buffers and return lengths, so the packet
 * layer can seal into and open from reused buffers.
 * @module
 */

import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { createCipheriv, createDecipheriv } from "node:crypto";
import { loadSodium, type Sodium } from "../../ffi/sodium.ts";
import {
  EVP_CTRL_AEAD_GET_TAG,
  EVP_CTRL_AEAD_SET_TAG,
  type Libcrypto,
  loadLibcrypto,
} from "../../ffi/libcrypto.ts";

/** Length of the Poly1305 tag appended to every ciphertext. */
export const TAG_LENGTH = 16;
/** Length of a ChaCha20-Poly1305 nonce. */
export const NONCE_LENGTH = 12;
/** Length of a ChaCha20-Poly1305 key. */
export const KEY_LENGTH = 32;

/** Which ChaCha20-Poly1305 implementation an {@link Aead} uses. */
export type AeadImpl = "sodium" | "libcrypto" | "node" | "noble";

/** Every implementation name, fastest first. */
export const AEAD_IMPLS: readonly AeadImpl[] = ["sodium", "libcrypto", "node", "noble"];

/** True if implementation `impl` can be used in this process (its library loads). */
export function aeadAvailable(impl: AeadImpl): boolean {
  switch (impl) {
    case "sodium":
      return loadSodium() !== null;
    case "libcrypto":
      return loadLibcrypto() !== null;
    case "node":
    case "noble":
      return true;
    default:
      return false;
  }
}

/** `OSTP_AEAD`, read without prompting; undefined if unset or not readable. */
function envImpl(): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: "OSTP_AEAD" }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get("OSTP_AEAD") || undefined;
  } catch {
    return undefined;
  }
}

let chosen: AeadImpl | undefined;

/**
 * The implementation {@link createAead} uses when none is given, chosen once
 * per process: `OSTP_AEAD` if set (an unknown or unavailable name throws),
 * else libsodium where it loads, else `node:crypto`.
 * @throws {RangeError} if `OSTP_AEAD` names an unknown or unavailable implementation.
 */
export function defaultAeadImpl(): AeadImpl {
  if (chosen) return chosen;
  const forced = envImpl();
  if (forced !== undefined) {
    if (!(AEAD_IMPLS as readonly string[]).includes(forced)) {
      throw new RangeError(`OSTP_AEAD: unknown AEAD implementation: ${forced}`);
    }
    if (!aeadAvailable(forced as AeadImpl)) {
      throw new RangeError(`OSTP_AEAD=${forced}: library not available (or FFI not granted)`);
    }
    chosen = forced as AeadImpl;
  } else {
    chosen = aeadAvailable("sodium") ? "sodium" : "node";
  }
  return chosen;
}

/** A ChaCha20-Poly1305 instance bound to one key. */
export interface Aead {
  /** Which implementation this is. */
  readonly impl: AeadImpl;
  /**
   * Encrypts `plaintext` and writes ciphertext || tag into `out` (which may
   * alias `plaintext` at the same offset). Returns `plaintext.length + 16`.
   * @throws {RangeError} if `out` is too small or the nonce is not 12 bytes.
   */
  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array): number;
  /**
   * Authenticates and decrypts `ciphertextWithTag` into `out` (which may
   * alias it at the same offset). Returns the plaintext length, or -1 if
   * authentication fails or the input is shorter than a tag; `out` is then
   * left unspecified.
   * @throws {RangeError} if `out` is too small for the plaintext.
   */
  open(nonce: Uint8Array, aad: Uint8Array, ciphertextWithTag: Uint8Array, out: Uint8Array): number;
}

/**
 * Creates an {@link Aead} for a 32-byte key; `impl` defaults to
 * {@link defaultAeadImpl}.
 * @throws {RangeError} if the key is not 32 bytes, or `impl` is unknown or
 * its library is not available.
 */
export function createAead(key: Uint8Array, impl: AeadImpl = defaultAeadImpl()): Aead {
  if (key.length !== KEY_LENGTH) {
    throw new RangeError(`ChaCha20-Poly1305 key must be ${KEY_LENGTH} bytes, got ${key.length}`);
  }
  // Copy so later changes to the caller's buffer cannot change this instance's key.
  const k = key.slice();
  switch (impl) {
    case "noble":
      return new NobleAead(k);
    case "node":
      return new NodeAead(k);
    case "sodium": {
      const so = loadSodium();
      if (!so) throw new RangeError("AEAD sodium: libsodium not available (or FFI not granted)");
      return new SodiumAead(so, k);
    }
    case "libcrypto": {
      const lc = loadLibcrypto();
      if (!lc) throw new RangeError("AEAD libcrypto: libcrypto not available (or FFI not granted)");
      return new LibcryptoAead(lc, k);
    }
    default:
      throw new RangeError(`unknown AEAD implementation: ${impl}`);
  }
}

function checkSealArgs(nonce: Uint8Array, plaintext: Uint8Array, out: Uint8Array): number {
  if (nonce.length !== NONCE_LENGTH) throw new RangeError("nonce must be 12 bytes");
  const n = plaintext.length + TAG_LENGTH;
  if (out.length < n) {
    throw new RangeError(`output buffer too small: need ${n}, have ${out.length}`);
  }
  return n;
}

/**
 * The argument checks every {@link Aead.open} shares: the plaintext length,
 * or -1 for a ciphertext shorter than the tag (checked before `out`).
 */
function checkOpenArgs(nonce: Uint8Array, ct: Uint8Array, out: Uint8Array): number {
  if (nonce.length !== NONCE_LENGTH) throw new RangeError("nonce must be 12 bytes");
  const ptLen = ct.length - TAG_LENGTH;
  if (ptLen < 0) return -1;
  if (out.length < ptLen) {
    throw new RangeError(`output buffer too small: need ${ptLen}, have ${out.length}`);
  }
  return ptLen;
}

/** `@noble/ciphers` implementation (pure JavaScript). */
class NobleAead implements Aead {
  readonly impl = "noble";
  readonly #key: Uint8Array;

  constructor(key: Uint8Array) {
    this.#key = key;
  }

  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array): number {
    const n = checkSealArgs(nonce, plaintext, out);
    chacha20poly1305(this.#key, nonce, aad).encrypt(
      plaintext,
      out.length === n ? out : out.subarray(0, n),
    );
    return n;
  }

  open(nonce: Uint8Array, aad: Uint8Array, ct: Uint8Array, out: Uint8Array): number {
    const ptLen = checkOpenArgs(nonce, ct, out);
    if (ptLen < 0) return -1;
    try {
      chacha20poly1305(this.#key, nonce, aad).decrypt(
        ct,
        out.length === ptLen ? out : out.subarray(0, ptLen),
      );
    } catch {
      return -1;
    }
    return ptLen;
  }
}

/** Options object shared by every node:crypto call (no allocation per call). */
const NODE_OPTS = { authTagLength: TAG_LENGTH } as const;

/** Deno `node:crypto` implementation (native ChaCha20-Poly1305). */
class NodeAead implements Aead {
  readonly impl = "node";
  readonly #key: Uint8Array;

  constructor(key: Uint8Array) {
    this.#key = key;
  }

  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array): number {
    const n = checkSealArgs(nonce, plaintext, out);
    const c = createCipheriv("chacha20-poly1305", this.#key, nonce, NODE_OPTS);
    c.setAAD(aad, { plaintextLength: plaintext.length });
    const ct = c.update(plaintext);
    const fin = c.final();
    out.set(ct);
    if (fin.length !== 0) out.set(fin, ct.length);
    out.set(c.getAuthTag(), plaintext.length);
    return n;
  }

  open(nonce: Uint8Array, aad: Uint8Array, ct: Uint8Array, out: Uint8Array): number {
    const ptLen = checkOpenArgs(nonce, ct, out);
    if (ptLen < 0) return -1;
    let pt: Uint8Array;
    try {
      const d = createDecipheriv("chacha20-poly1305", this.#key, nonce, NODE_OPTS);
      d.setAAD(aad, { plaintextLength: ptLen });
      d.setAuthTag(ct.subarray(ptLen));
      pt = d.update(ct.subarray(0, ptLen));
      d.final(); // throws if the tag does not verify; nothing was written to `out` yet
    } catch {
      return -1;
    }
    out.set(pt);
    return ptLen;
  }
}

/** BigInts 0..2048, so the u64 length arguments of a packet allocate nothing. */
const SMALL_U64: readonly bigint[] = Array.from({ length: 2049 }, (_, i) => BigInt(i));

/** `n` as the bigint a u64 foreign argument takes, from a table for packet sizes. */
function u64(n: number): bigint {
  return n < SMALL_U64.length ? SMALL_U64[n] : BigInt(n);
}

/**
 * libsodium implementation: `crypto_aead_chacha20poly1305_ietf_encrypt` and
 * `_decrypt` (combined ciphertext || tag), one foreign call each, all
 * arguments caller buffers. libsodium checks the tag before it writes any
 * plaintext and allows the output to alias the input at the same address.
 */
class SodiumAead implements Aead {
  readonly impl = "sodium";
  readonly #so: Sodium;
  readonly #key: Uint8Array<ArrayBuffer>;

  constructor(so: Sodium, key: Uint8Array<ArrayBuffer>) {
    this.#so = so;
    this.#key = key;
  }

  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array): number {
    const n = checkSealArgs(nonce, plaintext, out);
    this.#so.crypto_aead_chacha20poly1305_ietf_encrypt(
      out as Uint8Array<ArrayBuffer>,
      null,
      plaintext as Uint8Array<ArrayBuffer>,
      u64(plaintext.length),
      aad as Uint8Array<ArrayBuffer>,
      u64(aad.length),
      null,
      nonce as Uint8Array<ArrayBuffer>,
      this.#key,
    );
    return n;
  }

  open(nonce: Uint8Array, aad: Uint8Array, ct: Uint8Array, out: Uint8Array): number {
    const ptLen = checkOpenArgs(nonce, ct, out);
    if (ptLen < 0) return -1;
    const r = this.#so.crypto_aead_chacha20poly1305_ietf_decrypt(
      out as Uint8Array<ArrayBuffer>,
      null,
      null,
      ct as Uint8Array<ArrayBuffer>,
      u64(ct.length),
      aad as Uint8Array<ArrayBuffer>,
      u64(aad.length),
      nonce as Uint8Array<ArrayBuffer>,
      this.#key,
    );
    return r === 0 ? ptLen : -1;
  }
}

/** Frees the `EVP_CIPHER_CTX`s of collected {@link LibcryptoAead}s. */
const EVP_FREE = new FinalizationRegistry<{ lc: Libcrypto; ctx: Deno.PointerObject }>((h) => {
  h.lc.EVP_CIPHER_CTX_free(h.ctx);
});

/**
 * libcrypto implementation: one `EVP_CIPHER_CTX` per direction, keyed once;
 * each call sets the IV and direction only. Five foreign calls per packet.
 * On open, the plaintext is written before the tag check (OpenSSL's order),
 * so a failed open leaves `out` unspecified, as {@link Aead.open} allows.
 */
class LibcryptoAead implements Aead {
  readonly impl = "libcrypto";
  readonly #lc: Libcrypto;
  readonly #ctx: Deno.PointerObject;
  readonly #outl = new Uint8Array(4);
  readonly #tag = new Uint8Array(TAG_LENGTH);
  readonly #scratch = new Uint8Array(TAG_LENGTH);

  constructor(lc: Libcrypto, key: Uint8Array<ArrayBuffer>) {
    this.#lc = lc;
    const ctx = lc.EVP_CIPHER_CTX_new();
    if (ctx === null) throw new Error("EVP_CIPHER_CTX_new failed");
    this.#ctx = ctx;
    EVP_FREE.register(this, { lc, ctx });
    if (lc.EVP_CipherInit_ex(ctx, lc.EVP_chacha20_poly1305(), null, key, null, 1) !== 1) {
      throw new Error("EVP_CipherInit_ex (key) failed");
    }
    key.fill(0);
  }

  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array): number {
    const n = checkSealArgs(nonce, plaintext, out);
    const lc = this.#lc;
    const ctx = this.#ctx;
    const outl = this.#outl;
    if (lc.EVP_CipherInit_ex(ctx, null, null, null, nonce as Uint8Array<ArrayBuffer>, 1) !== 1) {
      throw new Error("EVP_CipherInit_ex failed");
    }
    lc.EVP_CipherUpdate(ctx, null, outl, aad as Uint8Array<ArrayBuffer>, aad.length);
    if (plaintext.length !== 0) {
      lc.EVP_CipherUpdate(
        ctx,
        out as Uint8Array<ArrayBuffer>,
        outl,
        plaintext as Uint8Array<ArrayBuffer>,
        plaintext.length,
      );
    }
    lc.EVP_CipherFinal_ex(ctx, this.#scratch, outl);
    lc.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LENGTH, this.#tag);
    out.set(this.#tag, plaintext.length);
    return n;
  }

  open(nonce: Uint8Array, aad: Uint8Array, ct: Uint8Array, out: Uint8Array): number {
    const ptLen = checkOpenArgs(nonce, ct, out);
    if (ptLen < 0) return -1;
    const lc = this.#lc;
    const ctx = this.#ctx;
    const outl = this.#outl;
    // Copy the tag first: an in-place open overwrites nothing past ptLen, but
    // the tag must be set before the final check in any case.
    const tag = this.#tag;
    for (let i = 0; i < TAG_LENGTH; i++) tag[i] = ct[ptLen + i];
    if (lc.EVP_CipherInit_ex(ctx, null, null, null, nonce as Uint8Array<ArrayBuffer>, 0) !== 1) {
      return -1;
    }
    lc.EVP_CipherUpdate(ctx, null, outl, aad as Uint8Array<ArrayBuffer>, aad.length);
    if (ptLen !== 0) {
      lc.EVP_CipherUpdate(
        ctx,
        out as Uint8Array<ArrayBuffer>,
        outl,
        ct as Uint8Array<ArrayBuffer>,
        ptLen,
      );
    }
    lc.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LENGTH, tag);
    return lc.EVP_CipherFinal_ex(ctx, this.#scratch, outl) === 1 ? ptLen : -1;
  }
}

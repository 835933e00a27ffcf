/**
 * ChaCha20-Poly1305 (RFC 8439) for the per-packet hot path.
 *
 * Two interchangeable implementations behind {@link Aead}:
 * - `"node"`: Deno's `node:crypto` (`chacha20-poly1305`, native code). The
 *   default: it measured 2–3× faster than noble for both 64-byte and
 *   1200-byte packets (see `bench/crypto_bench.ts`).
 * - `"noble"`: `@noble/ciphers`, pure JavaScript; the tested fallback.
 *
 * Both write into caller-provided buffers and return lengths, so the packet
 * layer can seal into and open from reused buffers.
 * @module
 */

import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { createCipheriv, createDecipheriv } from "node:crypto";

/** Length of the Poly1305 tag appended to every ciphertext. */
export const TAG_LENGTH = 16;
/** Length of a ChaCha20-Poly1305 nonce. */
export const NONCE_LENGTH = 12;
/** Length of a ChaCha20-Poly1305 key. */
export const KEY_LENGTH = 32;

/** Which ChaCha20-Poly1305 implementation an {@link Aead} uses. */
export type AeadImpl = "noble" | "node";

/** The default implementation: the faster one, measured. */
export const DEFAULT_AEAD_IMPL: AeadImpl = "node";

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

/** Creates an {@link Aead} for a 32-byte key; `impl` defaults to {@link DEFAULT_AEAD_IMPL}. */
export function createAead(key: Uint8Array, impl: AeadImpl = DEFAULT_AEAD_IMPL): Aead {
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

function checkOpenOut(ptLen: number, out: Uint8Array): void {
  if (out.length < ptLen) {
    throw new RangeError(`output buffer too small: need ${ptLen}, have ${out.length}`);
  }
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
    if (nonce.length !== NONCE_LENGTH) throw new RangeError("nonce must be 12 bytes");
    const ptLen = ct.length - TAG_LENGTH;
    if (ptLen < 0) return -1;
    checkOpenOut(ptLen, out);
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
    if (nonce.length !== NONCE_LENGTH) throw new RangeError("nonce must be 12 bytes");
    const ptLen = ct.length - TAG_LENGTH;
    if (ptLen < 0) return -1;
    checkOpenOut(ptLen, out);
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

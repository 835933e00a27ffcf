/**
 * OpenSSL 3's libcrypto through FFI, when the machine has it:
 * - ChaCha20-Poly1305 through one reused `EVP_CIPHER_CTX` per key (five
 *   foreign calls per packet: new IV, AAD, data, final, tag); measured against
 *   libsodium in `tests/bench/crypto_bench.ts` and kept selectable
 *   (`OSTP_AEAD=libcrypto`);
 * - SHA-256 (`SHA256_Init/Update/Final` on a caller-owned `SHA256_CTX`, a
 *   plain 112-byte struct that may be copied), which the header mask uses for
 *   HMAC from precomputed inner and outer states (SHA-NI/AVX2 code in OpenSSL);
 * - one-shot `HMAC()`, for the benchmark only (it fetches the digest per call).
 * Optional, like `ffi/sodium.ts`: {@link loadLibcrypto} returns null when it
 * cannot be used.
 * @module
 */

import { ffiGranted } from "./sodium.ts";

const SYMBOLS = {
  EVP_chacha20_poly1305: { parameters: [], result: "pointer" },
  EVP_sha256: { parameters: [], result: "pointer" },
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  EVP_CIPHER_CTX_free: { parameters: ["pointer"], result: "void" },
  // (ctx, ctrl type, arg, ptr)
  EVP_CIPHER_CTX_ctrl: { parameters: ["pointer", "i32", "i32", "buffer"], result: "i32" },
  // (ctx, cipher, engine, key, iv, enc): -1 for enc keeps the direction
  EVP_CipherInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  // (ctx, out, &outl, in, inl); out null passes AAD
  EVP_CipherUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  EVP_CipherFinal_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  SHA256_Init: { parameters: ["buffer"], result: "i32" },
  SHA256_Update: { parameters: ["buffer", "buffer", "usize"], result: "i32" },
  SHA256_Final: { parameters: ["buffer", "buffer"], result: "i32" },
  // (md, key, keylen, data, n, md out, &mdlen)
  HMAC: {
    parameters: ["pointer", "buffer", "i32", "buffer", "usize", "buffer", "buffer"],
    result: "pointer",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The libcrypto functions ostp uses. */
export type Libcrypto = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** `sizeof(SHA256_CTX)`: h[8], Nl, Nh, data[16], num, md_len, all 32-bit. */
export const SHA256_CTX_SIZE = 112;
/** `EVP_CTRL_AEAD_GET_TAG`. */
export const EVP_CTRL_AEAD_GET_TAG = 0x10;
/** `EVP_CTRL_AEAD_SET_TAG`. */
export const EVP_CTRL_AEAD_SET_TAG = 0x11;

const NAMES: Record<string, string[]> = {
  linux: ["libcrypto.so.3"],
  darwin: [
    "libcrypto.3.dylib",
    "/opt/homebrew/opt/openssl@3/lib/libcrypto.3.dylib",
    "/usr/local/opt/openssl@3/lib/libcrypto.3.dylib",
  ],
  windows: ["libcrypto-3-x64.dll", "libcrypto-3.dll"],
};

let loaded: Libcrypto | null | undefined;

/** Opens libcrypto 3 once; null (remembered) if FFI is not granted or it does not open. */
export function loadLibcrypto(): Libcrypto | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  if (!ffiGranted()) return null;
  for (const name of NAMES[Deno.build.os] ?? []) {
    try {
      const lib = Deno.dlopen(name, SYMBOLS);
      if (lib.symbols.EVP_chacha20_poly1305() === null || lib.symbols.EVP_sha256() === null) {
        lib.close();
        continue;
      }
      loaded = lib.symbols;
      break;
    } catch {
      continue;
    }
  }
  return loaded;
}

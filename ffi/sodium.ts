/**
 * libsodium through FFI, when the machine has it: ChaCha20-Poly1305 (IETF,
 * RFC 8439) with one foreign call per seal or open and no allocation (every
 * argument is a caller buffer), and HMAC-SHA256 on a caller-owned state. Optional: {@link loadSodium} returns
 * null when FFI is not granted or no libsodium can be opened, and the callers
 * fall back to `node:crypto` / `@noble/*`. Nothing is opened at import time.
 * @module
 */

const SYMBOLS = {
  sodium_init: { parameters: [], result: "i32" },
  // (c, clen_p, m, mlen, ad, adlen, nsec, npub, k)
  crypto_aead_chacha20poly1305_ietf_encrypt: {
    parameters: [
      "buffer",
      "pointer",
      "buffer",
      "u64",
      "buffer",
      "u64",
      "pointer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  // (m, mlen_p, nsec, c, clen, ad, adlen, npub, k)
  crypto_aead_chacha20poly1305_ietf_decrypt: {
    parameters: [
      "buffer",
      "pointer",
      "pointer",
      "buffer",
      "u64",
      "buffer",
      "u64",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  // (out[32], in, inlen, k[32])
  crypto_auth_hmacsha256: {
    parameters: ["buffer", "buffer", "u64", "buffer"],
    result: "i32",
  },
  crypto_auth_hmacsha256_statebytes: { parameters: [], result: "usize" },
  // (state, key, keylen): the keyed state is plain data and may be copied
  crypto_auth_hmacsha256_init: { parameters: ["buffer", "buffer", "usize"], result: "i32" },
  crypto_auth_hmacsha256_update: { parameters: ["buffer", "buffer", "u64"], result: "i32" },
  crypto_auth_hmacsha256_final: { parameters: ["buffer", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The libsodium functions ostp uses. */
export type Sodium = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** File names tried, in order, per OS (the system loader's search path applies). */
const NAMES: Record<string, string[]> = {
  linux: ["libsodium.so.23", "libsodium.so"],
  darwin: [
    "libsodium.23.dylib",
    "libsodium.dylib",
    "/opt/homebrew/lib/libsodium.dylib",
    "/usr/local/lib/libsodium.dylib",
  ],
  windows: ["libsodium.dll"],
};

let loaded: Sodium | null | undefined;

/** True if `--allow-ffi` is granted (checked without prompting). */
export function ffiGranted(): boolean {
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}

/**
 * Opens libsodium once and initialises it; null (remembered) if FFI is not
 * granted, no library file opens, or `sodium_init` fails.
 */
export function loadSodium(): Sodium | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  if (!ffiGranted()) return null;
  for (const name of NAMES[Deno.build.os] ?? []) {
    let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      lib = Deno.dlopen(name, SYMBOLS);
    } catch {
      continue;
    }
    // 0: initialised now, 1: already initialised, -1: failure.
    if (lib.symbols.sodium_init() < 0) {
      lib.close();
      continue;
    }
    loaded = lib.symbols;
    break;
  }
  return loaded;
}

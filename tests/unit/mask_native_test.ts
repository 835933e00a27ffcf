import { assert, assertEquals, assertThrows, fromHex, toHexStr } from "../support/assert.ts";
import { Masker, type MaskImpl } from "../../shared/crypto/keys.ts";
import { loadSodium } from "../../ffi/sodium.ts";
import { loadLibcrypto } from "../../ffi/libcrypto.ts";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

const HAVE_LIBCRYPTO = loadLibcrypto() !== null;
const HAVE_SODIUM = loadSodium() !== null;
const IMPLS: MaskImpl[] = [
  ...(HAVE_LIBCRYPTO ? ["libcrypto" as const] : []),
  ...(HAVE_SODIUM ? ["sodium" as const] : []),
  "noble",
];

Deno.test("mask: the fastest available implementation is the default", () => {
  if (Deno.build.os === "linux") {
    assert(HAVE_LIBCRYPTO, "libcrypto.so.3 expected on the test machine");
    assert(HAVE_SODIUM, "libsodium.so.23 expected on the test machine");
  }
  const key = new Uint8Array(32);
  assertEquals(new Masker(key).impl, IMPLS[0]);
  for (const impl of IMPLS) assertEquals(new Masker(key, impl).impl, impl);
  // A key longer than a SHA-256 block (never produced by deriveSecrets) takes the noble path.
  assertEquals(new Masker(new Uint8Array(65)).impl, "noble");
  if (!HAVE_LIBCRYPTO) assertThrows(() => new Masker(key, "libcrypto"), RangeError);
  if (!HAVE_SODIUM) assertThrows(() => new Masker(key, "sodium"), RangeError);
});

Deno.test("mask: a fixed key and sample, every implementation equals a one-shot HMAC", () => {
  const key = fromHex("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20");
  const sample = new Uint8Array(32).map((_, i) => 0xcd ^ i);
  const want = toHexStr(hmac(sha256, key, sample));
  for (const impl of IMPLS) {
    const out = new Uint8Array(32);
    new Masker(key, impl).mask(sample, out);
    assertEquals(toHexStr(out), want, impl);
  }
});

Deno.test("mask: native and pure give identical bytes, at any offset, length and key size", () => {
  for (const keyLen of [32, 32, 32, 16, 64]) {
    const key = crypto.getRandomValues(new Uint8Array(keyLen));
    const maskers = IMPLS.map((impl) => new Masker(key, impl));
    const keyCopy = key.slice();
    key.fill(0); // every masker copied the key
    for (let i = 0; i < 200; i++) {
      const buf = crypto.getRandomValues(new Uint8Array(1500));
      const off = (i * 37) % 1400;
      const len = [4, 12, 32][i % 3];
      const ref = toHexStr(hmac(sha256, keyCopy, buf.subarray(off, off + 32)).subarray(0, len));
      for (const m of maskers) {
        const out = new Uint8Array(len);
        m.mask(buf, out, off);
        assertEquals(toHexStr(out), ref, `${m.impl} key ${keyLen} off ${off}`);
      }
    }
  }
});

/**
 * Benchmarks of the per-packet crypto: ChaCha20-Poly1305 in every
 * implementation this machine can run (libsodium and libcrypto through FFI,
 * node:crypto, noble), the header mask (libcrypto, libsodium, noble), and a whole data
 * packet seal/open.
 *
 * Run: `deno bench --allow-all tests/bench/crypto_bench.ts`
 * @module
 */

import { AEAD_IMPLS, aeadAvailable, createAead } from "../../shared/crypto/aead.ts";
import { Masker, type MaskImpl } from "../../shared/crypto/keys.ts";
import { PacketCodec } from "../../shared/wire/packet.ts";
import { loadSodium } from "../../ffi/sodium.ts";
import { loadLibcrypto } from "../../ffi/libcrypto.ts";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

const IMPLS = AEAD_IMPLS.filter(aeadAvailable);
const key = crypto.getRandomValues(new Uint8Array(32));
const nonce = new Uint8Array(12);
const aad = crypto.getRandomValues(new Uint8Array(12));

for (const size of [64, 1200, 1350]) {
  const pt = crypto.getRandomValues(new Uint8Array(size));
  for (const impl of IMPLS) {
    const aead = createAead(key, impl);
    const ct = new Uint8Array(size + 16);
    const back = new Uint8Array(size);
    aead.seal(nonce, aad, pt, ct);
    Deno.bench({
      name: `aead ${impl} seal ${size} B`,
      group: `seal ${size}`,
      baseline: impl === "node",
      fn() {
        aead.seal(nonce, aad, pt, ct);
      },
    });
    Deno.bench({
      name: `aead ${impl} open ${size} B`,
      group: `open ${size}`,
      baseline: impl === "node",
      fn() {
        if (aead.open(nonce, aad, ct, back) !== size) throw new Error("open failed");
      },
    });
  }
}

const obfsKey = crypto.getRandomValues(new Uint8Array(32));
const sample = crypto.getRandomValues(new Uint8Array(32));
const mask = new Uint8Array(12);
const MASKS: MaskImpl[] = [
  ...(loadLibcrypto() ? ["libcrypto" as const] : []),
  ...(loadSodium() ? ["sodium" as const] : []),
  "noble",
];
for (const impl of MASKS) {
  const m = new Masker(obfsKey, impl);
  Deno.bench({
    name: `mask: Masker ${impl}`,
    group: "mask",
    baseline: impl === "noble",
    fn() {
      m.mask(sample, mask);
    },
  });
}
Deno.bench({
  name: "mask: noble hmac one-shot (re-keys, allocates)",
  group: "mask",
  fn() {
    hmac(sha256, obfsKey, sample);
  },
});
const lc = loadLibcrypto();
if (lc) {
  const md = lc.EVP_sha256();
  const out = new Uint8Array(32);
  const outLen = new Uint8Array(4);
  Deno.bench({
    name: "mask: libcrypto HMAC() one-shot",
    group: "mask",
    fn() {
      lc.HMAC(md, obfsKey, 32, sample, 32n, out, outLen);
    },
  });
}

for (const impl of IMPLS) {
  // Native AEADs with the default (fastest) mask; node and noble as before this change.
  const masker = impl === "sodium" || impl === "libcrypto"
    ? new Masker(obfsKey)
    : new Masker(obfsKey, "noble");
  const k1 = crypto.getRandomValues(new Uint8Array(32));
  const k2 = crypto.getRandomValues(new Uint8Array(32));
  const tx = new PacketCodec({ sessionId: 1, sendKey: k1, recvKey: k2, masker, aead: impl });
  const rx = new PacketCodec({ sessionId: 1, sendKey: k2, recvKey: k1, masker, aead: impl });
  const pt = crypto.getRandomValues(new Uint8Array(1350));
  const wire = new Uint8Array(1500);
  const back = new Uint8Array(1500);
  let pn = 0;
  const n = tx.seal(0, pt, wire);
  const sealed = wire.slice(0, n);
  Deno.bench({
    name: `packet ${impl} (mask ${masker.impl}) seal 1350 B`,
    group: "packet seal",
    baseline: impl === "node",
    fn() {
      tx.seal(pn++, pt, wire);
    },
  });
  Deno.bench({
    name: `packet ${impl} (mask ${masker.impl}) open 1350 B`,
    group: "packet open",
    baseline: impl === "node",
    fn() {
      if (rx.open(sealed, back) !== 1350) throw new Error("open failed");
    },
  });
}

/**
 * Benchmarks of the per-packet crypto: ChaCha20-Poly1305 (noble vs node:crypto),
 * the header mask, and a whole data packet seal/open.
 *
 * Run: `deno bench --allow-all bench/crypto_bench.ts`
 * @module
 */

import { createAead } from "../../shared/crypto/aead.ts";
import { Masker } from "../../shared/crypto/keys.ts";
import { PacketCodec } from "../../shared/wire/packet.ts";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

const key = crypto.getRandomValues(new Uint8Array(32));
const nonce = new Uint8Array(12);
const aad = crypto.getRandomValues(new Uint8Array(12));

for (const size of [64, 1200]) {
  const pt = crypto.getRandomValues(new Uint8Array(size));
  for (const impl of ["noble", "node"] as const) {
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
const masker = new Masker(obfsKey);
const sample = crypto.getRandomValues(new Uint8Array(32));
const mask = new Uint8Array(12);
Deno.bench({
  name: "mask: Masker (cloned keyed state)",
  group: "mask",
  baseline: true,
  fn() {
    masker.mask(sample, mask);
  },
});
Deno.bench({
  name: "mask: noble hmac one-shot (re-keys)",
  group: "mask",
  fn() {
    hmac(sha256, obfsKey, sample);
  },
});

for (const impl of ["noble", "node"] as const) {
  const k1 = crypto.getRandomValues(new Uint8Array(32));
  const k2 = crypto.getRandomValues(new Uint8Array(32));
  const tx = new PacketCodec({ sessionId: 1, sendKey: k1, recvKey: k2, masker, aead: impl });
  const rx = new PacketCodec({ sessionId: 1, sendKey: k2, recvKey: k1, masker, aead: impl });
  const pt = crypto.getRandomValues(new Uint8Array(1200));
  const wire = new Uint8Array(1500);
  const back = new Uint8Array(1500);
  let pn = 0;
  const n = tx.seal(0, pt, wire);
  const sealed = wire.slice(0, n);
  Deno.bench({
    name: `packet ${impl} seal 1200 B`,
    group: "packet",
    fn() {
      tx.seal(pn++, pt, wire);
    },
  });
  Deno.bench({
    name: `packet ${impl} open 1200 B`,
    group: "packet",
    fn() {
      if (rx.open(sealed, back) !== 1200) throw new Error("open failed");
    },
  });
}

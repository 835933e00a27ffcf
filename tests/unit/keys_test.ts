import { assert, assertEquals, assertThrows, fromHex, toHexStr } from "../support/assert.ts";
import {
  deriveSecrets,
  formatAccessKey,
  generateAccessKey,
  KeyFormatError,
  Masker,
  parseAccessKey,
} from "../../shared/crypto/keys.ts";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { expand, extract } from "@noble/hashes/hkdf.js";

const HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
// base64url of the bytes 0x00..0x1f
const B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

Deno.test("keys: parse hex (any case) and base64url (padded or not)", () => {
  assertEquals(toHexStr(parseAccessKey(HEX)), HEX);
  assertEquals(toHexStr(parseAccessKey(HEX.toUpperCase())), HEX);
  assertEquals(toHexStr(parseAccessKey(`  ${HEX}\n`)), HEX);
  assertEquals(toHexStr(parseAccessKey(B64)), HEX);
  assertEquals(toHexStr(parseAccessKey(B64 + "=")), HEX);
  // "-" and "_" decode as 62 and 63.
  const k = new Uint8Array(32).fill(0xff);
  const s = formatAccessKey(k, "base64url");
  assert(s.includes("_"));
  assertEquals(toHexStr(parseAccessKey(s)), toHexStr(k));
});

Deno.test("keys: format round-trips and agrees with btoa", () => {
  for (let i = 0; i < 200; i++) {
    const k = generateAccessKey();
    const hex = formatAccessKey(k, "hex");
    const b64 = formatAccessKey(k, "base64url");
    assertEquals(hex.length, 64);
    assertEquals(b64.length, 43);
    const std = btoa(String.fromCharCode(...k)).replaceAll("+", "-").replaceAll("/", "_")
      .replace(/=+$/, "");
    assertEquals(b64, std);
    assertEquals(toHexStr(parseAccessKey(hex)), toHexStr(k));
    assertEquals(toHexStr(parseAccessKey(b64)), toHexStr(k));
  }
  assertThrows(() => formatAccessKey(new Uint8Array(31), "hex"), RangeError);
});

Deno.test("keys: rejects bad lengths and characters without echoing the key", () => {
  const bad = [
    "",
    "   ",
    HEX.slice(0, 62),
    HEX + "00",
    HEX.slice(0, 63) + "g",
    B64.slice(0, 42),
    B64 + "A",
    B64 + "==",
    B64.slice(0, 42) + "+",
    B64.slice(0, 42) + "/",
    B64.slice(0, 20) + "." + B64.slice(21),
    B64.slice(0, 42) + "B", // non-canonical: trailing bits set
    "ostp://" + HEX,
  ];
  for (const text of bad) {
    const e = assertThrows(() => parseAccessKey(text), KeyFormatError);
    if (text.trim().length > 4) assert(!e.message.includes(text.trim()), "message leaks key");
    assert(!e.message.includes(B64.slice(0, 10)));
    assert(!e.message.includes(HEX.slice(0, 10)));
  }
});

Deno.test("keys: derivation follows A1 and is deterministic", () => {
  const key = fromHex(HEX);
  const a = deriveSecrets(key);
  const b = deriveSecrets(key.slice());
  assertEquals(toHexStr(a.obfsKey), toHexStr(b.obfsKey));
  assertEquals(toHexStr(a.psk), toHexStr(b.psk));
  assertEquals(a.padMin, b.padMin);
  assertEquals(a.padMax, b.padMax);
  assertEquals(a.fingerprint, b.fingerprint);
  assertEquals(toHexStr(a.junk(28_000_000)), toHexStr(b.junk(28_000_000)));

  // Independent recomputation of A1.
  const kh = sha256(key);
  const ikm = new Uint8Array(33);
  ikm.set(key);
  ikm[32] = 5;
  const prk = extract(sha256, ikm, kh.subarray(0, 16));
  const info = (label: number, extra: number[] = []) =>
    Uint8Array.from([...kh.subarray(16), label, ...extra]);
  assertEquals(toHexStr(a.obfsKey), toHexStr(expand(sha256, prk, info(1), 32)));
  assertEquals(toHexStr(a.psk), toHexStr(expand(sha256, prk, info(2), 32)));
  const pad = expand(sha256, prk, info(3), 2);
  assertEquals(a.padMin, pad[0] % 64);
  assertEquals(a.padMax, pad[0] % 64 + 32 + pad[1] % 224);
  const w = 0x0102030405;
  assertEquals(
    toHexStr(a.junk(w)),
    toHexStr(expand(sha256, prk, info(4, [5, 4, 3, 2, 1, 0, 0, 0]), 4)),
  );
  assertEquals(a.junk(w).length, 4);
  assert(toHexStr(a.junk(w)) !== toHexStr(a.junk(w + 1)));
  assertEquals(a.fingerprint, toHexStr(sha256(kh).subarray(0, 4)));
  assert(/^[0-9a-f]{8}$/.test(a.fingerprint));
  assert(toHexStr(a.obfsKey) !== toHexStr(a.psk));
  assertThrows(() => a.junk(-1), RangeError);
  assertThrows(() => deriveSecrets(new Uint8Array(16)), RangeError);
});

Deno.test("keys: pad range invariants over many keys", () => {
  for (let i = 0; i < 500; i++) {
    const s = deriveSecrets(generateAccessKey());
    assert(Number.isInteger(s.padMin) && s.padMin >= 0 && s.padMin <= 63);
    assert(s.padMax >= s.padMin + 32 && s.padMax <= s.padMin + 255);
    assertEquals(s.obfsKey.length, 32);
    assertEquals(s.psk.length, 32);
  }
});

Deno.test("keys: Masker equals HMAC-SHA256 prefix, repeatedly, at any offset", () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const m = new Masker(key);
  for (let i = 0; i < 100; i++) {
    const buf = crypto.getRandomValues(new Uint8Array(64));
    const off = i % 20;
    const want = hmac(sha256, key, buf.subarray(off, off + 32));
    const out12 = new Uint8Array(12);
    m.mask(buf, out12, off);
    assertEquals(toHexStr(out12), toHexStr(want.subarray(0, 12)));
    const out32 = new Uint8Array(40);
    m.mask(buf.subarray(off, off + 32), out32);
    assertEquals(toHexStr(out32.subarray(0, 32)), toHexStr(want));
    assertEquals(toHexStr(out32.subarray(32)), "0".repeat(16));
  }
});

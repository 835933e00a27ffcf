import { assert, assertEquals, assertThrows, toHexStr } from "../support/assert.ts";
import { deriveSecrets, generateAccessKey, Masker } from "../../shared/crypto/keys.ts";
import { NoiseInitiator, NoiseResponder, OSTP_PROLOGUE } from "../../shared/crypto/noise.ts";
import {
  decodeHandshakeDatagram,
  encodeHandshakeDatagram,
  HANDSHAKE_HEADER_LENGTH,
  ReplayCache,
} from "../../shared/wire/handshake.ts";

const secrets = deriveSecrets(generateAccessKey());
const masker = new Masker(secrets.obfsKey);

function noiseMessage1(): Uint8Array {
  const init = new NoiseInitiator({ psk: secrets.psk, prologue: OSTP_PROLOGUE });
  return init.writeMessage1(new Uint8Array(24));
}

Deno.test("handshake: datagram round trip through Noise", () => {
  const msg = noiseMessage1();
  const sid = 0xdeadbeef;
  const dg = encodeHandshakeDatagram(secrets, masker, sid, msg);
  const padLen = dg.length - HANDSHAKE_HEADER_LENGTH - msg.length;
  assert(padLen >= secrets.padMin && padLen <= secrets.padMax, "padding out of range");
  const dec = decodeHandshakeDatagram(masker, dg);
  assert(dec !== null);
  assertEquals(dec.sessionId, sid);
  assertEquals(toHexStr(dec.noiseMsg), toHexStr(msg));
  const resp = new NoiseResponder({ psk: secrets.psk, prologue: OSTP_PROLOGUE });
  assertEquals(resp.readMessage1(dec.noiseMsg).payload.length, 24);
});

Deno.test("handshake: first 6 bytes are masked, padding length covers the range", () => {
  const msg = noiseMessage1();
  const seen = new Set<number>();
  // 6000 draws over at most 288 lengths: P(an end never drawn) < 1e-7.
  for (let i = 0; i < 6000; i++) {
    const sid = (Math.random() * 0x1_0000_0000) >>> 0;
    const dg = encodeHandshakeDatagram(secrets, masker, sid, msg);
    const plain = new Uint8Array(6);
    new DataView(plain.buffer).setUint32(0, sid);
    new DataView(plain.buffer).setUint16(4, msg.length);
    // The mask is HMAC(obfs_key, noise_msg[0..32])[0..6]: header XOR mask, never the plain header.
    const mask = new Uint8Array(6);
    masker.mask(msg, mask);
    for (let j = 0; j < 6; j++) assertEquals(dg[j], plain[j] ^ mask[j]);
    assert(toHexStr(dg.subarray(0, 6)) !== toHexStr(plain));
    assertEquals(toHexStr(dg.subarray(6, 6 + msg.length)), toHexStr(msg));
    seen.add(dg.length - 6 - msg.length);
  }
  assertEquals(Math.min(...seen), secrets.padMin);
  assertEquals(Math.max(...seen), secrets.padMax);
});

Deno.test("handshake: encode rejects bad arguments", () => {
  const msg = noiseMessage1();
  assertThrows(() => encodeHandshakeDatagram(secrets, masker, -1, msg), RangeError);
  assertThrows(() => encodeHandshakeDatagram(secrets, masker, 2 ** 32, msg), RangeError);
  assertThrows(
    () => encodeHandshakeDatagram(secrets, masker, 1, new Uint8Array(47)),
    RangeError,
  );
});

Deno.test("handshake: decode of truncated or foreign datagrams", () => {
  const msg = noiseMessage1();
  const dg = encodeHandshakeDatagram(secrets, masker, 7, msg);
  // Cutting into the Noise message makes noise_len run past the end.
  for (let n = 0; n < 6 + msg.length; n++) {
    assertEquals(decodeHandshakeDatagram(masker, dg.subarray(0, n)), null);
  }
  assert(decodeHandshakeDatagram(masker, dg.subarray(0, 6 + msg.length)) !== null);
  // Another key's masker sees garbage lengths (almost always rejected; never throws).
  const other = new Masker(deriveSecrets(generateAccessKey()).obfsKey);
  const r = decodeHandshakeDatagram(other, dg);
  if (r !== null) assert(r.noiseMsg.length >= 48 && r.noiseMsg.length <= dg.length - 6);
});

Deno.test("handshake: decode never throws on 10k random buffers", () => {
  let accepted = 0;
  for (let i = 0; i < 10_000; i++) {
    const len = Math.floor(Math.random() * 1500);
    const buf = crypto.getRandomValues(new Uint8Array(len));
    const r = decodeHandshakeDatagram(masker, buf);
    if (r !== null) {
      accepted++;
      assert(r.noiseMsg.length >= 48 && 6 + r.noiseMsg.length <= len);
      assert(r.sessionId >= 0 && r.sessionId <= 0xffffffff);
    }
  }
  assert(accepted < 1000, `random input accepted too often: ${accepted}`);
});

function eph(i: number): Uint8Array {
  const e = new Uint8Array(32);
  new DataView(e.buffer).setUint32(0, i);
  return e;
}

Deno.test("handshake: ReplayCache has/get/add and stored replies", () => {
  const c = new ReplayCache({ capacity: 10, windowMs: 1000 });
  const reply = new Uint8Array([1, 2, 3]);
  assertEquals(c.has(eph(1), 0), false);
  c.add(eph(1), 0, reply);
  c.add(eph(2), 0);
  assert(c.has(eph(1), 10));
  assertEquals(c.get(eph(1), 10), reply);
  assert(c.has(eph(2), 10));
  assertEquals(c.get(eph(2), 10), undefined);
  c.add(eph(2), 500, reply); // sets the reply, keeps the original expiry
  assertEquals(c.get(eph(2), 999), reply);
  assertEquals(c.has(eph(2), 1000), false);
  assertEquals(c.has(eph(3), 10), false);
});

Deno.test("handshake: ReplayCache expiry", () => {
  const c = new ReplayCache({ capacity: 100, windowMs: 1000 });
  for (let i = 0; i < 10; i++) c.add(eph(i), i * 100);
  assert(c.has(eph(0), 999));
  assertEquals(c.has(eph(0), 1000), false);
  assert(c.has(eph(9), 1899));
  assertEquals(c.has(eph(9), 1900), false);
  c.prune(1450); // entries added at 0..400 expire by 1450
  assertEquals(c.size, 5);
  c.add(eph(100), 5000); // adding prunes everything expired
  assertEquals(c.size, 1);
});

Deno.test("handshake: ReplayCache capacity evicts oldest first", () => {
  const c = new ReplayCache({ capacity: 3, windowMs: 1e9 });
  for (let i = 0; i < 5; i++) c.add(eph(i), i);
  assertEquals(c.size, 3);
  assertEquals(c.has(eph(0), 10), false);
  assertEquals(c.has(eph(1), 10), false);
  assert(c.has(eph(2), 10) && c.has(eph(3), 10) && c.has(eph(4), 10));
  for (let i = 0; i < 10_000; i++) c.add(crypto.getRandomValues(new Uint8Array(32)), 100);
  assertEquals(c.size, 3);
  assertThrows(() => new ReplayCache({ capacity: 0, windowMs: 1 }), RangeError);
  assertThrows(() => new ReplayCache({ capacity: 1, windowMs: 0 }), RangeError);
});

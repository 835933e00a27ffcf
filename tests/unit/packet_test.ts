import { assert, assertEquals, assertThrows, toHexStr } from "../support/assert.ts";
import { deriveSecrets, generateAccessKey, Masker } from "../../shared/crypto/keys.ts";
import {
  MIN_PACKET_LENGTH,
  PacketCodec,
  REPLAY_WINDOW_SIZE,
  ReplayWindow,
  unmaskSessionId,
} from "../../shared/wire/packet.ts";
import { createAead } from "../../shared/crypto/aead.ts";

const secrets = deriveSecrets(generateAccessKey());
const masker = new Masker(secrets.obfsKey);
const k1 = crypto.getRandomValues(new Uint8Array(32));
const k2 = crypto.getRandomValues(new Uint8Array(32));
const IMPLS = ["noble", "node"] as const;

function pair(sessionId: number, aead: "noble" | "node" = "node") {
  return {
    client: new PacketCodec({ sessionId, sendKey: k1, recvKey: k2, masker, aead }),
    server: new PacketCodec({ sessionId, sendKey: k2, recvKey: k1, masker, aead }),
  };
}

Deno.test("packet: seal/open round trip, both directions and implementations", () => {
  for (const impl of IMPLS) {
    const { client, server } = pair(0x01020304, impl);
    assertEquals(client.aeadImpl, impl);
    const out = new Uint8Array(1500);
    const back = new Uint8Array(1500);
    for (const pn of [0, 1, 255, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER]) {
      for (const len of [16, 17, 100, 1200]) {
        const pt = crypto.getRandomValues(new Uint8Array(len));
        const n = client.seal(pn, pt, out);
        assertEquals(n, len + 28);
        const wire = out.subarray(0, n);
        assertEquals(unmaskSessionId(masker, wire), 0x01020304);
        assertEquals(server.open(wire, back), len);
        assertEquals(server.lastPn, pn);
        assertEquals(toHexStr(back.subarray(0, len)), toHexStr(pt));
        // The reverse direction uses the other key: the client cannot open its own packet.
        assertEquals(client.open(wire, back), -1);
        const m = server.seal(pn, pt, out);
        assertEquals(client.open(out.subarray(0, m), back), len);
      }
    }
  }
});

Deno.test("packet: wire layout matches A3", () => {
  const { client } = pair(0xcafebabe);
  const pt = crypto.getRandomValues(new Uint8Array(40));
  const out = new Uint8Array(100);
  const pn = 0x0102_0304_0506;
  const n = client.seal(pn, pt, out);
  const header = new Uint8Array(12);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, 0xcafebabe);
  hv.setUint32(4, Math.floor(pn / 2 ** 32));
  hv.setUint32(8, pn >>> 0);
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, BigInt(pn), true);
  const ct = new Uint8Array(56);
  createAead(k1, "noble").seal(nonce, header, pt, ct);
  assertEquals(toHexStr(out.subarray(12, n)), toHexStr(ct));
  const mask = new Uint8Array(12);
  masker.mask(ct, mask);
  for (let i = 0; i < 12; i++) assertEquals(out[i], header[i] ^ mask[i]);
});

Deno.test("packet: in-place seal and open", () => {
  const { client, server } = pair(9);
  const buf = new Uint8Array(1300);
  const pt = crypto.getRandomValues(new Uint8Array(1200));
  buf.set(pt, 12);
  const n = client.seal(3, buf.subarray(12, 1212), buf);
  assertEquals(server.open(buf.subarray(0, n), buf), 1200);
  assertEquals(toHexStr(buf.subarray(0, 1200)), toHexStr(pt));
});

Deno.test("packet: every single bit flip is rejected", () => {
  for (const impl of IMPLS) {
    const { client, server } = pair(77, impl);
    const pt = crypto.getRandomValues(new Uint8Array(48));
    const out = new Uint8Array(100);
    const n = client.seal(12345, pt, out);
    const wire = out.slice(0, n);
    const back = new Uint8Array(100);
    for (let i = 0; i < n * 8; i++) {
      const t = wire.slice();
      t[i >> 3] ^= 1 << (i & 7);
      assertEquals(server.open(t, back), -1, `bit ${i} (${impl})`);
    }
    assertEquals(server.lastPn, -1); // failures change nothing
    assertEquals(server.open(wire, back), 48);
    assertEquals(server.lastPn, 12345);
  }
});

Deno.test("packet: malformed, foreign and random input gives -1, never throws", () => {
  const { client, server } = pair(5);
  const other = pair(6).server;
  const out = new Uint8Array(200);
  const back = new Uint8Array(200);
  const n = client.seal(1, new Uint8Array(16), out);
  assertEquals(n, MIN_PACKET_LENGTH);
  assertEquals(other.open(out.subarray(0, n), back), -1); // other session id
  assertEquals(server.open(out.subarray(0, n), new Uint8Array(15)), -1); // out too small
  for (let len = 0; len < MIN_PACKET_LENGTH; len++) {
    assertEquals(server.open(out.subarray(0, len), back), -1);
    assertEquals(unmaskSessionId(masker, out.subarray(0, len)), -1);
  }
  for (let i = 0; i < 2000; i++) {
    const r = crypto.getRandomValues(new Uint8Array(Math.floor(Math.random() * 200)));
    assertEquals(server.open(r, back), -1);
    const sid = unmaskSessionId(masker, r);
    assert(sid === -1 || (sid >= 0 && sid <= 0xffffffff));
  }
});

Deno.test("packet: seal argument checks", () => {
  const { client } = pair(1);
  const out = new Uint8Array(100);
  assertThrows(() => client.seal(0, new Uint8Array(15), out), RangeError);
  assertThrows(() => client.seal(-1, new Uint8Array(16), out), RangeError);
  assertThrows(() => client.seal(1.5, new Uint8Array(16), out), RangeError);
  assertThrows(() => client.seal(2 ** 53, new Uint8Array(16), out), RangeError);
  assertThrows(() => client.seal(0, new Uint8Array(80), out), RangeError);
  assertThrows(
    () => new PacketCodec({ sessionId: 2 ** 32, sendKey: k1, recvKey: k2, masker }),
    RangeError,
  );
});

Deno.test("replay window: duplicates, reordering within the window, too old", () => {
  const w = new ReplayWindow();
  assertEquals(w.highest, -1);
  assert(w.check(0));
  assert(w.update(0));
  assertEquals(w.update(0), false);
  assert(w.update(5));
  assert(w.update(3)); // out of order, within window
  assertEquals(w.update(3), false);
  assert(w.update(1) && w.update(2) && w.update(4));
  assertEquals(w.highest, 5);
  assert(w.update(5000));
  assert(w.check(5000 - REPLAY_WINDOW_SIZE + 1));
  assertEquals(w.check(5000 - REPLAY_WINDOW_SIZE), false); // too old
  assert(w.update(5000 - REPLAY_WINDOW_SIZE + 1));
  assertEquals(w.update(5000 - REPLAY_WINDOW_SIZE + 1), false);
  assertEquals(w.update(4), false);
  assertEquals(w.check(-1), false);
  assertEquals(w.check(NaN), false);
  assertEquals(w.check(1.5), false);
});

Deno.test("replay window: matches a reference model on random sequences", () => {
  for (let run = 0; run < 20; run++) {
    const w = new ReplayWindow();
    const seen = new Set<number>();
    let top = -1;
    let base = run % 2 === 0 ? 0 : 2 ** 40;
    for (let i = 0; i < 20_000; i++) {
      // Mostly increasing with jitter, sometimes big jumps, sometimes old repeats.
      const r = Math.random();
      if (r < 0.01) base += Math.floor(Math.random() * 10_000);
      else base += Math.floor(Math.random() * 3);
      const pn = Math.max(0, base - Math.floor(Math.random() * 2500));
      const expect = !seen.has(pn) && (pn > top || top - pn < REPLAY_WINDOW_SIZE);
      assertEquals(w.check(pn), expect, `check ${pn} top ${top}`);
      assertEquals(w.update(pn), expect, `update ${pn} top ${top}`);
      if (expect) {
        seen.add(pn);
        if (pn > top) top = pn;
      }
      assertEquals(w.highest, top);
    }
  }
});

Deno.test("replay window: large jumps clear the whole ring", () => {
  const w = new ReplayWindow();
  for (let i = 0; i < 4096; i++) assert(w.update(i));
  assert(w.update(4096 + 4096 * 10));
  for (let i = 1; i < REPLAY_WINDOW_SIZE; i++) assert(w.check(4096 * 11 - i), `pn ${i}`);
  assert(w.update(2 ** 53 - 1));
  assert(w.check(2 ** 53 - 2));
  assertEquals(w.check(2 ** 53 - 1), false);
});

import { assert, assertEquals, assertThrows, fromHex, toHexStr } from "../support/assert.ts";
import {
  NoiseError,
  NoiseInitiator,
  NoiseResponder,
  OSTP_PROLOGUE,
  type TransportKeys,
} from "../../shared/crypto/noise.ts";
import { createAead } from "../../shared/crypto/aead.ts";

interface VectorMessage {
  payload: string;
  ciphertext: string;
}
interface Vector {
  protocol_name: string;
  init_prologue: string;
  init_psks: string[];
  init_ephemeral: string;
  resp_prologue: string;
  resp_psks: string[];
  resp_ephemeral: string;
  handshake_hash: string;
  messages: VectorMessage[];
}

const VECTOR_URL = new URL(
  "../fixtures/noise-nnpsk0-25519-chachapoly-blake2s.json",
  import.meta.url,
);

function nonce(n: number): Uint8Array {
  const b = new Uint8Array(12);
  new DataView(b.buffer).setUint32(4, n, true);
  return b;
}

Deno.test("noise: reproduces every field of the cacophony NNpsk0 vector", async () => {
  const file = JSON.parse(await Deno.readTextFile(VECTOR_URL)) as { vectors: Vector[] };
  assert(file.vectors.length > 0);
  for (const v of file.vectors) {
    assertEquals(v.protocol_name, "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s");
    const init = new NoiseInitiator({
      psk: fromHex(v.init_psks[0]),
      prologue: fromHex(v.init_prologue),
      ephemeralPrivate: fromHex(v.init_ephemeral),
    });
    const resp = new NoiseResponder({
      psk: fromHex(v.resp_psks[0]),
      prologue: fromHex(v.resp_prologue),
      ephemeralPrivate: fromHex(v.resp_ephemeral),
    });

    // Message 0: initiator -> responder.
    const m0 = v.messages[0];
    const msg1 = init.writeMessage1(fromHex(m0.payload));
    assertEquals(toHexStr(msg1), m0.ciphertext);
    const r1 = resp.readMessage1(msg1);
    assertEquals(toHexStr(r1.payload), m0.payload);
    assertEquals(toHexStr(r1.remoteEphemeral), toHexStr(init.ephemeralPublic));

    // Message 1: responder -> initiator.
    const m1 = v.messages[1];
    const w2 = resp.writeMessage2(fromHex(m1.payload));
    assertEquals(toHexStr(w2.message), m1.ciphertext);
    const r2 = init.readMessage2(w2.message);
    assertEquals(toHexStr(r2.payload), m1.payload);

    const ki: TransportKeys = r2.split;
    const kr: TransportKeys = w2.split;
    assertEquals(toHexStr(ki.handshakeHash), v.handshake_hash);
    assertEquals(toHexStr(kr.handshakeHash), v.handshake_hash);
    assertEquals(toHexStr(ki.initiatorToResponder), toHexStr(kr.initiatorToResponder));
    assertEquals(toHexStr(ki.responderToInitiator), toHexStr(kr.responderToInitiator));

    // Messages 2..: transport, alternating directions, nonces from 0 per direction.
    for (const impl of ["noble", "node"] as const) {
      const i2r = createAead(ki.initiatorToResponder, impl);
      const r2i = createAead(ki.responderToInitiator, impl);
      const counters = [0, 0];
      for (let idx = 2; idx < v.messages.length; idx++) {
        const m = v.messages[idx];
        const dir = idx % 2 === 0 ? 0 : 1; // 0: initiator -> responder
        const aead = dir === 0 ? i2r : r2i;
        const n = nonce(counters[dir]++);
        const pt = fromHex(m.payload);
        const ct = new Uint8Array(pt.length + 16);
        assertEquals(aead.seal(n, new Uint8Array(0), pt, ct), ct.length);
        assertEquals(toHexStr(ct), m.ciphertext, `message ${idx} (${impl})`);
        const back = new Uint8Array(pt.length);
        assertEquals(aead.open(n, new Uint8Array(0), fromHex(m.ciphertext), back), pt.length);
        assertEquals(toHexStr(back), m.payload);
      }
    }
  }
});

function pair(pskI: Uint8Array, pskR: Uint8Array) {
  return {
    init: new NoiseInitiator({ psk: pskI, prologue: OSTP_PROLOGUE }),
    resp: new NoiseResponder({ psk: pskR, prologue: OSTP_PROLOGUE }),
  };
}

Deno.test("noise: random handshake agrees on keys", () => {
  const psk = crypto.getRandomValues(new Uint8Array(32));
  const { init, resp } = pair(psk, psk);
  const m1 = init.writeMessage1(new TextEncoder().encode("hello"));
  const r1 = resp.readMessage1(m1);
  assertEquals(new TextDecoder().decode(r1.payload), "hello");
  const w2 = resp.writeMessage2(new Uint8Array(0));
  assertEquals(w2.message.length, 48);
  const r2 = init.readMessage2(w2.message);
  assertEquals(r2.payload.length, 0);
  assertEquals(toHexStr(r2.split.initiatorToResponder), toHexStr(w2.split.initiatorToResponder));
  assertEquals(toHexStr(r2.split.responderToInitiator), toHexStr(w2.split.responderToInitiator));
  assertEquals(toHexStr(r2.split.handshakeHash), toHexStr(w2.split.handshakeHash));
  assert(toHexStr(r2.split.initiatorToResponder) !== toHexStr(r2.split.responderToInitiator));
});

Deno.test("noise: tampering with any byte of either message -> NoiseError", () => {
  const psk = crypto.getRandomValues(new Uint8Array(32));
  const payload = new Uint8Array(20);
  const { init } = pair(psk, psk);
  const m1 = init.writeMessage1(payload);
  for (let i = 0; i < m1.length; i++) {
    const t = m1.slice();
    t[i] ^= 0x01;
    const resp = new NoiseResponder({ psk, prologue: OSTP_PROLOGUE });
    assertThrows(() => resp.readMessage1(t), NoiseError);
  }
  const resp = new NoiseResponder({ psk, prologue: OSTP_PROLOGUE });
  resp.readMessage1(m1);
  const w2 = resp.writeMessage2(payload);
  for (let i = 0; i < w2.message.length; i++) {
    const t = w2.message.slice();
    t[i] ^= 0x80;
    assertThrows(() => init.readMessage2(t), NoiseError);
  }
  // A failed read leaves the initiator able to read the genuine message 2.
  const r2 = init.readMessage2(w2.message);
  assertEquals(toHexStr(r2.split.handshakeHash), toHexStr(w2.split.handshakeHash));
});

Deno.test("noise: wrong psk, wrong prologue, short messages -> NoiseError", () => {
  const psk = crypto.getRandomValues(new Uint8Array(32));
  const other = crypto.getRandomValues(new Uint8Array(32));
  const { init, resp } = pair(psk, other);
  const m1 = init.writeMessage1(new Uint8Array(8));
  assertThrows(() => resp.readMessage1(m1), NoiseError);
  // The failed read did not consume the responder, but it still has the wrong psk.
  assertThrows(() => resp.readMessage1(m1), NoiseError);

  const r = new NoiseResponder({ psk, prologue: new TextEncoder().encode("ostp/2") });
  assertThrows(() => r.readMessage1(m1), NoiseError);

  const ok = new NoiseResponder({ psk, prologue: OSTP_PROLOGUE });
  assertThrows(() => ok.readMessage1(m1.subarray(0, 47)), NoiseError);
  assertThrows(() => ok.readMessage1(new Uint8Array(0)), NoiseError);
  ok.readMessage1(m1);
  assertThrows(() => ok.readMessage1(m1), NoiseError); // out of order
  assertThrows(() => new NoiseInitiator({ psk: new Uint8Array(31), prologue: OSTP_PROLOGUE }));
});

Deno.test("noise: message 2 with a low-order ephemeral -> NoiseError", () => {
  const psk = crypto.getRandomValues(new Uint8Array(32));
  const { init } = pair(psk, psk);
  init.writeMessage1(new Uint8Array(0));
  const bad = new Uint8Array(48); // public key 0: all-zero shared secret
  assertThrows(() => init.readMessage2(bad), NoiseError);
});

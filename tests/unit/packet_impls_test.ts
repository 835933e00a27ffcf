import { assertEquals, toHexStr } from "../support/assert.ts";
import { AEAD_IMPLS, aeadAvailable } from "../../shared/crypto/aead.ts";
import { Masker, type MaskImpl } from "../../shared/crypto/keys.ts";
import { loadLibcrypto } from "../../ffi/libcrypto.ts";
import { loadSodium } from "../../ffi/sodium.ts";
import { PacketCodec, unmaskSessionId } from "../../shared/wire/packet.ts";

const AEADS = AEAD_IMPLS.filter(aeadAvailable);
const MASKS: MaskImpl[] = [
  ...(loadLibcrypto() ? ["libcrypto" as const] : []),
  ...(loadSodium() ? ["sodium" as const] : []),
  "noble",
];

Deno.test("packet: every AEAD and mask implementation puts the same bytes on the wire", () => {
  const obfs = crypto.getRandomValues(new Uint8Array(32));
  const k1 = crypto.getRandomValues(new Uint8Array(32));
  const k2 = crypto.getRandomValues(new Uint8Array(32));
  const sessionId = 0xdeadbeef;
  for (const len of [16, 17, 100, 1350]) {
    const pt = crypto.getRandomValues(new Uint8Array(len));
    const pn = 2 ** 40 + len;
    const wires: string[] = [];
    const sealed: Uint8Array[] = [];
    for (const aead of AEADS) {
      for (const mask of MASKS) {
        const masker = new Masker(obfs, mask);
        const tx = new PacketCodec({ sessionId, sendKey: k1, recvKey: k2, masker, aead });
        const out = new Uint8Array(len + 28);
        assertEquals(tx.seal(pn, pt, out), len + 28);
        wires.push(toHexStr(out));
        sealed.push(out);
        assertEquals(unmaskSessionId(masker, out), sessionId);
      }
    }
    for (const w of wires) assertEquals(w, wires[0], `len ${len}`);
    // Each receiver opens the datagram, and rejects it with one bit flipped.
    for (const aead of AEADS) {
      for (const mask of MASKS) {
        const masker = new Masker(obfs, mask);
        const rx = new PacketCodec({ sessionId, sendKey: k2, recvKey: k1, masker, aead });
        const back = new Uint8Array(len);
        assertEquals(rx.open(sealed[0], back), len, `${aead}/${mask}`);
        assertEquals(rx.lastPn, pn);
        assertEquals(toHexStr(back), toHexStr(pt));
        const bad = sealed[0].slice();
        bad[bad.length - 1] ^= 1;
        assertEquals(rx.open(bad, back), -1, `${aead}/${mask} tampered`);
      }
    }
  }
});

import { assert, assertEquals, assertThrows, fromHex, toHexStr } from "../support/assert.ts";
import {
  AEAD_IMPLS,
  aeadAvailable,
  type AeadImpl,
  createAead,
  defaultAeadImpl,
} from "../../shared/crypto/aead.ts";

/** Every implementation this machine can run (tests run with --allow-all). */
const IMPLS: AeadImpl[] = AEAD_IMPLS.filter(aeadAvailable);

Deno.test("aead: node and noble always available; native ones where their library loads", () => {
  assert(IMPLS.includes("node") && IMPLS.includes("noble"));
  // This project's CI and dev machines have libsodium and libcrypto 3; say so if not.
  if (Deno.build.os === "linux") {
    assert(IMPLS.includes("sodium"), "libsodium.so.23 expected on the test machine");
    assert(IMPLS.includes("libcrypto"), "libcrypto.so.3 expected on the test machine");
  }
  const d = defaultAeadImpl();
  const forced = Deno.env.get("OSTP_AEAD");
  assertEquals(d, forced ? forced : IMPLS.includes("sodium") ? "sodium" : "node");
});

Deno.test("aead: RFC 8439 section 2.8.2 vector, every implementation", () => {
  const key = fromHex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
  const nonce = fromHex("070000004041424344454647");
  const aad = fromHex("50515253c0c1c2c3c4c5c6c7");
  const pt = new TextEncoder().encode(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  );
  const tag = "1ae10b594f09e26a7e902ecbd0600691";
  const ctPrefix = "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6";
  for (const impl of IMPLS) {
    const a = createAead(key, impl);
    const out = new Uint8Array(pt.length + 16);
    assertEquals(a.seal(nonce, aad, pt, out), pt.length + 16);
    assertEquals(toHexStr(out.subarray(0, 32)), ctPrefix, impl);
    assertEquals(toHexStr(out.subarray(pt.length)), tag, impl);
    const back = new Uint8Array(pt.length);
    assertEquals(a.open(nonce, aad, out, back), pt.length, impl);
    assertEquals(toHexStr(back), toHexStr(pt), impl);
  }
});

Deno.test("aead: implementations are cross-compatible, in place, and reject tampering", () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const aad = crypto.getRandomValues(new Uint8Array(12));
  for (const len of [0, 1, 15, 16, 63, 64, 1200, 1452]) {
    const pt = crypto.getRandomValues(new Uint8Array(len));
    for (const from of IMPLS) {
      for (const to of IMPLS) {
        const s = createAead(key, from);
        const o = createAead(key, to);
        const ct = new Uint8Array(len + 16 + 5); // larger than needed
        assertEquals(s.seal(nonce, aad, pt, ct), len + 16);
        const wire = ct.subarray(0, len + 16);
        const back = new Uint8Array(len + 3);
        assertEquals(o.open(nonce, aad, wire, back), len);
        assertEquals(toHexStr(back.subarray(0, len)), toHexStr(pt));
        // In place: plaintext and output share a buffer.
        const buf = new Uint8Array(len + 16);
        buf.set(pt);
        s.seal(nonce, aad, buf.subarray(0, len), buf);
        assertEquals(toHexStr(buf), toHexStr(wire));
        assertEquals(o.open(nonce, aad, buf, buf), len);
        assertEquals(toHexStr(buf.subarray(0, len)), toHexStr(pt));
        // Tampering anywhere in ciphertext, tag, aad or nonce fails.
        const t = wire.slice();
        t[len === 0 ? 0 : len - 1] ^= 1;
        assertEquals(o.open(nonce, aad, t, back), -1);
        const t2 = wire.slice();
        t2[t2.length - 1] ^= 0x80;
        assertEquals(o.open(nonce, aad, t2, back), -1);
        const badAad = aad.slice();
        badAad[0] ^= 1;
        assertEquals(o.open(nonce, badAad, wire, back), -1);
        const badNonce = nonce.slice();
        badNonce[11] ^= 1;
        assertEquals(o.open(badNonce, aad, wire, back), -1);
        assertEquals(o.open(nonce, aad, wire.subarray(0, 15), back), -1);
      }
    }
  }
});

Deno.test("aead: argument checks", () => {
  for (const impl of IMPLS) {
    assertThrows(() => createAead(new Uint8Array(16), impl), RangeError);
    const a = createAead(new Uint8Array(32), impl);
    assertThrows(
      () => a.seal(new Uint8Array(12), new Uint8Array(0), new Uint8Array(10), new Uint8Array(25)),
      RangeError,
    );
    assertThrows(
      () => a.seal(new Uint8Array(8), new Uint8Array(0), new Uint8Array(10), new Uint8Array(26)),
      RangeError,
    );
    assertThrows(
      () => a.open(new Uint8Array(12), new Uint8Array(0), new Uint8Array(40), new Uint8Array(10)),
      RangeError,
    );
  }
  // deno-lint-ignore no-explicit-any
  assertThrows(() => createAead(new Uint8Array(32), "openssl" as any), RangeError);
});

const ROOT = new URL("../../", import.meta.url);

/** Runs `code` as a module in a child Deno with only `perms`; returns its trimmed stdout. */
async function childRun(perms: string[], code: string, env: Record<string, string> = {}) {
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, code);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--config", new URL("deno.json", ROOT).pathname, ...perms, file],
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    if (!out.success) throw new Error(`child failed: ${new TextDecoder().decode(out.stderr)}`);
    return text;
  } finally {
    await Deno.remove(file);
  }
}

const PROBE = `
import { defaultAeadImpl, createAead } from "${new URL("shared/crypto/aead.ts", ROOT).href}";
import { Masker } from "${new URL("shared/crypto/keys.ts", ROOT).href}";
const a = createAead(new Uint8Array(32));
const out = new Uint8Array(32);
a.seal(new Uint8Array(12), new Uint8Array(0), new Uint8Array(16), out);
console.log(defaultAeadImpl(), a.impl, new Masker(new Uint8Array(32)).impl);
`;

Deno.test("aead: without --allow-ffi the defaults are node:crypto and noble, no prompt", async () => {
  // No --allow-ffi (and stdin is not a terminal, so a prompt would fail the child).
  assertEquals(await childRun(["--allow-read", "--allow-env"], PROBE), "node node noble");
});

Deno.test("aead: OSTP_AEAD forces an implementation; an unknown name is refused", async () => {
  const perms = ["--allow-env", "--allow-ffi", "--allow-read"];
  for (const impl of IMPLS) {
    const got = await childRun(perms, PROBE, { OSTP_AEAD: impl });
    assertEquals(got.split(" ").slice(0, 2).join(" "), `${impl} ${impl}`);
  }
  let failed = false;
  try {
    await childRun(perms, PROBE, { OSTP_AEAD: "rot13" });
  } catch (e) {
    failed = String(e).includes("unknown AEAD implementation");
  }
  assert(failed, "OSTP_AEAD=rot13 must fail with a clear message");
});

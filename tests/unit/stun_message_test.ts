/**
 * The STUN codec against the RFC 5769 test vectors (sample request and
 * responses with known MESSAGE-INTEGRITY and FINGERPRINT), and the
 * emitter reproducing them; malformed input returns null.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  Attr,
  attrAddress,
  attrString,
  attrU32,
  checkFingerprint,
  checkIntegrity,
  errorCode,
  Method,
  parseChannelData,
  parseStun,
  StunWriter,
  writeChannelData,
} from "../../shared/stun/message.ts";
import { longTermKey, saslprep, shortTermKey } from "../../shared/stun/credentials.ts";

function hex(s: string): Uint8Array {
  const t = s.replace(/\s+/g, "");
  const out = new Uint8Array(t.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(t.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** RFC 5769 §2.1: sample request (short-term credentials). */
const REQUEST = hex(`
  000100582112a442b7e7a701bc34d686fa87dfae802200105354554e20746573
  7420636c69656e74002400046e0001ff80290008932ff9b151263b3600060009
  6576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249
  c1b571a280280004e57a3bcf`);
/** RFC 5769 §2.2: sample IPv4 response. */
const RESPONSE4 = hex(`
  0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563
  746f7220002000080001a147e112a643000800142b91f599fd9e90c38c7489f9
  2af9ba53f06be7d780280004c07d4c96`);
/** RFC 5769 §2.3: sample IPv6 response. */
const RESPONSE6 = hex(`
  010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563
  746f7220002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014
  a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c`);
/** RFC 5769 §2.4: sample request with long-term authentication. */
const LONG_TERM = hex(`
  000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383
  aae38383e382afe382b900000015001c662f2f3439396b39353464364f4c3334
  6f4c394653547679363473410014000b6578616d706c652e6f72670000080014
  f67024656dd64a3e02b8e0712e85c9a28ca89666`);

const PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt";

Deno.test("RFC 5769 2.1: the sample request parses, its integrity and fingerprint check", () => {
  const m = parseStun(REQUEST);
  assert(m, "parses");
  assertEquals(m.method, Method.binding);
  assertEquals(m.cls, "request");
  assertEquals(attrString(m, Attr.software), "STUN test client");
  assertEquals(attrString(m, Attr.username), "evtj:h6vY");
  assertEquals(attrU32(m, 0x0024), 0x6e0001ff); // PRIORITY
  assert(checkIntegrity(m, shortTermKey(PASSWORD)), "MESSAGE-INTEGRITY");
  assert(!checkIntegrity(m, shortTermKey("wrong")), "a wrong key fails");
  assert(checkFingerprint(m), "FINGERPRINT");
});

Deno.test("RFC 5769 2.2: the IPv4 response gives 192.0.2.1:32853", () => {
  const m = parseStun(RESPONSE4);
  assert(m);
  assertEquals(m.cls, "success");
  assertEquals(attrString(m, Attr.software), "test vector");
  const a = attrAddress(m, Attr.xorMappedAddress, true);
  assertEquals(a?.hostname, "192.0.2.1");
  assertEquals(a?.port, 32853);
  assert(checkIntegrity(m, shortTermKey(PASSWORD)));
  assert(checkFingerprint(m));
});

Deno.test("RFC 5769 2.3: the IPv6 response gives [2001:db8:1234:5678:11:2233:4455:6677]:32853", () => {
  const m = parseStun(RESPONSE6);
  assert(m);
  const a = attrAddress(m, Attr.xorMappedAddress, true);
  assertEquals(a?.hostname, "2001:db8:1234:5678:11:2233:4455:6677");
  assertEquals(a?.port, 32853);
  assert(checkIntegrity(m, shortTermKey(PASSWORD)));
  assert(checkFingerprint(m));
});

Deno.test("RFC 5769 2.4: long-term key MD5(user:realm:SASLprep(password)) checks", () => {
  const m = parseStun(LONG_TERM);
  assert(m);
  const user = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9";
  assertEquals(attrString(m, Attr.username), user);
  assertEquals(attrString(m, Attr.nonce), "f//499k954d6OL34oL9FSTvy64sA");
  assertEquals(attrString(m, Attr.realm), "example.org");
  // The password as the RFC gives it: U+00AD maps to nothing, U+00AA and U+2168 (Roman nine) NFKC.
  const password = "The\u00adM\u00aatr\u2168";
  assertEquals(saslprep(password), "TheMatrIX");
  assert(checkIntegrity(m, longTermKey(user, "example.org", password)));
  assert(checkIntegrity(m, longTermKey(user, "example.org", "TheMatrIX")));
  assert(!checkIntegrity(m, longTermKey(user, "example.org", "TheMatrix")));
  assert(!checkFingerprint(m), "no FINGERPRINT in this vector");
});

// The RFC pads with spaces (any padding is allowed); the writer is told to, to match.
Deno.test("StunWriter reproduces the RFC 5769 IPv4 and IPv6 responses byte for byte", () => {
  const tid = RESPONSE4.subarray(8, 20);
  const v4 = new StunWriter(Method.binding, "success", tid)
    .add(Attr.software, new TextEncoder().encode("test vector"), 0x20)
    .address(Attr.xorMappedAddress, { transport: "udp", hostname: "192.0.2.1", port: 32853 }, true)
    .finish({ integrityKey: shortTermKey(PASSWORD), fingerprint: true });
  assertEquals(v4, RESPONSE4);
  const v6 = new StunWriter(Method.binding, "success", tid)
    .add(Attr.software, new TextEncoder().encode("test vector"), 0x20)
    .address(
      Attr.xorMappedAddress,
      { transport: "udp", hostname: "2001:db8:1234:5678:11:2233:4455:6677", port: 32853 },
      true,
    )
    .finish({ integrityKey: shortTermKey(PASSWORD), fingerprint: true });
  assertEquals(v6, RESPONSE6);
});

Deno.test("StunWriter: an error response round-trips with ERROR-CODE, REALM and NONCE", () => {
  const tid = crypto.getRandomValues(new Uint8Array(12));
  const code = new Uint8Array([0, 0, 4, 38, ...new TextEncoder().encode("Stale Nonce")]);
  const b = new StunWriter(Method.allocate, "error", tid).add(Attr.errorCode, code)
    .string(Attr.realm, "r").string(Attr.nonce, "n1").finish({ fingerprint: true });
  const m = parseStun(b);
  assert(m);
  assertEquals(m.method, Method.allocate);
  assertEquals(m.cls, "error");
  assertEquals(errorCode(m), { code: 438, reason: "Stale Nonce" });
  assertEquals(attrString(m, Attr.nonce), "n1");
  assert(checkFingerprint(m));
});

Deno.test("parseStun: malformed input is null, never a throw", () => {
  assertEquals(parseStun(new Uint8Array(0)), null);
  assertEquals(parseStun(RESPONSE4.subarray(0, 19)), null);
  const badCookie = RESPONSE4.slice();
  badCookie[4] ^= 1;
  assertEquals(parseStun(badCookie), null);
  const badLen = RESPONSE4.slice();
  badLen[3] += 4;
  assertEquals(parseStun(badLen), null);
  const oddLen = RESPONSE4.slice(0, RESPONSE4.length - 2);
  oddLen[3] -= 2;
  assertEquals(parseStun(oddLen), null);
  const attrOverrun = RESPONSE4.slice();
  attrOverrun[22] = 0xff; // SOFTWARE length past the end
  assertEquals(parseStun(attrOverrun), null);
  const channel = new Uint8Array([0x40, 0x00, 0, 0]);
  assertEquals(parseStun(channel), null);
  for (let i = 0; i < 2000; i++) {
    const n = Math.floor(Math.random() * 80);
    const r = crypto.getRandomValues(new Uint8Array(n));
    if (n >= 8) r.set([0x00, 0x01, 0, (n - 20) & 0xfc, 0x21, 0x12, 0xa4, 0x42], 0);
    const m = parseStun(r);
    if (m) { for (const a of m.attributes) assert(a.offset + 4 + a.value.length <= r.length); }
  }
});

Deno.test("ChannelData: round trip, padding allowed, bad numbers and lengths refused", () => {
  const out = new Uint8Array(64);
  const n = writeChannelData(0x4001, new Uint8Array([1, 2, 3]), out);
  assertEquals(n, 7);
  assertEquals(parseChannelData(out.subarray(0, 7))?.channel, 0x4001);
  assertEquals(parseChannelData(out.subarray(0, 8))?.data, new Uint8Array([1, 2, 3]));
  assertEquals(parseChannelData(out.subarray(0, 6)), null, "short");
  assertEquals(parseChannelData(out.subarray(0, 12)), null, "too much padding");
  out[0] = 0x50;
  assertEquals(parseChannelData(out.subarray(0, 7)), null, "0x5001 is no channel");
});

Deno.test("parseStun: an attribute appended after MESSAGE-INTEGRITY is ignored", () => {
  const tid = crypto.getRandomValues(new Uint8Array(12));
  const key = shortTermKey("pw");
  const signed = new StunWriter(Method.binding, "success", tid)
    .address(Attr.xorMappedAddress, { transport: "udp", hostname: "192.0.2.7", port: 7 }, true)
    .finish({ integrityKey: key });
  // A forger appends a second XOR-MAPPED-ADDRESS (and fixes the length).
  const extra = new StunWriter(Method.binding, "success", tid)
    .address(Attr.xorMappedAddress, { transport: "udp", hostname: "6.6.6.6", port: 6 }, true)
    .finish().subarray(20);
  const forged = new Uint8Array(signed.length + extra.length);
  forged.set(signed);
  forged.set(extra, signed.length);
  forged[3] += extra.length;
  const m = parseStun(forged);
  assert(m);
  assert(checkIntegrity(m, key));
  assertEquals(m.attributes.length, 2);
  assertEquals(attrAddress(m, Attr.xorMappedAddress, true)?.hostname, "192.0.2.7");
});

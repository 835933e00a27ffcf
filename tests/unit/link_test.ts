import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import {
  clientConfigFromLink,
  decodeShareLink,
  encodeShareLink,
  LinkError,
  type ShareLink,
} from "../../shared/link.ts";

const KEY = new Uint8Array(32).map((_, i) => 255 - i);
const B64 = formatAccessKey(KEY, "base64url");
const HEX = formatAccessKey(KEY, "hex");

Deno.test("link: encode has the documented shape", () => {
  assertEquals(
    encodeShareLink({
      key: KEY,
      server: { host: "vpn.example.com", port: 8443 },
      mtu: 1350,
      mux: 1,
      name: "My server",
    }),
    `ostp://${B64}@vpn.example.com:8443?mtu=1350&mux=1#My%20server`,
  );
  assertEquals(
    encodeShareLink({ key: KEY, server: { host: "1.2.3.4", port: 1 } }),
    `ostp://${B64}@1.2.3.4:1`,
  );
});

Deno.test("link: round trip, including IPv6 and unicode names", () => {
  const links: ShareLink[] = [
    { key: KEY, server: { host: "vpn.example.com", port: 8443 } },
    { key: generateAccessKey(), server: { host: "2001:db8::1", port: 443 }, mtu: 1200, mux: 4 },
    {
      key: generateAccessKey(),
      server: { host: "::1", port: 9 },
      name: "Zürich #2 / 東京 🚀 & co",
    },
    { key: generateAccessKey(), server: { host: "10.0.0.1", port: 65535 }, mux: 16, name: "a b" },
  ];
  for (const l of links) {
    const s = encodeShareLink(l);
    assert(!/\s/.test(s), "no whitespace in an encoded link");
    assertEquals(decodeShareLink(s), l);
  }
  assert(encodeShareLink(links[1]).includes("@[2001:db8::1]:443?"));
});

Deno.test("link: decode is lenient where harmless", () => {
  const base = { key: KEY, server: { host: "h.example", port: 1 } };
  assertEquals(decodeShareLink(`  OSTP://${B64}@h.example:1/  `), base);
  assertEquals(decodeShareLink(`ostp://${HEX}@h.example:1`), base); // hex key
  assertEquals(decodeShareLink(`ostp://${B64}@h.example:1?`), base);
  assertEquals(decodeShareLink(`ostp://${B64}@h.example:1#`), base);
  // Unknown parameters are ignored (forward compatibility), empty parts too.
  assertEquals(
    decodeShareLink(`ostp://${B64}@h.example:1?fec=on&&mtu=1400&x&future=tls#n`),
    { ...base, mtu: 1400, name: "n" },
  );
  // A name with literal spaces (pasted from a chat that decoded it) is accepted.
  assertEquals(decodeShareLink(`ostp://${B64}@h.example:1#My server`).name, "My server");
});

Deno.test("link: malformed links are LinkErrors saying what is wrong", () => {
  const cases: [string, string][] = [
    ["", "empty"],
    [`https://${B64}@h:1`, 'must start with ostp:// (got "https:")'],
    [`ostp:${B64}@h:1`, "must start with ostp://"],
    [`${B64}@h:1`, "must start with ostp://"],
    ["ostp://h.example:8443", "no key"],
    ["ostp://@h.example:8443", "key is empty"],
    [`ostp://${B64.substring(1)}@h:1`, "invalid key"],
    [`ostp://${B64}x@h:1`, "invalid key"],
    [`ostp://${B64}@h`, "port missing"],
    [`ostp://${B64}@h:0`, "port must be from 1 to 65535"],
    [`ostp://${B64}@h:70000`, "port must be"],
    [`ostp://${B64}@h:8a`, "port must be"],
    [`ostp://${B64}@::1:8443`, "brackets"],
    [`ostp://${B64}@[::1:8443`, 'missing "]"'],
    [`ostp://${B64}@0.0.0.0:1`, "wildcard"],
    [`ostp://${B64}@a@h:1`, 'more than one "@"'],
    [`ostp://${B64}@h:1@x`, 'more than one "@"'],
    [`ostp://${B64}@h:1/path`, "path"],
    [`ostp://${B64} @h:1`, "spaces"],
    [`ostp://${B64}@h:1?mtu=100`, "mtu must be an integer from 576 to 65000"],
    [`ostp://${B64}@h:1?mtu=1350.5`, "mtu must be"],
    [`ostp://${B64}@h:1?mux=0`, "mux must be an integer from 1 to 16"],
    [`ostp://${B64}@h:1?mux=`, "mux must be"],
    [`ostp://${B64}@h:1?mux=1&mux=2`, "given twice"],
    [`ostp://${B64}@h:1#%E0%A4%A`, "name is not valid percent-encoding"],
    [`ostp://${B64}@h:1#a%0Ab`, "control characters"],
    [`ostp://${B64}@h:1#${"n".repeat(300)}`, "name is longer"],
    [`ostp://${B64}@h:1?` + "x".repeat(5000), "longer than"],
  ];
  for (const [s, why] of cases) {
    const e = assertThrows(() => decodeShareLink(s), LinkError) as LinkError;
    assert(e.message.startsWith("invalid share link: "), e.message);
    assert(e.message.includes(why), `${s.substring(0, 60)}: "${e.message}" lacks "${why}"`);
  }
});

Deno.test("link: errors never echo the key", () => {
  const badKeys = [B64.substring(1), B64 + "A", HEX.substring(2), B64.replace("_", "/")];
  for (const k of badKeys) {
    const e = assertThrows(() => decodeShareLink(`ostp://${k}@h:1`), LinkError);
    assert(!e.message.includes(k), "key text echoed");
    assert(!e.message.includes(k.substring(0, 12)), "key prefix echoed");
  }
  for (const tail of ["@h", "@h:0", "@h:1?mux=99", "@h:1/x", "@[zz]:1", "@h:1?mtu=1&mtu=2"]) {
    const e = assertThrows(() => decodeShareLink(`ostp://${B64}${tail}`), LinkError);
    assert(!e.message.includes(B64.substring(0, 12)), `key echoed for ${tail}`);
  }
});

Deno.test("link: encode rejects invalid fields", () => {
  const server = { host: "h", port: 1 };
  assertThrows(() => encodeShareLink({ key: new Uint8Array(31), server }), LinkError, "32 bytes");
  assertThrows(() => encodeShareLink({ key: KEY, server: { host: "h", port: 0 } }), LinkError);
  assertThrows(() => encodeShareLink({ key: KEY, server: { host: "a b", port: 1 } }), LinkError);
  assertThrows(() => encodeShareLink({ key: KEY, server, mtu: 100 }), LinkError, "mtu");
  assertThrows(() => encodeShareLink({ key: KEY, server, mux: 17 }), LinkError, "mux");
});

Deno.test("link: clientConfigFromLink fills defaults, takes mtu/mux, applies overrides", () => {
  const l = decodeShareLink(`ostp://${B64}@[::1]:8443?mtu=1280&mux=3#x`);
  const cfg = clientConfigFromLink(l);
  assertEquals(cfg.server, { host: "::1", port: 8443 });
  assertEquals(cfg.key, KEY);
  assertEquals(cfg.mtu, 1280);
  assertEquals(cfg.mux, 3);
  assertEquals(cfg.listen, { host: "127.0.0.1", port: 1088 });
  assertEquals(cfg.reconnect, { initialDelay: 0.5, maxDelay: 30 });
  const o = clientConfigFromLink(l, { listen: { host: "0.0.0.0", port: 1 }, mux: 2 });
  assertEquals(o.listen, { host: "0.0.0.0", port: 1 });
  assertEquals(o.mux, 2);
  assertEquals(clientConfigFromLink({ key: KEY, server: { host: "h", port: 1 } }).mtu, 1350);
});

Deno.test("link: carrier, carrier ports and sni round-trip and reach the client config", () => {
  const l = {
    key: KEY,
    server: { host: "h.example", port: 8443 },
    carrier: "auto" as const,
    ports: { faketcp: 8443, tls: 443 },
    sni: "www.example.com",
  };
  const text = encodeShareLink(l);
  assertEquals(
    text,
    `ostp://${B64}@h.example:8443?carrier=auto&faketcp=8443&tls=443&sni=www.example.com`,
  );
  assertEquals(decodeShareLink(text), l);
  const cfg = clientConfigFromLink(decodeShareLink(text));
  assertEquals(cfg.carriers?.carrier, "auto");
  assertEquals(cfg.carriers?.faketcpPort, 8443);
  assertEquals(cfg.carriers?.tls, { port: 443, serverName: "www.example.com" });
  for (
    const [q, why] of [
      ["carrier=quic", "carrier must be udp, faketcp, uot, tls or auto"],
      ["tls=0", "tls port must be an integer from 1 to 65535"],
      ["carrier=udp&carrier=tls", "query parameter carrier is given twice"],
      ["sni=a%20b", "sni must be a host name"],
    ]
  ) {
    let msg = "";
    try {
      decodeShareLink(`ostp://${B64}@h.example:1?${q}`);
    } catch (e) {
      msg = (e as Error).message;
    }
    assertEquals(msg, `invalid share link: ${why}`);
  }
});

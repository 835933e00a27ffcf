import { assert, assertEquals } from "../support/assert.ts";
import {
  decodeUdpDatagram,
  encodeUdpDatagram,
  UDP_DATAGRAM_KIND,
  udpHeaderSize,
} from "../../shared/wire/udp.ts";
import { encodeSocks5Udp, parseSocks5Udp } from "../../client/inbound/socks5_udp.ts";

const payload = new Uint8Array([1, 2, 3, 250, 0, 9]);

Deno.test("udp wire: round trip for IPv4, IPv6 and domain addresses", () => {
  const cases: [string, number, number][] = [
    ["10.1.2.3", 53, 0],
    ["2001:db8::1", 443, 0xffffffff],
    ["dns.example.org", 5353, 0x01020304],
  ];
  for (const [host, port, flowId] of cases) {
    const wire = encodeUdpDatagram(flowId, { host, port }, payload);
    assert(wire, host);
    assertEquals(wire![0], UDP_DATAGRAM_KIND);
    assertEquals(wire!.length, udpHeaderSize(host)! + payload.length);
    const d = decodeUdpDatagram(wire!);
    assert(d, host);
    assertEquals(d!.flowId, flowId);
    assertEquals(d!.host, host);
    assertEquals(d!.port, port);
    assertEquals([...d!.payload], [...payload]);
  }
});

Deno.test("udp wire: exact layout of an IPv4 datagram", () => {
  const wire = encodeUdpDatagram(0x0a0b0c0d, { host: "1.2.3.4", port: 0x1234 }, Uint8Array.of(7));
  assertEquals([...wire!], [1, 0x0a, 0x0b, 0x0c, 0x0d, 1, 1, 2, 3, 4, 0x12, 0x34, 7]);
});

Deno.test("udp wire: encoder refuses bad flow ids, ports and names", () => {
  assertEquals(encodeUdpDatagram(-1, { host: "1.2.3.4", port: 1 }, payload), null);
  assertEquals(encodeUdpDatagram(2 ** 32, { host: "1.2.3.4", port: 1 }, payload), null);
  assertEquals(encodeUdpDatagram(1, { host: "1.2.3.4", port: 0 }, payload), null);
  assertEquals(encodeUdpDatagram(1, { host: "1.2.3.4", port: 65536 }, payload), null);
  assertEquals(encodeUdpDatagram(1, { host: "", port: 53 }, payload), null);
  assertEquals(encodeUdpDatagram(1, { host: "a".repeat(256), port: 53 }, payload), null);
});

Deno.test("udp wire: malformed input is dropped, never thrown", () => {
  const good = encodeUdpDatagram(7, { host: "example.com", port: 53 }, payload)!;
  // Every truncation inside the header is rejected; the payload may be empty.
  const headerLen = udpHeaderSize("example.com")!;
  for (let n = 0; n < headerLen; n++) {
    assertEquals(decodeUdpDatagram(good.subarray(0, n)), null, `prefix ${n}`);
  }
  assert(decodeUdpDatagram(good.subarray(0, headerLen)));
  const bad = (mut: (b: Uint8Array) => void) => {
    const b = good.slice();
    mut(b);
    return decodeUdpDatagram(b);
  };
  assertEquals(bad((b) => b[0] = 2), null, "unknown kind");
  assertEquals(bad((b) => b[5] = 2), null, "unknown atyp");
  assertEquals(bad((b) => b[6] = 0), null, "empty name");
  assertEquals(bad((b) => b[6] = 200), null, "name longer than the datagram");
  assertEquals(bad((b) => b[7] = 0x20), null, "space in name");
  assertEquals(bad((b) => b[7] = 0xff), null, "invalid UTF-8");
  assertEquals(bad((b) => b[headerLen - 2] = b[headerLen - 1] = 0), null, "port 0");
  assertEquals(decodeUdpDatagram(new Uint8Array(0)), null, "empty");
  // Random garbage: decoding never throws.
  for (let i = 0; i < 20000; i++) {
    const b = crypto.getRandomValues(new Uint8Array(Math.floor(Math.random() * 40)));
    if (i % 2) b[0] = UDP_DATAGRAM_KIND;
    if (i % 4 === 1 && b.length > 5) b[5] = [1, 3, 4][i % 3];
    decodeUdpDatagram(b);
    parseSocks5Udp(b);
  }
});

Deno.test("socks5 udp header: parse IPv4, IPv6, domain; FRAG is reported", () => {
  const v4 = Uint8Array.of(0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 0xaa, 0xbb);
  const p = parseSocks5Udp(v4)!;
  assertEquals([p.frag, p.atyp, p.host, p.port, [...p.data]], [0, 1, "127.0.0.1", 53, [
    0xaa,
    0xbb,
  ]]);
  const v6 = new Uint8Array([0, 0, 0, 4, ...new Uint8Array(15), 1, 0x01, 0xbb]);
  assertEquals(parseSocks5Udp(v6)!.host, "::1");
  assertEquals(parseSocks5Udp(v6)!.data.length, 0);
  const dom = new Uint8Array([0, 0, 0, 3, 4, ...new TextEncoder().encode("a.bc"), 0, 80, 9]);
  const d = parseSocks5Udp(dom)!;
  assertEquals([d.host, d.port, [...d.data]], ["a.bc", 80, [9]]);
  const frag = v4.slice();
  frag[2] = 1;
  assertEquals(parseSocks5Udp(frag)!.frag, 1);
  frag[2] = 0x81;
  assertEquals(parseSocks5Udp(frag)!.frag, 0x81);
});

Deno.test("socks5 udp header: truncated or bad headers are rejected", () => {
  const v4 = Uint8Array.of(0, 0, 0, 1, 127, 0, 0, 1, 0, 53);
  for (let n = 0; n < v4.length; n++) {
    assertEquals(parseSocks5Udp(v4.subarray(0, n)), null, `prefix ${n}`);
  }
  assertEquals(parseSocks5Udp(Uint8Array.of(0, 0, 0, 9, 1, 2, 3, 4, 0, 53)), null, "atyp 9");
  assertEquals(parseSocks5Udp(Uint8Array.of(0, 0, 0, 1, 1, 2, 3, 4, 0, 0)), null, "port 0");
  assertEquals(parseSocks5Udp(Uint8Array.of(0, 0, 0, 3, 0, 0, 53)), null, "empty domain");
  assertEquals(parseSocks5Udp(Uint8Array.of(0, 0, 0, 3, 9, 97, 0, 53)), null, "short domain");
});

Deno.test("socks5 udp header: encode round-trips through parse", () => {
  for (const host of ["10.9.8.7", "fe80::1", "example.net"]) {
    const out = encodeSocks5Udp({ host, port: 5353 }, payload)!;
    assertEquals([out[0], out[1], out[2]], [0, 0, 0]);
    const p = parseSocks5Udp(out)!;
    assertEquals([p.host, p.port, [...p.data]], [host, 5353, [...payload]]);
  }
  assertEquals(encodeSocks5Udp({ host: "", port: 1 }, payload), null);
});

import { assertEquals } from "../support/assert.ts";
import {
  encodeL3Request,
  encodeL3Response,
  L3_LINE_MAX,
  parseL3Request,
  parseL3Response,
} from "../../shared/l3/control.ts";
import { prng } from "../support/simnet.ts";

const enc = new TextEncoder();
const strip = (b: Uint8Array) => b.subarray(0, b.length - 1);

Deno.test("l3 control: request and both answers round-trip", () => {
  const req = { instance: "0123456789abcdef0123", ipv6: true };
  assertEquals(parseL3Request(strip(encodeL3Request(req))), req);
  const grant = {
    ok: true as const,
    address: "10.77.0.2/24",
    address6: "fd77::2/64",
    server: "10.77.0.1",
    server6: "fd77::1",
    mtu: 1280,
    routes: ["10.77.0.0/24", "fd77::/64"],
  };
  assertEquals(parseL3Response(strip(encodeL3Response(grant))), grant);
  const no = { ok: false as const, reason: "address 10.77.0.9 is in use by another live session" };
  assertEquals(parseL3Response(strip(encodeL3Response(no))), no);
});

Deno.test("l3 control: malformed lines are typed errors, never throws", () => {
  for (
    const [text, want] of [
      ["", "not JSON"],
      ["[]", "not an object"],
      ['{"v":2}', "unknown version"],
      ['{"v":1,"instance":"XYZ","ipv6":true}', "instance"],
      ['{"v":1,"instance":"0123456789abcdef"}', "ipv6"],
    ]
  ) {
    const r = parseL3Request(enc.encode(text));
    assertEquals(typeof r === "string" && r.includes(want), true, `${text}: ${r}`);
  }
  for (
    const [text, want] of [
      [
        '{"v":1,"ok":true,"address":"10.77.0.2","server":"10.77.0.1","mtu":1280,"routes":[]}',
        "address",
      ],
      [
        '{"v":1,"ok":true,"address":"fd77::2/64","server":"10.77.0.1","mtu":1280,"routes":[]}',
        "address",
      ],
      ['{"v":1,"ok":true,"address":"10.77.0.2/24","server":"x","mtu":1280,"routes":[]}', "server"],
      [
        '{"v":1,"ok":true,"address":"10.77.0.2/24","server":"10.77.0.1","mtu":100,"routes":[]}',
        "mtu",
      ],
      [
        '{"v":1,"ok":true,"address":"10.77.0.2/24","server":"10.77.0.1","mtu":1280,"routes":["x"]}',
        "routes",
      ],
      ['{"v":1,"ok":"yes"}', "ok"],
      ['{"v":1,"ok":false}', "reason"],
    ]
  ) {
    const r = parseL3Response(enc.encode(text));
    assertEquals(typeof r === "string" && r.includes(want), true, `${text}: ${JSON.stringify(r)}`);
  }
  assertEquals(parseL3Request(new Uint8Array(L3_LINE_MAX + 1)), "line too long");
  const rand = prng(4);
  for (let i = 0; i < 5000; i++) {
    const b = new Uint8Array(Math.floor(rand() * 200));
    for (let k = 0; k < b.length; k++) b[k] = (rand() * 256) | 0;
    parseL3Request(b);
    parseL3Response(b);
  }
});

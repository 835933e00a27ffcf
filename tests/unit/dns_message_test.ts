import { assert, assertEquals } from "../support/assert.ts";
import {
  addressesOf,
  buildQuery,
  buildResponse,
  isDnsError,
  parseQuery,
  parseResponse,
  Rcode,
  RecordType,
} from "../../shared/dns/message.ts";
import { prng } from "../support/simnet.ts";
import { which } from "../support/sh.ts";
import { startDnsmasq } from "../support/dnsmasq.ts";
import { datagramInbox } from "../support/datagram_inbox.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("dns: a query round-trips; names are lowercased", () => {
  const q = buildQuery(0x1234, "WWW.Example.test", RecordType.AAAA);
  const p = parseQuery(q);
  assert(!isDnsError(p));
  assertEquals(p.id, 0x1234);
  assertEquals(p.question, { name: "www.example.test", type: RecordType.AAAA, class: 1 });
  assertEquals(p.questionEnd, q.length);
});

Deno.test("dns: our responses parse, with the question echoed and answers by pointer", () => {
  const qb = buildQuery(7, "a.example", RecordType.A);
  const q = parseQuery(qb);
  assert(!isDnsError(q));
  const r = buildResponse(qb, q, Rcode.NOERROR, [
    { type: RecordType.A, ttl: 60, data: new Uint8Array([192, 0, 2, 1]) },
    { type: RecordType.A, ttl: 30, data: new Uint8Array([192, 0, 2, 2]) },
  ]);
  const p = parseResponse(r);
  assert(!isDnsError(p));
  assertEquals(p.id, 7);
  assertEquals(p.rcode, 0);
  assertEquals(p.answers.length, 2);
  const a = addressesOf(p)!;
  assertEquals(a.name, "a.example");
  assertEquals(a.ttl, 30);
  assertEquals(a.addresses.map(hex), ["c0000201", "c0000202"]);
  const fail = parseResponse(buildResponse(qb, q, Rcode.SERVFAIL));
  assert(!isDnsError(fail));
  assertEquals(fail.rcode, Rcode.SERVFAIL);
  assertEquals(addressesOf(fail), null);
});

Deno.test("dns: CNAME chains map the addresses to the name asked for", () => {
  // www.x.test CNAME cdn.x.net; cdn.x.net CNAME edge.x.net; edge.x.net A 198.51.100.9 (out of order).
  const name = (s: string) => {
    const parts = s.split(".");
    return [...parts.flatMap((p) => [p.length, ...new TextEncoder().encode(p)]), 0];
  };
  const rr = (n: number[], type: number, ttl: number, data: number[]) => [
    ...n,
    0,
    type,
    0,
    1,
    (ttl >>> 24) & 255,
    (ttl >>> 16) & 255,
    (ttl >>> 8) & 255,
    ttl & 255,
    data.length >> 8,
    data.length & 255,
    ...data,
  ];
  const msg = new Uint8Array([
    0,
    1,
    0x81,
    0x80,
    0,
    1,
    0,
    3,
    0,
    0,
    0,
    0,
    ...name("www.x.test"),
    0,
    1,
    0,
    1,
    ...rr(name("edge.x.net"), 1, 300, [198, 51, 100, 9]),
    ...rr(name("cdn.x.net"), 5, 120, name("edge.x.net")),
    ...rr([0xc0, 12], 5, 600, name("cdn.x.net")),
  ]);
  const p = parseResponse(msg);
  assert(!isDnsError(p), String(p));
  const a = addressesOf(p)!;
  assertEquals(a.name, "www.x.test");
  assertEquals(a.addresses.map(hex), ["c6336409"]);
  assertEquals(a.ttl, 120);
});

Deno.test("dns: malformed messages give typed errors, never a throw", () => {
  assertEquals(parseQuery(new Uint8Array(5)), "truncated");
  const q = buildQuery(1, "a.b", 1);
  assertEquals(parseQuery(q.subarray(0, q.length - 2)), "truncated");
  const resp = q.slice();
  resp[2] |= 0x80;
  assertEquals(parseQuery(resp), "not-a-query");
  assertEquals(parseResponse(q), "not-a-response");
  // A pointer to itself, and a forward pointer.
  const loop = new Uint8Array([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
  assertEquals(parseQuery(loop), "pointer-loop");
  const fwd = new Uint8Array([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 20, 0, 1, 0, 1]);
  assertEquals(parseQuery(fwd), "pointer-loop");
  // Reserved label type 0x40.
  const bad = new Uint8Array([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 0, 0, 1, 0, 1]);
  assertEquals(parseQuery(bad), "bad-name");
  const none = new Uint8Array(12);
  assertEquals(parseQuery(none), "no-question");
  const rand = prng(9);
  const buf = new Uint8Array(600);
  for (let i = 0; i < 50_000; i++) {
    const n = 12 + Math.floor(rand() * 200);
    for (let k = 0; k < n; k++) buf[k] = (rand() * 256) | 0;
    if (i % 2 === 0) buf.set(q.subarray(0, Math.min(q.length, n)));
    const m = buf.subarray(0, n);
    parseQuery(m);
    const r = parseResponse(m);
    if (!isDnsError(r)) addressesOf(r);
  }
});

Deno.test({
  name: "dns: dnsmasq's answers (A, AAAA, CNAME) read as it means them",
  ignore: !(await which("dnsmasq")),
  async fn() {
    const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const dnsmasq = startDnsmasq({
      records: [
        "--host-record=example.test,192.0.2.7,2001:db8::7",
        "--cname=www.example.test,example.test",
      ],
    });
    const port = dnsmasq.port;
    const inbox = datagramInbox(sock);
    try {
      const ask = async (name: string, type: number) => {
        const q = buildQuery(Math.floor(Math.random() * 65535), name, type);
        for (let tries = 0; tries < 50; tries++) {
          await sock.send(q, { transport: "udp", hostname: "127.0.0.1", port });
          const got = await inbox.next(100);
          if (got) return got;
        }
        throw new Error("dnsmasq did not answer");
      };
      const a = parseResponse(await ask("WWW.example.test", RecordType.A));
      assert(!isDnsError(a), String(a));
      const aa = addressesOf(a)!;
      assertEquals(aa.name, "www.example.test");
      assertEquals(aa.addresses.map(hex), ["c0000207"]);
      const six = parseResponse(await ask("www.example.test", RecordType.AAAA));
      assert(!isDnsError(six));
      assertEquals(addressesOf(six)!.addresses.map(hex), ["20010db8000000000000000000000007"]);
      const nx = parseResponse(await ask("nothing.invalid", RecordType.A));
      assert(!isDnsError(nx));
      assert(nx.rcode === Rcode.NXDOMAIN || nx.rcode === Rcode.REFUSED, `rcode ${nx.rcode}`);
      assertEquals(addressesOf(nx), null);
    } finally {
      await dnsmasq.stop();
      sock.close();
    }
  },
});

import { assert, assertEquals } from "../support/assert.ts";
import { sniff, SNIFF_LIMIT } from "../../client/router/sniff.ts";
import { NameMap } from "../../client/dns/name_map.ts";
import { prng } from "../support/simnet.ts";
import { which } from "../support/sh.ts";

/** The first bytes curl sends to a local listener for `args` (it gets no answer and gives up). */
async function firstBytes(args: string[], want: number): Promise<Uint8Array> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const curl = new Deno.Command("curl", {
    args: ["-s", "-m", "3", ...args.map((a) => a.replace("PORT", String(port)))],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const conn = await l.accept();
  const buf = new Uint8Array(SNIFF_LIMIT);
  let n = 0;
  while (n < want) {
    const r = await conn.read(buf.subarray(n));
    if (r === null) break;
    n += r;
    if (sniff(buf.subarray(0, n)) !== "more") break;
  }
  conn.close();
  l.close();
  await curl.status;
  return buf.slice(0, n);
}

const hasCurl = !!(await which("curl"));

Deno.test({
  name: "sniff: the server name of curl's real TLS ClientHello, and every prefix asks for more",
  ignore: !hasCurl,
  async fn() {
    const hello = await firstBytes(
      ["--resolve", "Video.Example.test:PORT:127.0.0.1", "https://Video.Example.test:PORT/"],
      SNIFF_LIMIT,
    );
    assertEquals(sniff(hello), { name: "video.example.test", protocol: "tls" });
    for (let i = 0; i < Math.min(hello.length, 64); i++) {
      assertEquals(sniff(hello.subarray(0, i)), "more", `prefix ${i}`);
    }
  },
});

Deno.test({
  name: "sniff: the Host of curl's real HTTP request, port stripped",
  ignore: !hasCurl,
  async fn() {
    const req = await firstBytes(
      ["-H", "Host: Files.Example.test:8080", "http://127.0.0.1:PORT/x"],
      SNIFF_LIMIT,
    );
    assertEquals(sniff(req), { name: "files.example.test", protocol: "http" });
    assertEquals(sniff(req.subarray(0, 3)), "more");
  },
});

Deno.test("sniff: IP literals, other protocols and junk teach nothing", () => {
  const enc = new TextEncoder();
  assertEquals(sniff(enc.encode("GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n")), "none");
  assertEquals(sniff(enc.encode("GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n")), "none");
  assertEquals(sniff(enc.encode("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")), "none");
  assertEquals(sniff(enc.encode("SSH-2.0-OpenSSH_9.2\r\n")), "none");
  assertEquals(sniff(new Uint8Array([0x16, 3, 1, 0, 5, 2, 0, 0, 1, 0])), "none");
  const rand = prng(3);
  const buf = new Uint8Array(2048);
  for (let i = 0; i < 20_000; i++) {
    const n = 1 + Math.floor(rand() * buf.length);
    for (let k = 0; k < n; k++) buf[k] = (rand() * 256) | 0;
    if (i % 3 === 0) buf.set([0x16, 3, 1], 0);
    const r = sniff(buf.subarray(0, n));
    assert(r === "more" || r === "none" || typeof r.name === "string");
  }
});

Deno.test("name map: addresses keep their name for a while, bounded, v4-mapped alike", () => {
  const m = new NameMap(3);
  const a = new Uint8Array([192, 0, 2, 1]);
  const mapped = new Uint8Array(16);
  mapped.set([0xff, 0xff, 192, 0, 2, 1], 10);
  m.remember("a.example", [a], 5, 0);
  assertEquals(m.lookup(mapped, 1000), "a.example");
  assertEquals(m.lookup(a, 9 * 60_000), "a.example", "kept at least ten minutes despite a 5 s TTL");
  assertEquals(m.lookup(a, 11 * 60_000), undefined);
  for (let i = 0; i < 5; i++) m.remember(`n${i}.example`, [new Uint8Array([10, 0, 0, i])], 60, 0);
  assertEquals(m.size, 3);
  assertEquals(m.lookup(new Uint8Array([10, 0, 0, 0]), 1), undefined, "oldest pushed out");
  assertEquals(m.lookup(new Uint8Array([10, 0, 0, 4]), 1), "n4.example");
  m.remember("bad", [new Uint8Array(5)], 60, 0);
  assertEquals(m.lookup(new Uint8Array(5), 0), undefined);
});

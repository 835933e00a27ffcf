import { assert, assertEquals } from "../support/assert.ts";
import { dialMarked } from "../../ffi/tcp_linux.ts";
import { DialError } from "../../shared/duplex.ts";
import { payload, sha256Hex } from "../support/daemons.ts";

const linuxRoot = Deno.build.os === "linux" && Deno.uid() === 0;

Deno.test({
  name: "tcp ffi: a marked connection carries bytes both ways with half-close",
  ignore: !linuxRoot,
  async fn() {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    const body = payload(4 << 20, 5);
    const server = (async () => {
      const c = await l.accept();
      const chunks: Uint8Array[] = [];
      const buf = new Uint8Array(65536);
      for (;;) {
        const n = await c.read(buf);
        if (n === null) break;
        chunks.push(buf.slice(0, n));
      }
      const got = new Uint8Array(chunks.reduce((a, b) => a + b.length, 0));
      let o = 0;
      for (const ch of chunks) got.set(ch, (o += ch.length) - ch.length);
      // Echo back after the client's FIN (the half-close reached us).
      for (let w = 0; w < got.length;) w += await c.write(got.subarray(w));
      c.close();
    })();
    const conn = await dialMarked("127.0.0.1", port, { mark: 0x7331 });
    const reading = (async () => {
      const parts: Uint8Array[] = [];
      const buf = new Uint8Array(65536);
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        parts.push(buf.slice(0, n));
      }
      const all = new Uint8Array(parts.reduce((a, b) => a + b.length, 0));
      let o = 0;
      for (const p of parts) all.set(p, (o += p.length) - p.length);
      return all;
    })();
    for (let w = 0; w < body.length;) w += await conn.write(body.subarray(w));
    await conn.closeWrite();
    const echoed = await reading;
    assertEquals(echoed.length, body.length);
    assertEquals(await sha256Hex(echoed), await sha256Hex(body));
    conn.close();
    await server;
    l.close();
  },
});

Deno.test({
  name: "tcp ffi: refused and bad targets are DialErrors; close wakes a pending read",
  ignore: !linuxRoot,
  async fn() {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    const e = await dialMarked("127.0.0.1", port, { mark: 1 }).then(() => null, (e) => e);
    assert(e instanceof DialError && e.reason === "refused", String(e));
    const bad = await dialMarked("example.test", 80, { mark: 1 }).then(() => null, (e) => e);
    assert(bad instanceof DialError, String(bad));
    const l2 = Deno.listen({ hostname: "::1", port: 0 });
    const p2 = (l2.addr as Deno.NetAddr).port;
    const accepted = l2.accept();
    const c = await dialMarked("::1", p2, { mark: 1 });
    const peer = await accepted;
    const t0 = performance.now();
    const pending = c.read(new Uint8Array(10)).then(() => "value", (e) => e.name);
    await new Promise((r) => setTimeout(r, 50));
    c.close();
    const r = await pending;
    assert(performance.now() - t0 < 2000, "the read ended promptly");
    assert(r === "BadResource" || r === "value", `read after close: ${r}`);
    peer.close();
    l2.close();
  },
});

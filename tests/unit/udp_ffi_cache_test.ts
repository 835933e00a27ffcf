import { assert, assertEquals } from "../support/assert.ts";
import { openUdp } from "../../shared/net/datagram.ts";
import "../../ffi/udp_linux.ts";

const linux = Deno.build.os === "linux";

/** Starts collecting `count` datagrams from `sock`; `arrived` settles when they did (or after 5 s). */
function collect(sock: ReturnType<typeof openUdp>, count: number) {
  const got: [number, Deno.NetAddr][] = [];
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const running = sock.run((data, from) => {
    got.push([data[0], from]);
    if (got.length === count) done();
  });
  const timer = setTimeout(() => done(), 5000);
  return { got, running, arrived: all.then(() => clearTimeout(timer)) };
}

Deno.test({
  name: "udp (FFI): interleaved sources keep their own cached address objects",
  ignore: !linux,
  async fn() {
    const rx = openUdp("127.0.0.1", 0, { impl: "ffi" });
    const p1 = openUdp("127.0.0.1", 0, { impl: "ffi" });
    const p2 = openUdp("127.0.0.1", 0, { impl: "ffi" });
    const order = [1, 1, 2, 1, 2, 2, 2, 1, 1, 2];
    const c = collect(rx, order.length);
    for (const who of order) {
      (who === 1 ? p1 : p2).send(new Uint8Array(32).fill(who), rx.addr);
      (who === 1 ? p1 : p2).flush();
      await new Promise((r) => setTimeout(r, 5));
    }
    await c.arrived;
    const { got, running } = c;
    assertEquals(got.length, order.length, "every datagram arrived");
    const objs = new Map<number, Deno.NetAddr>();
    for (const [who, from] of got) {
      assertEquals(from.port, who === 1 ? p1.addr.port : p2.addr.port);
      assertEquals(from.hostname, "127.0.0.1");
      const prev = objs.get(who);
      if (prev) assert(prev === from, "one object per source");
      objs.set(who, from);
    }
    assert(objs.get(1) !== objs.get(2));
    for (const s of [rx, p1, p2]) s.close();
    await running;
  },
});

Deno.test({
  name: "udp (FFI): a reused destination object that changes its port is re-encoded",
  ignore: !linux,
  async fn() {
    const tx = openUdp("127.0.0.1", 0, { impl: "ffi" });
    const r1 = openUdp("127.0.0.1", 0, { impl: "ffi" });
    const r2 = openUdp("127.0.0.1", 0, { impl: "ffi" });
    const c1 = collect(r1, 2);
    const c2 = collect(r2, 1);
    const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: r1.addr.port };
    tx.send(new Uint8Array(32).fill(1), to);
    tx.send(new Uint8Array(32).fill(2), to); // cached encoding
    tx.flush();
    to.port = r2.addr.port;
    tx.send(new Uint8Array(32).fill(3), to);
    tx.send(new Uint8Array(32).fill(9), { transport: "udp", hostname: "not-an-ip", port: 1 });
    tx.flush();
    await c1.arrived;
    await c2.arrived;
    const a = c1;
    const b = c2;
    assertEquals(a.got.map(([x]) => x), [1, 2]);
    assertEquals(b.got.map(([x]) => x), [3]);
    assertEquals(a.got[0][1].port, tx.addr.port);
    for (const s of [tx, r1, r2]) s.close();
    await a.running;
    await b.running;
  },
});

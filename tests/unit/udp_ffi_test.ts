import { assert, assertEquals } from "../support/assert.ts";
import { openUdp } from "../../shared/net/datagram.ts";
import "../../ffi/udp_linux.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name: "udp (FFI): batches of small and large datagrams arrive intact with their source",
  ignore: !linux,
  async fn() {
    const a = openUdp("127.0.0.1", 0, { impl: "ffi" });
    const b = openUdp("127.0.0.1", 0, { impl: "ffi" });
    assertEquals(a.kind, "linux-ffi");
    const got: [number, number, number][] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const sizes = [1, 100, 1400, 2048, 2049, 9000, 60000];
    const running = b.run((data, from) => {
      got.push([data.length, data[0], from.port]);
      if (got.length === sizes.length * 3) done();
    });
    for (let round = 0; round < 3; round++) {
      for (const n of sizes) a.send(new Uint8Array(n).fill(n & 0xff), b.addr);
    }
    a.flush();
    const timer = setTimeout(() => done(), 5000);
    await all;
    clearTimeout(timer);
    a.close();
    b.close();
    await running;
    assertEquals(got.length, sizes.length * 3, "every datagram arrived");
    for (const [len, first, port] of got) {
      assert(sizes.includes(len), `size ${len}`);
      assertEquals(first, len & 0xff);
      assertEquals(port, a.addr.port);
    }
  },
});

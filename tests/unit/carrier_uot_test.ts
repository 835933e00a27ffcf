import { assert, assertEquals } from "../support/assert.ts";
import { carrierConformance } from "../conformance/carrier.ts";
import { UotDialer, UotListener } from "../../shared/carrier/uot.ts";

/** Opens a raw TCP connection to `port`, writes `bytes`, and closes. */
async function stranger(port: number, bytes: Uint8Array): Promise<void> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    if (bytes.length > 0) await c.write(bytes);
    await new Promise((r) => setTimeout(r, 20));
  } finally {
    c.close();
  }
}

carrierConformance("uot carrier", () => {
  const listener = UotListener.open("127.0.0.1", 0);
  return Promise.resolve({
    listener,
    dialer: new UotDialer({ connectTimeoutMs: 2000 }),
    server: { transport: "tcp", hostname: "127.0.0.1", port: listener.local.port },
    mtu: 1350,
    sendStranger: (bytes: Uint8Array) => stranger(listener.local.port, bytes),
    close: () => Promise.resolve(),
  });
});

Deno.test({
  name: "uot: a connection without a frame in time is closed; a reset ends only its endpoint",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const listener = UotListener.open("127.0.0.1", 0, { firstFrameMs: 200 });
    const got: string[] = [];
    const done = listener.run((d, from) => {
      got.push(from.key);
      listener.send(d, from);
    });
    try {
      const idle = await Deno.connect({ hostname: "127.0.0.1", port: listener.local.port });
      const a = await new UotDialer().dial({
        transport: "tcp",
        hostname: "127.0.0.1",
        port: listener.local.port,
      });
      const b = await new UotDialer().dial({
        transport: "tcp",
        hostname: "127.0.0.1",
        port: listener.local.port,
      });
      const echoes: number[] = [];
      const runs = [a.run(() => echoes.push(1)), b.run(() => echoes.push(2))];
      a.send(new Uint8Array(10));
      b.send(new Uint8Array(10));
      await new Promise((r) => setTimeout(r, 400));
      // The idle connection was closed by the server.
      assertEquals(await idle.read(new Uint8Array(1)).catch(() => null), null);
      idle.close();
      assertEquals(listener.slow, 1);
      assertEquals(echoes.sort(), [1, 2]);
      a.close(); // one client goes
      await runs[0];
      b.send(new Uint8Array(20));
      await new Promise((r) => setTimeout(r, 100));
      assertEquals(echoes.length, 3, "the other endpoint still works");
      assertEquals(listener.connections, 1);
      assert(new Set(got).size === 2, "two endpoints");
      b.close();
      await runs[1];
    } finally {
      listener.close();
      await done;
    }
  },
});

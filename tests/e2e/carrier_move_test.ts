/**
 * A carrier that loses its path (a fake-TCP flow a NAT forgot, a reset
 * connection) does not end the session: the runner opens a new link, the
 * session's probes go out on it alone first, the server follows, and the
 * streams in flight finish intact. In process, over the memory carrier
 * handed to a real server (`ServerOptions.listeners`).
 * @module
 */
import { assert, assertEquals } from "../support/assert.ts";
import { formatAccessKey, generateAccessKey, OstpServer, parseServerConfig } from "../../mod.ts";
import { OstpPool } from "../../client/outbound/ostp.ts";
import { MemoryNetwork } from "../../shared/carrier/memory.ts";
import type { CarrierDialer, CarrierLink } from "../../shared/carrier/carrier.ts";
import { payload, sha256Hex, startOrigin } from "../support/daemons.ts";

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test({
  name:
    "carrier: a link that dies under a live session is replaced, the session and stream live on",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const key = generateAccessKey();
    const net = new MemoryNetwork();
    const listener = net.listen();
    const server = new OstpServer(
      parseServerConfig({
        listen: ["127.0.0.1:0"],
        keys: [formatAccessKey(key, "hex")],
        egress: { allow: ["127.0.0.0/8"] },
      }),
      { listeners: [listener] },
    );
    await server.start();
    const links: CarrierLink[] = [];
    const inner = net.dialer();
    const dialer: CarrierDialer = {
      kind: "memory",
      dial: async (s) => {
        const l = await inner.dial(s);
        links.push(l);
        return l;
      },
    };
    const lost: string[] = [];
    const pool = new OstpPool({
      server: { host: "127.0.0.1", port: listener.local.port },
      key,
      mux: 1,
      session: {},
      connectTimeoutMs: 10_000,
      reconnect: { initialDelayMs: 500, maxDelayMs: 30_000 },
      carriers: [{ dialer }],
      onLinkLost: (_i, carrier) => lost.push(carrier),
    });
    pool.start();
    const runner = pool.runners[0];
    try {
      await until(() => runner.state === "connected", 5000, "connected");
      assertEquals(runner.carrier, "memory");
      const size = 8 * 1024 * 1024;
      const s = await pool.dial({ host: "127.0.0.1", port: origin.port });
      await s.write(
        new TextEncoder().encode(
          `GET /bytes/${size}?seed=3 HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n`,
        ),
      );
      const chunks: Uint8Array[] = [];
      let total = 0;
      const buf = new Uint8Array(65536);
      let cut = false;
      for (;;) {
        const n = await s.read(buf);
        if (n === null) break;
        chunks.push(buf.slice(0, n));
        total += n;
        if (!cut && total > 1024 * 1024) {
          cut = true;
          links[0].close(); // the path is gone
        }
      }
      const all = new Uint8Array(total);
      let o = 0;
      for (const c of chunks) {
        all.set(c, o);
        o += c.length;
      }
      const text = new TextDecoder().decode(all.subarray(0, 200));
      const head = text.indexOf("\r\n\r\n") + 4;
      assert(head > 4, "an HTTP response");
      assertEquals(await sha256Hex(all.subarray(head)), await sha256Hex(payload(size, 3)));
      assertEquals(lost, ["memory"], "the loss was reported once");
      assert(links.length >= 2, "a new link was opened");
      assertEquals(runner.connects, 1, "no new session");
      const st = server.stats();
      assertEquals(st.handshakes, 1, "the server saw one handshake");
      assert(st.migrations >= 1, "the session moved to the new link");
    } finally {
      await pool.stop();
      await server.stop();
      await origin.close();
    }
  },
});

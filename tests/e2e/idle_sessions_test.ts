/**
 * 1,000 concurrent idle sessions: the server holds them all, refuses the next
 * one silently at the cap, and evicts them when they stay idle.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { freePort, spawnDeno } from "../support/daemons.ts";
import { openSessions } from "../support/loadgen.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

Deno.test({
  name: "e2e: 1,000 idle sessions held, the 1,001st refused silently, all evicted when idle",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const key = generateAccessKey();
    const port = freePort("udp");
    const config = await Deno.makeTempFile({ suffix: ".json" });
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        listen: [`127.0.0.1:${port}`],
        keys: [formatAccessKey(key, "hex")],
        maxSessions: 1000,
        handshakeRate: 5000,
        handshakeBurst: 5000,
        idleTimeout: 20,
        log: { level: "warning", format: "text" },
      }),
    );
    const server = spawnDeno("server", "server/main.ts", ["--config", config]);
    try {
      await server.waitFor(/share link/);
      const base = await server.statsDump();
      const r = await openSessions(key, port, 1000, { perSecond: 250, settleMs: 2000 });
      const full = await server.statsDump();
      assertEquals(r.answered, 1000, "every hello answered");
      assertEquals(full.stats.sessions, 1000);
      const extra = await openSessions(key, port, 1, { settleMs: 800 });
      assertEquals(extra.answered, 0, "the 1,001st session got no answer");
      const capped = await server.statsDump();
      assert(capped.stats.drops.sessionCap >= 1, "counted as refused at the cap");
      assertEquals(capped.stats.sessions, 1000);
      const perSession = (full.rssBytes - base.rssBytes) / 1000;
      console.log(
        `  server memory: ${
          (perSession / 1024).toFixed(1)
        } KiB per idle session (RSS delta / 1000)`,
      );
      // Idle eviction: nothing arrives from these sessions; after 20 s they go.
      let left = 1000;
      for (let i = 0; i < 80 && left > 0; i++) {
        await new Promise((r) => setTimeout(r, 500));
        left = (await server.statsDump()).stats.sessions;
      }
      assertEquals(left, 0, "idle sessions evicted");
      assert(await server.alive());
    } finally {
      await server.stop();
      await Deno.remove(config);
    }
  },
});

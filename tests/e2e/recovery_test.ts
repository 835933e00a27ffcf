/**
 * The server restarts: the client notices the silence, reconnects with
 * back-off and no limit, new connections work again, and the streams that
 * could not survive fail cleanly instead of hanging.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { curl, freePort, spawnDeno, startClient, startOrigin } from "../support/daemons.ts";

Deno.test({
  name: "e2e: server restart — in-flight streams fail cleanly, the client reconnects",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const port = freePort("udp");
    const key = Array.from(
      crypto.getRandomValues(new Uint8Array(32)),
      (b) => b.toString(16).padStart(2, "0"),
    )
      .join("");
    const serverArgs = ["--listen", `127.0.0.1:${port}`, "--key", key];
    let server = spawnDeno("server", "server/main.ts", serverArgs);
    const link = (await server.waitFor(/share link: (\S+)/))[1];
    const client = await startClient(link, ["--keepalive", "1", "--idle-timeout", "3"]);
    const proxy = ["--socks5-hostname", `127.0.0.1:${client.proxyPort}`];
    try {
      const ok = await curl([...proxy, `http://127.0.0.1:${origin.port}/hello`]);
      assertEquals(ok.code, 0, ok.stderr);
      // A long transfer in flight when the server dies without a word.
      const t0 = performance.now();
      const inflight = curl([
        ...proxy,
        "-m",
        "60",
        "--limit-rate",
        "1M",
        "-o",
        "/dev/null",
        `http://127.0.0.1:${origin.port}/bytes/${32 * 1024 * 1024}`,
      ]);
      await new Promise((r) => setTimeout(r, 1000));
      await server.stop("SIGKILL");
      const r = await inflight;
      assert(r.code !== 0, "the cut transfer reports an error");
      assert(r.code !== 28, `it failed, not timed out (curl exit ${r.code}: ${r.stderr})`);
      assert(performance.now() - t0 < 30_000, "it failed promptly");
      await client.daemon.waitFor(/session 0 connecting to .*idle timeout/, 15_000);
      // While the server is down a new request gets a clear proxy error.
      const down = await curl([...proxy, "-m", "30", `http://127.0.0.1:${origin.port}/hello`]);
      assertEquals(down.code, 97, `socks error while down: ${down.stderr}`);
      // Restart on the same port with the same key: the client gets back in.
      server = spawnDeno("server", "server/main.ts", serverArgs);
      await server.waitFor(/share link/);
      const from = client.daemon.output.length;
      await client.daemon.waitFor(/session 0 connected to/, 40_000, from);
      const again = await curl([...proxy, `http://127.0.0.1:${origin.port}/hello`]);
      assertEquals(again.code, 0, again.stderr);
      assertEquals(new TextDecoder().decode(again.stdout), "hello\n");
      assert(await client.daemon.alive(), "client kept running");
    } finally {
      await client.daemon.stop();
      await server.stop();
      await origin.close();
    }
  },
});

/**
 * The server restarts: with default timeouts the client notices the silence
 * by itself (a restarted server drops the old session's packets without a
 * word), warns once per outage, handshakes again beside the silent session and
 * moves to the new one; the streams that could not survive fail cleanly
 * instead of hanging. Prints the measured recovery times.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { curl, freePort, spawnDeno, startClient, startOrigin } from "../support/daemons.ts";

const STOPPED_ANSWERING = /stopped answering/;

Deno.test({
  name: "e2e: server restart — in-flight streams fail cleanly, the client recovers within seconds",
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
    const client = await startClient(link); // default keepalive and idle timeout
    const proxy = ["--socks5-hostname", `127.0.0.1:${client.proxyPort}`];
    const hello = `http://127.0.0.1:${origin.port}/hello`;
    /** Restarts the server; resolves when it printed its share link, with that time. */
    const restart = async (): Promise<number> => {
      server = spawnDeno("server", "server/main.ts", serverArgs);
      await server.waitFor(/share link/);
      return performance.now();
    };
    /** One request through the proxy after the server came back at `back`; the recovery time. */
    const firstRequest = async (back: number, label: string): Promise<number> => {
      const r = await curl([...proxy, "-m", "20", hello]);
      const ms = performance.now() - back;
      assertEquals(r.code, 0, `${label}: ${r.stderr}`);
      assertEquals(new TextDecoder().decode(r.stdout), "hello\n");
      console.log(`recovery (${label}): ${(ms / 1000).toFixed(2)} s from share link to answer`);
      // Generous against slow shared machines; the point is: not the 30 s idle timeout.
      assert(ms < 10_000, `${label}: recovery took ${ms.toFixed(0)} ms`);
      return ms;
    };
    try {
      const ok = await curl([...proxy, hello]);
      assertEquals(ok.code, 0, ok.stderr);

      // Outage 1: the server dies without a word during a download and stays down a while.
      const inflight = curl([
        ...proxy,
        "-m",
        "60",
        // Fast enough that what sits in loopback socket buffers (several MiB, drained before
        // curl sees the connection end) is read within a few seconds of the failure; large
        // enough that the server cannot have pushed it all into those buffers before the kill.
        "--limit-rate",
        "4M",
        "-o",
        "/dev/null",
        `http://127.0.0.1:${origin.port}/bytes/${128 * 1024 * 1024}`,
      ]).then((r) => ({ ...r, at: performance.now() }));
      await new Promise((r) => setTimeout(r, 1000));
      await server.stop("SIGKILL");
      const killedAt = performance.now();
      await client.daemon.waitFor(STOPPED_ANSWERING, 20_000);
      console.log(
        `silence noticed ${((performance.now() - killedAt) / 1000).toFixed(2)} s after kill`,
      );
      // While the server is down a new request gets a clear proxy error (after connectTimeout).
      const down = await curl([...proxy, "-m", "30", hello]);
      assertEquals(down.code, 97, `socks error while down: ${down.stderr}`);
      // Restart on the same port with the same key: the client gets back in.
      const back = await restart();
      await firstRequest(back, "server down ~10 s");
      const cut = await inflight;
      assert(cut.code !== 0, "the cut transfer reports an error");
      assert(cut.code !== 28, `it failed, not timed out (curl exit ${cut.code}: ${cut.stderr})`);
      assert(cut.at - back < 10_000, "it failed once the new session replaced the old one");
      assertEquals(client.daemon.count(STOPPED_ANSWERING), 1, "one warning for the outage");

      // Outage 2: kill and restart at once while the client is idle; the next request
      // finds the silent session, which is replaced, and the request is retried on the new one.
      await server.stop("SIGKILL");
      const back2 = await restart();
      await firstRequest(back2, "quick restart");
      assertEquals(client.daemon.count(STOPPED_ANSWERING), 2, "one warning per outage");
      assert(await client.daemon.alive(), "client kept running");
    } finally {
      await client.daemon.stop();
      await server.stop();
      await origin.close();
    }
  },
});
